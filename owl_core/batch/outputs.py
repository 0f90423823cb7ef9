"""Output writers of `owl-studio label`: COCO, YOLO, Pascal VOC (the one dataset writer,
`owl_core.dataset_formats`) and JSON lines (one reference response per image), plus annotated
pictures.

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

from owl_core.dataset_formats import (
    ANNOTATION_ENTRIES,
    DATASET_FORMATS,
    AnnotatedImage,
    write_annotations,
)
from owl_core.durable import atomic_write, fsync_dir
from owl_core.engine.scoring import DetectionResult
from owl_core.errors import SettingsError

FORMATS = (*DATASET_FORMATS, "jsonl")
#: What each format puts in OUT (files or folders), replaced as a whole on every run.
OUTPUT_ENTRIES = {**ANNOTATION_ENTRIES, "jsonl": ("predictions.jsonl",)}
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


def _stage(staging: Path, fmt: str, classes: Sequence[str],
           entries: Sequence[tuple[str, DetectionResult]]) -> None:
    if fmt == "jsonl":
        lines = [json.dumps({"file": name, **result.to_json()}, default=_json_number)
                 for name, result in entries]
        _write(staging / "predictions.jsonl", "".join(f"{line}\n" for line in lines).encode())
    elif fmt in DATASET_FORMATS:
        images = [AnnotatedImage(name, result.image_size, result.to_supervision())
                  for name, result in entries]
        write_annotations(staging, fmt, classes, images,
                          description="labelled by owl-studio label", write=_write)
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
