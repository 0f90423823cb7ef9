"""Per-browser-tab state: the project being edited (on disk) and a predictor.

A tab works on one project of the server's `ProjectLibrary` (``--projects-dir``): the images live
in the project folder, and every change is saved there shortly after it happens (`Saver`:
debounced; `owl_core.project.model.save_changes` appends what changed to the project's journal,
so a save costs the change, not the project; the journal is folded into project.json in the
background when it grows and when the tab closes). The page edits the project
model itself (`Session.core`, an `owl_core.project.model.Project`: classes, images with their
prompts and reviewed labels, detection settings, imported `.pt` files); what only this tab sees
(the example shown, the class picked, what is embedded) is its `TabView`. The annotator's boxes
become prompts and back in `ui.labels.annotator_to_prompts` / `prompts_to_annotator`.

Sessions live in a bounded `TabSessions` keyed by Gradio's ``session_hash``. The store also
remembers which project each tab has open (a much larger bound: ids only), so a session
dropped to bound memory is opened again from disk on the tab's next event, never emptied; a
reloaded page or a restarted server finds the project by the id in the URL or browser storage.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from owl_core.errors import OwlError, ProjectChangedError, ProjectError
from owl_core.params import DetectParams
from owl_core.project.model import IMAGES_DIR, ImageRecord, Project
from ui.drawing import PREVIEW_MAX_SIDE, PictureCache

log = logging.getLogger("ui.session")
#: Classes of a new project (a first box needs a class to be drawn with).
NEW_PROJECT_CLASSES = ("object",)
#: Tabs whose open project the store remembers (ids only: a few bytes each).
MAX_REMEMBERED_TABS = 10_000
#: In the projects folder: per project, the place of the last tab on it (`TabView.place`), so
#: a tab reloaded after a server restart comes back where the person was.
PLACES_FILE = ".places.json"


@dataclass
class TabView:
    """What one tab shows of its project, never saved with it (the project itself is the
    session's `owl_core.project.model.Project`, edited in place: there is no other copy).

    The review panel's state (the image under review, its detections) lives with the review
    handlers (`ui.handlers.review.ReviewState`); the preview's page with the session.

    Attributes:
        current: id of the example image the annotator shows (None: no example).
        active_class: the class a new box gets while its label dialog is open, and the one
            that dialog opens on.
        show_examples: the preview shows the example images too.
        embedded: image id -> the engine's content hash, once the image is embedded in this
            server's cache (with every patch for an example image).
        pending_removal: the class whose removal the page asked to confirm.
        review_image: id of the image the review panel shows.
        preview_page: the preview's page (0-based).
    """

    current: str | None = None
    active_class: str = ""
    show_examples: bool = False
    embedded: dict[str, str] = field(default_factory=dict)
    pending_removal: str | None = None
    review_image: str | None = None
    preview_page: int = 0

    def place(self) -> dict[str, Any]:
        """Where the person is in the project (what a reload brings back)."""
        return {"current": self.current, "active_class": self.active_class,
                "review_image": self.review_image, "preview_page": self.preview_page}


def apply_place(session: Session, place: dict[str, Any]) -> None:
    """Put a tab back where `place` (`TabView.place`) says, as far as the project still has
    it (a removed image or class is skipped)."""
    view = session.view
    record = session.record(place.get("current"))
    if record is not None and record.role == "example":
        view.current = record.id
    if place.get("active_class") in session.core.classes:
        view.active_class = place["active_class"]
    if session.record(place.get("review_image")) is not None:
        view.review_image = place["review_image"]
    page = place.get("preview_page")
    if isinstance(page, int) and page >= 0:
        view.preview_page = page


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(name: str, default: str = "file") -> str:
    """A file-system-safe version of a user-given name (no folders, no odd characters)."""
    stem = _SAFE_NAME.sub("-", Path(str(name or "")).name).strip(".-")
    return stem[:80] or default


class SessionLock:
    """A session's re-entrant lock that asks for a save when the outermost hold is left.

    Every change to a tab's project is made under its session's lock, so leaving the lock is
    where a change may have happened: `on_release` (the store's `Saver.touch`) schedules a
    save there. Saving so never depends on a handler remembering to ask for it (a handler
    without `engine_errors` or a request, a background step, a helper). The saver's own hold
    (`quietly`) schedules nothing, or it would schedule itself forever.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._local = threading.local()   # this thread's hold count (and whether it is quiet)
        self.on_release: Callable[[], None] | None = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not self._lock.acquire(blocking, timeout):
            return False
        self._local.depth = getattr(self._local, "depth", 0) + 1
        return True

    def release(self) -> None:
        self._lock.release()  # raises (nothing changed) when this thread does not hold it
        self._local.depth -= 1
        if self._local.depth == 0 and not getattr(self._local, "quiet", False) \
                and self.on_release is not None:
            self.on_release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    @contextmanager
    def quietly(self) -> Iterator[None]:
        """Hold the lock without scheduling a save when it is left (the saver's hold)."""
        self.acquire()
        outermost = self._local.depth == 1
        if outermost:
            self._local.quiet = True
        try:
            yield
        finally:
            self.release()
            if outermost:
                self._local.quiet = False


class Session:
    """One browser tab: predictor, the project (on disk and edited in place), the tab's view
    of it, scratch files, last results."""

    def __init__(self, session_id: str, predictor: Any, root: Path,
                 preview_max_side: int = PREVIEW_MAX_SIDE) -> None:
        self.id = session_id
        self.predictor = predictor
        root.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="session-", dir=root))
        self.preview_max_side = preview_max_side
        #: held for every change to the project (leaving it schedules a save: `SessionLock`)
        self.lock = SessionLock()
        self.closed = False  # dropped from the store: nothing of it is saved any more
        #: the logged-in user the tab belongs to (None: a studio without logins)
        self.owner: str | None = None
        #: the project: the one model the page edits and the saver writes
        self.core: Project | None = None
        self.view = TabView()
        self.saved_files: set[str] = set()   # image files the last save listed
        self.save_error: str | None = None
        self.warned: str | None = None        # the save error the page was last told about
        self.import_errors: list[str] = []    # imported prompts that did not load at open
        #: project id -> the project another tab on it switched to while this one waited
        self.moved_from: dict[str, str] = {}
        self.asked_for: str | None = None  # the project id the tab last asked to open
        self._reset_view_state()
        self.last_used = time.monotonic()

    def _reset_view_state(self) -> None:
        #: image path -> DetectionResult with the prompt of `detect_key` (filled as needed)
        self.results: dict[str, Any] = {}
        self.detect_key: str | None = None   # the prompt and settings `results` were made with
        self.preview_items: list[str] = []  # ids of the images on the preview's page
        self.report = None                  # MatchReport of the last preview
        self.preview_key: str | None = None
        self.export_key: str | None = None
        self.exports: tuple[str, str] | None = None
        self.imported_version = 0           # bumped when the imported prompts change
        self.selected_sample = 0
        self.selected_preview = 0
        self.pictures = PictureCache(self.dir / "pictures", self.preview_max_side)
        self.shown: dict[Any, Any] = {}     # output (and property) -> value last sent

    @property
    def project_id(self) -> str | None:
        return self.core.folder.name if self.core is not None and self.core.folder else None

    # ---------------------------------------------------------------- reading the project
    @property
    def settings(self) -> DetectParams:
        """The project's detection settings (the sliders)."""
        return self.core.settings if self.core is not None else DetectParams()

    def examples(self) -> list[ImageRecord]:
        """The example images (the ones prompts are drawn on), in project order."""
        return [r for r in self.core.images if r.role == "example"] if self.core else []

    def queries(self) -> list[ImageRecord]:
        """The query images (the preview's), in project order."""
        return [r for r in self.core.images if r.role == "query"] if self.core else []

    def record(self, image_id: str | None) -> ImageRecord | None:
        """The project's image `image_id`, None when there is none (any more)."""
        if self.core is None or not image_id:
            return None
        return next((r for r in self.core.images if r.id == image_id), None)

    def path(self, record: ImageRecord) -> str:
        """The image's file (what the annotators, the preview and the predictor read)."""
        return str(self.core.image_path(record))

    def embedded(self, record: ImageRecord) -> str | None:
        """The engine's hash of an image once it is embedded here (None: still waiting)."""
        return self.view.embedded.get(record.id)

    def current_example(self) -> ImageRecord | None:
        """The example the annotator shows (the first one when the shown one is gone)."""
        examples = self.examples()
        found = next((r for r in examples if r.id == self.view.current), None)
        if found is None and examples:
            found = examples[0]
        self.view.current = found.id if found is not None else None
        return found

    def example_by_key(self, key: str) -> ImageRecord | None:
        """The example whose file name is `key` (how an annotator value names its image)."""
        return next((r for r in self.examples() if Path(r.file).name == key), None)

    @property
    def active_class(self) -> str:
        """The class picked in the page (the first class when the picked one is gone)."""
        classes = self.core.classes if self.core is not None else []
        if self.view.active_class not in classes:
            self.view.active_class = classes[0] if classes else ""
        return self.view.active_class

    def open(self, core: Project) -> None:
        """Show this project (read from disk) in the tab; drops the previous one's results and
        loads its imported prompts (call under ``self.lock``, after saving the previous
        one)."""
        self.core = core
        self.view = TabView(active_class=core.classes[0] if core.classes else "")
        self.saved_files = {r.file for r in core.images}
        self.save_error = None
        self.pictures.clear()
        self._reset_view_state()
        self.load_imported()
        self._find_cached_embeddings()

    def load_imported(self) -> None:
        """Give the predictor the project's imported prompts (again); a file that no longer
        loads is reported (`import_errors`) and left in the project, never dropped silently."""
        self.import_errors = []
        if self.predictor is None or not hasattr(self.predictor, "clear_imported"):
            return
        self.predictor.clear_imported()
        for entry in self.core.imported:
            try:
                self.predictor.load_pt(self.core.imported_path(entry))
            except (OwlError, ValueError, OSError) as exc:
                log.warning("project %s: imported %s not loaded: %s", self.project_id,
                            entry.name, exc)
                self.import_errors.append(f"{entry.name}: {exc}")
        self.imported_version += 1

    def _find_cached_embeddings(self, at_most: int = 200) -> None:
        """Mark the images whose embeddings the cache already holds as embedded (a lookup by
        content hash, never a vision-tower pass), so a reopened project (page reload, server
        restart with the disk tier, a session dropped from memory) previews at once; the
        embedding step does the rest."""
        if not hasattr(self.predictor, "embed_many"):
            return
        for record in (self.examples() + self.queries())[:at_most]:
            try:
                info = self.predictor.embed_many([record.content_hash],
                                                 keep_patches=record.role == "example")
            except OwlError:  # not cached (or without the all-patch part an example needs)
                continue
            self.view.embedded[record.id] = info[0].content_hash

    def add_image(self, source: str | Path, name: str, as_example: bool) -> ImageRecord:
        """Copy an image into the project folder as an example or query image.

        Raises:
            OwlError: not an image, or over a limit (checked from the header, nothing decoded).
        """
        if self.core is None:
            raise ProjectError("No project is open in this tab; reload the page.")
        name = Path(str(name or "").replace("\\", "/")).name or Path(source).name
        return self.core.add_image(source, name, "example" if as_example else "query")

    def remove_image(self, image_id: str) -> None:
        """Drop an image from the project; its file goes after the next save."""
        self.core.remove_image(image_id, delete_file=False)
        self.view.embedded.pop(image_id, None)

    def save(self) -> bool:
        """Save what changed since the last save (call under the lock): one line appended to
        the project's journal (`save_changes`), refused when another tab or program changed the
        project on disk meanwhile (its work is not saved over). Returns whether anything was
        written; a refusal is kept in `save_error` (shown on the status line) and logged."""
        from owl_core.project.model import save_changes, unsaved_changes

        if self.core is None or self.core.folder is None:
            return False
        try:
            if not unsaved_changes(self.core):
                return False
            if not self.core.folder.is_dir():
                raise ProjectError("the project was deleted (in another tab?); open or create "
                                   "another one.")
            save_changes(self.core, if_unchanged=True)
        except ProjectChangedError:
            self.save_error = ("this project was changed in another tab or window, so your "
                               "last change was not saved over it. Reload the page to continue "
                               "from the saved project.")
            log.warning("project %s not saved: %s", self.project_id, self.save_error)
            return False
        except OwlError as exc:
            self.save_error = str(exc)
            log.warning("project %s not saved: %s", self.project_id, exc)
            return False
        except OSError as exc:  # disk full, folder gone read-only: say so; the next one retries
            self.save_error = (f"the project file could not be written "
                               f"({exc.strerror or exc}); free some disk space or check the "
                               "projects folder, then make any change to save again.")
            log.warning("project %s not saved: %s", self.project_id, exc)
            return False
        self.save_error = None
        previous, self.saved_files = self.saved_files, {r.file for r in self.core.images}
        _remove_unused_images(previous, self.core)
        return True

    def compact(self) -> None:
        """Fold the project's journal into project.json in the background (the tab is done
        with it: its next open reads one file)."""
        from owl_core.project.model import compact_in_background

        if self.core is not None and self.core.folder is not None:
            compact_in_background(self.core)

    def work_dir(self, name: str) -> Path:
        path = self.dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def close(self) -> None:
        """Drop the predictor (its embeddings stay in the server's shared cache, where the LRU
        order lets them go when others need the room) and delete the session's scratch files
        (the project stays on disk; call after the last save)."""
        self.closed = True
        self.predictor = None
        self.results.clear()
        self.pictures.clear()
        self.preview_items = []
        shutil.rmtree(self.dir, ignore_errors=True)


def _remove_unused_images(previous: set[str], core: Project) -> None:
    """Delete the image files the last save still used and this one doesn't (images the
    person removed); files only other writers know of are left alone."""
    if core.folder is None:
        return
    used = {r.file for r in core.images}
    images = (core.folder / IMAGES_DIR).resolve()
    for rel in previous - used:
        path = (core.folder / rel).resolve()
        if path.parent == images and path.is_file():
            path.unlink(missing_ok=True)


class Saver:
    """Saves sessions shortly after their last change, on one background thread.

    `touch` (leaving a session's lock: `SessionLock`) sets the session's save time `delay`
    seconds ahead, but never more than `max_wait` seconds after the first touch since its last
    save; the thread then writes it under the session's lock if its project changed
    (`Session.save` compares). So a burst of edits costs one write, and a tab that never goes
    quiet (the review panel's chained events, a server working through a queue under load)
    is still saved every `max_wait` seconds: without that bound each event pushed the save
    back, and a change could stay in memory only for as long as events kept coming.
    """

    def __init__(self, delay: float = 0.3, max_wait: float = 1.0) -> None:
        #: called with each session after its save (the store keeps the tab's place then)
        self.on_saved: Callable[[Session], None] | None = None
        self.delay = float(delay)
        self.max_wait = max(float(max_wait), self.delay)
        self._due: dict[Session, float] = {}
        self._first: dict[Session, float] = {}  # first touch since the session's last save
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="owl-project-saver", daemon=True)
        self._thread.start()

    def touch(self, session: Session) -> None:
        """The session may have changed: save it `delay` seconds after the last such call,
        at most `max_wait` seconds after the first (a closed session is not saved again)."""
        if getattr(session, "closed", False):
            return
        with self._cv:
            now = time.monotonic()
            first = self._first.setdefault(session, now)
            self._due[session] = min(now + self.delay, first + self.max_wait)
            self._cv.notify()

    def flush(self, session: Session) -> None:
        """Save now (e.g. before the session is dropped or switches project)."""
        with self._cv:
            self._due.pop(session, None)
            self._first.pop(session, None)
        self._save(session)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            pending = list(self._due)
            self._due.clear()
            self._first.clear()
            self._cv.notify()
        for session in pending:
            self._save(session)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closed:
                    now = time.monotonic()
                    due = [s for s, t in self._due.items() if t <= now]
                    if due:
                        for s in due:
                            del self._due[s]
                            self._first.pop(s, None)
                        break
                    wait = min(self._due.values(), default=now + 3600) - now
                    self._cv.wait(timeout=max(0.01, wait))
                if self._closed:
                    return
            for session in due:
                self._save(session)

    def _save(self, session: Session) -> None:
        try:
            with session.lock.quietly():  # a save is no change: it schedules no other save
                session.save()
            if self.on_saved is not None:
                self.on_saved(session)
        except Exception:  # a bug: keep the saver alive, say so in the log
            log.exception("saving project %s failed", session.project_id)


#: Seconds a tab opening a project waits for another tab on it to finish its event and save.
FLUSH_WAIT_S = 5.0


class TabSessions:
    """Sessions by tab id, at most `max_sessions` (least recently used dropped first, after
    saving), and the project each tab has open.

    Args:
        make_predictor: builds a fresh predictor (shared model and embedding cache).
        root: folder for the sessions' scratch files.
        projects: the server's `owl_core.project.library.ProjectLibrary`.
        max_sessions: bound on live sessions.
        preview_max_side: longest side of the sessions' preview pictures, pixels.
        save_delay: seconds after the last change a project is saved.
        save_max_wait: seconds a change waits at most while the tab keeps changing.
    """

    def __init__(self, make_predictor: Callable[[], Any], root: str | Path, projects: Any,
                 max_sessions: int = 8, preview_max_side: int = PREVIEW_MAX_SIDE,
                 save_delay: float = 0.3, save_max_wait: float = 1.0) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}.")
        self._make_predictor = make_predictor
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.projects = projects
        self.max_sessions = int(max_sessions)
        self.preview_max_side = int(preview_max_side)
        self.saver = Saver(save_delay, save_max_wait)
        self.saver.on_saved = self._remember_place
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._tabs: OrderedDict[str, str] = OrderedDict()  # tab id -> project id
        #: tab id -> `TabView.place` of a dropped session, restored with it
        self._tab_view: OrderedDict[str, dict[str, Any]] = OrderedDict()
        #: project id -> the place of the last tab that closed on it (a reload comes back there)
        self._project_place: OrderedDict[str, dict[str, Any]] = self._read_places()
        self._lock = threading.Lock()
        #: sessions dropped and still closing (a reloaded page's old tab finishing a switch:
        #: the new tab waits for it, `_flush_others`)
        self._closing: set[Session] = set()
        self._places_lock = threading.Lock()  # one writer of PLACES_FILE at a time
        self.restored = 0  # sessions opened again from disk after being dropped

    def get(self, session_id: str, project_id: str | None = None,
            owner: str | None = None) -> Session:
        """The tab's session: live, or opened again from disk with the tab's project (a new
        project when the tab never had one). A new session opens `project_id` when given.
        `owner`: the logged-in user (a studio with logins), who sees and opens only projects
        that are theirs; the projects the session creates become theirs."""
        evicted: list[Session] = []
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                session = Session(session_id, self._make_predictor(), self.root,
                                  self.preview_max_side)
                session.lock.on_release = self._saves(session)
                session.owner = owner
                self._sessions[session_id] = session
                while len(self._sessions) > self.max_sessions:
                    evicted.append(self._sessions.popitem(last=False)[1])
                    self._closing.add(evicted[-1])
                fresh = True
            else:
                fresh = False
            self._sessions.move_to_end(session_id)
            session.last_used = time.monotonic()
            remembered = self._tabs.get(session_id)
        for old in evicted:
            self._close(old)
        if fresh:
            project_id = self._valid_id(project_id)
            with session.lock:
                if session.core is None:
                    self._open_into(session, project_id or remembered)
                    if project_id is None and remembered is not None \
                            and session.project_id == remembered:
                        self.restored += 1
                        self._restore_view(session)
                        log.info("tab %s: project %s opened again from disk", session_id,
                                 remembered)
        return session

    def _saves(self, session: Session) -> Callable[[], None]:
        """What leaving `session`'s lock does: schedule its save (a weak reference, so the
        lock does not keep a dropped session alive)."""
        ref = weakref.ref(session)

        def touch() -> None:
            live = ref()
            if live is not None:
                self.saver.touch(live)

        return touch

    def open_tab(self, session_id: str, project_id: str | None,
                 owner: str | None = None, session: Session | None = None) -> Session:
        """Give the tab the project `project_id` (if it exists and is `owner`'s; else a new
        project). Used by the page's load event and by Open / New / Duplicate / import.
        `session`: the tab's session the caller holds the lock of (it switches even when
        the tab was dropped meanwhile: a reload of its page waits for it and follows)."""
        project_id = self._valid_id(project_id)
        if session is None or session.closed:
            session = self.get(session_id, project_id, owner)
        with session.lock:
            if session.core is None or (project_id is not None
                                        and project_id != session.project_id
                                        and project_id != session.asked_for):
                self.saver.flush(session)
                session.compact()  # the tab leaves the project: fold its journal
                previous = session.core
                self._open_into(session, project_id)
                self._forget_if_untouched(previous, session)
        return session

    def _valid_id(self, project_id: str | None) -> str | None:
        """The id, or None (a new project) when it is no project id: said once in the log,
        shortened (an id from a URL may be 5,000 characters)."""
        if project_id is None:
            return None
        try:
            self.projects.folder(project_id)
        except OwlError as exc:
            log.warning("cannot open the project: %s", exc)
            return None
        return project_id

    def _forget_if_untouched(self, core: Project | None, now: Session) -> None:
        """Delete a project the tab created and never used (no images, no name, default
        classes), so reloads and project switches don't fill the list with empty projects."""
        if core is None or core.folder is None or core.images or core.name != "my-project" \
                or list(core.classes) != list(NEW_PROJECT_CLASSES):
            return
        project_id = core.folder.name
        if any(s.project_id == project_id for s in self.live() if s is not now):
            return
        try:
            self.projects.delete(project_id)
        except OwlError as exc:
            log.info("left the empty project %s: %s", project_id, exc)

    def _open_into(self, session: Session, project_id: str | None) -> None:
        session.asked_for = project_id  # (what opened may be another: the asked one went)
        core = None
        place = None
        if project_id:
            place = self._flush_others(session, project_id)
            try:
                if self.projects.exists(project_id, session.owner):  # another's: a new one
                    core = self.projects.open(project_id)
                elif project_id in session.moved_from and self.projects.exists(
                        session.moved_from[project_id], session.owner):
                    # a reload while the page's old tab left this (untouched, so deleted)
                    # project for another (an example loaded): that one
                    core = self.projects.open(session.moved_from[project_id])
                else:  # deleted meanwhile (another tab; an untouched project left behind)
                    core = self._most_recent(exclude=project_id, owner=session.owner)
                    log.info("project %s is gone; opened the most recent one instead",
                             project_id)
            except OwlError as exc:  # a bad id from a URL, or an unreadable project
                log.warning("cannot open the project: %s", exc)  # exc names it (shortened)
            with self._lock:
                place = place or self._project_place.get(project_id)
        if core is None:
            core = self.projects.create("my-project", classes=list(NEW_PROJECT_CLASSES))
            if session.owner is not None:
                self.projects.set_owner(core.folder.name, session.owner)
        session.open(core)
        if place and core.folder is not None and core.folder.name == project_id:
            apply_place(session, place)
        with self._lock:
            self._tabs[session.id] = session.project_id
            self._tabs.move_to_end(session.id)
            while len(self._tabs) > MAX_REMEMBERED_TABS:
                self._tabs.popitem(last=False)

    def _most_recent(self, exclude: str | None = None,
                     owner: str | None = None) -> Project | None:
        """The most recently saved project (`owner`'s, with logins) other than `exclude`
        (None: there is none)."""
        for info in self.projects.list(owner):
            if info.id != exclude:
                try:
                    return self.projects.open(info.id)
                except OwlError:
                    continue
        return None

    def most_recent_id(self, exclude: str | None = None, owner: str | None = None) -> str | None:
        """Id of the most recently saved project (`owner`'s) other than `exclude`."""
        return next((i.id for i in self.projects.list(owner) if i.id != exclude), None)

    def _flush_others(self, session: Session, project_id: str) -> dict[str, Any] | None:
        """Write the pending change of any other live tab on `project_id` before `session`
        reads it from disk: after a reload the old tab's last change (made a moment ago, its
        save still due) must be in what the new tab opens. A tab busy for longer than
        `FLUSH_WAIT_S` is left to its own save (never a deadlock)."""
        with self._lock:
            others = [o for o in [*self._sessions.values(), *self._closing]
                      if o is not session and o.core is not None and o.project_id == project_id]
        place = None
        session.moved_from = {}
        for other in sorted(others, key=lambda o: o.last_used):
            if other.lock.acquire(timeout=FLUSH_WAIT_S):
                try:
                    self.saver.flush(other)
                    if other.project_id == project_id:
                        place = other.view.place()  # a reload: the old tab's place
                    elif other.project_id is not None:  # it switched while this one waited
                        session.moved_from[project_id] = other.project_id
                finally:
                    other.lock.release()
        return place

    def peek(self, session_id: str) -> Session | None:
        """The live session of a tab, without creating or reopening one."""
        with self._lock:
            return self._sessions.get(session_id)

    def tab_project(self, session_id: str) -> str | None:
        with self._lock:
            return self._tabs.get(session_id)

    def _close(self, session: Session) -> None:
        with session.lock:  # a handler still at work finishes first: its change is saved
            self.saver.flush(session)
            with self._lock:
                place = session.view.place()
                self._tab_view[session.id] = place
                if session.project_id:
                    self._project_place[session.project_id] = place
                    self._project_place.move_to_end(session.project_id)
                for kept in (self._tab_view, self._project_place):
                    while len(kept) > MAX_REMEMBERED_TABS:
                        kept.popitem(last=False)
            session.compact()
            session.close()
        with self._lock:
            self._closing.discard(session)
        self._write_places()

    def _places_path(self) -> Path | None:
        root = getattr(self.projects, "root", None)
        return Path(root) / PLACES_FILE if root is not None else None

    def _read_places(self) -> OrderedDict[str, dict[str, Any]]:
        """The places remembered by an earlier run of the server (none when unreadable: a
        place is a convenience, never a reason not to start)."""
        path = self._places_path()
        try:
            data = json.loads(path.read_text()) if path is not None else {}
        except (OSError, ValueError) as exc:
            if path is not None and path.exists():
                log.warning("places of the last run not read (%s): %s", path, exc)
            data = {}
        places = data if isinstance(data, dict) else {}
        return OrderedDict((str(k), v) for k, v in list(places.items())[-MAX_REMEMBERED_TABS:]
                           if isinstance(v, dict))

    def _remember_place(self, session: Session) -> None:
        """Keep the tab's place for its project, on disk too (after each save: a server that
        is stopped, even killed, brings a reloaded tab back there)."""
        project_id = session.project_id
        if project_id is None or session.closed:
            return
        place = session.view.place()
        with self._lock:
            if self._project_place.get(project_id) == place:
                return
            self._project_place[project_id] = place
            self._project_place.move_to_end(project_id)
            while len(self._project_place) > MAX_REMEMBERED_TABS:
                self._project_place.popitem(last=False)
        self._write_places()

    def _write_places(self) -> None:
        path = self._places_path()
        if path is None:
            return
        from owl_core.durable import atomic_write

        with self._places_lock:
            with self._lock:
                data = json.dumps(self._project_place).encode()
            try:
                atomic_write(path, data)
            except OSError as exc:
                log.warning("places not written to %s: %s", path, exc)

    def _restore_view(self, session: Session) -> None:
        """The place (example shown, class picked, review image, preview page) as the tab had
        it."""
        with self._lock:
            place = self._tab_view.pop(session.id, None)
        if place:
            apply_place(session, place)

    def drop(self, session_id: str) -> bool:
        """Save and forget a session (its project stays on disk); False if it was not there."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
            if session is not None:
                self._closing.add(session)
        if session is None:
            return False
        self._close(session)
        return True

    def ids(self) -> list[str]:
        """Ids of the live sessions, least recently used first."""
        with self._lock:
            return list(self._sessions)

    def live(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)

    def close(self) -> None:
        for session_id in list(self._sessions):
            self.drop(session_id)
        self.saver.close()

