"""The project journal: ``project.journal`` next to ``project.json``, one JSON line per save.

A full save rewrites every image of the project (seconds for tens of thousands of labels), so a
kill -9 loses everything since the last one finished: the loss window grew with the project.
`owl_core.project.model.save_changes` appends instead: one line holding only what changed since
the line before (the top-level keys that changed, the image records that changed or were added,
the ids removed, the image order when it changed), written with one ``pwrite`` and ``fsync``.
Each line has a ``seq``; ``project.json`` names the last one it includes (``journal_seq``), so
lines it already holds are skipped on open, and compaction (a full save in the background)
never loses a line written meanwhile.

Lines carry state, not deltas: applying one twice gives the same project, so a crash between
writing ``project.json`` and trimming the journal is harmless. A torn last line (a crash in the
middle of a write) is ignored, and cut off by the next append. This module knows the file
format only; the `Project` side lives in `owl_core.project.model`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from owl_core.durable import atomic_write, fsync_dir
from owl_core.errors import ProjectError

JOURNAL_FILE = "project.journal"
#: Top-level keys of project.json that are derived from the images (never journaled).
DERIVED_KEYS = ("images", "training_data", "query_images", "journal_seq")


@dataclass(frozen=True)
class JournalRead:
    """The valid lines of a journal: (seq, line) in order, and where the valid part ends."""

    lines: list[tuple[int, dict[str, Any]]]
    valid_bytes: int
    ends: list[tuple[int, int]]  # (seq, byte offset just after its line)


def read_journal(folder: Path, max_bytes: int) -> JournalRead:
    """The journal's valid lines: it stops at the first line that is torn or not a journal
    line (a crash mid-write leaves at most the last one so). Raises `ProjectError` when the
    file is over ``max_bytes`` (the project file's own cap)."""
    path = folder / JOURNAL_FILE
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return JournalRead([], 0, [])
    if size > max_bytes:
        from owl_core.limits import ProjectLimitError

        raise ProjectLimitError(f"{path}: {size:,} bytes is over the {max_bytes:,}-byte limit "
                                "(max_project_json_bytes); raise it with "
                                "OWL_MAX_PROJECT_JSON_BYTES.")
    data = path.read_bytes()
    lines: list[tuple[int, dict[str, Any]]] = []
    ends: list[tuple[int, int]] = []
    offset = 0
    while offset < len(data):
        end = data.find(b"\n", offset)
        if end < 0:
            break  # torn last line
        try:
            line = json.loads(data[offset:end])
        except ValueError:
            break
        seq = line.get("seq") if isinstance(line, dict) else None
        if isinstance(seq, bool) or not isinstance(seq, int) or (lines and seq <= lines[-1][0]):
            break
        lines.append((seq, line))
        offset = end + 1
        ends.append((seq, offset))
    return JournalRead(lines, offset, ends)


def apply_lines(data: dict[str, Any], lines: list[tuple[int, dict[str, Any]]]) -> int:
    """Apply the lines newer than ``data["journal_seq"]`` to parsed project.json content, in
    place. Returns the last seq the result includes."""
    seq = data.get("journal_seq", 0)
    seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else 0
    for line_seq, line in lines:
        if line_seq <= seq:
            continue
        _apply(data, line)
        seq = line_seq
    return seq


def _apply(data: dict[str, Any], line: Mapping[str, Any]) -> None:
    head = line.get("head")
    if isinstance(head, Mapping):
        data.update({k: v for k, v in head.items() if k not in DERIVED_KEYS})
    images = data.get("images")
    if not isinstance(images, list):
        images = []
    removed = line.get("removed")
    removed = set(removed) if isinstance(removed, list) else set()
    records = {d.get("id"): d for d in images
               if isinstance(d, Mapping) and d.get("id") not in removed}
    order = [d.get("id") for d in images if isinstance(d, Mapping) and d.get("id") in records]
    changed = line.get("images")
    for record in changed if isinstance(changed, list) else []:
        if isinstance(record, Mapping) and isinstance(record.get("id"), str):
            if record["id"] not in records:
                order.append(record["id"])
            records[record["id"]] = record
    wanted = line.get("order")
    if isinstance(wanted, list) and sorted(map(str, wanted)) == sorted(map(str, order)):
        order = wanted
    data["images"] = [records[i] for i in order]


def append_line(folder: Path, line: bytes, at: int) -> int:
    """Write one line at byte ``at`` (the end of the valid part: a torn tail is overwritten and
    cut off) and fsync it. Returns the journal's new size."""
    path = folder / JOURNAL_FILE
    new = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, line, at)
        os.ftruncate(fd, at + len(line))
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        fsync_dir(folder)
    return at + len(line)


def keep_tail(folder: Path, start: int, expected_size: int) -> int:
    """After a compaction: the journal keeps only its bytes from ``start`` (the lines written
    while project.json was being written), atomically. Returns its new size."""
    path = folder / JOURNAL_FILE
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            tail = fh.read(max(expected_size - start, 0))
    except FileNotFoundError:
        return 0
    if not tail:
        path.unlink(missing_ok=True)
        fsync_dir(folder)
        return 0
    atomic_write(path, tail)
    return len(tail)


def remove_journal(folder: Path) -> None:
    """A full save holds everything: the journal goes."""
    path = folder / JOURNAL_FILE
    if path.exists():
        path.unlink(missing_ok=True)
        fsync_dir(folder)


def encode_line(line: dict[str, Any]) -> bytes:
    try:
        return (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    except (TypeError, ValueError) as exc:
        raise ProjectError(f"cannot write the journal line ({exc}).") from exc
