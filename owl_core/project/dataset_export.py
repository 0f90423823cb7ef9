"""Export a project's labels as a dataset: COCO, YOLO or Pascal VOC.

Reviewed images (status "done") contribute their reviewed labels; by choice, images not
reviewed yet contribute the current detections the caller passes. Annotation files are
written by the one dataset writer, `owl_core.dataset_formats`, with the project's classes in
project order (stable ids: YOLO/VOC class id = index, COCO category_id = index + 1) and nothing
else: no placeholder class. The YOLO ``data.yaml`` has Ultralytics' ``path`` / ``train`` /
``val`` (the images folder for both: no split), so ``yolo train data=OUT/data.yaml`` trains
from the folder as it is.

Labels are XYXY pixels of the image as shown upright, so images are written upright: a file
whose EXIF orientation rotates or mirrors it is decoded, turned and saved without the tag; any
other file is copied byte for byte. Every tool then reads the pixels the labels describe.

Layout of ``out``::

    coco:  images/, annotations.json
    yolo:  images/, labels/, data.yaml   (path: OUT as an absolute path, unless the caller
                                          names it, e.g. a download's folder name)
    voc:   images/, annotations/

The folder is built next to ``out`` and renamed into place, so a failed export leaves nothing
half-written.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import supervision as sv
from PIL import Image, ImageOps

from owl_core.dataset_formats import DATASET_FORMATS, AnnotatedImage, write_annotations
from owl_core.errors import ImageError, ProjectError
from owl_core.images import exif_orientation
from owl_core.project.evaluate import Prediction, as_project_detections

if TYPE_CHECKING:
    from owl_core.project.model import ImageRecord, Project

DatasetFormat = Literal["coco", "yolo", "voc"]
IMAGES_DIR = "images"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote.

    Attributes:
        out: the dataset folder.
        format: "coco", "yolo" or "voc".
        images: images written.
        boxes: boxes written.
        reviewed: images exported with their reviewed labels.
        from_detections: images not reviewed yet, exported with the given detections.
        turned_upright: images re-encoded because their EXIF orientation turns them.
        skipped: (image name, reason) of images left out.
    """

    out: Path
    format: str
    images: int
    boxes: int
    reviewed: int
    from_detections: int
    turned_upright: int
    skipped: tuple[tuple[str, str], ...]


def write_upright(src: Path, dest: Path, size: tuple[int, int], label: str) -> bool:
    """Write the image at `src` to `dest` as shown upright; True when it had to be turned.

    Args:
        size: the (width, height) the project's labels refer to; a file of another size
            (edited since it was added) is refused rather than exported with wrong boxes.

    Raises:
        ImageError: `src` can't be read. ProjectError: its size doesn't match. OSError:
        `dest` can't be written.
    """
    upright, options = None, {}
    try:
        with Image.open(src) as img:
            fmt, shown = img.format, img.size
            if exif_orientation(img) not in (0, 1):
                upright = ImageOps.exif_transpose(img)  # decodes; drops the orientation tag
                shown = upright.size
                options = {"quality": 95} if fmt in ("JPEG", "MPO", "WEBP") else {}
                if img.info.get("icc_profile"):
                    options["icc_profile"] = img.info["icc_profile"]
    except OSError as exc:
        raise ImageError(f"{label}: cannot read the image ({exc}).") from exc
    if shown != tuple(size):
        raise ProjectError(f"{label}: the file shows {shown[0]}x{shown[1]} pixels but the "
                           f"project knows it as {size[0]}x{size[1]}; add the image again.")
    if upright is None:
        shutil.copyfile(src, dest)
        return False
    upright.save(dest, format="JPEG" if fmt == "MPO" else fmt, **options)
    return True


def _file_name(record: ImageRecord, taken: set[str]) -> str:
    """A safe file name, unique by stem (YOLO and VOC name annotation files by stem): the
    person's file name with the suffix of the stored format."""
    stem = _UNSAFE.sub("_", Path(record.name).stem).strip("._") or "image"
    stem = stem[:100]
    suffix = Path(record.file).suffix.lower() or ".png"
    name, n = stem, 1
    while name.casefold() in taken:
        n += 1
        name = f"{stem}-{n}"
    taken.add(name.casefold())
    return name + suffix


def _labels(project: Project, record: ImageRecord) -> sv.Detections:
    if not record.labels:
        return sv.Detections.empty()
    return sv.Detections(
        xyxy=np.array([b.xyxy for b in record.labels], dtype=np.float32).reshape(-1, 4),
        class_id=np.array([project.class_index(b.cls) for b in record.labels], dtype=int))


def _inside_image(boxes: sv.Detections, size: tuple[int, int]) -> sv.Detections:
    """Boxes clipped to the (width, height) image; boxes left without area dropped."""
    if not len(boxes):
        return boxes
    xyxy = sv.clip_boxes(boxes.xyxy.astype(np.float32), size)
    keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    return sv.Detections(xyxy=xyxy[keep], class_id=np.asarray(boxes.class_id)[keep])


def _prepare_out(out: Path) -> None:
    """Refuse an `out` that holds anything; create its parent."""
    try:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ProjectError(f"{out}: already exists and is not an empty folder; choose a "
                               "new folder for the dataset.")
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProjectError(f"{out}: cannot write the dataset there ({exc.strerror or exc}); "
                           "choose a folder you can write to.") from exc


def export_dataset(
    project: Project,
    out: str | os.PathLike,
    format: DatasetFormat,
    include_unreviewed: bool = False,
    detections: Mapping[str, Prediction] | None = None,
    yolo_path: str | None = None,
) -> ExportSummary:
    """Write the project's labels as a COCO, YOLO or Pascal VOC dataset in `out`.

    Args:
        project: a project on disk (its images are read from its folder).
        out: a new (or empty) folder.
        format: "coco", "yolo" or "voc".
        include_unreviewed: also export images not reviewed ("done") yet, with their
            detections from `detections`; images without an entry there are skipped.
        detections: image id -> detections (`DetectionResult` or `sv.Detections`, XYXY pixels
            of the upright image), e.g. the studio's current preview.
        yolo_path: the ``path`` of a YOLO ``data.yaml`` (default: `out`, absolute); a
            download passes its folder name (Ultralytics reads a relative ``path`` from its
            ``datasets_dir``).

    Returns:
        An `ExportSummary`.

    Raises:
        ProjectError: unknown format, `out` not empty, nothing to export, detections of
            classes the project doesn't have, an image file changed since it was added.
        ImageError: an image file that can't be read.
    """
    if format not in DATASET_FORMATS:
        raise ProjectError(f"unknown dataset format {format!r}; use one of "
                           f"{', '.join(DATASET_FORMATS)}.")
    if not project.classes:
        raise ProjectError(f"project {project.name!r} has no classes; add a class first.")
    out = Path(out)
    _prepare_out(out)
    detections = detections or {}
    chosen: list[tuple[ImageRecord, sv.Detections, bool]] = []
    skipped: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    # reviewed records first, so a picture that is in the project twice exports its labels
    for record in sorted(project.images, key=lambda r: r.status != "done"):
        if record.status == "done":
            boxes, reviewed = _labels(project, record), True
        elif not include_unreviewed:
            continue
        elif record.id in detections:
            boxes = _inside_image(as_project_detections(
                detections[record.id], project.classes, f"detections of image {record.name!r}"),
                record.size)
            reviewed = False
        else:
            skipped.append((record.name, "not reviewed and no detections given"))
            continue
        if record.content_hash in seen:
            skipped.append((record.name, f"same picture as {seen[record.content_hash]!r}"))
            continue
        seen[record.content_hash] = record.name
        chosen.append((record, boxes, reviewed))
    if not chosen:
        hint = ("mark reviewed images done" if include_unreviewed else
                "mark reviewed images done, or include unreviewed images with detections")
        raise ProjectError(f"project {project.name!r}: no image to export; {hint}.")
    order = {r.id: i for i, r in enumerate(project.images)}
    chosen.sort(key=lambda item: order[item[0].id])  # project order in the dataset
    staging: Path | None = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        summary = _write(project, chosen, staging, format, out, tuple(skipped),
                         str(out.resolve()) if yolo_path is None else yolo_path)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(staging, out)
    except BaseException as exc:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise ProjectError(f"{out}: cannot write the dataset ({exc.strerror or exc}); "
                               "choose a folder you can write to, with free space.") from exc
        raise
    return summary


def _write(project: Project, chosen: list[tuple[ImageRecord, sv.Detections, bool]],
           root: Path, format: str, out: Path,
           skipped: tuple[tuple[str, str], ...], yolo_path: str) -> ExportSummary:
    images_dir = root / IMAGES_DIR
    images_dir.mkdir()
    taken: set[str] = set()
    images: list[AnnotatedImage] = []
    turned = 0
    for record, boxes, _ in chosen:
        dest = images_dir / _file_name(record, taken)
        turned += write_upright(project.image_path(record), dest, record.size, record.name)
        images.append(AnnotatedImage(dest.name, record.size, sv.Detections(
            xyxy=boxes.xyxy.astype(np.float32).reshape(-1, 4),
            class_id=np.asarray(boxes.class_id, dtype=int))))
    write_annotations(root, format, project.classes, images,
                      description=f"{project.name}: exported by owl-studio",
                      yolo_root=yolo_path, yolo_images=IMAGES_DIR)
    return ExportSummary(out=out, format=format, images=len(chosen),
                         boxes=sum(len(b) for _, b, _ in chosen),
                         reviewed=sum(r for _, _, r in chosen),
                         from_detections=sum(not r for _, _, r in chosen),
                         turned_upright=turned, skipped=skipped)


# ------------------------------------------------------------------------------- command line
def add_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``export-dataset --project DIR --out DIR --format {coco,yolo,voc}
    [--include-unreviewed ...]`` to a CLI."""
    from owl_core.project.evaluate import add_predictor_arguments

    p = subparsers.add_parser(
        "export-dataset", help="write a project's reviewed labels as COCO / YOLO / Pascal VOC",
        description="Write the reviewed labels of the project's reviewed ('done') images as a "
                    "dataset; with --include-unreviewed, also the other images with their "
                    "detections (the model is loaded only then).")
    add_predictor_arguments(p, "confidence of the detections used for unreviewed images "
                               "(default: the project's setting)")
    p.add_argument("--out", required=True, help="a new (or empty) folder for the dataset")
    p.add_argument("--format", required=True, choices=DATASET_FORMATS)
    p.add_argument("--include-unreviewed", action="store_true",
                   help="also export images not reviewed yet, with their current detections")
    p.set_defaults(handler=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    """The ``export-dataset`` subcommand: prints the output folder and a summary line."""
    from owl_core.project.evaluate import project_params, project_predictor
    from owl_core.project.model import load_project

    project = load_project(args.project)
    _prepare_out(Path(args.out))  # fail before any model is loaded
    detections: dict[str, Prediction] = {}
    if args.include_unreviewed:
        params = project_params(args, project)
        todo = [r for r in project.images if r.status != "done"]
        if todo:
            predictor = project_predictor(args, project, params)
            results = predictor.detect_many([project.image_path(r) for r in todo], params)
            detections = {r.id: res for r, res in zip(todo, results, strict=True)}
    summary = export_dataset(project, args.out, args.format,
                             include_unreviewed=args.include_unreviewed, detections=detections)
    print(summary.out)
    print(f"{summary.images} images ({summary.reviewed} reviewed, {summary.from_detections} "
          f"with detections), {summary.boxes} boxes, {summary.turned_upright} turned upright, "
          f"{len(summary.skipped)} skipped", file=sys.stderr)
    for name, reason in summary.skipped:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    return 0
