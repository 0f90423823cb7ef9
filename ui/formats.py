"""Files in and out: bundled example projects, and detections as COCO / YOLO / Pascal VOC.

Project file (``assets/*/project.json``)::

    {"name": str, "classes": [str],
     "training_data": [{"image": path relative to the file, "boxes": [{"x", "y", "w", "h",
                        "cls", "negative"}]}],
     "query_images": [path relative to the file]}

Detection exports go through `supervision.DetectionDataset`, zipped with their images.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import supervision as sv

#: Sample photos and example projects: ui/assets/ when installed (pyproject.toml ships
#: assets/ there), assets/ next to ui/ in a checkout.
ASSETS_DIR = next((d for d in (Path(__file__).resolve().parent / "assets",
                               Path(__file__).resolve().parent.parent / "assets") if d.is_dir()),
                  Path(__file__).resolve().parent.parent / "assets")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DETECTION_FORMATS = ("COCO JSON", "YOLO", "Pascal VOC")


@dataclass(frozen=True)
class ExampleProject:
    """A project file read from disk (image paths made absolute)."""

    name: str
    classes: list[str]
    training_data: list[dict]
    query_images: list[str]
    path: Path


def bundled_images(assets_dir: Path = ASSETS_DIR) -> list[Path]:
    """The sample photos shipped in ``assets/images`` (sorted by name)."""
    folder = assets_dir / "images"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def bundled_projects(assets_dir: Path = ASSETS_DIR) -> dict[str, Path]:
    """Display name -> ``project.json`` path of every bundled example project; the coins
    project (``example_project``) first."""
    found: dict[str, Path] = {}
    if not assets_dir.is_dir():
        return found
    files = sorted(assets_dir.glob("*/project.json"),
                   key=lambda p: (p.parent.name != "example_project", p.parent.name))
    for path in files:
        try:
            name = str(json.loads(path.read_text()).get("name") or path.parent.name)
        except (OSError, ValueError):
            continue
        found[name] = path
    return found


def load_project_file(path: str | Path) -> ExampleProject:
    """Read a project file; raises ValueError naming what is wrong."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable project file ({exc}).") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("training_data", []), list):
        raise ValueError(f"{path}: expected {{'name', 'classes', 'training_data', "
                         "'query_images'}}.")
    base = path.parent

    def resolve(rel: str) -> str:
        image = (base / str(rel)).resolve()
        if not image.is_file():
            raise ValueError(f"{path}: image {rel!r} not found (looked at {image}).")
        return str(image)

    training = [{"image": resolve(entry["image"]), "boxes": list(entry.get("boxes", []))}
                for entry in raw.get("training_data", [])]
    classes = [str(c) for c in raw.get("classes", [])]
    for entry in training:
        for box in entry["boxes"]:
            if box.get("cls") not in classes:
                classes.append(str(box.get("cls")))
    return ExampleProject(name=str(raw.get("name") or path.parent.name), classes=classes,
                          training_data=training,
                          query_images=[resolve(q) for q in raw.get("query_images", [])],
                          path=path)


def export_detections(
    items: Sequence[tuple[str, str, object]],
    class_names: Sequence[str],
    fmt: str,
    out_dir: str | Path,
    zip_name: str,
) -> Path:
    """Write detections as a dataset in `fmt` and zip it.

    Args:
        items: (image path, file name to use in the dataset, DetectionResult) per image.
        class_names: the dataset's classes (class ids of the results are remapped by name).
        fmt: one of `DETECTION_FORMATS`.
        out_dir: scratch folder (emptied first).
        zip_name: file name of the zip (without folders).

    Returns:
        Path of the zip file.
    """
    if fmt not in DETECTION_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {list(DETECTION_FORMATS)}.")
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging = out_dir / "images-in"
    staging.mkdir(parents=True)
    classes = list(class_names)
    images: list[str] = []
    annotations: dict[str, sv.Detections] = {}
    for path, name, result in items:
        target = staging / name
        shutil.copyfile(path, target)
        images.append(str(target))
        det = result.to_supervision()
        names = [result.class_names[i] for i in result.class_id]
        det.class_id = np.asarray([classes.index(n) for n in names], dtype=int)
        annotations[str(target)] = det
    dataset = sv.DetectionDataset(classes=classes, images=images, annotations=annotations)
    root = out_dir / "dataset"
    if fmt == "COCO JSON":
        dataset.as_coco(images_directory_path=str(root / "images"),
                        annotations_path=str(root / "annotations.json"))
    elif fmt == "YOLO":
        dataset.as_yolo(images_directory_path=str(root / "images"),
                        annotations_directory_path=str(root / "labels"),
                        data_yaml_path=str(root / "data.yaml"))
    else:
        dataset.as_pascal_voc(images_directory_path=str(root / "images"),
                              annotations_directory_path=str(root / "annotations"))
    zip_path = out_dir / zip_name
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(root.rglob("*")):
            if file.is_file():
                zf.write(file, file.relative_to(root))
    return zip_path
