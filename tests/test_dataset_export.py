"""Tests for `owl_core.project.dataset_export`: COCO / YOLO / VOC exports of reviewed labels, read
back with supervision; EXIF-rotated images written upright; bad requests refused cleanly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv
import yaml
from PIL import Image

from owl_core.cli.main import main as cli_main
from owl_core.engine.scoring import DetectionResult
from owl_core.errors import ProjectError
from owl_core.project.dataset_export import export_dataset
from owl_core.project.model import Project, save_project

CLASSES = ["red", "blue"]
RED, BLUE, GREY = (220, 30, 30), (30, 30, 220), (200, 200, 200)
# (x0, y0, x1, y1, class): integer pixels, so VOC's integer boxes hold them exactly
LABELS_A = [(10, 10, 34, 34, "red"), (20, 55, 44, 79, "blue"), (60, 12, 84, 36, "red")]
LABELS_C = [(5, 5, 25, 25, "blue")]  # image C is in review: not exported by default


def picture(width: int, height: int, rects=()) -> np.ndarray:
    img = np.empty((height, width, 3), np.uint8)
    img[:] = GREY
    for x0, y0, x1, y1, cls in rects:
        img[y0:y1, x0:x1] = RED if cls == "red" else BLUE
    return img


def label_dicts(rects, source="drawn"):
    return [{"xyxy": [x0, y0, x1, y1], "cls": cls, "source": source}
            for x0, y0, x1, y1, cls in rects]


@pytest.fixture
def project(tmp_path) -> Project:
    """A: done, 3 labels; B: done, no labels (background); C: in review with a label; D: not
    reviewed; A again under another name (same picture, also done)."""
    Image.fromarray(picture(128, 96, LABELS_A)).save(tmp_path / "a.png")
    Image.fromarray(picture(100, 80)).save(tmp_path / "b.png")
    Image.fromarray(picture(64, 48, LABELS_C)).save(tmp_path / "c.png")
    Image.fromarray(picture(64, 64, [(8, 8, 30, 30, "red")])).save(tmp_path / "d.png")
    p = Project(name="export", classes=CLASSES, folder=tmp_path / "project")
    a = p.add_image(tmp_path / "a.png", role="example")
    p.set_prompt_boxes(a.id, [{"xyxy": [10, 10, 34, 34], "cls": "red", "negative": False}])
    p.set_labels(a.id, label_dicts(LABELS_A), status="done")
    b = p.add_image(tmp_path / "b.png", role="query")
    p.set_status(b.id, "done")
    c = p.add_image(tmp_path / "c.png", role="query")
    p.set_labels(c.id, label_dicts(LABELS_C), status="in_review")
    p.add_image(tmp_path / "d.png", role="query")
    again = p.add_image(tmp_path / "a.png", name="a-copy.png", role="query")
    p.set_labels(again.id, label_dicts(LABELS_A[:1]), status="done")
    return p


def ids(project: Project, name: str) -> str:
    return next(r.id for r in project.images if r.name == name)


def xyxy_of(rects) -> np.ndarray:
    return np.array([r[:4] for r in rects], dtype=float)


def class_ids_of(rects) -> np.ndarray:
    return np.array([CLASSES.index(r[4]) for r in rects])


def test_coco_holds_exactly_the_reviewed_boxes(project, tmp_path):
    summary = export_dataset(project, tmp_path / "coco", "coco")
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    # the project's classes, in project order, and nothing else
    assert [(c["id"], c["name"]) for c in coco["categories"]] == [(1, "red"), (2, "blue")]
    # done images only (C is in review, D not reviewed); the second copy of A is skipped
    assert [i["file_name"] for i in coco["images"]] == ["a.png", "b.png"]
    assert summary.skipped == (("a-copy.png", "same picture as 'a.png'"),)
    a_id = coco["images"][0]["id"]
    got = sorted((a["image_id"], a["category_id"], *a["bbox"]) for a in coco["annotations"])
    want = sorted((a_id, CLASSES.index(cls) + 1, x0, y0, x1 - x0, y1 - y0)
                  for x0, y0, x1, y1, cls in LABELS_A)
    assert got == pytest.approx(want)
    assert (summary.images, summary.boxes, summary.reviewed, summary.from_detections) == (
        2, 3, 2, 0)
    assert sorted(p.name for p in (tmp_path / "coco" / "images").iterdir()) == ["a.png",
                                                                                 "b.png"]


def test_coco_reads_back_with_supervision(project, tmp_path):
    export_dataset(project, tmp_path / "coco", "coco")
    ds = sv.DetectionDataset.from_coco(str(tmp_path / "coco" / "images"),
                                       str(tmp_path / "coco" / "annotations.json"))
    assert ds.classes == CLASSES
    by_name = {Path(path).name: det for path, _, det in ds}
    assert set(by_name) == {"a.png", "b.png"} and len(by_name["b.png"]) == 0
    order = np.lexsort(by_name["a.png"].xyxy.T[::-1])
    want = np.lexsort(xyxy_of(LABELS_A).T[::-1])
    np.testing.assert_allclose(by_name["a.png"].xyxy[order], xyxy_of(LABELS_A)[want])
    np.testing.assert_array_equal(by_name["a.png"].class_id[order], class_ids_of(LABELS_A)[want])


@pytest.mark.parametrize("fmt", ["yolo", "voc"])
def test_yolo_and_voc_parse_back_to_the_same_boxes(project, tmp_path, fmt):
    out = tmp_path / fmt
    export_dataset(project, out, fmt)
    if fmt == "yolo":
        ds = sv.DetectionDataset.from_yolo(str(out / "images"), str(out / "labels"),
                                           str(out / "data.yaml"))
    else:
        ds = sv.DetectionDataset.from_pascal_voc(str(out / "images"), str(out / "annotations"))
    by_name = {Path(path).name: det for path, _, det in ds}
    assert set(by_name) == {"a.png", "b.png"} and len(by_name["b.png"]) == 0
    det = by_name["a.png"]
    names = [ds.classes[i] for i in det.class_id]
    got = sorted(zip(map(tuple, det.xyxy.round(2).tolist()), names, strict=True))
    want = sorted(zip(map(tuple, xyxy_of(LABELS_A).tolist()), [r[4] for r in LABELS_A],
                      strict=True))
    assert [n for _, n in got] == [n for _, n in want]
    np.testing.assert_allclose([b for b, _ in got], [b for b, _ in want], atol=0.01)
    if fmt == "yolo":  # ids are the project's class order
        assert ds.classes == CLASSES


def test_unreviewed_images_take_the_given_detections(project, tmp_path):
    # the detector's class order differs from the project's; one box pokes out of the image
    result = DetectionResult(np.array([[8, 8, 30, 30], [50, 50, 70, 70]], np.float32),
                             np.array([0.9, 0.8], np.float32), np.array([1, 0]),
                             ("blue", "red"), (64, 64))
    detections = {ids(project, "d.png"): result}
    summary = export_dataset(project, tmp_path / "yolo", "yolo", include_unreviewed=True,
                             detections=detections)
    assert summary.from_detections == 1 and summary.reviewed == 2
    assert ("c.png", "not reviewed and no detections given") in summary.skipped
    ds = sv.DetectionDataset.from_yolo(str(tmp_path / "yolo" / "images"),
                                       str(tmp_path / "yolo" / "labels"),
                                       str(tmp_path / "yolo" / "data.yaml"))
    det = {Path(path).name: d for path, _, d in ds}["d.png"]
    got = sorted(zip(map(tuple, det.xyxy.round(2).tolist()),
                     [ds.classes[i] for i in det.class_id], strict=True))
    assert got == [((8.0, 8.0, 30.0, 30.0), "red"), ((50.0, 50.0, 64.0, 64.0), "blue")]


def test_detections_are_clipped_to_the_width_and_height_of_a_wide_image(tmp_path):
    # 128 wide, 96 high: a box at x = 100-120 lies inside; one poking out of the bottom edge
    # is cut at y = 96 (clipping with width and height swapped would lose the first)
    Image.fromarray(picture(128, 96)).save(tmp_path / "wide.png")
    p = Project(name="wide", classes=CLASSES, folder=tmp_path / "project")
    record = p.add_image(tmp_path / "wide.png", role="query")
    result = DetectionResult(np.array([[100, 10, 120, 30], [20, 80, 40, 110]], np.float32),
                             np.array([0.9, 0.8], np.float32), np.array([0, 1]),
                             ("red", "blue"), (128, 96))
    export_dataset(p, tmp_path / "coco", "coco", include_unreviewed=True,
                   detections={record.id: result})
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    got = sorted((a["category_id"], *a["bbox"]) for a in coco["annotations"])
    assert got == pytest.approx([(1, 100, 10, 20, 20), (2, 20, 80, 20, 16)])


# EXIF orientation -> how to store an upright picture so a viewer applying the tag shows it
# upright (the inverse of what the viewer does)
STORE_FOR = {
    3: Image.Transpose.ROTATE_180,   # viewer turns 180 degrees
    5: Image.Transpose.TRANSPOSE,    # viewer mirrors along the main diagonal
    6: Image.Transpose.ROTATE_90,    # viewer turns 90 degrees clockwise
    8: Image.Transpose.ROTATE_270,   # viewer turns 90 degrees counter-clockwise
}


def write_rotated_jpeg(path: Path, upright: np.ndarray, orientation: int) -> None:
    stored = Image.fromarray(upright).transpose(STORE_FOR[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, "JPEG", quality=95, exif=exif)


@pytest.mark.parametrize("orientation", sorted(STORE_FOR))
def test_exif_rotated_jpeg_is_exported_upright_with_matching_labels(tmp_path, orientation):
    # upright: 80 wide, 120 tall, a red block at x 50..70, y 10..40
    upright = picture(80, 120, [(50, 10, 70, 40, "red")])
    write_rotated_jpeg(tmp_path / "phone.jpg", upright, orientation)
    with Image.open(tmp_path / "phone.jpg") as raw:
        assert raw.size == ((80, 120) if orientation == 3 else (120, 80))  # as stored
    p = Project(name="exif", classes=CLASSES, folder=tmp_path / "project")
    rec = p.add_image(tmp_path / "phone.jpg", role="query")
    assert rec.size == (80, 120)
    p.set_labels(rec.id, label_dicts([(50, 10, 70, 40, "red")]), status="done")
    summary = export_dataset(p, tmp_path / "coco", "coco")
    assert summary.turned_upright == 1
    written = tmp_path / "coco" / "images" / "phone.jpg"
    with Image.open(written) as img:
        assert img.size == (80, 120)
        assert img.getexif().get(0x0112, 1) == 1  # no rotation left for a viewer to apply
        pixels = np.asarray(img.convert("RGB"), dtype=int)
    # the labelled box holds the red block in the file as written, read without EXIF help
    inside = pixels[12:38, 52:68].mean(axis=(0, 1))
    assert inside[0] > 180 and inside[2] < 80
    outside = pixels[60:110, 5:40].mean(axis=(0, 1))
    assert abs(outside - 200).max() < 20
    # OpenCV (what supervision and most trainers use) reads the same pixels
    assert cv2.imread(str(written)).shape[:2] == (120, 80)
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert (coco["images"][0]["width"], coco["images"][0]["height"]) == (80, 120)
    assert coco["annotations"][0]["bbox"] == pytest.approx([50, 10, 20, 30])


def test_unrotated_images_are_copied_byte_for_byte(project, tmp_path):
    export_dataset(project, tmp_path / "voc", "voc")
    a = next(r for r in project.images if r.name == "a.png")
    assert (tmp_path / "voc" / "images" / "a.png").read_bytes() == \
        project.image_path(a).read_bytes()


def test_file_names_are_made_safe_and_unique(tmp_path):
    p = Project(name="names", classes=CLASSES, folder=tmp_path / "project")
    for i, name in enumerate(["../../evil name.png", "evil_name.png", "évil name.png"]):
        Image.fromarray(picture(32 + i, 32)).save(tmp_path / f"{i}.png")
        rec = p.add_image(tmp_path / f"{i}.png", name=name, role="query")
        p.set_status(rec.id, "done")
    export_dataset(p, tmp_path / "yolo", "yolo")
    names = sorted(f.name for f in (tmp_path / "yolo" / "images").iterdir())
    assert len(names) == 3 and len({Path(n).stem.casefold() for n in names}) == 3
    assert all("/" not in n and not n.startswith(".") for n in names)
    assert len(list((tmp_path / "yolo" / "labels").iterdir())) == 3


@pytest.mark.parametrize("case, match", [
    # an unknown format
    ("format", "unknown dataset format"),
    # a folder that already holds files
    ("not_empty", "not an empty folder"),
    # detections of a class the project doesn't have
    ("foreign_class", "not project classes"),
    # an image file replaced by one of another size after it was added
    ("edited_file", "project knows it as"),
    # an output folder that can't be made (its parent is a file)
    ("unwritable", "cannot write the dataset"),
])
def test_bad_requests_are_refused_and_leave_nothing_behind(project, tmp_path, case, match):
    out = tmp_path / "out"
    kwargs: dict = {"format": "coco"}
    if case == "format":
        kwargs["format"] = "csv"
    elif case == "not_empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "unwritable":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "out"
    elif case == "foreign_class":
        kwargs.update(include_unreviewed=True, detections={ids(project, "d.png"): DetectionResult(
            np.array([[1, 1, 5, 5]], np.float32), np.array([0.9], np.float32), np.array([0]),
            ("horse",), (64, 64))})
    else:
        Image.fromarray(picture(50, 50)).save(project.image_path(ids(project, "b.png")),
                                              format="PNG")
    with pytest.raises(ProjectError, match=match):
        export_dataset(project, out, **kwargs)
    if case == "not_empty":
        assert [f.name for f in out.iterdir()] == ["keep.txt"]
    else:
        assert not out.exists()
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]


def test_nothing_reviewed_is_refused(tmp_path):
    p = Project(name="fresh", classes=CLASSES, folder=tmp_path / "project")
    Image.fromarray(picture(32, 32)).save(tmp_path / "x.png")
    p.add_image(tmp_path / "x.png", role="query")
    with pytest.raises(ProjectError, match="no image to export"):
        export_dataset(p, tmp_path / "out", "coco")
    assert not (tmp_path / "out").exists()


def test_cli_exports_reviewed_labels_without_loading_a_model(project, tmp_path, capsys):
    save_project(project)
    # no --model: reviewed labels need no detector (the default hub model is unreachable here)
    code = cli_main(["export-dataset", "--project", str(project.folder), "--out",
                     str(tmp_path / "voc"), "--format", "voc"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.strip() == str(tmp_path / "voc")
    assert "2 images (2 reviewed, 0 with detections), 3 boxes" in captured.err
    assert sorted(f.name for f in (tmp_path / "voc" / "annotations").iterdir()) == [
        "a.xml", "b.xml"]


def test_cli_include_unreviewed_detects_the_other_images(project, tmp_path, tiny_model_dir,
                                                         capsys):
    save_project(project)
    code = cli_main(["export-dataset", "--project", str(project.folder), "--out",
                     str(tmp_path / "yolo"), "--format", "yolo", "--include-unreviewed",
                     "--model", str(tiny_model_dir), "--device", "cpu", "--dtype", "fp32",
                     "--top-k", "1024", "--confidence", "0.0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # a.png, b.png reviewed; c.png (in review) and d.png take detections at confidence 0
    assert "4 images (2 reviewed, 2 with detections)" in captured.err
    labels = {f.stem: f.read_text().split("\n") for f in (tmp_path / "yolo" / "labels").iterdir()}
    assert set(labels) == {"a", "b", "c", "d"}
    assert len([line for line in labels["a"] if line]) == 3  # the reviewed labels, not detections


def test_cli_refuses_a_non_empty_out_folder_before_loading_a_model(project, tmp_path, capsys):
    save_project(project)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    code = cli_main(["export-dataset", "--project", str(project.folder), "--out",
                     str(tmp_path / "busy"), "--format", "coco", "--include-unreviewed"])
    assert code == 2 and "not an empty folder" in capsys.readouterr().err


def test_a_failed_write_leaves_no_partial_dataset(project, tmp_path, monkeypatch):
    import errno
    import shutil

    def disk_full(src, dst, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", disk_full)
    with pytest.raises(ProjectError, match="No space left"):
        export_dataset(project, tmp_path / "out", "coco")
    assert not (tmp_path / "out").exists()
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]


def _ultralytics_label_path(image: str) -> str:
    """Where Ultralytics looks for an image's labels (its ``img2label_paths``): the last
    ``/images/`` of the path replaced by ``/labels/``, the suffix by ``.txt``."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return sb.join(image.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt"


def test_yolo_data_yaml_lets_ultralytics_train_from_the_folder_as_it_is(project, tmp_path):
    """Ultralytics' detection dataset YAML: ``path`` (the dataset root), ``train`` / ``val``
    (image folders relative to it), ``names`` (and ``nc``); every image it finds there has its
    label file where it looks for it."""
    out = tmp_path / "yolo"
    export_dataset(project, out, "yolo")
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["path"] == str(out.resolve()) and Path(data["path"]).is_absolute()
    assert data["nc"] == len(CLASSES) and data["names"] == CLASSES
    for split in ("train", "val"):
        folder = Path(data["path"]) / data[split]
        images = sorted(str(p) for p in folder.iterdir())
        assert [Path(p).name for p in images] == ["a.png", "b.png"]
        for image in images:
            label = Path(_ultralytics_label_path(image))
            assert label.is_file()
            ids = [int(line.split()[0]) for line in label.read_text().splitlines()]
            assert all(0 <= i < data["nc"] for i in ids)
    a_label = Path(_ultralytics_label_path(str(out / "images" / "a.png"))).read_text()
    assert len(a_label.splitlines()) == len(LABELS_A)


def test_a_download_names_its_yolo_folder_not_a_server_path(project, tmp_path):
    out = tmp_path / "scratch" / "coins-yolo"
    export_dataset(project, out, "yolo", yolo_path="coins-yolo")
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["path"] == "coins-yolo" and str(tmp_path) not in (out / "data.yaml").read_text()
    assert (data["train"], data["val"]) == ("images", "images")


def test_the_batch_jobs_yolo_yaml_keeps_its_bytes():
    """The label job's images stay where they are: its data.yaml has only nc and names, byte
    for byte as before (a resumed job compares its outputs)."""
    from owl_core.dataset_formats import yolo_data_yaml

    assert yolo_data_yaml(["coin", "cup"]) == "nc: 2\nnames: [coin, cup]\n"
