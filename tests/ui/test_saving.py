"""A tab's project reaches project.json on disk, whatever the page is doing.

The studio saves a tab's project shortly after it changes (`ui.session.Saver`). These tests
drive the handlers as the page does (a real `gr.Request`, so the handlers' own save requests
run too) and read the file a reload would read:

* a busy tab (the review panel's chained meter / image-list events, or a server working
  through a queue of events under load) used to push the save back on every event, so a
  review marked done stayed in memory only (seen in the review browser test: 2 of 3 loaded
  runs, nothing on disk after 20 s);
* a change made under the session lock is saved even when its handler never asks for a save;
* a write that fails is reported to the person and retried, not dropped in the log.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import gradio as gr
import pytest
from review_helpers import CHELSEA, SCRIPT, ScriptedPredictor

from owl_core.project.model import load_project
from ui import labels as L
from ui.session import Saver, SessionLock

SETTINGS = (0.7, 0.3, 300, "reference", False)  # confidence, NMS IoU, max, mode, examples
#: How long a test waits for the file before it fails (the saver needs about a second).
PATIENCE_S = 15.0


@pytest.fixture()
def studio(tiny_model, tmp_path):
    from ui import Studio, StudioConfig, build_demo

    config = StudioConfig(random_preset="tiny", work_dir=str(tmp_path / "work"),
                          projects_dir=str(tmp_path / "projects"), cache_bytes=128 * 2**20)
    studio = Studio(tiny_model, config, make_predictor=lambda: ScriptedPredictor(tiny_model))
    build_demo(tiny_model, config, studio=studio)  # the components the handlers address
    try:
        yield studio
    finally:
        studio.close()


def on_disk(folder: Path, name: str):
    """The query image `name` as project.json on disk has it (what a reload would show);
    None while the file does not list it yet."""
    return next((r for r in load_project(folder).images
                 if r.name == name and r.role == "query"), None)


def wait_on_disk(folder: Path, name: str, ok) -> object:
    """The disk record of `name` once `ok(record)` holds, or the last one read."""
    deadline = time.monotonic() + PATIENCE_S
    while True:
        record = on_disk(folder, name)
        if (record is not None and ok(record)) or time.monotonic() > deadline:
            return record
        time.sleep(0.05)


def open_chelsea(studio, request, tmp_path):
    """The coins example project, a class "cat", chelsea.png as a query image with its
    scripted detections, shown in the review panel."""
    studio.on_load(None, request)
    studio.library.on_load_example(None, request)
    studio.classes.on_add_class("cat", request)
    shutil.copyfile(CHELSEA, tmp_path / "chelsea.png")
    studio.images.on_upload_queries([str(tmp_path / "chelsea.png")], request)
    studio.embedding.on_embed(request, progress=lambda *a, **k: None)
    studio.preview.on_settings(*SETTINGS, request)
    s = studio.session(request)
    item = next(i for i in s.queries() if i.name == "chelsea.png")
    studio.review.on_pick(item.id, request)
    assert len(studio.review.state(s).boxes) == len(SCRIPT)
    return s, item


class BusyTab:
    """Events arriving back to back, as the review panel's chained meter and image-list
    updates do, or any queue the server works through under load."""

    def __init__(self, studio, request) -> None:
        self.stop = threading.Event()
        self.events = 0
        self.errors: list[BaseException] = []

        def run() -> None:
            while not self.stop.is_set():
                try:
                    studio.meter.on_meter(*SETTINGS, request)
                    studio.review.on_list("all", "list", request)
                except BaseException as exc:  # noqa: BLE001 -- reported by the test
                    self.errors.append(exc)
                    return
                self.events += 2
                time.sleep(0.02)

        self.thread = threading.Thread(target=run, daemon=True)

    def __enter__(self) -> BusyTab:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)


def test_a_review_marked_done_reaches_disk_while_the_tab_keeps_sending_events(studio,
                                                                               tmp_path):
    request = gr.Request(session_hash="busy-review")
    s, item = open_chelsea(studio, request, tmp_path)
    st = studio.review.state(s)
    a, _, c = st.boxes  # accept A as it is, reject B (deleted), relabel C as "cat"
    boxes = [{**a, "color": L.class_color(0)},
             {**c, "label": "cat", "color": L.class_color(1)}]
    with BusyTab(studio, request) as busy:
        studio.review.on_edited({"image": {"path": s.path(item)}, "boxes": boxes}, request)
        studio.review.on_done_next(request)
        with s.lock:
            assert s.core.image(item.id).status == "done"  # in memory at once
        disk = wait_on_disk(s.core.folder, "chelsea.png", lambda r: r.status == "done")
        still_busy = not busy.stop.is_set() and busy.thread.is_alive()
    assert not busy.errors, busy.errors
    assert still_busy and busy.events > 10  # the file was written while events kept coming
    assert disk is not None and disk.status == "done"
    assert sorted((x.cls, x.source) for x in disk.labels) == [("cat", "corrected"),
                                                             ("coin", "accepted")]


def test_a_change_under_the_session_lock_is_saved_without_the_handler_asking(studio,
                                                                             tmp_path):
    """A handler that changes the project but is not wrapped by `engine_errors` (or has no
    request) never asks for a save; the change is saved all the same."""
    request = gr.Request(session_hash="quiet-handler")
    s, item = open_chelsea(studio, request, tmp_path)
    studio.store.saver.flush(s)  # nothing pending: only the change below can cause a save
    with s.lock:
        s.core.set_status(item.id, "done")
    disk = wait_on_disk(s.core.folder, "chelsea.png", lambda r: r.status == "done")
    assert disk is not None and disk.status == "done"


def test_a_failed_write_is_reported_and_retried(studio, tmp_path, monkeypatch):
    import owl_core.project.journal as journal
    import owl_core.project.model as project

    request = gr.Request(session_hash="disk-full")
    s, item = open_chelsea(studio, request, tmp_path)
    studio.store.saver.flush(s)
    real, real_append = project.save_project, journal.append_line

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(project, "save_project", disk_full)
    monkeypatch.setattr(journal, "append_line", disk_full)
    with s.lock:
        s.core.set_status(item.id, "done")
        assert s.save() is False
    assert "No space left on device" in (s.save_error or "")
    assert on_disk(s.core.folder, "chelsea.png").status != "done"
    monkeypatch.setattr(project, "save_project", real)
    monkeypatch.setattr(journal, "append_line", real_append)
    with s.lock:  # the tab's next event: the saver tries again
        pass
    disk = wait_on_disk(s.core.folder, "chelsea.png", lambda r: r.status == "done")
    assert disk is not None and disk.status == "done"
    with s.lock:
        assert s.save_error is None


class CountingSession:
    """Just what the saver uses of a session."""

    def __init__(self) -> None:
        self.lock = SessionLock()
        self.closed = False
        self.project_id = "stub"
        self.saves = 0

    def save(self) -> bool:
        self.saves += 1
        return True


def test_the_saver_writes_a_session_that_never_goes_quiet():
    """Touched every 20 ms (delay 0.3 s): the debounce alone would wait for a pause forever;
    `max_wait` bounds how long a change waits."""
    saver = Saver(delay=0.3, max_wait=0.6)
    session = CountingSession()
    try:
        deadline = time.monotonic() + PATIENCE_S
        while session.saves == 0 and time.monotonic() < deadline:
            saver.touch(session)
            time.sleep(0.02)
        assert session.saves >= 1
    finally:
        saver.close()


def test_leaving_the_session_lock_schedules_a_save_but_the_savers_own_hold_does_not():
    calls: list[str] = []
    lock = SessionLock()
    lock.on_release = lambda: calls.append("released")
    with lock:
        with lock:  # nested: only leaving the outermost hold counts
            pass
        assert calls == []
    assert calls == ["released"]
    with lock.quietly():
        pass
    assert calls == ["released"]
    assert lock.acquire(timeout=1)
    lock.release()
    assert calls == ["released", "released"]


def test_a_reloaded_tab_opens_the_change_its_old_tab_made_a_moment_ago(studio, tmp_path):
    """A reload is a new tab on the same project, opened while the old tab's last change still
    waits for its save: the new tab must read that change, not the file from before it."""
    old = gr.Request(session_hash="before-reload")
    studio.on_load(None, old)
    s = studio.session(old)
    pid = s.project_id
    studio.store.saver.flush(s)
    studio.store.saver.delay = studio.store.saver.max_wait = 3600.0  # no save of its own
    studio.project.on_project_name("Coins, reloaded", old)
    assert load_project(s.core.folder).name != "Coins, reloaded"  # not written yet
    new = gr.Request(session_hash="after-reload")
    new.query_params = {"project": pid}
    studio.on_load(None, new)
    assert studio.session(new).core.name == "Coins, reloaded"
