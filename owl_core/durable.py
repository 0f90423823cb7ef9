"""Durable file writes for every layer that writes to disk (foundation: imports no owl_core)."""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (no-op where directories can't be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@functools.cache
def file_mode() -> int:
    """Mode of written files: what open() would give (mkstemp alone makes them owner-only).
    Read once, when first needed, from /proc (no umask change) or by the umask round trip."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def synced_temp(path: Path, data: bytes, prefix: str | None = None,
                suffix: str = ".tmp") -> Iterator[Path]:
    """A fsynced temporary file holding `data` beside `path`, with the mode open() would give,
    for the caller to rename over `path` (a rename within one folder is atomic). Removed if it
    is still there when the block ends: a failed or skipped rename leaves no litter. `prefix`
    defaults to ``.<name>.``."""
    fd, name = tempfile.mkstemp(prefix=prefix if prefix is not None else f".{path.name}.",
                                suffix=suffix, dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), file_mode())  # by descriptor: another may remove the name
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, data: bytes, prefix: str | None = None,
                 suffix: str = ".tmp") -> None:
    """Write `data` to a temporary file beside `path`, fsync it, rename it over `path` and
    fsync the folder: readers see the old file or the whole new one, never a part, and the
    new one survives a power cut once this returns."""
    with synced_temp(path, data, prefix, suffix) as tmp:
        os.replace(tmp, path)
    fsync_dir(path.parent)
