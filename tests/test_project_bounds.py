"""Project files and zips from elsewhere are bounded before they cost anything (issue 19 items
2, 3 and 9): byte and ratio caps per member, only referenced images unpacked and hashed as a
stream, project.json capped and counted before it is parsed, the zip's directory bounded from
its end record, and every hostile form a `ProjectError`. Small caps come from the environment,
never from large files."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from owl_core import limits
from owl_core.errors import ProjectError
from owl_core.project import library as library_module
from owl_core.project import model as model_module
from owl_core.project.library import ProjectLibrary
from owl_core.project.model import PROJECT_FILE, Label, Project, load_project, save_project

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from hostile_zip import patch_headers, project_zip  # noqa: E402  (one home with the bench)


def png(colour=(200, 30, 30), size=(64, 48), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def store(tmp_path) -> ProjectLibrary:
    return ProjectLibrary(tmp_path / "projects")


@pytest.fixture
def project(store) -> Project:
    """A saved project with two images (one with a label)."""
    p = store.create("bounded", classes=["coin"])
    a = p.add_image(png(), "a.png")
    p.add_image(png((0, 90, 0)), "b.png", role="query")
    p.set_labels(a.id, [Label((1, 1, 20, 20), "coin")])
    save_project(p)
    return p


def nothing_left(store: ProjectLibrary, before: list[str]) -> None:
    assert sorted(p.name for p in store.root.iterdir()) == before


# ------------------------------------------------------------------------- item 2: byte caps
def test_images_stream_from_the_zip_and_are_never_read_whole(project, store, tmp_path,
                                                              monkeypatch):
    path = store.export_zip(project.folder.name, tmp_path / "p.zip")
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"read whole: {self}"))
    imported = store.import_zip(path)
    assert imported == project and imported.folder.parent == store.root


@pytest.mark.parametrize("env, method, pattern", [
    # an image member over the per-image cap (as add_image has)
    ({"OWL_MAX_UPLOAD_BYTES": "200"}, zipfile.ZIP_STORED, "max_upload_bytes"),
    # a member that inflates far more than any image does (BMP of one colour: ratio ~ 90)
    ({"OWL_MAX_PROJECT_ZIP_COMPRESSION_RATIO": "20"}, zipfile.ZIP_DEFLATED,
     "max_project_zip_compression_ratio"),
    # project.json itself over its cap
    ({"OWL_MAX_PROJECT_JSON_BYTES": "500"}, zipfile.ZIP_STORED, "max_project_json_bytes"),
])
def test_a_member_over_its_cap_is_refused_before_it_is_unpacked(store, tmp_path, monkeypatch,
                                                                 env, method, pattern):
    p = store.create("bmp", classes=["coin"])
    p.add_image(png(size=(120, 100), fmt="BMP"), "flat.bmp")
    save_project(p)
    path = project_zip(tmp_path / "big.zip", p.folder, method=method)
    before = sorted(x.name for x in store.root.iterdir())
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(limits.ProjectLimitError, match=pattern):
        store.import_zip(path)
    nothing_left(store, before)


def test_only_the_images_project_json_refers_to_are_unpacked(project, store, tmp_path,
                                                              monkeypatch):
    path = project_zip(tmp_path / "p.zip", project.folder,
                  extra={"images/not-referenced.png": png((1, 2, 3)), "notes.txt": b"hello"})
    opened = []
    real_open = zipfile.ZipFile.open

    def spy(self, name, *args, **kwargs):
        opened.append(getattr(name, "filename", name))
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    imported = store.import_zip(path)
    assert imported == project
    assert "images/not-referenced.png" not in opened and "notes.txt" not in opened
    assert sorted(p.name for p in (imported.folder / "images").iterdir()) == \
        sorted(Path(r.file).name for r in project.images)


def test_an_import_that_does_not_fit_the_disk_is_refused(project, store, tmp_path, monkeypatch):
    path = store.export_zip(project.folder.name, tmp_path / "p.zip")
    before = sorted(x.name for x in store.root.iterdir())
    monkeypatch.setattr(library_module.shutil, "disk_usage",
                        lambda _: type("U", (), {"free": 1024})())
    with pytest.raises(ProjectError, match="free some disk space"):
        store.import_zip(path)
    nothing_left(store, before)


def test_the_total_cap_fits_a_small_machine():
    assert limits.Limits().max_project_zip_bytes <= 4 * 1024**3


# ------------------------------------------------------------------------- item 3: project.json
def test_a_project_file_over_its_byte_cap_is_refused_unparsed(project, monkeypatch):
    monkeypatch.setenv("OWL_MAX_PROJECT_JSON_BYTES", "100")
    monkeypatch.setattr(model_module.json, "loads", lambda *a, **k: pytest.fail("parsed"))
    with pytest.raises(limits.ProjectLimitError, match="max_project_json_bytes"):
        load_project(project.folder)


@pytest.mark.parametrize("where", ["folder", "zip"])
def test_a_file_of_many_small_values_is_refused_before_parsing(project, store, tmp_path,
                                                               monkeypatch, where):
    """`{},` x N: 3 bytes of text, ~70 bytes of memory each once parsed."""
    text = b'{"version": 2, "images": [' + b"{}," * 5000 + b"{}]}"
    monkeypatch.setenv("OWL_MAX_PROJECT_JSON_VALUES", "1000")
    monkeypatch.setattr(model_module.json, "loads", lambda *a, **k: pytest.fail("parsed"))
    with pytest.raises(limits.ProjectLimitError, match="max_project_json_values"):
        if where == "folder":
            (project.folder / PROJECT_FILE).write_bytes(text)
            load_project(project.folder)
        else:
            store.import_zip(project_zip(tmp_path / "v.zip", project.folder, meta=text))


def test_box_lists_are_counted_before_any_box_is_built(project, monkeypatch):
    data = json.loads((project.folder / PROJECT_FILE).read_text())
    data["images"][0]["labels"] = [{"xyxy": [1, 1, 5, 5], "cls": "coin"}] * 50
    (project.folder / PROJECT_FILE).write_text(json.dumps(data))
    monkeypatch.setenv("OWL_MAX_BOXES_PER_IMAGE", "10")
    built = []
    real = Label.__post_init__
    monkeypatch.setattr(Label, "__post_init__", lambda self: (built.append(1), real(self)))
    with pytest.raises(limits.ProjectLimitError, match="max_boxes_per_image"):
        load_project(project.folder)
    assert built == []


def test_labels_in_total_are_bounded(project, monkeypatch):
    data = json.loads((project.folder / PROJECT_FILE).read_text())
    for image in data["images"]:
        image["labels"] = [{"xyxy": [1, 1, 5, 5], "cls": "coin"}] * 8
    (project.folder / PROJECT_FILE).write_text(json.dumps(data))
    monkeypatch.setenv("OWL_MAX_PROJECT_LABELS", "10")
    with pytest.raises(limits.ProjectLimitError, match="max_project_labels"):
        load_project(project.folder)


def test_limits_are_read_once_per_load_not_per_box(project, monkeypatch):
    data = json.loads((project.folder / PROJECT_FILE).read_text())
    data["images"][0]["labels"] = [{"xyxy": [1, 1, 5, 5], "cls": "coin"}] * 300
    (project.folder / PROJECT_FILE).write_text(json.dumps(data))
    reads = []
    real = limits.fields
    monkeypatch.setattr(limits, "fields", lambda cls: (reads.append(1), real(cls))[1])
    loaded = load_project(project.folder)
    assert len(loaded.images[0].labels) == 300
    assert len(reads) <= 2


# ------------------------------------------------------------------------- item 9: hostile zips
def test_many_unreferenced_members_are_refused_fast(project, store, tmp_path):
    extra = {f"junk/{i:05d}.txt": b"" for i in range(150)}
    path = project_zip(tmp_path / "junk.zip", project.folder, extra=extra)
    before = sorted(x.name for x in store.root.iterdir())
    with pytest.raises(limits.ProjectLimitError, match="max_project_zip_unreferenced"):
        store.import_zip(path)
    nothing_left(store, before)


def test_the_member_count_is_checked_before_the_directory_is_parsed(project, store, tmp_path,
                                                                    monkeypatch):
    path = project_zip(tmp_path / "many.zip", project.folder,
                  extra={f"x/{i}": b"" for i in range(60)})
    monkeypatch.setenv("OWL_MAX_PROJECT_ZIP_FILES", "50")
    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents",
                        lambda self: pytest.fail("the central directory was parsed"))
    with pytest.raises(limits.ProjectLimitError, match="max_project_zip_files"):
        store.import_zip(path)


def test_a_directory_larger_than_its_member_count_allows_is_refused(project, store, tmp_path,
                                                                    monkeypatch):
    path = project_zip(tmp_path / "p.zip", project.folder)
    data = bytearray(path.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    data[end + 8:end + 10] = (1).to_bytes(2, "little")   # entries on this disk
    data[end + 10:end + 12] = (1).to_bytes(2, "little")  # entries in total: 1, size: as is
    path.write_bytes(bytes(data))
    monkeypatch.setattr(library_module, "_CD_BYTES_PER_MEMBER", 100)
    with pytest.raises(limits.ProjectLimitError, match="bytes per file"):
        store.import_zip(path)


def test_a_member_named_images_is_left_alone(project, store, tmp_path):
    """A file called ``images`` before the images/ folder's members (unpacked, it blocked the
    folder: an uncaught error)."""
    path = project_zip(tmp_path / "odd.zip", project.folder, first={"images": b"not a folder"})
    assert store.import_zip(path) == project


@pytest.mark.parametrize("levels", [
    100,   # nothing refers to it: not unpacked, the import works
    2000,  # a 4,000-character name: refused from the directory's size, clearly
])
def test_deeply_nested_members_are_ignored_or_refused_clearly(project, store, tmp_path,
                                                              levels):
    path = project_zip(tmp_path / "deep.zip", project.folder,
                  extra={"/".join(["d"] * levels) + "/x": b"deep"})
    if levels == 100:
        assert store.import_zip(path) == project
    else:
        with pytest.raises(limits.ProjectLimitError, match="bytes per file"):
            store.import_zip(path)


def test_a_referenced_path_outside_images_is_refused(project, store, tmp_path):
    data = json.loads((project.folder / PROJECT_FILE).read_text())
    deep = "images/" + "/".join(["d"] * 300) + "/x.png"
    data["images"][0]["file"] = deep
    path = project_zip(tmp_path / "deep.zip", project.folder, meta=json.dumps(data).encode(),
                  extra={deep: png()})
    with pytest.raises(ProjectError, match="is not in images/"):
        store.import_zip(path)


@pytest.mark.parametrize("flags, method, pattern", [
    (0x1, None, "encrypted"),                       # the encryption flag
    (0, 99, "compression method 99"),               # AES / unknown method
    (0, zipfile.ZIP_LZMA + 1, "compression method"),  # another unknown one
])
def test_members_zipfile_cannot_read_are_a_clear_project_error(project, store, tmp_path, flags,
                                                               method, pattern):
    path = store.export_zip(project.folder.name, tmp_path / "p.zip")
    patch_headers(path, project.images[0].file, flags=flags, method=method)
    before = sorted(x.name for x in store.root.iterdir())
    with pytest.raises(ProjectError, match=pattern):
        store.import_zip(path)
    nothing_left(store, before)


def test_a_corrupt_image_stream_is_a_project_error(project, store, tmp_path):
    path = store.export_zip(project.folder.name, tmp_path / "p.zip")
    data = bytearray(path.read_bytes())
    at = data.find(b"IDAT")
    data[at + 8:at + 12] = b"\0\0\0\0"  # stored member: its CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(ProjectError, match="damaged"):
        store.import_zip(path)
