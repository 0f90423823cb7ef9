"""The project model (`owl_core.project.model`), its store and zips (`owl_core.project.library`),
and folders opened as projects (`owl_core.project.folder_import`). No model needed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from owl_core import limits
from owl_core.engine.training_data import parse_training_data
from owl_core.errors import ImageError, LimitError, ProjectError
from owl_core.images import resolve_image
from owl_core.params import DetectParams
from owl_core.project.library import ProjectLibrary, project_lock
from owl_core.project.model import (
    BACKUP_FILE,
    FORMAT_VERSION,
    PROJECT_FILE,
    Label,
    Project,
    Prompt,
    load_project,
    project_from_dict,
    read_training_file,
    save_project,
)

REPO = Path(__file__).resolve().parents[1]


def make_png(path: Path, size=(64, 48), colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture
def store(tmp_path) -> ProjectLibrary:
    return ProjectLibrary(tmp_path / "projects")


@pytest.fixture
def filled(store, tmp_path) -> Project:
    """A saved project: two classes, an example with prompts, a query with labels."""
    project = store.create("Coins & cups", classes=["coin", "cup"])
    example = project.add_image(make_png(tmp_path / "in" / "a.png"), role="example")
    query = project.add_image(make_png(tmp_path / "in" / "b.png", colour=(0, 90, 0)),
                              role="query")
    project.set_prompt_boxes(example.id, [Prompt((1, 2, 30, 40), "coin"),
                                          {"xyxy": [5, 5, 20, 20], "cls": "CUP",
                                           "negative": True}])
    project.set_labels(query.id, [Label((0, 0, 10, 10), "cup", "accepted", 0.93)],
                       status="in_review")
    project.set_settings(DetectParams(confidence=0.8, score_mode="calibrated"))
    save_project(project)
    return project


# ---------------------------------------------------------------------------- round trip
def test_round_trip_save_reopen_equal(filled, store):
    again = store.open(filled.folder.name)
    assert again == filled
    assert again.images[0].prompts[1] == Prompt((5.0, 5.0, 20.0, 20.0), "cup", True)  # spelled
    assert again.images[1].labels[0].confidence == 0.93
    assert again.images[1].status == "in_review"
    assert again.settings.score_mode == "calibrated" and again.settings.confidence == 0.8
    data = json.loads((filled.folder / PROJECT_FILE).read_text())
    assert data["version"] == FORMAT_VERSION and data["format"] == "owl-studio-project"
    # the derived old-form keys: still a valid training file for older readers
    assert data["training_data"][0]["boxes"][0] == {"x": 15.5, "y": 21.0, "w": 29.0, "h": 38.0,
                                                   "cls": "coin", "negative": False}
    assert data["query_images"] == [filled.images[1].file]


def test_content_hash_is_the_engines_and_training_data_is_what_set_examples_takes(filled):
    record = filled.images[0]
    path = filled.image_path(record)
    assert record.file.startswith("images/") and path.is_file()
    assert record.content_hash == resolve_image(str(path)).content_hash
    assert record.size == (64, 48)
    training = filled.training_data()
    assert [t["image"] for t in training] == [str(path)]
    parsed = parse_training_data(training)
    assert [b.xyxy for b in parsed[0].boxes] == [(1.0, 2.0, 30.0, 40.0), (5.0, 5.0, 20.0, 20.0)]
    assert parse_training_data(filled) == parsed  # a Project is training data too
    assert filled.query_images() == [filled.image_path(filled.images[1])]


def test_size_is_after_exif_rotation(store, tmp_path):
    img = Image.new("RGB", (60, 20), (10, 20, 30))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    project = store.create("exif")
    record = project.add_image(tmp_path / "rot.jpg")
    assert record.size == (20, 60)
    assert record.file.endswith(".jpg")


def test_same_picture_twice_is_one_file_two_ids_and_remove_keeps_the_shared_file(filled):
    path = filled.image_path(filled.images[0])
    twin = filled.add_image(path.read_bytes(), name="again.png", role="query")
    assert twin.id not in {r.id for r in filled.images[:-1]}
    assert twin.file == filled.images[0].file
    filled.remove_image(twin.id)
    assert path.is_file()                     # still used by the first record
    filled.remove_image(filled.images[0].id)
    assert not path.exists()                  # last user gone: file deleted


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize("change, pattern", [
    # a box reaching outside the 64x48 image
    (lambda p, i: p.set_prompt_boxes(i, [Prompt((0, 0, 70, 10), "coin")]), "outside"),
    # no area
    (lambda p, i: p.set_prompt_boxes(i, [Prompt((5, 5, 5, 9), "coin")]), "no area"),
    # not finite
    (lambda p, i: p.set_prompt_boxes(i, [{"xyxy": [0, 0, float("nan"), 3], "cls": "coin"}]),
     "finite"),
    # a class the project doesn't have
    (lambda p, i: p.set_prompt_boxes(i, [Prompt((0, 0, 5, 5), "dog")]), "no class 'dog'"),
    # negative must be a bool
    (lambda p, i: p.set_prompt_boxes(i, [{"xyxy": [0, 0, 5, 5], "cls": "coin",
                                          "negative": "no"}]), "true or false"),
    # label source
    (lambda p, i: p.set_labels(i, [{"xyxy": [0, 0, 5, 5], "cls": "coin", "source": "ai"}]),
     "source must be one of"),
    # review status
    (lambda p, i: p.set_status(i, "finished"), "status must be one of"),
    # duplicate class regardless of case
    (lambda p, i: p.add_class("COIN"), "already a class"),
    # renaming onto another class
    (lambda p, i: p.rename_class("coin", "Cup"), "already a class"),
    # the negative prefix
    (lambda p, i: p.add_class("NOT coin"), "can't start with 'NOT'"),
    # unknown image
    (lambda p, i: p.set_status("nope", "done"), "no image with id"),
])
def test_invalid_change_raises_and_leaves_the_project_unchanged(filled, change, pattern):
    before = load_project(filled.folder)
    with pytest.raises(ProjectError, match=pattern):
        change(filled, filled.images[0].id)
    assert filled == before


def test_class_name_length_is_bounded(filled, monkeypatch):
    monkeypatch.setenv("OWL_MAX_CLASS_NAME_CHARS", "5")
    with pytest.raises(LimitError, match="max_class_name_chars"):
        filled.add_class("abcdef")
    assert filled.classes == ["coin", "cup"]


def test_rename_carries_boxes_and_labels_remove_drops_them(filled):
    filled.set_labels(filled.images[0].id, [Label((0, 0, 9, 9), "coin")])
    filled.rename_class("coin", "Penny")
    assert filled.classes == ["Penny", "cup"]
    assert [p.cls for p in filled.images[0].prompts] == ["Penny", "cup"]
    assert [b.cls for b in filled.images[0].labels] == ["Penny"]
    filled.remove_class("CUP")
    assert filled.classes == ["Penny"]
    assert [p.cls for p in filled.images[0].prompts] == ["Penny"]
    assert filled.images[1].labels == ()


def test_not_an_image_is_refused(store):
    project = store.create("x")
    with pytest.raises(ImageError, match="not a readable image"):
        project.add_image(b"hello, not a picture", name="a.png")
    assert project.images == [] and not any((project.folder / "images").glob("*"))


# ---------------------------------------------------------------------------- the old form
def test_old_project_form_loads(tmp_path):
    folder = tmp_path / "old"
    make_png(folder / "pics" / "a.png")
    make_png(folder / "pics" / "q.png", colour=(1, 2, 3))
    (folder / PROJECT_FILE).write_text(json.dumps({
        "name": "old one", "classes": ["coin"],
        "training_data": [{"image": "pics/a.png", "boxes": [
            {"x": 20, "y": 20, "w": 10, "h": 8, "cls": "coin", "negative": False},
            {"x": 40, "y": 30, "w": 6, "h": 6, "cls": "bolt", "negative": True}]}],
        "query_images": ["pics/q.png"]}))
    project = load_project(folder)
    assert project.name == "old one" and project.classes == ["coin", "bolt"]
    assert [r.role for r in project.images] == ["example", "query"]
    assert project.images[0].prompts == (Prompt((15, 16, 25, 24), "coin"),
                                         Prompt((37, 27, 43, 33), "bolt", True))
    assert project.training_data()[0]["image"] == str((folder / "pics/a.png").resolve())
    # saving it makes it a versioned project that owns its images
    save_project(project)
    again = load_project(folder)
    assert again == project and all(r.file.startswith("images/") for r in again.images)
    assert json.loads((folder / BACKUP_FILE).read_text())["name"] == "old one"  # old kept


def test_bundled_example_needs_allow_external_and_loads_with_it():
    path = REPO / "assets" / "example_project" / PROJECT_FILE
    with pytest.raises(ProjectError, match="outside the project folder"):
        load_project(path)
    project = load_project(path, allow_external=True)
    assert project.classes == ["coin"] and len(project.images[0].prompts) == 5
    assert project.images[0].prompts[-1].negative


def test_read_training_file_accepts_all_forms(filled, tmp_path):
    data, classes = read_training_file(filled.folder)
    assert classes == ["coin", "cup"] and data == filled.training_data()
    make_png(tmp_path / "t" / "x.png")
    (tmp_path / "t" / "train.json").write_text(json.dumps(
        [{"image": "x.png", "boxes": []}, {"image": "data:image/png;base64,AAAA", "boxes": []}]))
    data, classes = read_training_file(tmp_path / "t" / "train.json")
    assert classes is None
    assert data[0]["image"] == str((tmp_path / "t" / "x.png").resolve())
    assert data[1]["image"].startswith("data:")  # passed on untouched


# ---------------------------------------------------------------------------- paths
def test_relative_paths_follow_the_folder_when_it_moves(filled, tmp_path):
    moved = tmp_path / "elsewhere" / "p"
    moved.parent.mkdir()
    filled.folder.rename(moved)
    project = load_project(moved)
    assert project.image_path(project.images[0]).parent == (moved / "images").resolve()
    assert project.image_path(project.images[0]).is_file()


@pytest.mark.parametrize("file", ["../outside.png", "/etc/passwd", "images/../../x.png"])
def test_paths_escaping_the_folder_are_refused(filled, file):
    path = filled.folder / PROJECT_FILE
    data = json.loads(path.read_text())
    data["images"][0]["file"] = file
    path.write_text(json.dumps(data))
    with pytest.raises(ProjectError, match="outside the project folder"):
        load_project(filled.folder)


@pytest.mark.parametrize("edit, pattern", [
    # a prompt of a class the project doesn't list
    (lambda d: d["images"][0]["prompts"][0].update(cls="dog"), "class 'dog' is not one of"),
    # a box outside the image
    (lambda d: d["images"][0]["prompts"][0].update(xyxy=[0, 0, 640, 10]), "outside"),
    # two images with one id
    (lambda d: d["images"][1].update(id=d["images"][0]["id"]), "used twice"),
    # a size that is not pixels
    (lambda d: d["images"][0].update(width=-3), "size must be"),
])
def test_inconsistent_file_is_refused(filled, edit, pattern):
    path = filled.folder / PROJECT_FILE
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ProjectError, match=pattern):
        load_project(filled.folder)


def test_newer_format_version_is_refused(filled):
    path = filled.folder / PROJECT_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), "version": 99}))
    with pytest.raises(ProjectError, match="newer than this program reads"):
        load_project(filled.folder)


# ---------------------------------------------------------------------------- atomic saves
def test_failed_write_keeps_the_old_file(filled, monkeypatch):
    before = (filled.folder / PROJECT_FILE).read_text()
    filled.add_class("spoon")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        save_project(filled)
    monkeypatch.undo()
    assert (filled.folder / PROJECT_FILE).read_text() == before
    assert "spoon" not in load_project(filled.folder).classes
    assert not list(filled.folder.glob(".project.json.*.tmp"))


KILLED_WRITER = """
import os, sys, time
from owl_core.project.model import load_project, save_project
project = load_project(sys.argv[1])
project.add_class("spoon")
real_replace = os.replace
def stall(src, dst):
    if str(dst).endswith("project.json"):
        print("writing", flush=True)
        time.sleep(600)  # killed here: the new file is written, not yet renamed
    real_replace(src, dst)
os.replace = stall
save_project(project)
"""


def test_writer_killed_mid_save_leaves_a_loadable_project_and_the_next_save_cleans_up(filled):
    before = load_project(filled.folder)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(filled.folder)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline().strip() == "writing"
        leftovers = list(filled.folder.glob(".project.json.*.tmp"))
        assert leftovers and "spoon" in leftovers[0].read_text()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert load_project(filled.folder) == before
    save_project(before)
    assert not list(filled.folder.glob(".project.json.*.tmp"))
    assert load_project(filled.folder) == before


def test_an_edit_made_while_saving_is_not_undone(filled, monkeypatch):
    import owl_core.project.model as module

    real = module._local
    edits = []

    def edit_meanwhile(rel, under=None):  # another thread edits while the writer checks paths
        if not edits:
            edits.append(filled.set_status(filled.images[0].id, "done"))
        return real(rel, under)

    monkeypatch.setattr(module, "_local", edit_meanwhile)
    save_project(filled)
    assert edits and filled.images[0].status == "done"  # kept in memory
    assert load_project(filled.folder).images[0].status == "not_reviewed"  # the next save's


def test_previous_version_is_kept_as_bak(filled):
    first = (filled.folder / PROJECT_FILE).read_text()
    filled.add_class("spoon")
    save_project(filled)
    assert (filled.folder / BACKUP_FILE).read_text() == first
    assert "spoon" in (filled.folder / PROJECT_FILE).read_text()


def test_corrupt_project_file_names_the_backup(filled):
    save_project(filled)
    (filled.folder / PROJECT_FILE).write_text("{broken")
    with pytest.raises(ProjectError, match=r"not valid JSON .*project\.json\.bak"):
        load_project(filled.folder)


def test_a_second_writer_waits_for_the_lock(filled):
    filled.add_class("spoon")
    done = threading.Event()

    def save():
        save_project(filled)
        done.set()

    with project_lock(filled.folder):
        writer = threading.Thread(target=save)
        writer.start()
        assert not done.wait(0.5)  # blocked while the lock is held
        assert "spoon" not in (filled.folder / PROJECT_FILE).read_text()
    writer.join(timeout=60)
    assert done.is_set() and "spoon" in load_project(filled.folder).classes


# ---------------------------------------------------------------------------- the store
def test_store_list_open_duplicate_delete(filled, store):
    other = store.create("Second")
    listed = {info.id: info for info in store.list()}
    assert set(listed) == {filled.folder.name, other.folder.name}
    assert listed[filled.folder.name].name == "Coins & cups"
    assert listed[filled.folder.name].images == 2
    copy = store.duplicate(filled.folder.name)
    assert copy.name == "Coins & cups copy" and copy.folder != filled.folder
    assert copy.images == filled.images and copy.classes == filled.classes
    assert store.open(copy.folder.name) == copy
    store.delete(filled.folder.name)
    assert not filled.folder.exists()
    assert store.open(copy.folder.name).image_path(copy.images[0]).is_file()
    with pytest.raises(ProjectError, match="not a project id"):
        store.open("../etc")


def test_example_project_is_adopted_as_a_new_project(store):
    project = store.import_file(REPO / "assets" / "example_project" / PROJECT_FILE)
    assert project.folder.parent == store.root
    assert all(project.image_path(r).is_relative_to(project.folder) for r in project.images)
    assert load_project(project.folder) == project


# ---------------------------------------------------------------------------- zips
def test_zip_round_trip(filled, store, tmp_path):
    zipped = store.export_zip(filled.folder.name, tmp_path / "p.zip")
    with zipfile.ZipFile(zipped) as zf:
        assert PROJECT_FILE in zf.namelist() and BACKUP_FILE not in zf.namelist()
    imported = store.import_zip(zipped)
    assert imported.folder != filled.folder and imported == filled
    assert store.open(imported.folder.name) == filled


def hostile_zip(path: Path, filled: Project, extra: str, data: bytes = b"x",
                symlink: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(filled.folder / PROJECT_FILE, PROJECT_FILE)
        for r in filled.images:
            zf.write(filled.image_path(r), r.file)
        info = zipfile.ZipInfo(extra)
        if symlink:
            info.external_attr = (0o120777 << 16)
        zf.writestr(info, data)
    return path


@pytest.mark.parametrize("extra, symlink, pattern", [
    ("../evil.txt", False, r"refused member '\.\./evil\.txt'"),        # traversal
    ("/abs/evil.txt", False, "refused member '/abs/evil.txt'"),        # absolute
    ("images/link", True, "symbolic link"),                            # a link
])
def test_hostile_zip_is_refused_and_writes_nothing(filled, store, tmp_path, extra, symlink,
                                                   pattern):
    before = sorted(p.name for p in store.root.iterdir())
    with pytest.raises(ProjectError, match=pattern):
        store.import_zip(hostile_zip(tmp_path / "h.zip", filled, extra, symlink=symlink))
    assert sorted(p.name for p in store.root.iterdir()) == before
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("env, pattern", [
    ({"OWL_MAX_PROJECT_ZIP_BYTES": "1000"}, "max_project_zip_bytes"),
    ({"OWL_MAX_PROJECT_ZIP_FILES": "2"}, "max_project_zip_files"),
])
def test_zip_over_the_limits_is_refused(filled, store, tmp_path, monkeypatch, env, pattern):
    zipped = store.export_zip(filled.folder.name, tmp_path / "p.zip")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(limits.ProjectLimitError, match=pattern):
        store.import_zip(zipped)
    assert len(store.list()) == 1


def test_zip_with_an_edited_image_is_refused(filled, store, tmp_path):
    path = tmp_path / "edited.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(filled.folder / PROJECT_FILE, PROJECT_FILE)
        for r in filled.images:
            zf.write(make_png(tmp_path / "other.png", colour=(9, 9, 9)), r.file)
    with pytest.raises(ProjectError, match="does not match its record"):
        store.import_zip(path)


# ---------------------------------------------------------------------------- folders
def photo_folder(root: Path) -> list[Path]:
    return [make_png(root / "a.png", (64, 48)),
            make_png(root / "sub" / "b.jpg", (32, 40), (0, 0, 200)),
            make_png(root / "sub" / "deeper" / "c.webp", (50, 50), (0, 200, 0))]


def test_folder_without_labels(store, tmp_path):
    photo_folder(tmp_path / "photos")
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    project = store.open_folder(tmp_path / "photos")
    assert [r.name for r in project.images] == ["a.png", "sub/b.jpg", "sub/deeper/c.webp"]
    assert {r.role for r in project.images} == {"query"}
    assert [r.size for r in project.images] == [(64, 48), (32, 40), (50, 50)]
    assert load_project(project.folder) == project


def test_folder_with_coco_labels(store, tmp_path):
    photo_folder(tmp_path / "photos")
    coco = {
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "images": [{"id": 10, "file_name": "a.png", "width": 64, "height": 48},
                   {"id": 11, "file_name": "sub/b.jpg", "width": 32, "height": 40}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 1, "bbox": [4, 6, 20, 10], "area": 200,
             "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 2, "bbox": [30, 20, 10, 10], "area": 100,
             "iscrowd": 0},
            {"id": 3, "image_id": 11, "category_id": 2, "bbox": [0, 0, 8, 8], "area": 64,
             "iscrowd": 0}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    project = store.open_folder(tmp_path / "photos", "pets", coco=tmp_path / "coco.json")
    assert project.name == "pets" and project.classes == ["cat", "dog"]
    by_name = {r.name: r for r in project.images}
    assert [(b.xyxy, b.cls) for b in by_name["a.png"].labels] == [
        ((4.0, 6.0, 24.0, 16.0), "cat"), ((30.0, 20.0, 40.0, 30.0), "dog")]
    assert [(b.xyxy, b.cls) for b in by_name["sub/b.jpg"].labels] == [((0.0, 0.0, 8.0, 8.0),
                                                                        "dog")]
    assert by_name["a.png"].status == "done" and by_name["sub/deeper/c.webp"].status == \
        "not_reviewed"
    assert by_name["a.png"].prompts == ()  # labels are not prompts
    assert load_project(project.folder) == project


def test_folder_with_yolo_labels(store, tmp_path):
    photo_folder(tmp_path / "photos")
    labels = tmp_path / "labels"
    (labels / "sub").mkdir(parents=True)
    (labels / "a.txt").write_text("1 0.5 0.5 0.25 0.5\n")       # 16x24 box centred in 64x48
    (labels / "sub" / "b.txt").write_text("0 0.25 0.25 0.5 0.5\n")
    (tmp_path / "data.yaml").write_text("names:\n  - bolt\n  - nut\nnc: 2\n")
    project = store.open_folder(tmp_path / "photos", yolo=labels,
                                yolo_data_yaml=tmp_path / "data.yaml")
    assert project.classes == ["bolt", "nut"]
    by_name = {r.name: r for r in project.images}
    [label] = by_name["a.png"].labels
    assert label.cls == "nut" and label.xyxy == pytest.approx((24, 12, 40, 36))
    assert label.source == "drawn"
    assert load_project(project.folder) == project


def test_folder_with_broken_labels_leaves_no_project(store, tmp_path):
    photo_folder(tmp_path / "photos")
    (tmp_path / "coco.json").write_text("{}")
    with pytest.raises(ProjectError, match="cannot read the COCO labels"):
        store.open_folder(tmp_path / "photos", coco=tmp_path / "coco.json")
    assert store.list() == [] and not [p for p in store.root.iterdir()
                                       if not p.name.startswith(".")]


# ---------------------------------------------------------------------------- the CLI
def test_project_subcommand_round_trip(tmp_path, capsys):
    from owl_core.cli.main import main

    photo_folder(tmp_path / "photos")
    root = ["project", "--projects-dir", str(tmp_path / "projects")]

    def cli(*argv) -> list[dict]:
        code = main([*root, *map(str, argv)])
        out, err = capsys.readouterr()
        assert code == 0, err
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    [made] = cli("from-folder", tmp_path / "photos", "--name", "shots")
    assert (made["name"], made["images"]) == ("shots", 3)
    [empty] = cli("new", "blank", "--class", "cat", "--class", "dog")
    assert empty["classes"] == ["cat", "dog"]
    assert {p["id"] for p in cli("list")} == {made["id"], empty["id"]}
    cli("export-zip", made["id"], tmp_path / "shots.zip")
    [copy] = cli("import", tmp_path / "shots.zip", "--name", "again")
    assert copy["images"] == 3 and copy["id"] != made["id"]
    [example] = cli("import", REPO / "assets" / "example_project" / PROJECT_FILE)
    assert example["classes"] == ["coin"]
    cli("delete", made["id"])
    assert made["id"] not in {p["id"] for p in cli("list")}
    # bad input: one error line, status 2
    assert main([*root, "delete", "../x"]) == 2
    assert "error: '../x' is not a project id" in capsys.readouterr().err


def test_imported_prompt_files_are_part_of_the_project_saved_zipped_and_duplicated(
        filled, store, tmp_path):
    pt = tmp_path / "someone's prompt.pt"
    pt.write_bytes(b"PK-not-really-a-pt-but-bytes-are-bytes")
    entry = filled.add_imported(pt)
    assert entry.file.startswith("prompts/") and entry.name == "someone's prompt.pt"
    assert filled.add_imported(pt) == entry and len(filled.imported) == 1  # once
    save_project(filled)
    reopened = store.open(filled.folder.name)
    assert reopened.imported == [entry] and reopened.imported_path(entry).read_bytes() == \
        pt.read_bytes()
    copy = store.duplicate(filled.folder.name)
    assert copy.imported == [entry] and copy.imported_path(entry).is_file()
    zipped = store.export_zip(filled.folder.name, tmp_path / "p.zip")
    opened = store.import_zip(zipped)
    assert opened.imported == [entry] and opened.imported_path(entry).is_file()
    path = reopened.imported_path(entry)
    reopened.clear_imported()
    save_project(reopened)  # the file goes with the save that no longer lists it
    assert not path.exists() and store.open(filled.folder.name).imported == []


def test_an_imported_prompt_may_only_name_a_file_under_prompts(filled):
    data = filled.to_dict()
    data["imported"] = [{"name": "x.pt", "file": "../../etc/passwd.pt"}]
    with pytest.raises(ProjectError, match="prompts/<hash>.pt"):
        project_from_dict(data, filled.folder)
