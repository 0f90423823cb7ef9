"""What a person did to a project is never lost or changed without them seeing it (issue 16).

The studio edits the project model itself (`owl_core.project.model.Project`), so a class edit
carries every box and label of that class, and what a tab adds (an imported `.pt`) is part of
the project on disk. These tests drive the handlers as the page does and read the files a
reload, a restart or an export reads.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from owl_core.project.model import Label, Prompt, load_project, save_project
from ui.escape import md_text

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "images"
COINS = [((131, 28, 180, 74)), ((60, 90, 110, 140)), ((200, 100, 250, 150))]


def tab(name: str, project: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(session_hash=name, query_params={"project": project} if project
                           else {})


def make_studio(tiny_model, tmp_path):
    from ui import Studio, StudioConfig, build_demo

    config = StudioConfig(random_preset="tiny", work_dir=str(tmp_path / "work"),
                          projects_dir=str(tmp_path / "projects"), cache_bytes=128 * 2**20)
    studio = Studio(tiny_model, config)
    build_demo(tiny_model, config, studio=studio)  # the components the handlers address
    return studio


@pytest.fixture()
def studio(tiny_model, tmp_path):
    studio = make_studio(tiny_model, tmp_path)
    try:
        yield studio
    finally:
        studio.close()


@pytest.fixture()
def said(monkeypatch) -> list[str]:
    """Every message the page showed (gr.Info / gr.Warning / gr.Error raised)."""
    messages: list[str] = []

    def show(message, *args, **kwargs):
        messages.append(str(message))

    monkeypatch.setattr(gr, "Info", show)
    monkeypatch.setattr(gr, "Warning", show)
    return messages


def reviewed_project(studio, tmp_path, classes=("coin",)) -> str:
    """A saved project as `owl-studio project from-folder --coco` makes one: 3 images marked
    done with 2 reviewed labels each (classes taken in turn), and one prompt box per class on
    the first image. Returns its id."""
    core = studio.projects.create("reviewed", classes=list(classes))
    for i, name in enumerate(("coins.png", "chelsea.png", "coffee.png")):
        src = tmp_path / f"img{i}-{name}"
        shutil.copyfile(ASSETS / name, src)
        record = core.add_image(src, src.name, "query")
        labels = [Label(COINS[k], classes[(i + k) % len(classes)], "accepted", 0.9)
                  for k in range(2)]
        core.set_labels(record.id, labels, "done")
    first = core.images[0]
    core.set_role(first.id, "example")
    core.set_prompt_boxes(first.id, [Prompt(COINS[2], c) for c in classes])
    save_project(core)
    return core.folder.name


def saved(studio, pid: str):
    """project.json as it is on disk once every pending save is written."""
    for s in studio.store.live():
        if s.project_id == pid:
            with s.lock:
                studio.store.saver.flush(s)
    return load_project(studio.projects.folder(pid))


def label_classes(project) -> list[str]:
    return sorted(b.cls for r in project.images for b in r.labels)


def exported_boxes(zip_path: str, fmt: str) -> list[str]:
    """The class name of every box in an exported dataset zip."""
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        if fmt == "coco":
            data = json.loads(zf.read(next(n for n in names if n.endswith(".json"))))
            cats = {c["id"]: c["name"] for c in data["categories"]}
            return sorted(cats[a["category_id"]] for a in data["annotations"])
        if fmt == "yolo":
            yaml_text = zf.read(next(n for n in names if n.endswith("data.yaml"))).decode()
            import yaml

            classes = yaml.safe_load(yaml_text)["names"]
            if isinstance(classes, dict):
                classes = [classes[k] for k in sorted(classes)]
            out = []
            for n in names:
                if n.endswith(".txt") and "labels" in n:
                    out += [classes[int(line.split()[0])]
                            for line in zf.read(n).decode().splitlines() if line.strip()]
            return sorted(out)
        import re

        out = []
        for n in names:
            if n.endswith(".xml"):
                out += re.findall(r"<name>([^<]*)</name>", zf.read(n).decode())
        return sorted(out)


def test_renaming_a_class_keeps_its_reviewed_labels_on_disk_and_in_every_export(studio,
                                                                                 tmp_path):
    pid = reviewed_project(studio, tmp_path)
    request = tab("rename", pid)
    studio.on_load(None, request)
    studio.embedding.on_embed(request, progress=lambda *a, **k: None)
    studio.classes.on_rename_class("coin", "penny", request)

    project = saved(studio, pid)
    assert project.classes == ["penny"]
    assert label_classes(project) == ["penny"] * 6  # every reviewed label follows the name
    assert [r.status for r in project.images] == ["done"] * 3
    assert [p.cls for r in project.images for p in r.prompts] == ["penny"]
    for fmt in ("coco", "yolo", "voc"):
        archive = studio.meter.on_export_dataset(fmt, False, request)
        assert exported_boxes(archive, fmt) == ["penny"] * 6, fmt


def test_removing_a_class_says_how_many_boxes_and_labels_go_before_it_removes_them(
        studio, tmp_path, said):
    pid = reviewed_project(studio, tmp_path, classes=("coin", "cat"))
    request = tab("remove", pid)
    studio.on_load(None, request)
    before = saved(studio, pid)

    studio.classes.on_remove_class("coin", request)  # the first click only asks
    assert saved(studio, pid) == before, "removed before the person saw what goes"
    assert any("coin" in m and "1 example box" in m and "3 reviewed label" in m
               for m in said), said

    studio.classes.on_remove_class("coin", request)  # the second click removes
    project = saved(studio, pid)
    assert project.classes == ["cat"]
    assert label_classes(project) == ["cat"] * 3
    assert [p.cls for r in project.images for p in r.prompts] == ["cat"]


def test_a_first_click_on_remove_for_another_class_asks_again(studio, tmp_path, said):
    pid = reviewed_project(studio, tmp_path, classes=("coin", "cat"))
    request = tab("remove2", pid)
    studio.on_load(None, request)
    studio.classes.on_remove_class("coin", request)
    studio.classes.on_remove_class("cat", request)  # another class: asks, removes nothing
    assert saved(studio, pid).classes == ["coin", "cat"]


def _exported_pt(studio, tmp_path) -> Path:
    """A `.pt` made by the studio: one coin box drawn on coins.png."""
    from ui import labels as L

    request = tab("maker")
    studio.on_load(None, request)
    src = tmp_path / "ex-coins.png"
    shutil.copyfile(ASSETS / "coins.png", src)
    studio.images.on_upload_examples([str(src)], request)
    studio.embedding.on_embed(request, progress=lambda *a, **k: None)
    studio.classes.on_add_class("coin", request)
    s = studio.session(request)
    path = str(s.core.image_path(next(r for r in s.core.images if r.role == "example")))
    box = L.box_for_label(COINS[0], "coin", False, ["coin"])
    studio.boxes.on_boxes_edited({"image": {"path": path}, "boxes": [box]},
                                 0.5, 0.3, 300, "reference", False, request)
    studio.project.on_downloads(0.5, 0.3, 300, "reference", False, request)
    full = Path(s.exports[0])
    keep = tmp_path / "coin-prompt.pt"
    shutil.copyfile(full, keep)
    return keep


def _imported(studio, request) -> tuple[tuple[str, ...], str]:
    from ui.handlers.views import imported_text

    s = studio.session(request)
    with s.lock:
        return tuple(s.predictor.imported_exemplars.class_names), imported_text(s)


def test_imported_pt_exemplars_survive_a_reload_and_a_restart(tiny_model, tmp_path):
    studio = make_studio(tiny_model, tmp_path)
    try:
        pt = _exported_pt(studio, tmp_path)
        first = tab("importer")
        studio.on_load(None, first)
        studio.library.on_new(first)
        studio.project.on_import_pt(str(pt), first)
        pid = studio.session(first).project_id
        assert _imported(studio, first)[0] == ("coin",)

        reloaded = tab("reloaded", pid)  # the page reloaded: a new tab on the same project
        studio.on_load(None, reloaded)
        names, text = _imported(studio, reloaded)
        assert names == ("coin",) and md_text("coin-prompt.pt") in text and "coin" in text
        assert "coin" in studio.session(reloaded).core.classes
    finally:
        studio.close()
    restarted = make_studio(tiny_model, tmp_path)  # same projects folder
    try:
        again = tab("after-restart", pid)
        restarted.on_load(None, again)
        names, text = _imported(restarted, again)
        assert names == ("coin",) and md_text("coin-prompt.pt") in text
        # forgetting them is saved too
        restarted.project.on_forget_imported(again)
        restarted.close()
        restarted = make_studio(tiny_model, tmp_path)
        last = tab("after-forget", pid)
        restarted.on_load(None, last)
        assert _imported(restarted, last)[0] == ()
    finally:
        restarted.close()


def test_a_project_file_of_the_previous_version_still_loads(tmp_path):
    """Projects saved before imported prompts were part of the file (version 2) open as they
    were, with no imported prompts."""
    from owl_core.project.model import Project

    folder = tmp_path / "old"
    project = Project(name="old", classes=["coin"], folder=folder)
    folder.mkdir()
    src = tmp_path / "c.png"
    shutil.copyfile(ASSETS / "coins.png", src)
    rec = project.add_image(src, "c.png", "query")
    project.set_labels(rec.id, [Label(COINS[0], "coin")], "done")
    data = project.to_dict()
    data["version"] = 2
    (folder / "project.json").write_text(json.dumps(data))
    loaded = load_project(folder)
    assert loaded.images[0].labels[0].cls == "coin"
    assert list(getattr(loaded, "imported", ())) == []


def test_repeated_examples_get_distinct_names_and_the_list_shows_current_counts(studio,
                                                                                tmp_path):
    request = tab("examples")
    studio.on_load(None, request)
    studio.library.on_load_example(None, request)
    first = studio.session(request).core.name
    out = studio.library.on_load_example(None, request)
    assert studio.session(request).core.name == f"{first} 2"
    assert studio.library.on_load_example(None, request)[studio.c.project_list] is not None
    assert studio.session(request).core.name == f"{first} 3"
    # the open project's entry counts what it holds now, not its last save
    src = tmp_path / "more.png"
    shutil.copyfile(ASSETS / "coffee.png", src)
    studio.images.on_upload_queries([str(src)], request)
    out = studio.embedding.on_embed(request, progress=lambda *a, **k: None)
    s = studio.session(request)
    labels = dict((v, k) for k, v in out[studio.c.project_list]["choices"])
    assert f"· {len(s.core.images)} images ·" in labels[s.project_id]


def test_deleting_the_open_project_opens_the_most_recent_other_one(studio, tmp_path):
    older = reviewed_project(studio, tmp_path)
    newer = reviewed_project(studio, tmp_path)
    request = tab("deleter", older)
    studio.on_load(None, request)
    before = {i.id for i in studio.projects.list()}
    studio.library.on_delete(older, request)
    assert studio.session(request).project_id == newer
    assert {i.id for i in studio.projects.list()} == before - {older}  # no new empty one


def test_a_reload_comes_back_to_the_same_place(studio, tmp_path):
    pid = reviewed_project(studio, tmp_path, classes=("coin", "cat"))
    request = tab("before-reload", pid)
    studio.on_load(None, request)
    s = studio.session(request)
    third = s.queries()[-1]
    studio.classes.on_class_pick("cat", request)
    studio.review.on_pick(third.id, request)
    s.view.preview_page = 1
    studio.on_unload(request)  # the page goes away (reload) ...
    again = tab("after-reload", pid)
    studio.on_load(None, again)  # ... and comes back on the same project
    s2 = studio.session(again)
    assert s2.active_class == "cat" and s2.view.preview_page == 1
    out = studio.review.on_sync(again)
    assert out[studio.c.review_image]["value"] == third.id


def test_a_reload_whose_project_went_meanwhile_opens_the_most_recent_one(studio, tmp_path):
    """Right after "Load example project" the address may still name the empty project the
    tab started with (deleted as unused when the example opened): a reload then opens the
    example, not a new empty project."""
    request = tab("fresh")
    studio.on_load(None, request)
    empty = studio.session(request).project_id
    studio.library.on_load_example(None, request)
    example = studio.session(request).project_id
    assert not studio.projects.exists(empty)
    studio.on_unload(request)
    reloaded = tab("reloaded", empty)
    studio.on_load(None, reloaded)
    assert studio.session(reloaded).project_id == example
    assert {i.id for i in studio.projects.list()} == {example}


def test_a_restarted_server_brings_a_reloaded_tab_back_to_the_place(tiny_model, tmp_path):
    """The place of a tab is on disk after its save (the projects folder's .places.json), so
    the tab reloaded after a restart, even after a kill (no clean close), comes back to it."""
    first = make_studio(tiny_model, tmp_path)
    pid = reviewed_project(first, tmp_path, classes=("coin", "cat"))
    request = tab("before", pid)
    first.on_load(None, request)
    s = first.session(request)
    third = s.queries()[-1]
    first.classes.on_class_pick("cat", request)
    first.review.on_pick(third.id, request)
    s.view.preview_page = 1
    first.store.saver.flush(s)  # what the saver does a moment after each change
    again = make_studio(tiny_model, tmp_path)  # the first one never closed: as after a kill
    try:
        request = tab("after", pid)
        again.on_load(None, request)
        s2 = again.session(request)
        assert s2.active_class == "cat" and s2.view.preview_page == 1
        assert again.review.on_sync(request)[again.c.review_image]["value"] == third.id
    finally:
        again.close()
        first.close()


def test_an_event_of_a_tab_the_server_does_not_know_opens_the_page_s_project(studio,
                                                                             tmp_path):
    """After a restart the open page's next event comes from a tab the server never saw: it
    works on the project in the page's address (its Referer), never on a new empty one."""
    pid = reviewed_project(studio, tmp_path)
    before = {i.id for i in studio.projects.list()}
    request = SimpleNamespace(session_hash="old-page", query_params={},
                              headers={"referer": f"http://127.0.0.1:7860/?project={pid}"})
    studio.review.on_sync(request)
    assert studio.session(request).project_id == pid
    assert {i.id for i in studio.projects.list()} == before  # no new empty project


@pytest.mark.parametrize("old_tab_unloaded", [False, True])
def test_a_reload_during_load_example_opens_the_example(studio, monkeypatch, old_tab_unloaded):
    """The page reloads while "Load example project" is at work: its address still names the
    empty project the tab starts with. The reload waits for the switch and opens the example
    (it opened that empty project, and the example was left in the list)."""
    import threading

    request = tab("clicking")
    studio.on_load(None, request)
    empty = studio.session(request).project_id
    started, go = threading.Event(), threading.Event()
    real_import = studio.projects.import_file

    def slow_import(*args, **kwargs):
        started.set()
        go.wait(30)
        return real_import(*args, **kwargs)

    monkeypatch.setattr(studio.projects, "import_file", slow_import)
    click = threading.Thread(target=studio.library.on_load_example, args=(None, request))
    click.start()
    assert started.wait(30)
    if old_tab_unloaded:  # the old page went first (its unload waits for the click's work)
        unload = threading.Thread(target=studio.on_unload, args=(request,))
        unload.start()
        while studio.store.peek("clicking") is not None:
            unload.join(0.01)
    reloaded = tab("reloaded", empty)
    reload = threading.Thread(target=studio.on_load, args=(None, reloaded))
    reload.start()
    reload.join(2)  # before the fix the reload was done here, on the empty project
    go.set()
    click.join(30)
    reload.join(30)
    if old_tab_unloaded:
        unload.join(30)
    example = next(i.id for i in studio.projects.list() if i.name == "coins")
    assert studio.session(reloaded).project_id == example
    assert not studio.projects.exists(empty)
