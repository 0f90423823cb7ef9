"""Files in and out: the bundled example projects (read, like every project file, by
`owl_core.project.model`), and detections as COCO / YOLO / Pascal VOC.

Detection exports go through `supervision.DetectionDataset`, zipped with their images.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import supervision as sv

from owl_core.errors import OwlError
from owl_core.images import is_image_name
from owl_core.project.model import read_json

#: Sample photos and example projects: ui/assets/ when installed (pyproject.toml ships
#: assets/ there), assets/ next to ui/ in a checkout.
ASSETS_DIR = next((d for d in (Path(__file__).resolve().parent / "assets",
                               Path(__file__).resolve().parent.parent / "assets") if d.is_dir()),
                  Path(__file__).resolve().parent.parent / "assets")
DETECTION_FORMATS = ("COCO JSON", "YOLO", "Pascal VOC")


def bundled_images(assets_dir: Path = ASSETS_DIR) -> list[Path]:
    """The sample photos shipped in ``assets/images`` (sorted by name)."""
    folder = assets_dir / "images"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_image_name(p))


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
            data = read_json(path)
        except OwlError:
            continue
        name = data.get("name") if isinstance(data, dict) else None
        found[str(name or path.parent.name)] = path
    return found


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
