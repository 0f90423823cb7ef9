"""Per-browser-session state: the project being edited and its own `OwlPredictor`.

Every session owns a predictor (its own embedding caches; the model itself is shared), a folder
with copies of the images it uploaded, and the project (classes, example images with their
boxes, query images). Sessions live in a bounded `SessionStore` keyed by Gradio's
``session_hash``; `demo.unload` drops them, and the least recently used one is dropped when
the store is full, so memory stays bounded even for clients that never say goodbye.
"""

from __future__ import annotations

import itertools
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ui import labels as L
from ui.drawing import PREVIEW_MAX_SIDE, PictureCache


@dataclass
class ImageItem:
    """One image of the project, stored in the session folder.

    Attributes:
        path: the session's own copy (its file name is unique within the session, which is how
            an annotator value finds its example again).
        name: the original file name, for people.
        size: (width, height) in pixels, EXIF rotation applied.
        boxes: annotator-format boxes (XYXY pixels, label, colour), newest first (the
            annotator's order), examples only.
        content_hash: the engine's hash, once embedded.
    """

    path: str
    name: str
    size: tuple[int, int]
    boxes: list[dict] = field(default_factory=list)
    content_hash: str | None = None

    @property
    def key(self) -> str:
        return Path(self.path).name


@dataclass
class Project:
    """What the user is building: classes, examples with boxes, and query images."""

    name: str = "my-project"
    classes: list[str] = field(default_factory=lambda: ["object"])
    examples: list[ImageItem] = field(default_factory=list)
    queries: list[ImageItem] = field(default_factory=list)
    current: int = -1
    #: class used for a box whose label hasn't been picked yet (the label dialog is open).
    active_class: str = "object"

    def example_by_key(self, key: str) -> tuple[int, ImageItem] | None:
        for i, item in enumerate(self.examples):
            if item.key == key:
                return i, item
        return None

    @property
    def current_example(self) -> ImageItem | None:
        if 0 <= self.current < len(self.examples):
            return self.examples[self.current]
        return None

    def training_data(self) -> tuple[list[dict], list[tuple[int, int]]]:
        """The reference-schema training data, and for each box the (example index, annotator
        box index) it came from. Unlabeled boxes count as `active_class`; suggestions and
        boxes without area are left out; examples without boxes are left out.

        The annotator puts a new box first in its list, so boxes are read last to first: the
        oldest box is box 1 and numbers don't shift when a box is added."""
        data: list[dict] = []
        origin: list[tuple[int, int]] = []
        for ei, item in enumerate(self.examples):
            boxes = []
            for bi in reversed(range(len(item.boxes))):
                box = item.boxes[bi]
                parsed = L.parse_box(box, self.classes)
                if parsed.kind == "suggestion" or not L.box_is_usable(box, item.size):
                    continue
                cls = parsed.cls if parsed.kind != "unlabeled" else self.active_class
                if cls not in self.classes:
                    continue
                xyxy = L.clip_xyxy((box["xmin"], box["ymin"], box["xmax"], box["ymax"]), item.size)
                boxes.append(L.xyxy_to_reference(xyxy, cls, parsed.kind == "negative"))
                origin.append((ei, bi))
            if boxes:
                data.append({"image": item.path, "boxes": boxes})
        return data, origin


@dataclass(frozen=True)
class Settings:
    """The preview's detection settings (the sliders)."""

    confidence: float = 0.9
    iou_threshold: float = 0.3
    max_detections: int = 300
    score_mode: str = "reference"
    show_examples: bool = False

    def detect_kwargs(self) -> dict[str, Any]:
        return {"confidence": float(self.confidence), "iou_threshold": float(self.iou_threshold),
                "max_detections": int(self.max_detections), "score_mode": self.score_mode}


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(name: str, default: str = "file") -> str:
    """A file-system-safe version of a user-given name (no folders, no odd characters)."""
    stem = _SAFE_NAME.sub("-", Path(str(name or "")).name).strip(".-")
    return stem[:80] or default


class Session:
    """One browser session (or one API client): predictor, project, files, last results."""

    def __init__(self, session_id: str, predictor: Any, root: Path,
                 preview_max_side: int = PREVIEW_MAX_SIDE) -> None:
        self.id = session_id
        self.predictor = predictor
        self.dir = Path(tempfile.mkdtemp(prefix="session-", dir=root))
        self.project = Project()
        self.lock = threading.RLock()
        self.results: dict[str, Any] = {}   # image path -> DetectionResult of the last preview
        self.preview_items: list[ImageItem] = []
        self.report = None                  # MatchReport of the last preview
        self.preview_key: str | None = None
        self.export_key: str | None = None
        self.exports: tuple[str, str] | None = None
        self.imported: list[str] = []       # names of imported .pt files (exemplars active)
        self.imported_version = 0
        self.selected_sample = 0
        self.selected_preview = 0
        self.pictures = PictureCache(self.dir / "pictures", preview_max_side)
        self.shown: dict[Any, Any] = {}     # output (and property) -> value last sent
        self.last_used = time.monotonic()
        self._counter = itertools.count(1)
        self._token = secrets.token_hex(3)  # so an uploaded file's own name never matches ours

    def store_image(self, source: str | Path, name: str | None = None) -> str:
        """Copy an image into the session folder under a unique name; return the new path."""
        source = Path(source)
        name = safe_file_name(name or source.name, "image.png")
        target = self.dir / "images" / f"img{next(self._counter):03d}{self._token}-{name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return str(target)

    def work_dir(self, name: str) -> Path:
        path = self.dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def close(self) -> None:
        """Free the predictor's caches and delete the session's files."""
        reset = getattr(self.predictor, "reset_cache", None)
        if callable(reset):
            reset()
        self.predictor = None
        self.results.clear()
        self.pictures.clear()
        self.preview_items = []
        shutil.rmtree(self.dir, ignore_errors=True)


class SessionStore:
    """Sessions by id, at most `max_sessions` (least recently used dropped first).

    Args:
        make_predictor: builds a fresh `OwlPredictor` (own caches, shared model).
        root: folder for the sessions' files.
        max_sessions: bound on live sessions.
        preview_max_side: longest side of the sessions' preview pictures, pixels.
    """

    def __init__(self, make_predictor: Callable[[], Any], root: str | Path,
                 max_sessions: int = 8, preview_max_side: int = PREVIEW_MAX_SIDE) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}.")
        self._make_predictor = make_predictor
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_sessions = int(max_sessions)
        self.preview_max_side = int(preview_max_side)
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session_id: str) -> Session:
        """The session with this id, created when new."""
        evicted: list[Session] = []
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                session = Session(session_id, self._make_predictor(), self.root,
                                  self.preview_max_side)
                self._sessions[session_id] = session
                while len(self._sessions) > self.max_sessions:
                    evicted.append(self._sessions.popitem(last=False)[1])
            self._sessions.move_to_end(session_id)
            session.last_used = time.monotonic()
        for old in evicted:
            with old.lock:
                old.close()
        return session

    def drop(self, session_id: str) -> bool:
        """Forget a session and free its memory; False if it was not there."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        with session.lock:
            session.close()
        return True

    def ids(self) -> list[str]:
        """Ids of the live sessions, least recently used first."""
        with self._lock:
            return list(self._sessions)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)

    def close(self) -> None:
        for session_id in list(self._sessions):
            self.drop(session_id)
