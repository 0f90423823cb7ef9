"""What the studio server owns besides sessions: its scratch folder, the one embedding cache
shared by every session, the folders projects and embeddings persist in, and short-lived
export files.

Why each piece exists:

* `WorkDir`: a server killed with ``kill -9`` (or by the OOM killer) cannot delete its scratch
  folder. Each server holds a file lock on its own folder while it runs (the kernel drops the
  lock when the process dies, however it dies), so the next server start deletes every sibling
  folder whose lock it can take.
* `shared_cache`: one byte budget for the whole server instead of one per session (8 sessions x
  3 GiB could exceed the machine's RAM). Embeddings are keyed by image content + model settings,
  so sessions can share them safely; the LRU order serves the sessions in use.
* `ExportSpool`: a file returned to Gradio is copied into Gradio's own cache when the answer is
  sent, so ours is only needed for a short while; the spool deletes old ones on each new export.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

log = logging.getLogger("ui.runtime")

WORK_DIR_PREFIX = "owl-studio-"
_LOCK_NAME = ".owl-studio.lock"
#: Default share of the machine's RAM the embedding cache may use.
DEFAULT_CACHE_FRACTION = 0.25
MIB = 1024 ** 2


def default_projects_dir() -> Path:
    """Where projects are kept unless ``--projects-dir`` says otherwise: the same folder as the
    ``owl-studio project`` commands use (``$OWL_PROJECTS_DIR``, else the user's data folder)."""
    from owl_core.cli.project import default_projects_dir as core_default

    return core_default()


def default_embeddings_dir(projects_dir: str | Path) -> Path:
    """The persistent embedding cache next to the projects folder (``<projects>/../embeddings``),
    so reopening a project after a restart does not run the vision tower again."""
    return Path(projects_dir).resolve().parent / "embeddings"


def physical_memory_bytes() -> int:
    """RAM available to this process: the machine's, or the cgroup limit when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        raw = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if raw.isdigit():
            total = min(total, int(raw))
    except OSError:
        pass
    return int(total)


def default_cache_bytes(fraction: float = DEFAULT_CACHE_FRACTION) -> int:
    """The server's embedding-cache budget when no flag sets it: a share of the RAM."""
    return int(physical_memory_bytes() * fraction)


def shared_cache(device: Any, host_bytes: int, device_bytes: int = 0,
                 disk_dir: str | Path | None = None, disk_bytes: int | None = None):
    """One `EmbeddingCache` for every predictor of the server.

    Args:
        device: the model's compute device.
        host_bytes: RAM budget (on a CPU device, the only memory tier).
        device_bytes: accelerator-memory budget (ignored on a CPU device: the same RAM).
        disk_dir: folder of the persistent tier (None: no disk tier).
        disk_bytes: byte budget of that folder (None: the cache's default).
    """
    import torch

    from owl_core.engine.cache import EmbeddingCache
    from owl_core.engine.embedding import ImageEmbeddings

    device = torch.device(device)
    if device.type == "cpu":
        device_bytes, host_bytes = int(host_bytes), 0
    return EmbeddingCache(device=device, device_bytes=int(device_bytes),
                          host_bytes=int(host_bytes), disk_dir=disk_dir, disk_bytes=disk_bytes,
                          value_type=ImageEmbeddings)


class WorkDir:
    """This server's scratch folder, locked while the server runs.

    Args:
        parent: folder to create it in (default: the system temp folder).
    """

    def __init__(self, parent: str | Path | None = None) -> None:
        self.parent = Path(parent or tempfile.gettempdir())
        self.parent.mkdir(parents=True, exist_ok=True)
        self.removed = clean_stale_work_dirs(self.parent)
        self.path = Path(tempfile.mkdtemp(prefix=WORK_DIR_PREFIX, dir=self.parent))
        self._lock = FileLock(str(self.path / _LOCK_NAME))
        self._lock.acquire(timeout=0)

    def close(self) -> None:
        """Delete the folder (the server is stopping)."""
        try:
            self._lock.release()
        finally:
            shutil.rmtree(self.path, ignore_errors=True)


def clean_stale_work_dirs(parent: str | Path) -> list[Path]:
    """Delete the scratch folders in `parent` left by servers that are gone (their lock is
    free); the folders of running servers are kept. Returns the deleted folders."""
    removed = []
    for folder in sorted(Path(parent).glob(WORK_DIR_PREFIX + "*")):
        lock_path = folder / _LOCK_NAME
        if not folder.is_dir() or folder.is_symlink() or not lock_path.is_file():
            continue  # not ours (or still being created: its lock file comes first)
        lock = FileLock(str(lock_path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue  # a live server's folder
        try:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            lock.release()
    if removed:
        log.info("removed %d stale scratch folder(s) in %s", len(removed), parent)
    return removed


class ExportSpool:
    """Folders for files handed to Gradio as downloads, deleted `ttl` seconds later.

    Args:
        root: where the folders are made.
        ttl: seconds a file is kept (long enough for Gradio to copy it into its cache).
    """

    def __init__(self, root: str | Path, ttl: float = 120.0) -> None:
        self.root = Path(root)
        self.ttl = float(ttl)
        self._lock = threading.Lock()

    def new_folder(self) -> Path:
        """A fresh folder for one export (old ones are swept first)."""
        self.sweep()
        path = self.root / f"{time.time_ns()}-{secrets.token_hex(4)}"
        path.mkdir(parents=True)
        return path

    def sweep(self, now: float | None = None) -> int:
        """Delete the folders older than the TTL; returns how many."""
        now = time.time() if now is None else now
        count = 0
        with self._lock:
            if not self.root.is_dir():
                return 0
            for folder in self.root.iterdir():
                try:
                    age = now - folder.stat().st_mtime
                except OSError:
                    continue
                if age > self.ttl:
                    shutil.rmtree(folder, ignore_errors=True)
                    count += 1
        return count

    def __len__(self) -> int:
        return sum(1 for _ in self.root.iterdir()) if self.root.is_dir() else 0
