"""Detection datasets: COCO, YOLO and Pascal VOC annotation files, written one way for every
caller (the batch job's outputs, a project's dataset export, the studio's download).

Files are built with supervision's per-image converters (``detections_to_coco_annotations``,
``detections_to_yolo_annotations``, ``detections_to_pascal_voc``) from each image's name and
size, so no image is read here, and nothing carries a timestamp: the same detections give the
same bytes (the batch job's resume relies on it).

Layout under the dataset folder (image names are POSIX paths; annotation files mirror them)::

    coco:  annotations.json              file_name = the image name
    yolo:  labels/<name>.txt, data.yaml  class id = index in `classes`
    voc:   annotations/<name>.xml

Class ids: YOLO / VOC = index in `classes`; COCO category_id = index + 1. A YOLO ``data.yaml``
lists ``nc`` and ``names``; when the images are in the dataset folder too, it also has
Ultralytics' ``path`` / ``train`` / ``val`` so that ``yolo train data=data.yaml`` trains from
the folder as it is (Ultralytics finds each label by replacing ``/images/`` with ``/labels/``
in the image's path).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import supervision as sv

from owl_core.errors import SettingsError

#: The dataset formats, by the one set of names every caller uses.
DATASET_FORMATS: tuple[str, ...] = ("coco", "yolo", "voc")
#: What each format writes in the dataset folder (files or folders).
ANNOTATION_ENTRIES: dict[str, tuple[str, ...]] = {
    "coco": ("annotations.json",),
    "yolo": ("labels", "data.yaml"),
    "voc": ("annotations",),
}


@dataclass(frozen=True)
class AnnotatedImage:
    """One image of a dataset.

    Attributes:
        name: POSIX path of the image, relative to the dataset's images (COCO ``file_name``;
            YOLO / VOC annotation files mirror it: ``sub/a.jpg`` -> ``labels/sub/a.txt``).
        size: (width, height) in pixels, as the boxes see the image (upright).
        detections: (N, 4) XYXY pixel boxes with ``class_id`` = index in the classes; a
            ``confidence`` becomes each COCO annotation's ``score``.
    """

    name: str
    size: tuple[int, int]
    detections: sv.Detections


def check_format(fmt: str) -> str:
    if fmt not in DATASET_FORMATS:
        raise SettingsError(f"unknown dataset format {fmt!r}; use one of "
                            f"{', '.join(DATASET_FORMATS)}.")
    return fmt


def _annotation_path(name: str, suffix: str) -> PurePosixPath:
    return PurePosixPath(name).with_suffix(suffix)


def _json_number(value: object) -> object:
    """numpy scalars -> Python numbers for json.dumps."""
    if hasattr(value, "item"):
        return value.item()  # type: ignore[union-attr]
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def coco_dict(classes: Sequence[str], images: Sequence[AnnotatedImage],
              description: str) -> dict:
    """A COCO detection dataset (1-based image / annotation / category ids)."""
    from supervision.dataset.formats.coco import (
        classes_to_coco_categories,
        detections_to_coco_annotations,
    )

    out_images, annotations = [], []
    annotation_id = 1
    for image_id, image in enumerate(images, start=1):
        width, height = image.size
        out_images.append({"id": image_id, "file_name": image.name, "width": width,
                           "height": height})
        rows, annotation_id = detections_to_coco_annotations(
            detections=image.detections, image_id=image_id, annotation_id=annotation_id)
        if image.detections.confidence is not None:
            for row, score in zip(rows, image.detections.confidence.tolist(), strict=True):
                row["score"] = round(float(score), 6)
        annotations.extend(rows)
    return {"info": {"description": description}, "licenses": [],
            "categories": classes_to_coco_categories(list(classes)), "images": out_images,
            "annotations": annotations}


def yolo_data_yaml(classes: Sequence[str], root: str | None = None,
                   images: str | None = None) -> str:
    """The YOLO ``data.yaml``: ``nc`` and ``names``; with `images` (the images folder,
    relative to `root`) also ``path`` (`root`), ``train`` and ``val`` (both the images: the
    export has no split), per Ultralytics' dataset YAML."""
    import yaml

    data: dict = {}
    if images is not None:
        data = {"path": root if root is not None else ".", "train": images, "val": images}
    data.update({"nc": len(classes), "names": list(classes)})
    return yaml.dump(data, sort_keys=False, default_flow_style=None)


def _write_plain(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_annotations(root: Path, fmt: str, classes: Sequence[str],
                      images: Sequence[AnnotatedImage], *, description: str,
                      yolo_root: str | None = None, yolo_images: str | None = None,
                      write: Callable[[Path, bytes], None] = _write_plain) -> list[Path]:
    """Write the annotation files of `fmt` under `root` (see the module docstring).

    Args:
        root: the dataset folder (created as needed).
        fmt: one of `DATASET_FORMATS`.
        classes: class id -> name.
        images: the images, in dataset order.
        description: COCO ``info.description``.
        yolo_root, yolo_images: the ``path`` and the images folder of a YOLO ``data.yaml``
            (see `yolo_data_yaml`); None: the images are elsewhere, ``nc`` / ``names`` only.
        write: writes one file (the batch job's fsyncs it).

    Returns:
        The entries of `ANNOTATION_ENTRIES` for `fmt`, under `root`.
    """
    check_format(fmt)
    if fmt == "coco":
        # no indent: only then does json use its C encoder (5x faster on 100k boxes)
        data = json.dumps(coco_dict(classes, images, description), default=_json_number)
        write(root / "annotations.json", data.encode())
    elif fmt == "yolo":
        from supervision.dataset.formats.yolo import detections_to_yolo_annotations

        for image in images:
            width, height = image.size
            lines = detections_to_yolo_annotations(image.detections, (height, width, 3))
            write(root / "labels" / _annotation_path(image.name, ".txt"),
                  "".join(f"{line}\n" for line in lines).encode())
        (root / "labels").mkdir(parents=True, exist_ok=True)
        write(root / "data.yaml", yolo_data_yaml(classes, yolo_root, yolo_images).encode())
    else:
        from supervision.dataset.formats.pascal_voc import detections_to_pascal_voc

        for image in images:
            width, height = image.size
            xml = detections_to_pascal_voc(image.detections, list(classes),
                                           PurePosixPath(image.name).name, (height, width, 3))
            write(root / "annotations" / _annotation_path(image.name, ".xml"), xml.encode())
        (root / "annotations").mkdir(parents=True, exist_ok=True)
    return [root / entry for entry in ANNOTATION_ENTRIES[fmt]]
