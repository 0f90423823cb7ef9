"""Open a folder of images as a new project, optionally with existing COCO or YOLO labels.

The labels are read by supervision (`sv.DetectionDataset.from_coco` / `from_yolo`) and become
the images' reviewed labels (source "drawn": a person drew them in another tool); an image with
labels is marked "done". The dataset's classes become the project's classes, in its order.
"""

from __future__ import annotations

import os
from pathlib import Path

from owl_core import geometry, limits
from owl_core.errors import OwlError, ProjectError
from owl_core.images import IMAGE_SUFFIXES, is_image_name
from owl_core.project.model import Label, Project, save_project

#: File suffixes picked up when a folder is opened (case-insensitive).


def find_images(folder: str | os.PathLike, exclude: Path | None = None) -> list[Path]:
    """Image files below ``folder`` (recursive, hidden entries skipped), sorted by relative
    path; at most ``max_project_images``."""
    root = Path(folder)
    if not root.is_dir():
        raise ProjectError(f"{root}: not a folder; pick the folder that holds the images.")
    lim = limits.current()
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (exclude is None or (here / d).resolve() != exclude))
        for name in sorted(filenames):
            if is_image_name(name):
                found.append(here / name)
                lim.check("max_project_images", len(found), f"{root}: images",
                          limits.ProjectLimitError)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def open_image_folder(images_dir: str | os.PathLike, dest: str | os.PathLike,
                      name: str | None = None, *, coco: str | os.PathLike | None = None,
                      yolo: str | os.PathLike | None = None,
                      yolo_data_yaml: str | os.PathLike | None = None,
                      role: str = "query") -> Project:
    """Create a project in ``dest`` (a new or empty folder) from the images below
    ``images_dir``.

    Args:
        images_dir: folder searched recursively for JPEG, PNG, WebP, BMP and TIFF files.
        dest: the new project's folder.
        name: project name (default: the images folder's name).
        coco: a COCO annotations JSON whose ``file_name`` entries are relative to
            ``images_dir``.
        yolo: a YOLO labels folder (one ``.txt`` per image); needs ``yolo_data_yaml`` (the
            ``data.yaml`` with the class names).
        role: the role every image gets ("query": the images to label).

    Returns:
        The saved project.
    """
    images_dir = Path(images_dir).resolve()
    dest = Path(dest).resolve()
    if coco is not None and yolo is not None:
        raise ProjectError("give COCO or YOLO labels, not both.")
    if yolo is not None and yolo_data_yaml is None:
        raise ProjectError("YOLO labels need their data.yaml (the class names); pass "
                           "yolo_data_yaml.")
    if (dest / "project.json").exists():
        raise ProjectError(f"{dest}: already holds a project; pick a new folder.")
    files = find_images(images_dir, exclude=dest)
    if not files:
        raise ProjectError(f"{images_dir}: no images found (looked for "
                           f"{', '.join(IMAGE_SUFFIXES)}).")
    classes: list[str] = []
    annotations: dict[Path, list[tuple[geometry.XYXY, str]]] = {}
    if coco is not None or yolo is not None:
        classes, annotations = _read_labels(images_dir, coco, yolo, yolo_data_yaml)
    dest.mkdir(parents=True, exist_ok=True)
    project = Project(name=name or images_dir.name or "images", classes=classes, folder=dest)
    for path in files:
        record = project.add_image(path, name=path.relative_to(images_dir).as_posix(), role=role)
        boxes = annotations.get(path.resolve())
        if boxes:
            labels = [Label(geometry.clip_xyxy(xyxy, record.size), cls, "drawn")
                      for xyxy, cls in boxes]
            project.set_labels(record.id, [b for b in labels
                                           if geometry.area_xyxy(b.xyxy) > 0], status="done")
    save_project(project)
    return project


def _read_labels(images_dir: Path, coco, yolo, yolo_data_yaml
                 ) -> tuple[list[str], dict[Path, list[tuple[geometry.XYXY, str]]]]:
    import supervision as sv

    try:
        if coco is not None:
            dataset = sv.DetectionDataset.from_coco(images_directory_path=str(images_dir),
                                                    annotations_path=str(coco))
        else:
            dataset = sv.DetectionDataset.from_yolo(images_directory_path=str(images_dir),
                                                    annotations_directory_path=str(yolo),
                                                    data_yaml_path=str(yolo_data_yaml))
    except OwlError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        kind = "COCO" if coco is not None else "YOLO"
        raise ProjectError(f"cannot read the {kind} labels ({type(exc).__name__}: {exc}); check "
                           "the annotation paths and that they match the images folder.") from exc
    classes = [str(c) for c in dataset.classes]
    out: dict[Path, list[tuple[geometry.XYXY, str]]] = {}
    for image_path, detections in dataset.annotations.items():
        boxes = []
        for xyxy, class_id in zip(detections.xyxy, detections.class_id, strict=True):
            if not 0 <= int(class_id) < len(classes):
                raise ProjectError(f"{image_path}: label class id {int(class_id)} is not one "
                                   f"of the {len(classes)} classes.")
            boxes.append((tuple(float(v) for v in xyxy), classes[int(class_id)]))
        out[Path(image_path).resolve()] = boxes
    return classes, out
