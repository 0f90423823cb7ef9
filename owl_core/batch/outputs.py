"""Output writers of `owl-studio label`: COCO, YOLO, Pascal VOC (via supervision's format
converters) and JSON lines (one reference response per image), plus annotated pictures.

Everything is first written under a staging folder inside the job folder, each file fsynced,
then moved into OUT by rename: a reader (or a crash) never sees a half-written file. Nothing
here carries a timestamp, so the same detections give the same bytes.

Image names are paths relative to the input folder (POSIX separators); YOLO / VOC annotation
files mirror that layout (``labels/sub/a.txt``), so images with the same name in different
sub-folders never collide.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from owl_core.engine.scoring import DetectionResult
from owl_core.errors import SettingsError

FORMATS = ("coco", "yolo", "voc", "jsonl")
#: What each format puts in OUT (files or folders), replaced as a whole on every run.
OUTPUT_ENTRIES = {
    "coco": ("annotations.json",),
    "yolo": ("labels", "data.yaml"),
    "voc": ("annotations",),
    "jsonl": ("predictions.jsonl",),
}
SUMMARY_FILE = "summary.json"
_ADDRESS = re.compile(r"<([^<>]*?) at 0x[0-9a-fA-F]+>")


def describe_error(exc: BaseException) -> str:
    """An image's failure as the summary records it: one line, without memory addresses (so
    the summary of a rerun has the same bytes)."""
    return _ADDRESS.sub(r"<\1>", " ".join(str(exc).split()))


def _write(path: Path, data: bytes) -> None:
    """Write and fsync one file (the staging folder is renamed into place afterwards)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _annotation_path(name: str, suffix: str) -> PurePosixPath:
    return PurePosixPath(name).with_suffix(suffix)


def coco_dict(classes: Sequence[str], entries: Sequence[tuple[str, DetectionResult]]) -> dict:
    """COCO detection dataset (1-based ids; file_name = the image's relative path)."""
    from supervision.dataset.formats.coco import (
        classes_to_coco_categories,
        detections_to_coco_annotations,
    )

    images, annotations = [], []
    annotation_id = 1
    for image_id, (name, result) in enumerate(entries, start=1):
        width, height = result.image_size
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        rows, annotation_id = detections_to_coco_annotations(
            detections=result.to_supervision(), image_id=image_id, annotation_id=annotation_id)
        for row, score in zip(rows, result.confidence.tolist(), strict=True):
            row["score"] = round(float(score), 6)
        annotations.extend(rows)
    return {"info": {"description": "labelled by owl-studio label"}, "licenses": [],
            "categories": classes_to_coco_categories(list(classes)), "images": images,
            "annotations": annotations}


def _stage(staging: Path, fmt: str, classes: Sequence[str],
           entries: Sequence[tuple[str, DetectionResult]]) -> None:
    if fmt == "coco":
        # no indent: only then does json use its C encoder (5x faster on 100k boxes)
        data = json.dumps(coco_dict(classes, entries), default=_json_number)
        _write(staging / "annotations.json", data.encode())
    elif fmt == "jsonl":
        lines = [json.dumps({"file": name, **result.to_json()}, default=_json_number)
                 for name, result in entries]
        _write(staging / "predictions.jsonl", "".join(f"{line}\n" for line in lines).encode())
    elif fmt == "yolo":
        import yaml
        from supervision.dataset.formats.yolo import detections_to_yolo_annotations

        for name, result in entries:
            width, height = result.image_size
            lines = detections_to_yolo_annotations(result.to_supervision(), (height, width, 3))
            _write(staging / "labels" / _annotation_path(name, ".txt"),
                   "".join(f"{line}\n" for line in lines).encode())
        (staging / "labels").mkdir(exist_ok=True)
        text = yaml.dump({"nc": len(classes), "names": list(classes)}, sort_keys=False,
                         default_flow_style=None)
        _write(staging / "data.yaml", text.encode())
    elif fmt == "voc":
        from supervision.dataset.formats.pascal_voc import detections_to_pascal_voc

        for name, result in entries:
            width, height = result.image_size
            xml = detections_to_pascal_voc(result.to_supervision(), list(classes),
                                           PurePosixPath(name).name, (height, width, 3))
            _write(staging / "annotations" / _annotation_path(name, ".xml"), xml.encode())
        (staging / "annotations").mkdir(exist_ok=True)
    else:
        raise SettingsError(f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)}.")


def _json_number(value: object) -> object:
    """numpy scalars -> Python numbers for json.dumps."""
    if hasattr(value, "item"):
        return value.item()  # type: ignore[union-attr]
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_outputs(out: Path, work: Path, fmt: str, classes: Sequence[str],
                  entries: Sequence[tuple[str, DetectionResult]],
                  summary: dict) -> list[Path]:
    """Write the dataset in `fmt` and ``summary.json`` into `out`, atomically per entry.

    Args:
        out: output folder.
        work: the job's private folder (on the same file system) for staging.
        fmt: one of `FORMATS`.
        classes: class id -> name.
        entries: (relative image name, detections), in output order.
        summary: JSON-able run summary written as ``summary.json``.

    Returns:
        The paths written in `out`.
    """
    staging = work / f"staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        _stage(staging, fmt, classes, entries)
        _write(staging / SUMMARY_FILE, json.dumps(summary, indent=1, sort_keys=True).encode())
        written = []
        for entry in (*OUTPUT_ENTRIES[fmt], SUMMARY_FILE):
            written.append(replace_entry(staging / entry, out / entry, work))
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_entry(new: Path, target: Path, work: Path) -> Path:
    """Move `new` (file or folder) to `target`, replacing what is there. A file is replaced
    atomically; a folder is swapped by two renames (the old one is moved aside first)."""
    from owl_core.engine.embedding_store import fsync_dir

    target.parent.mkdir(parents=True, exist_ok=True)
    if new.is_dir() and target.exists():
        trash = work / f"trash-{uuid.uuid4().hex[:8]}"
        os.replace(target, trash)
        os.replace(new, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(new, target)
    fsync_dir(target.parent)
    return target


def write_annotated(folder: Path, name: str, rgb, result: DetectionResult) -> Path:
    """Draw `result` on the (H, W, 3) RGB pixels with supervision's annotators and save it as
    ``folder/<name>.jpg`` (atomically)."""
    import cv2
    import supervision as sv

    from owl_core.engine.embedding_store import atomic_write

    scene = rgb[:, :, ::-1].copy()  # supervision draws with cv2: BGR
    detections = result.to_supervision()
    scene = sv.BoxAnnotator().annotate(scene, detections)
    labels = [f"{result.class_names[c]} {s:.2f}"
              for c, s in zip(result.class_id.tolist(), result.confidence.tolist(), strict=True)]
    scene = sv.LabelAnnotator().annotate(scene, detections, labels=labels)
    ok, data = cv2.imencode(".jpg", scene, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise OSError(f"could not encode the annotated picture of {name}")
    path = folder / _annotation_path(name, ".jpg")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data.tobytes())
    return path
