"""Saving a change appends it to project.journal instead of rewriting the project (issue 19
item 7): the cost and the kill -9 loss window follow the change, not the project size; the
journal is replayed on open, a torn last line is ignored, and compaction (background or at
close) folds it into project.json without losing a line written meanwhile."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from owl_core.params import DetectParams
from owl_core.project import journal
from owl_core.project import model as model_module
from owl_core.project.library import ProjectLibrary
from owl_core.project.model import (
    PROJECT_FILE,
    Label,
    Prompt,
    compact_project,
    load_project,
    save_changes,
    save_project,
)

REPO = Path(__file__).resolve().parents[1]


def png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def store(tmp_path) -> ProjectLibrary:
    return ProjectLibrary(tmp_path / "projects")


@pytest.fixture
def project(store):
    """A saved project of 40 images, 10 labels each."""
    p = store.create("journal", classes=["coin", "cup"])
    for i in range(40):
        record = p.add_image(png((i * 6, 10, 200 - i)), f"img{i}.png")
        p.set_labels(record.id, [Label((j, j, j + 9, j + 9), "coin") for j in range(10)])
    save_project(p)
    return p


def journal_lines(folder: Path) -> list[dict]:
    path = folder / journal.JOURNAL_FILE
    return [json.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


def test_a_change_is_one_small_line_and_project_json_is_not_rewritten(project):
    file = project.folder / PROJECT_FILE
    before = file.read_bytes()
    target = project.images[7]
    project.set_labels(target.id, [Label((1, 1, 30, 30), "cup", "accepted", 0.9)],
                       status="done")
    save_changes(project)
    assert file.read_bytes() == before
    lines = journal_lines(project.folder)
    assert len(lines) == 1 and [r["id"] for r in lines[0]["images"]] == [target.id]
    size = (project.folder / journal.JOURNAL_FILE).stat().st_size
    assert size < len(before) / 20  # one image of forty, not the project
    assert load_project(project.folder) == project


def test_names_classes_settings_removals_and_order_replay(project):
    project.set_name("renamed")
    project.add_class("spoon")
    project.set_settings(DetectParams(confidence=0.42))
    gone = project.images[3].id
    project.remove_image(gone, delete_file=False)
    save_changes(project)
    added = project.add_image(png((1, 2, 3)), "new.png", role="query")
    project.set_prompt_boxes(added.id, [Prompt((2, 2, 20, 20), "spoon")])
    save_changes(project)
    project.images = [project.images[-1], *project.images[:-1]]  # reordered
    save_changes(project)
    reopened = load_project(project.folder)
    assert reopened == project
    assert [r.id for r in reopened.images] == [r.id for r in project.images]
    assert gone not in {r.id for r in reopened.images}
    assert len(journal_lines(project.folder)) == 3


def test_nothing_changed_writes_nothing(project):
    save_changes(project)
    assert not (project.folder / journal.JOURNAL_FILE).exists()


def test_a_torn_last_line_is_ignored_and_cut_off_by_the_next_save(project):
    first = project.images[0]
    project.set_status(first.id, "done")
    save_changes(project)
    with (project.folder / journal.JOURNAL_FILE).open("ab") as fh:
        fh.write(b'{"seq": 2, "images": [{"id": "x", "fi')  # a kill in mid-write
    reopened = load_project(project.folder)
    assert reopened.image(first.id).status == "done"
    reopened.set_status(first.id, "in_review")
    save_changes(reopened)
    assert [line["seq"] for line in journal_lines(project.folder)] == [1, 2]
    assert load_project(project.folder).image(first.id).status == "in_review"


def test_a_full_save_drops_the_journal(project):
    project.set_status(project.images[0].id, "done")
    save_changes(project)
    save_project(project)
    assert not (project.folder / journal.JOURNAL_FILE).exists()
    assert json.loads((project.folder / PROJECT_FILE).read_text())["journal_seq"] == 1
    assert load_project(project.folder) == project


def test_background_compaction_keeps_every_change(project, monkeypatch):
    monkeypatch.setattr(model_module, "_compact_due", lambda state: True)  # every line
    for i, record in enumerate(project.images[:25]):
        project.set_labels(record.id, [Label((0, 0, 5 + i, 5 + i), "cup")])
        save_changes(project)
    project._journal.compactor.join()
    assert load_project(project.folder) == project  # file + whatever the journal still holds
    compact_project(project)
    assert not (project.folder / journal.JOURNAL_FILE).exists()
    assert load_project(project.folder) == project


def test_a_crash_between_the_new_file_and_the_trimmed_journal_loses_nothing(project,
                                                                             monkeypatch):
    monkeypatch.setattr(model_module, "_compact_due", lambda state: True)

    def crash(*args, **kwargs):
        raise OSError("killed before the journal was trimmed")

    monkeypatch.setattr(journal, "keep_tail", crash)
    for record in project.images[:5]:
        project.set_status(record.id, "done")
        save_changes(project)
        project._journal.compactor.join()
    # project.json already holds some lines, the journal still has them all: applied twice
    assert json.loads((project.folder / PROJECT_FILE).read_text())["journal_seq"] >= 1
    assert load_project(project.folder) == project


def test_training_files_read_what_the_journal_holds(project):
    from owl_core.project.model import read_training_file

    image = project.images[0]
    project.set_prompt_boxes(image.id, [Prompt((2, 2, 30, 30), "cup")])
    save_changes(project)
    training, classes = read_training_file(project.folder)
    assert classes == ["coin", "cup"] and training[0]["boxes"][0]["cls"] == "cup"


def test_the_library_lists_and_zips_what_the_journal_holds(project, store, tmp_path):
    project.set_name("after the journal")
    project.set_status(project.images[0].id, "done")
    save_changes(project)
    assert [p.name for p in store.list()] == ["after the journal"]
    imported = store.import_zip(store.export_zip(project.folder.name, tmp_path / "p.zip"))
    assert imported == project
    with zipfile.ZipFile(tmp_path / "p.zip") as zf:
        assert journal.JOURNAL_FILE not in zf.namelist()


def test_every_acknowledged_change_survives_kill_9(project):
    """A child edits and saves with save_changes as fast as it can, printing each edit once
    save_changes returned; kill -9 at some point; every printed edit must be on disk."""
    code = textwrap.dedent(f"""
        import sys
        from owl_core.project.model import Label, load_project, save_changes
        p = load_project({str(project.folder)!r})
        ids = [r.id for r in p.images]
        k = 0
        while True:
            k += 1
            p.set_labels(ids[k % len(ids)], [Label((0, 0, 10, 10), "coin", "drawn",
                                                   k / 1e6)])
            save_changes(p)
            print(k, flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    acked = 0
    for line in child.stdout:
        acked = int(line)
        if acked >= 60:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    reopened = load_project(project.folder)
    ids = [r.id for r in reopened.images]
    latest = {i: reopened.image(i).labels[0].confidence for i in ids}
    for k in range(max(1, acked - len(ids) + 1), acked + 1):
        assert latest[ids[k % len(ids)]] >= k / 1e6 - 1e-12, (k, acked)
