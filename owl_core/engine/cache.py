"""Embedding caches: byte-bounded LRU tiers on the compute device, in host memory and on disk.

Why this exists: computing OWLv2 image embeddings costs seconds per image, scoring them costs
milliseconds. So embeddings are kept, and the reference implementation's caches (FIFO, bounded by
entry count, GPU tier that could grow to ~10 GB) are what we replace here:

* every memory tier is an LRU bounded by the *bytes* its values report (``nbytes()``);
* the device tier demotes what it evicts to the host tier, a host hit is promoted back;
* when the compute device *is* host memory (CPU) there is a single tier, not two copies;
* the optional disk tier survives restarts and is shared safely between processes: atomic
  writes, a directory lock, ``torch.load(weights_only=True)`` only, and a bad file is a miss.

Values are anything implementing the small :class:`Cacheable` protocol (``ImageEmbeddings`` does).
Keys are lowercase hex digests that must already identify *everything* the value depends on
(image content, model, top-K, ...): the cache cannot tell two settings apart if the key doesn't.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, Self, TypeVar, runtime_checkable

import torch
from filelock import FileLock, Timeout

from owl_core import memory

__all__ = [
    "DEFAULT_DISK_BYTES",
    "CacheStats",
    "Cacheable",
    "EmbeddingCache",
    "check_key",
]

logger = logging.getLogger(__name__)

DEFAULT_DISK_BYTES = 4 * 1024**3
"""Disk budget used when ``disk_dir`` is given without ``disk_bytes``: bounded, never unbounded."""

_KEY_RE = re.compile(r"[0-9a-f]{8,128}")
_FILE_SUFFIX = ".pt"
_TMP_PREFIX = ".tmp-"
_TMP_SUFFIX = ".part"
_LOCK_NAME = ".lock"
_FORMAT = "owl_core.cache/v1"
_STALE_TMP_SECONDS = 3600.0  # a temp file this old was left by a crashed writer
_CPU = torch.device("cpu")
#: Memory freed by evictions after which the allocator is asked to return it to the OS (see
#: `owl_core.memory`); also at least 1/16 of the memory budget, so trims stay rare.
_TRIM_AFTER_BYTES = 16 * 1024**2


@runtime_checkable
class Cacheable(Protocol):
    """What the cache needs from a value. ``ImageEmbeddings`` implements it.

    ``to_state`` must return only what ``torch.load(weights_only=True)`` accepts (tensors, dicts,
    lists, tuples, str, int, float, bool, None) so the disk tier never has to unpickle code.
    """

    def nbytes(self) -> int:
        """Memory the value holds, in bytes (sum of its tensors' ``nbytes``)."""
        ...

    def to(self, device: torch.device) -> Self:
        """The same value with its tensors on ``device`` (may return ``self`` if already there)."""
        ...

    def to_state(self) -> dict[str, Any]:
        """Plain-data form for ``torch.save``; inverse of :meth:`from_state`."""
        ...

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        """Rebuild a value from :meth:`to_state`'s output; raise on anything malformed."""
        ...


V = TypeVar("V", bound=Cacheable)


def check_key(key: object) -> str:
    """Return ``key`` if it is a lowercase hex digest (8-128 chars), else raise ValueError.

    Keys become file names in the disk tier, so anything but hex (``..``, ``/``, NUL, ...) is
    refused for every tier alike, with or without a disk tier.
    """
    if not isinstance(key, str) or _KEY_RE.fullmatch(key) is None:
        raise ValueError(
            f"cache key must be a lowercase hex digest of 8-128 characters, got {key!r}; "
            "build it with hashlib, e.g. hashlib.sha256(data).hexdigest()"
        )
    return key


@dataclass(frozen=True)
class CacheStats:
    """Snapshot of an :class:`EmbeddingCache`'s counters and occupancy.

    With a single memory tier (CPU compute device) that tier is reported as the device tier and
    the host fields stay 0. ``evictions`` counts entries dropped from memory for lack of room; a
    device -> host move is a ``demotion``, not an eviction. ``rejected`` counts values too large
    for every memory tier. ``disk_errors`` counts unreadable disk files (removed, served as misses).
    """

    hits_device: int = 0
    hits_host: int = 0
    hits_disk: int = 0
    misses: int = 0
    evictions: int = 0
    bytes_device: int = 0
    bytes_host: int = 0
    bytes_disk: int = 0
    entries_device: int = 0
    entries_host: int = 0
    entries_disk: int = 0
    demotions: int = 0
    evictions_disk: int = 0
    rejected: int = 0
    disk_errors: int = 0
    budget_device: int = 0
    budget_host: int = 0
    budget_disk: int = 0

    @property
    def hits(self) -> int:
        """Hits in any tier."""
        return self.hits_device + self.hits_host + self.hits_disk

    @property
    def hit_rate(self) -> float:
        """hits / lookups, 0.0 before the first lookup."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class _ByteLRU(Generic[V]):
    """Ordered map bounded by the sum of its values' sizes; least recently used goes first.

    Not thread-safe on its own: :class:`EmbeddingCache` holds its lock around every call.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.nbytes = 0
        self._entries: OrderedDict[str, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> V | None:
        """Value for ``key`` (refreshing its recency) or None."""
        item = self._entries.get(key)
        if item is None:
            return None
        self._entries.move_to_end(key)
        return item[0]

    def pop(self, key: str) -> tuple[V, int] | None:
        """Remove ``key``; return ``(value, size)`` or None."""
        item = self._entries.pop(key, None)
        if item is not None:
            self.nbytes -= item[1]
        return item

    def put(self, key: str, value: V, size: int) -> list[tuple[str, V, int]] | None:
        """Insert as most recent; return the evicted ``(key, value, size)``, oldest first.

        A value larger than the whole budget is not stored (None is returned) and evicts
        nothing: one huge value must not flush every small one.
        """
        self.pop(key)
        if size > self.budget:
            return None
        evicted: list[tuple[str, V, int]] = []
        while self._entries and self.nbytes + size > self.budget:
            old_key, (old_value, old_size) = self._entries.popitem(last=False)
            self.nbytes -= old_size
            evicted.append((old_key, old_value, old_size))
        self._entries[key] = (value, size)
        self.nbytes += size
        return evicted

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0


class _DiskTier:
    """One ``<key>.pt`` file per entry in a directory that several processes may share.

    Writes go to a temp file in the same directory, then ``os.replace`` (atomic): a reader sees
    the old file or the new one, never half of one, so reads take no lock. The directory lock
    (``.lock``, ``filelock.FileLock``) serialises replace + budget eviction + removal of bad files
    across processes; a thread lock in front of it spares threads of one process filelock's polling.
    Recency is the file's mtime, refreshed on every hit (atime is unreliable under relatime).
    """

    def __init__(self, directory: Path, budget: int, lock_timeout: float = 60.0) -> None:
        self.directory = directory
        self.budget = budget
        directory.mkdir(parents=True, exist_ok=True)
        self._file_lock = FileLock(directory / _LOCK_NAME, timeout=lock_timeout,
                                   poll_interval=0.005)
        self._thread_lock = threading.Lock()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock, self._file_lock:
            yield

    def path(self, key: str) -> Path:
        return self.directory / f"{key}{_FILE_SUFFIX}"

    def exists(self, key: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(self.path(key)).st_mode)
        except OSError:
            return False

    def load(self, key: str, decode: Callable[[dict[str, Any]], V]) -> tuple[V | None, bool]:
        """Read and decode ``key``; return ``(value, was_bad)``.

        Missing file: ``(None, False)``. Anything unreadable -- truncated, not ours, a pickle with
        code in it (refused by ``weights_only=True``), a symlink, a state ``decode`` rejects -- is
        logged, removed and reported as ``(None, True)``; it never raises and never runs code.
        """
        path = self.path(key)
        try:
            flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
            fd = os.open(path, flags)
        except FileNotFoundError:
            return None, False
        except OSError as exc:  # ELOOP: a symlink planted under our name; EACCES, ...
            logger.warning("embedding cache: cannot open %s (%s); removing it", path, exc)
            self._discard(path, None)
            return None, True
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            identity = _identity(st)  # what we read, so we never delete a newer replacement
            try:
                if not stat.S_ISREG(st.st_mode):
                    raise ValueError("not a regular file")
                payload = torch.load(f, map_location=_CPU, weights_only=True)
                if not (
                    isinstance(payload, dict)
                    and payload.get("format") == _FORMAT
                    and payload.get("key") == key
                    and isinstance(payload.get("state"), dict)
                ):
                    raise ValueError("not an owl_core cache entry for this key")
                value = decode(payload["state"])
            except Exception as exc:  # noqa: BLE001 -- any bad file is a miss, by design
                logger.warning("embedding cache: unreadable entry %s (%s: %s); removing it",
                               path, type(exc).__name__, exc)
                self._discard(path, identity)
                return None, True
        self._touch(path)
        return value, False

    def save(self, key: str, state: dict[str, Any]) -> int | None:
        """Write ``state`` (already :func:`_compact`-ed) under ``key`` atomically, then evict.

        Returns the number of files evicted, or None when nothing was written (file larger than
        the whole budget, disk full, lock timeout...). Failures are logged, never raised: the
        cache is an optimisation and must not take the caller down.
        """
        payload = {"format": _FORMAT, "key": key, "state": state}
        tmp: str | None = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=self.directory)
            with os.fdopen(fd, "wb") as f:
                torch.save(payload, f)
            # No fsync: a file torn by a power cut fails to load and is then just a miss.
            if os.path.getsize(tmp) > self.budget:
                return None
            final = self.path(key)
            with self._locked():
                os.replace(tmp, final)
                tmp = None
                return self._evict(keep=final)
        except (OSError, RuntimeError, Timeout) as exc:
            logger.warning("embedding cache: could not write %s to %s (%s)",
                           key, self.directory, exc)
            return None
        finally:
            if tmp is not None:
                _unlink_quietly(Path(tmp))

    def usage(self) -> tuple[int, int]:
        """``(bytes, entries)`` of the entry files now in the directory."""
        files = self._scan()
        return sum(size for _, size, _ in files), len(files)

    def clear(self) -> None:
        """Remove every entry and temp file (not the lock file, not foreign files)."""
        with self._locked():
            for _, _, path in self._scan():
                _unlink_quietly(path)
            for path in self._temp_files():
                _unlink_quietly(path)

    def _evict(self, keep: Path) -> int:
        """Delete least recently used files until the directory fits the budget. Lock held."""
        now = time.time()
        for path in self._temp_files():
            try:
                if now - path.stat().st_mtime > _STALE_TMP_SECONDS:
                    _unlink_quietly(path)
            except OSError:
                pass
        files = sorted(self._scan())
        total = sum(size for _, size, _ in files)
        evicted = 0
        for _, size, path in files:
            if total <= self.budget:
                break
            if path == keep:
                continue
            _unlink_quietly(path)
            total -= size
            evicted += 1
        return evicted

    def _scan(self) -> list[tuple[int, int, Path]]:
        """``(mtime_ns, size, path)`` of regular ``<hexkey>.pt`` files; others are not ours."""
        found: list[tuple[int, int, Path]] = []
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return found
        for entry in entries:
            name = entry.name
            if not name.endswith(_FILE_SUFFIX) or not _KEY_RE.fullmatch(name[: -len(_FILE_SUFFIX)]):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:  # removed by another process meanwhile
                continue
            found.append((st.st_mtime_ns, st.st_size, Path(entry.path)))
        return found

    def _temp_files(self) -> list[Path]:
        try:
            return [p for p in self.directory.iterdir()
                    if p.name.startswith(_TMP_PREFIX) and p.name.endswith(_TMP_SUFFIX)]
        except OSError:
            return []

    def _touch(self, path: Path) -> None:
        try:
            os.utime(path)
        except OSError:
            pass  # evicted or replaced meanwhile: recency of a gone file doesn't matter

    def _discard(self, path: Path, identity: tuple[int, int, int, int] | None) -> None:
        """Remove a bad file, unless another process has replaced it with a new one meanwhile."""
        try:
            with self._locked():
                if identity is not None:
                    try:
                        if _identity(os.lstat(path)) != identity:
                            return
                    except FileNotFoundError:
                        return
                _unlink_quietly(path)
        except Timeout:
            logger.warning("embedding cache: lock timeout; left bad file %s in place", path)


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _compact(obj: Any) -> Any:
    """Check a state holds only plain data; copy tensors that are views of larger storage.

    ``torch.save`` writes a view's whole storage (a top-300 slice of a 3600-row tensor would cost
    12x its size on disk). Anything ``torch.load(weights_only=True)`` would refuse raises
    TypeError here, at ``put``, instead of becoming an unreadable file found later.
    """
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.device != _CPU:
            t = t.cpu()
        if t.untyped_storage().nbytes() != t.nbytes or not t.is_contiguous():
            t = t.clone(memory_format=torch.contiguous_format)
        return t
    if isinstance(obj, dict) and all(isinstance(k, str) for k in obj):
        return {k: _compact(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_compact(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_compact(v) for v in obj)
    raise TypeError(
        f"to_state() may hold only tensors, str-keyed dicts, lists, tuples, str, int, float, bool "
        f"and None (what torch.load(weights_only=True) reads back), got {type(obj).__name__}"
    )


def _value_size(value: Cacheable) -> int:
    size = value.nbytes()
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"{type(value).__name__}.nbytes() must return an int >= 0, got {size!r}")
    return size


class EmbeddingCache(Generic[V]):
    """Tiered LRU cache of :class:`Cacheable` values: compute device, host memory, disk.

    Memory tiers are exclusive (an entry lives in one of them): a device-tier eviction demotes the
    entry to the host tier, a host hit promotes it back; host-tier evictions leave memory (the disk
    tier, written on every ``put``, still has them). ``get`` always returns the value on ``device``.

    Thread-safe: one re-entrant lock guards the memory tiers and counters; disk I/O happens outside
    it (the disk tier has its own process-safe lock), so a slow disk doesn't block memory hits.

    Args:
        device: compute device values are served on.
        device_bytes: byte budget of the device tier (0 disables it).
        host_bytes: byte budget of the host-memory tier (0 disables it).
        disk_dir: directory of the persistent tier; None for no disk tier.
        disk_bytes: byte budget of the disk tier (default :data:`DEFAULT_DISK_BYTES`).
        value_type: class whose ``from_state`` rebuilds disk entries; required with ``disk_dir``.
        separate_tiers: keep distinct device and host tiers. Default: ``device.type != "cpu"``.
            When False there is one tier of ``device_bytes + host_bytes`` (on a CPU device both
            are the same RAM, so two tiers would hold two copies); stats report it as the device
            tier.
            True on CPU is allowed (it exercises the two-tier logic without an accelerator).
    """

    def __init__(
        self,
        *,
        device: torch.device | str,
        device_bytes: int,
        host_bytes: int,
        disk_dir: str | os.PathLike[str] | None = None,
        disk_bytes: int | None = None,
        value_type: type[V] | None = None,
        separate_tiers: bool | None = None,
    ) -> None:
        self.device = torch.device(device)
        for name, budget in (("device_bytes", device_bytes), ("host_bytes", host_bytes),
                             ("disk_bytes", disk_bytes)):
            if budget is not None and (not isinstance(budget, int) or budget < 0):
                raise ValueError(f"{name} must be an int >= 0 (bytes), got {budget!r}")
        if separate_tiers is None:
            separate_tiers = self.device.type != "cpu"
        if not separate_tiers and self.device.type != "cpu":
            raise ValueError(
                f"separate_tiers=False needs a CPU device (one RAM tier), got {self.device}; "
                "leave separate_tiers=None to keep host memory separate from device memory"
            )
        if disk_dir is not None and value_type is None:
            raise ValueError(
                "disk_dir needs value_type (the class whose from_state() rebuilds entries)")
        self.separate_tiers = separate_tiers
        self.value_type = value_type
        self._lock = threading.RLock()
        if separate_tiers:
            self._device_tier: _ByteLRU[V] = _ByteLRU(device_bytes)
            self._host_tier: _ByteLRU[V] | None = _ByteLRU(host_bytes)
        else:
            self._device_tier = _ByteLRU(device_bytes + host_bytes)
            self._host_tier = None
        self._disk: _DiskTier | None = None
        if disk_dir is not None:
            budget = DEFAULT_DISK_BYTES if disk_bytes is None else disk_bytes
            self._disk = _DiskTier(Path(disk_dir), budget)
        self._counts = _Counters()
        self._freed_bytes = 0  # evicted from memory since the last trim
        self._trim_after = max(_TRIM_AFTER_BYTES, (device_bytes + host_bytes) // 16)

    # ----------------------------------------------------------------------------- public API

    def get(self, key: str) -> V | None:
        """Value for ``key`` on ``device``, or None.

        Looks in the device tier, then host (a hit is promoted to device), then disk (loaded with
        ``weights_only=True`` and promoted). A bad disk file counts as a miss and is removed.
        """
        check_key(key)
        with self._lock:
            value = self._get_memory(key, count=True)
            if value is not None:
                return value
            if self._disk is None:
                self._counts.misses += 1
                return None
        loaded, bad = self._disk.load(key, self._decode)
        if loaded is not None:
            loaded = loaded.to(self.device)
        with self._lock:
            self._counts.disk_errors += bad
            if loaded is None:
                self._counts.misses += 1
                return None
            self._counts.hits_disk += 1
            current = self._get_memory(key, count=False)  # another thread may have put it meanwhile
            if current is not None:
                return current
            self._insert(key, loaded, _value_size(loaded))
            return loaded

    def put(self, key: str, value: V) -> None:
        """Store ``value`` under ``key`` (replacing any previous value) in memory and on disk.

        The value is moved to ``device``; least recently used entries make room (device evictions
        demote to host). A value larger than a tier's whole budget skips that tier.
        """
        check_key(key)
        if not isinstance(value, Cacheable):
            raise TypeError(
                f"cache values must implement Cacheable (nbytes, to, to_state, from_state), "
                f"got {type(value).__name__}"
            )
        on_device = value.to(self.device)
        size = _value_size(on_device)
        state = _compact(on_device.to(_CPU).to_state()) if self._disk is not None else None
        with self._lock:
            self._insert(key, on_device, size)
            trim = self._freed_bytes >= self._trim_after
            if trim:
                self._freed_bytes = 0
        if trim:  # the evicted values are gone by now: return their memory to the OS
            memory.release_free_memory()
        if self._disk is not None and state is not None:
            evicted = self._disk.save(key, state)
            if evicted:
                with self._lock:
                    self._counts.evictions_disk += evicted

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is in any tier. Counts nothing, refreshes nothing.

        A disk entry is only checked for existence; it may still turn out unreadable on ``get``.
        """
        try:
            check_key(key)
        except ValueError:
            return False
        assert isinstance(key, str)
        with self._lock:
            if key in self._device_tier or (self._host_tier is not None and key in self._host_tier):
                return True
        return self._disk is not None and self._disk.exists(key)

    def reset(self, disk: bool = False) -> None:
        """Empty the memory tiers and zero the counters; also delete disk entries if ``disk``."""
        with self._lock:
            self._device_tier.clear()
            if self._host_tier is not None:
                self._host_tier.clear()
            self._counts = _Counters()
            self._freed_bytes = 0
        memory.release_free_memory()
        if disk and self._disk is not None:
            self._disk.clear()

    def stats(self) -> CacheStats:
        """Counters since construction or the last ``reset``, and current occupancy per tier."""
        disk_bytes, disk_entries = self._disk.usage() if self._disk is not None else (0, 0)
        with self._lock:
            c = self._counts
            host = self._host_tier
            return CacheStats(
                hits_device=c.hits_device,
                hits_host=c.hits_host,
                hits_disk=c.hits_disk,
                misses=c.misses,
                evictions=c.evictions,
                bytes_device=self._device_tier.nbytes,
                bytes_host=host.nbytes if host is not None else 0,
                bytes_disk=disk_bytes,
                entries_device=len(self._device_tier),
                entries_host=len(host) if host is not None else 0,
                entries_disk=disk_entries,
                demotions=c.demotions,
                evictions_disk=c.evictions_disk,
                rejected=c.rejected,
                disk_errors=c.disk_errors,
                budget_device=self._device_tier.budget,
                budget_host=host.budget if host is not None else 0,
                budget_disk=self._disk.budget if self._disk is not None else 0,
            )

    @property
    def disk_dir(self) -> Path | None:
        """Directory of the disk tier, or None."""
        return self._disk.directory if self._disk is not None else None

    # ------------------------------------------------------------------------------- internals

    def _decode(self, state: dict[str, Any]) -> V:
        assert self.value_type is not None
        value = self.value_type.from_state(state)
        if not isinstance(value, Cacheable):
            raise TypeError(
                f"{self.value_type.__name__}.from_state returned {type(value).__name__}")
        _value_size(value)
        return value

    def _get_memory(self, key: str, *, count: bool) -> V | None:
        """Memory lookup with promotion. Lock held."""
        value = self._device_tier.get(key)
        if value is not None:
            if count:
                self._counts.hits_device += 1
            return value
        if self._host_tier is None:
            return None
        item = self._host_tier.pop(key)
        if item is None:
            return None
        if count:
            self._counts.hits_host += 1
        host_value, size = item
        on_device = host_value.to(self.device)
        if size > self._device_tier.budget:
            # Can't live on the device: keep it in host memory, serve a transient device copy.
            self._host_tier.put(key, host_value, size)
            return on_device
        self._insert(key, on_device, size)
        return on_device

    def _insert(self, key: str, value: V, size: int) -> None:
        """Put ``value`` (on ``device``) in the highest memory tier it fits. Lock held."""
        host = self._host_tier
        if host is not None:
            host.pop(key)
        evicted = self._device_tier.put(key, value, size)
        if host is None:
            if evicted is None:
                self._counts.rejected += 1
            else:
                self._counts.evictions += len(evicted)
                self._freed_bytes += sum(old_size for _, _, old_size in evicted)
            return
        if evicted is None:  # too big for the device tier: host tier only
            self._put_host(key, value.to(_CPU), size, rejected_if_too_big=True)
            return
        for old_key, old_value, old_size in evicted:
            self._counts.demotions += 1
            self._put_host(old_key, old_value.to(_CPU), old_size, rejected_if_too_big=False)

    def _put_host(self, key: str, value: V, size: int, *, rejected_if_too_big: bool) -> None:
        assert self._host_tier is not None
        evicted = self._host_tier.put(key, value, size)
        if evicted is None:
            if rejected_if_too_big:
                self._counts.rejected += 1
            else:
                self._counts.evictions += 1  # demoted entry that host memory can't hold
                self._freed_bytes += size
            return
        self._counts.evictions += len(evicted)
        self._freed_bytes += sum(old_size for _, _, old_size in evicted)


@dataclass
class _Counters:
    hits_device: int = 0
    hits_host: int = 0
    hits_disk: int = 0
    misses: int = 0
    evictions: int = 0
    demotions: int = 0
    evictions_disk: int = 0
    rejected: int = 0
    disk_errors: int = 0
