"""The studio saves through the project journal (issue 19 item 7): a tab's save appends what
changed to ``project.journal`` (`save_changes`) instead of rewriting project.json, so its cost
and the kill -9 loss window follow the change, not the project. The "changed elsewhere"
protection knows the journal: this tab's own appends and compactions are no outside change, an
append by another tab or process is; the journal is folded into project.json when a tab
leaves the project.

Driven through `ui.session.TabSessions` (what the handlers use), without a browser."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from owl_core.project import journal
from owl_core.project import model as model_module
from owl_core.project.library import ProjectLibrary
from owl_core.project.model import PROJECT_FILE, Label, load_project, save_project
from ui.session import TabSessions

REPO = Path(__file__).resolve().parents[2]


def png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def library(tmp_path) -> ProjectLibrary:
    return ProjectLibrary(tmp_path / "projects")


@pytest.fixture
def project_id(library) -> str:
    """A saved project of 30 labelled images."""
    p = library.create("journal", classes=["coin", "cup"])
    for i in range(30):
        record = p.add_image(png((i * 8, 10, 200 - i)), f"img{i}.png")
        p.set_labels(record.id, [Label((j, j, j + 9, j + 9), "coin") for j in range(8)])
    save_project(p)
    return p.folder.name


@pytest.fixture
def tabs(library, tmp_path):
    store = TabSessions(lambda: None, tmp_path / "sessions", library, save_delay=0.05,
                        save_max_wait=0.2)
    yield store
    store.close()


def stamp(folder: Path) -> tuple[int, int]:
    st = (folder / PROJECT_FILE).stat()
    return st.st_ino, st.st_mtime_ns


def label(session, index: int, confidence: float) -> str:
    """An edit as a handler makes it: under the session's lock (leaving it schedules the
    save). Returns the image id."""
    with session.lock:
        record = session.core.images[index]
        session.core.set_labels(record.id, [Label((1, 1, 20, 20), "cup", "accepted",
                                                  confidence)], status="done")
    return record.id


def confidence_on_disk(folder: Path, image_id: str) -> float:
    return load_project(folder).image(image_id).labels[0].confidence


def test_a_studio_save_appends_to_the_journal_and_never_rewrites_the_project(
        tabs, project_id, monkeypatch):
    """Goes red if the studio goes back to full rewrites: project.json keeps its inode and
    mtime through many saves, and `save_project` is never called."""
    session = tabs.open_tab("tab-a", project_id)
    folder = session.core.folder
    before = stamp(folder)

    def full_rewrite(*args, **kwargs):
        raise AssertionError("the studio rewrote the whole project")

    monkeypatch.setattr(model_module, "save_project", full_rewrite)
    for k in range(5):
        image_id = label(session, k, 0.5 + k / 100)
        tabs.saver.flush(session)
        assert session.save_error is None
    assert stamp(folder) == before
    lines = [ln for ln in (folder / journal.JOURNAL_FILE).read_bytes().splitlines() if ln]
    assert len(lines) == 5
    assert all(len(ln) < (folder / PROJECT_FILE).stat().st_size / 10 for ln in lines)
    assert confidence_on_disk(folder, image_id) == pytest.approx(0.54)


def test_own_appends_are_no_outside_change_but_another_tabs_are(tabs, project_id):
    a = tabs.open_tab("tab-a", project_id)
    b = tabs.open_tab("tab-b", project_id)  # both have the project open
    folder = a.core.folder
    first = label(a, 0, 0.61)
    tabs.saver.flush(a)
    second = label(a, 1, 0.62)  # the same tab again: its own append is no outside change
    tabs.saver.flush(a)
    assert a.save_error is None
    label(b, 0, 0.99)  # tab b never saw a's change: saving over it would drop it
    tabs.saver.flush(b)
    assert "changed in another tab" in (b.save_error or "")
    assert confidence_on_disk(folder, first) == pytest.approx(0.61)
    assert confidence_on_disk(folder, second) == pytest.approx(0.62)


def test_an_append_by_another_process_is_detected(tabs, project_id, library):
    session = tabs.open_tab("tab-a", project_id)
    folder = session.core.folder
    other = textwrap.dedent("""
        import sys
        sys.path.insert(0, sys.argv[2])
        from owl_core.project.model import Label, load_project, save_changes
        p = load_project(sys.argv[1])
        r = p.images[3]
        p.set_labels(r.id, [Label((2, 2, 30, 30), "coin", "accepted", 0.77)])
        save_changes(p)
    """)
    subprocess.run([sys.executable, "-c", other, str(folder), str(REPO)], check=True,
                   timeout=120)
    assert (folder / journal.JOURNAL_FILE).exists()
    label(session, 5, 0.55)
    tabs.saver.flush(session)
    assert "changed in another tab" in (session.save_error or "")
    assert confidence_on_disk(folder, session.core.images[3].id) == pytest.approx(0.77)


def test_closing_a_tab_folds_the_journal_into_project_json(tabs, project_id):
    session = tabs.open_tab("tab-a", project_id)
    folder = session.core.folder
    image_id = label(session, 2, 0.66)
    tabs.saver.flush(session)
    assert (folder / journal.JOURNAL_FILE).exists()
    core = session.core
    tabs.drop("tab-a")
    compactor = core._journal.compactor
    assert compactor is not None
    compactor.join(60)
    assert not (folder / journal.JOURNAL_FILE).exists()
    assert model_module.read_json(folder / PROJECT_FILE)["images"][2]["labels"][0][
        "confidence"] == pytest.approx(0.66)
    assert confidence_on_disk(folder, image_id) == pytest.approx(0.66)


def test_a_compaction_by_another_tab_is_no_change_and_loses_nothing(tabs, project_id):
    """Tab a leaves the project (its journal is folded into project.json, a new file): tab b,
    which opened the same saved state, keeps saving; its line goes after what is on disk."""
    a = tabs.open_tab("tab-a", project_id)
    folder = a.core.folder
    first = label(a, 0, 0.71)
    tabs.saver.flush(a)
    b = tabs.open_tab("tab-b", project_id)  # opens a's change
    core = a.core
    tabs.drop("tab-a")
    core._journal.compactor.join(60)
    assert not (folder / journal.JOURNAL_FILE).exists()
    second = label(b, 1, 0.72)
    tabs.saver.flush(b)
    assert b.save_error is None
    third = label(b, 2, 0.73)
    tabs.saver.flush(b)
    assert b.save_error is None
    assert confidence_on_disk(folder, first) == pytest.approx(0.71)
    assert confidence_on_disk(folder, second) == pytest.approx(0.72)
    assert confidence_on_disk(folder, third) == pytest.approx(0.73)


def test_kill_9_of_a_studio_saver_keeps_every_saved_edit(tmp_path, project_id, library):
    """A child process edits through a studio tab and has the studio's saver write each edit
    (printing its number once the save returned); kill -9 at some point: every printed edit is
    on disk when the project is opened again."""
    folder = library.folder(project_id)
    child_code = textwrap.dedent("""
        import sys
        from pathlib import Path
        sys.path.insert(0, sys.argv[3])
        from owl_core.project.library import ProjectLibrary
        from owl_core.project.model import Label
        from ui.session import TabSessions
        folder = Path(sys.argv[1])
        tabs = TabSessions(lambda: None, sys.argv[2], ProjectLibrary(folder.parent))
        s = tabs.open_tab("kill", folder.name)
        k = 0
        while True:
            k += 1
            with s.lock:
                r = s.core.images[k % len(s.core.images)]
                s.core.set_labels(r.id, [Label((1, 1, 20, 20), "cup", "accepted", k / 1e6)])
            tabs.saver.flush(s)
            assert s.save_error is None, s.save_error
            print(k, r.id, flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", child_code, str(folder),
                              str(tmp_path / "child-sessions"), str(REPO)],
                             stdout=subprocess.PIPE, text=True)
    saved: dict[str, int] = {}
    for line in child.stdout:
        k, image_id = line.split()
        saved[image_id] = int(k)
        if int(k) >= 60:
            break
    child.kill()
    child.wait(30)
    reopened = load_project(folder)
    for image_id, k in saved.items():
        assert round(reopened.image(image_id).labels[0].confidence * 1e6) >= k
