"""Tests for owl_core.engine.cache: byte-bounded LRU tiers, disk tier safety, concurrency."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import pickle
import queue
import random
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from owl_core.engine.cache import Cacheable, CacheStats, EmbeddingCache, check_key

KIB = 1024


@dataclass(frozen=True)
class Blob:
    """Minimal Cacheable: one float32 tensor plus a label; nbytes = the tensor's bytes."""

    data: torch.Tensor
    label: str = ""

    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()

    def to(self, device: torch.device | str) -> Blob:
        return Blob(self.data.to(device), self.label)

    def to_state(self) -> dict[str, Any]:
        return {"data": self.data.cpu(), "label": self.label}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Blob:
        data, label = state["data"], state["label"]
        if not isinstance(data, torch.Tensor) or not isinstance(label, str):
            raise ValueError("bad Blob state")
        return cls(data, label)


def key_of(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def blob(name: str, nbytes: int = KIB) -> Blob:
    """Deterministic content derived from the name, so any writer produces identical bytes."""
    seed = int(key_of(name)[:8], 16)
    gen = torch.Generator().manual_seed(seed)
    return Blob(torch.rand(nbytes // 4, generator=gen), name)


def same(a: Blob | None, b: Blob) -> bool:
    return a is not None and a.label == b.label and torch.equal(a.data, b.data)


def memory_cache(budget: int, **kw: Any) -> EmbeddingCache[Blob]:
    """Single-tier CPU cache with `budget` bytes (split across the two budgets on purpose)."""
    return EmbeddingCache(device="cpu", device_bytes=budget // 2,
                          host_bytes=budget - budget // 2, **kw)


def two_tier(device_bytes: int, host_bytes: int, **kw: Any) -> EmbeddingCache[Blob]:
    """Two tiers on CPU: exercises demotion/promotion logic without an accelerator."""
    return EmbeddingCache(device="cpu", device_bytes=device_bytes, host_bytes=host_bytes,
                          separate_tiers=True, **kw)


def disk_cache(path: Path, disk_bytes: int = 64 * 1024 * KIB,
               memory: int = 0) -> EmbeddingCache[Blob]:
    return EmbeddingCache(device="cpu", device_bytes=memory, host_bytes=0, disk_dir=path,
                          disk_bytes=disk_bytes, value_type=Blob)


# --------------------------------------------------------------------------- protocol, keys


def test_blob_satisfies_protocol() -> None:
    assert isinstance(blob("a"), Cacheable)
    assert not isinstance(object(), Cacheable)


@pytest.mark.parametrize(
    "key",
    [
        "../../etc/passwd",  # path traversal
        "abc/def0123",  # separator
        "0123456789ABCDEF",  # uppercase hex: two spellings of one digest would be two files
        "0123456",  # too short to be a digest
        "0" * 129,  # too long
        "",  # empty
        "0123456789abcdef\x00",  # NUL
        "0123456789abcdeg",  # not hex
        12345678,  # not a string
    ],
)
def test_invalid_keys_are_refused(key: Any, tmp_path: Path) -> None:
    cache = disk_cache(tmp_path)
    with pytest.raises(ValueError, match="hex digest"):
        cache.put(key, blob("a"))
    with pytest.raises(ValueError, match="hex digest"):
        cache.get(key)
    assert key not in cache
    assert list(tmp_path.glob("*.pt")) == []


def test_valid_key_passes() -> None:
    assert check_key(key_of("x")) == key_of("x")


def test_non_cacheable_value_is_refused() -> None:
    with pytest.raises(TypeError, match="Cacheable"):
        memory_cache(10 * KIB).put(key_of("a"), torch.zeros(4))  # type: ignore[arg-type]


def test_state_that_weights_only_cannot_read_is_refused_at_put(tmp_path: Path) -> None:
    class Odd(Blob):
        def to(self, device: torch.device | str) -> Odd:
            return self

        def to_state(self) -> dict[str, Any]:
            return {"data": self.data, "label": object()}

    with pytest.raises(TypeError, match="weights_only"):
        disk_cache(tmp_path).put(key_of("a"), Odd(torch.zeros(4)))


def test_bad_budgets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="device_bytes"):
        EmbeddingCache(device="cpu", device_bytes=-1, host_bytes=0)
    with pytest.raises(ValueError, match="value_type"):
        EmbeddingCache(device="cpu", device_bytes=0, host_bytes=0, disk_dir=tmp_path)
    with pytest.raises(ValueError, match="separate_tiers=False"):
        EmbeddingCache(device="meta", device_bytes=0, host_bytes=0, separate_tiers=False)


# ------------------------------------------------------------------------- memory LRU by bytes


def test_lru_by_bytes_access_refreshes_recency() -> None:
    cache = memory_cache(3 * KIB)
    a, b, c, d = (blob(n) for n in "abcd")
    for v in (a, b, c):
        cache.put(key_of(v.label), v)
    assert same(cache.get(key_of("a")), a)  # a is now the most recent; b is the oldest
    cache.put(key_of("d"), d)
    assert key_of("b") not in cache
    for v in (a, c, d):
        assert same(cache.get(key_of(v.label)), v)
    s = cache.stats()
    assert (s.entries_device, s.bytes_device, s.evictions) == (3, 3 * KIB, 1)


def test_budget_is_bytes_not_entries() -> None:
    cache = memory_cache(4 * KIB)
    cache.put(key_of("big"), blob("big", 3 * KIB))
    cache.put(key_of("s1"), blob("s1", KIB))  # exactly at budget: nothing goes
    assert key_of("big") in cache
    cache.put(key_of("s2"), blob("s2", KIB // 2))  # 4.5 KiB > budget: "big" (oldest) goes
    assert key_of("big") not in cache
    assert key_of("s1") in cache and key_of("s2") in cache
    assert cache.stats().bytes_device == KIB + KIB // 2


def test_eviction_frees_as_many_entries_as_needed() -> None:
    cache = memory_cache(4 * KIB)
    for n in "abcd":
        cache.put(key_of(n), blob(n))
    cache.put(key_of("e"), blob("e", 3 * KIB))
    assert [n for n in "abcde" if key_of(n) in cache] == ["d", "e"]
    assert cache.stats().evictions == 3
    assert cache.stats().bytes_device == 4 * KIB


def test_oversize_value_is_not_stored_and_flushes_nothing() -> None:
    cache = memory_cache(4 * KIB)
    for n in "ab":
        cache.put(key_of(n), blob(n))
    cache.put(key_of("huge"), blob("huge", 8 * KIB))
    assert key_of("huge") not in cache
    assert key_of("a") in cache and key_of("b") in cache
    s = cache.stats()
    assert (s.rejected, s.evictions, s.bytes_device) == (1, 0, 2 * KIB)


def test_put_replaces_value_and_bytes() -> None:
    cache = memory_cache(10 * KIB)
    cache.put(key_of("a"), blob("a", KIB))
    replacement = Blob(torch.ones(512), "a2")
    cache.put(key_of("a"), replacement)
    assert same(cache.get(key_of("a")), replacement)
    assert cache.stats().bytes_device == 2 * KIB
    assert cache.stats().entries_device == 1


def test_cpu_device_defaults_to_one_tier_with_both_budgets() -> None:
    cache = EmbeddingCache(device="cpu", device_bytes=2 * KIB, host_bytes=2 * KIB)
    assert cache.separate_tiers is False
    cache.put(key_of("x"), blob("x", 3 * KIB))  # bigger than either budget, fits their sum
    for n in "y":
        cache.put(key_of(n), blob(n))
    s = cache.stats()
    assert (s.entries_device, s.bytes_device, s.budget_device) == (2, 4 * KIB, 4 * KIB)
    assert (s.entries_host, s.bytes_host, s.budget_host) == (0, 0, 0)  # no second copy anywhere
    assert same(cache.get(key_of("x")), blob("x", 3 * KIB))


def test_non_cpu_device_defaults_to_two_tiers() -> None:
    cache = EmbeddingCache(device="meta", device_bytes=KIB, host_bytes=KIB)
    assert cache.separate_tiers is True


# --------------------------------------------------------------------- demotion and promotion


def test_device_eviction_demotes_to_host_and_host_hit_promotes() -> None:
    cache = two_tier(device_bytes=2 * KIB, host_bytes=2 * KIB)
    a, b, c = (blob(n) for n in "abc")
    for v in (a, b, c):
        cache.put(key_of(v.label), v)
    s = cache.stats()
    # a was demoted, not dropped; tiers are exclusive (no key counted twice)
    assert (s.entries_device, s.entries_host, s.demotions, s.evictions) == (2, 1, 1, 0)
    assert (s.bytes_device, s.bytes_host) == (2 * KIB, KIB)

    assert same(cache.get(key_of("a")), a)  # host hit -> promoted; b (device LRU) demoted
    s = cache.stats()
    assert (s.hits_host, s.hits_device) == (1, 0)
    assert (s.entries_device, s.entries_host, s.demotions) == (2, 1, 2)

    assert same(cache.get(key_of("a")), a)  # now served from the device tier
    assert same(cache.get(key_of("b")), b)  # b was the one demoted
    s = cache.stats()
    assert (s.hits_device, s.hits_host) == (1, 2)


def test_host_eviction_drops_from_memory() -> None:
    cache = two_tier(device_bytes=KIB, host_bytes=KIB)
    for n in "abc":
        cache.put(key_of(n), blob(n))
    # device holds c, host holds b, a fell out of host memory
    assert key_of("a") not in cache
    s = cache.stats()
    assert (s.entries_device, s.entries_host, s.demotions, s.evictions) == (1, 1, 2, 1)
    assert cache.get(key_of("a")) is None
    assert cache.stats().misses == 1


def test_value_too_big_for_device_lives_in_host_and_is_served() -> None:
    cache = two_tier(device_bytes=KIB, host_bytes=8 * KIB)
    small, big = blob("small"), blob("big", 4 * KIB)
    cache.put(key_of("small"), small)
    cache.put(key_of("big"), big)
    s = cache.stats()
    assert (s.entries_device, s.entries_host, s.evictions, s.rejected) == (1, 1, 0, 0)
    for _ in range(2):  # a host hit that can't be promoted stays in host, doesn't flush device
        assert same(cache.get(key_of("big")), big)
    s = cache.stats()
    assert (s.entries_device, s.entries_host, s.hits_host) == (1, 1, 2)
    assert same(cache.get(key_of("small")), small)
    assert cache.stats().hits_device == 1


def test_value_too_big_for_both_tiers_is_rejected() -> None:
    cache = two_tier(device_bytes=KIB, host_bytes=KIB)
    cache.put(key_of("a"), blob("a"))
    cache.put(key_of("huge"), blob("huge", 4 * KIB))
    s = cache.stats()
    assert (s.rejected, s.entries_device, s.entries_host) == (1, 1, 0)


def test_counters_and_reset(tmp_path: Path) -> None:
    cache = disk_cache(tmp_path, memory=2 * KIB)
    for n in "abc":
        cache.put(key_of(n), blob(n))
    assert cache.get(key_of("c")) is not None  # memory hit
    assert cache.get(key_of("a")) is not None  # evicted from memory, disk hit
    assert cache.get(key_of("zz")) is None  # miss
    s = cache.stats()
    assert (s.hits_device, s.hits_host, s.hits_disk, s.misses, s.evictions) == (1, 0, 1, 1, 2)
    assert (s.hits, s.hit_rate) == (2, pytest.approx(2 / 3))
    assert (s.entries_disk, s.budget_disk) == (3, 64 * 1024 * KIB)
    assert s.bytes_disk == sum(p.stat().st_size for p in tmp_path.glob("*.pt"))

    cache.reset()
    s = cache.stats()
    assert s == CacheStats(entries_disk=3, bytes_disk=s.bytes_disk, budget_device=2 * KIB,
                           budget_disk=64 * 1024 * KIB)
    assert same(cache.get(key_of("b")), blob("b"))  # disk kept by default
    cache.reset(disk=True)
    assert cache.get(key_of("b")) is None
    assert list(tmp_path.glob("*.pt")) == []


def test_contains_does_not_count_or_refresh() -> None:
    cache = memory_cache(2 * KIB)
    cache.put(key_of("a"), blob("a"))
    cache.put(key_of("b"), blob("b"))
    assert key_of("a") in cache  # must not refresh a
    cache.put(key_of("c"), blob("c"))
    assert key_of("a") not in cache
    s = cache.stats()
    assert s.hits == 0 and s.misses == 0


# ------------------------------------------------------------------------------- disk tier


def test_disk_survives_restart(tmp_path: Path) -> None:
    first = disk_cache(tmp_path, memory=10 * KIB)
    values = [blob(n) for n in "abc"]
    for v in values:
        first.put(key_of(v.label), v)
    del first

    second = disk_cache(tmp_path, memory=10 * KIB)  # a new process would see the same
    assert key_of("a") in second
    for v in values:
        assert same(second.get(key_of(v.label)), v)
    s = second.stats()
    assert (s.hits_disk, s.misses) == (3, 0)
    for v in values:  # promoted into memory by the disk hit
        assert same(second.get(key_of(v.label)), v)
    assert second.stats().hits_device == 3


def _file_size(tmp_path: Path) -> int:
    probe = tmp_path / "probe"
    disk_cache(probe).put(key_of("probe"), blob("probe"))
    (f,) = probe.glob("*.pt")
    return f.stat().st_size


def test_disk_bound_evicts_least_recently_used(tmp_path: Path) -> None:
    size = _file_size(tmp_path)
    directory = tmp_path / "cache"
    cache = disk_cache(directory, disk_bytes=3 * size + size // 2)
    for n in "abc":
        cache.put(key_of(n), blob(n))
    # make recency explicit (filesystems differ in timestamp resolution): a oldest, then b, c
    for i, n in enumerate("abc"):
        os.utime(directory / f"{key_of(n)}.pt", ns=(10**18 + i * 10**9,) * 2)
    assert same(cache.get(key_of("a")), blob("a"))  # disk hit refreshes a's mtime
    cache.put(key_of("d"), blob("d"))  # over budget: b is now the least recently used
    names = {p.stem for p in directory.glob("*.pt")}
    assert names == {key_of("a"), key_of("c"), key_of("d")}
    s = cache.stats()
    assert s.evictions_disk == 1 and s.bytes_disk <= 3 * size + size // 2


def test_disk_file_larger_than_budget_is_not_written_and_flushes_nothing(tmp_path: Path) -> None:
    size = _file_size(tmp_path)
    directory = tmp_path / "cache"
    cache = disk_cache(directory, disk_bytes=2 * size)
    cache.put(key_of("a"), blob("a"))
    cache.put(key_of("huge"), blob("huge", 16 * KIB))
    assert {p.stem for p in directory.glob("*.pt")} == {key_of("a")}
    assert list(directory.glob(".tmp-*")) == []  # the rejected temp file is cleaned up


def test_view_tensor_is_stored_compactly(tmp_path: Path) -> None:
    base = torch.rand(64 * KIB)  # 256 KiB of storage
    view = Blob(base[:256], "view")  # 1 KiB view of it
    cache = disk_cache(tmp_path)
    cache.put(key_of("view"), view)
    (f,) = tmp_path.glob("*.pt")
    assert f.stat().st_size < 16 * KIB
    assert same(disk_cache(tmp_path).get(key_of("view")), view)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),  # truncated write
        lambda p: p.write_bytes(b""),  # empty file
        lambda p: p.write_bytes(os.urandom(4096)),  # garbage
        lambda p: torch.save(torch.zeros(3), p),  # valid torch file, not a cache entry
        lambda p: torch.save({"format": "owl_core.cache/v1", "key": "0" * 64,  # other key's entry
                              "state": {"data": torch.zeros(1), "label": ""}}, p),
        lambda p: torch.save({"format": "owl_core.cache/v1", "key": p.stem,  # from_state refuses
                              "state": {"data": "not a tensor", "label": ""}}, p),
    ],
    ids=["truncated", "empty", "garbage", "foreign-torch-file", "key-mismatch", "bad-state"],
)
def test_corrupt_disk_file_is_a_miss_and_removed(tmp_path: Path, damage: Any) -> None:
    disk_cache(tmp_path).put(key_of("a"), blob("a"))
    path = tmp_path / f"{key_of('a')}.pt"
    damage(path)
    cache = disk_cache(tmp_path)
    assert cache.get(key_of("a")) is None
    assert not path.exists()
    s = cache.stats()
    assert (s.misses, s.hits_disk, s.disk_errors) == (1, 0, 1)
    cache.put(key_of("a"), blob("a"))  # and the slot is usable again
    assert same(disk_cache(tmp_path).get(key_of("a")), blob("a"))


def test_bad_file_replaced_meanwhile_by_another_process_is_kept(tmp_path: Path) -> None:
    path = tmp_path / f"{key_of('a')}.pt"
    path.write_bytes(b"torn")

    class Racy(Blob):
        @classmethod
        def from_state(cls, state: dict[str, Any]) -> Racy:
            raise AssertionError("a torn file never reaches from_state")

    real_load = torch.load

    def load_then_race(*args: Any, **kwargs: Any) -> Any:
        # While this reader fails on the torn file, another process replaces it with a good one.
        disk_cache(tmp_path).put(key_of("a"), blob("a"))
        return real_load(*args, **kwargs)

    cache = EmbeddingCache(device="cpu", device_bytes=0, host_bytes=0, disk_dir=tmp_path,
                           value_type=Racy)
    with pytest.MonkeyPatch.context() as mp_:
        mp_.setattr(torch, "load", load_then_race)
        assert cache.get(key_of("a")) is None  # the torn file this reader opened: a miss
    assert path.exists()  # but the good replacement is not deleted
    assert same(disk_cache(tmp_path).get(key_of("a")), blob("a"))


def test_symlink_in_disk_dir_is_not_followed(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    disk_cache(tmp_path / "elsewhere").put(key_of("a"), blob("a"))
    target = tmp_path / "elsewhere" / f"{key_of('a')}.pt"  # a perfectly valid entry...
    directory.mkdir()
    link = directory / f"{key_of('a')}.pt"
    link.symlink_to(target)  # ...planted by link
    assert disk_cache(directory).get(key_of("a")) is None
    assert not link.is_symlink() and target.exists()  # the link goes, its target stays


class _Payload:
    """Pickles to a call of open(marker, "w"): unpickling it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


# torch notes that pickle.dump used a newer protocol; expected here
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, writer: str) -> None:
    # The payload is live: plain unpickling runs it (so this test can fail).
    live = tmp_path / "live-marker"
    pickle.loads(pickle.dumps(_Payload(live))).close()
    assert live.exists()

    directory = tmp_path / "cache"
    directory.mkdir()
    marker = tmp_path / "pwned"
    path = directory / f"{key_of('a')}.pt"
    hostile = {"format": "owl_core.cache/v1", "key": key_of("a"),
               "state": {"data": torch.zeros(1), "label": "", "x": _Payload(marker)}}
    with path.open("wb") as f:
        if writer == "torch.save":
            torch.save(hostile, f)
        else:
            pickle.dump(hostile, f)

    cache = disk_cache(directory)
    assert key_of("a") in cache  # present, not yet read
    assert cache.get(key_of("a")) is None
    assert not marker.exists()
    assert not path.exists()
    assert cache.stats().disk_errors == 1


# -------------------------------------------------------------------------------- concurrency


# Few keys, big values: rewrites of one key by two processes overlap, so a non-atomic write
# (truncate + write in place) is read torn within a few rounds.
N_SHARED_KEYS = 4
SHARED_VALUE_BYTES = 256 * KIB


def _process_worker(directory: str, worker: int, rounds: int, start: Any, out: Any) -> None:
    """Write and read overlapping keys through disk only (no memory tier), report failures."""
    cache = EmbeddingCache(device="cpu", device_bytes=0, host_bytes=0, disk_dir=directory,
                           disk_bytes=1 << 30, value_type=Blob)
    rng = random.Random(worker)
    failures: list[str] = []
    start.wait(60)
    for i in range(rounds):
        name = f"k{rng.randrange(N_SHARED_KEYS)}"  # both processes hit the same few keys
        expected = blob(name, SHARED_VALUE_BYTES)
        cache.put(key_of(name), expected)
        got = cache.get(key_of(name))  # may be the other process's identical rewrite, never torn
        if not same(got, expected):
            failures.append(f"round {i}: {name} read back {'nothing' if got is None else 'wrong'}")
        other = f"k{rng.randrange(N_SHARED_KEYS)}"
        got = cache.get(key_of(other))
        if got is not None and not same(got, blob(other, SHARED_VALUE_BYTES)):
            failures.append(f"round {i}: {other} read back wrong")
    out.put((worker, failures, cache.stats().disk_errors))


def test_two_processes_share_disk_dir(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")  # fork after torch threads exist is unsafe
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(str(tmp_path), w, 150, start, out))
             for w in range(2)]
    for p in procs:
        p.start()
    start.set()
    results = []
    deadline = time.monotonic() + 120
    while len(results) < len(procs) and time.monotonic() < deadline:
        try:
            results.append(out.get(timeout=0.5))
        except queue.Empty:
            crashed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            assert not crashed, f"a worker died with exit code {crashed}"
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(results) == len(procs)
    for worker, failures, disk_errors in results:
        assert failures == [], f"worker {worker}: {failures[:5]}"
        assert disk_errors == 0, f"worker {worker} saw {disk_errors} unreadable files"
    files = list(tmp_path.glob("*.pt"))
    assert 1 <= len(files) <= N_SHARED_KEYS
    reader = disk_cache(tmp_path)
    for f in files:
        name = next(f"k{i}" for i in range(N_SHARED_KEYS) if key_of(f"k{i}") == f.stem)
        assert same(reader.get(f.stem), blob(name, SHARED_VALUE_BYTES))
    assert list(tmp_path.glob(".tmp-*")) == []


def test_threads_hammering_get_put(tmp_path: Path) -> None:
    budget_device, budget_host = 6 * KIB, 10 * KIB
    cache = EmbeddingCache(device="cpu", device_bytes=budget_device, host_bytes=budget_host,
                           separate_tiers=True, disk_dir=tmp_path, disk_bytes=40 * KIB,
                           value_type=Blob)
    names = [f"t{i}" for i in range(40)]
    values = {n: blob(n, KIB * (1 + i % 3)) for i, n in enumerate(names)}
    errors: list[BaseException] = []
    wrong: list[str] = []
    gate = threading.Barrier(8)

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            gate.wait()
            for _ in range(300):
                n = rng.choice(names)
                if rng.random() < 0.4:
                    cache.put(key_of(n), values[n])
                else:
                    got = cache.get(key_of(n))
                    if got is not None and not same(got, values[n]):
                        wrong.append(n)
                if rng.random() < 0.05:
                    s = cache.stats()
                    if s.bytes_device > budget_device or s.bytes_host > budget_host:
                        wrong.append(f"over budget: {s}")
        except BaseException as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so unguarded read-modify-writes would race
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        sys.setswitchinterval(interval)
    assert errors == [] and wrong == []
    s = cache.stats()
    assert s.bytes_device <= budget_device and s.bytes_host <= budget_host
    # bookkeeping is exact: the byte totals equal what the surviving entries hold
    tiers = (cache._device_tier, cache._host_tier)
    resident = [n for n in names if any(key_of(n) in tier for tier in tiers)]
    assert s.entries_device + s.entries_host == len(resident)
    assert s.bytes_device + s.bytes_host == sum(values[n].nbytes() for n in resident)
    assert s.disk_errors == 0 and s.bytes_disk <= 40 * KIB


class SlowBlob(Blob):
    """A Blob whose device copy takes a while (like a real GPU copy) and releases the GIL."""

    def to(self, device: torch.device | str) -> SlowBlob:
        time.sleep(0.0005)
        return SlowBlob(self.data.to(device), self.label)


def test_promotion_is_atomic_under_concurrent_gets() -> None:
    # 6 KiB of values, 10 KiB of memory: every key stays resident, tiers only trade entries.
    # A get must therefore never miss, even while another thread is promoting that very key.
    cache = two_tier(device_bytes=2 * KIB, host_bytes=8 * KIB)
    names = [f"p{i}" for i in range(6)]
    for n in names:
        cache.put(key_of(n), SlowBlob(blob(n).data, n))
    lookups, missing, errors = 8 * 150, [], []
    gate = threading.Barrier(8)

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        try:
            gate.wait()
            for _ in range(lookups // 8):
                n = rng.choice(names)
                got = cache.get(key_of(n))
                if got is None or got.label != n:
                    missing.append(n)
        except BaseException as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and missing == []
    s = cache.stats()
    assert (s.hits_device + s.hits_host, s.misses, s.evictions) == (lookups, 0, 0)
    assert (s.entries_device + s.entries_host, s.bytes_device + s.bytes_host) == (6, 6 * KIB)


# ------------------------------------------------------------------ memory returned to the OS
def test_evictions_return_freed_memory_to_the_os_now_and_then(monkeypatch):
    """glibc keeps freed heap memory, so RSS grew far past the budget (bench/reliability.py):
    after every budget/16 (at least 16 MiB) of evictions the cache asks for it back, not on
    every put."""
    from owl_core import memory
    from owl_core.engine import cache as cache_module

    calls = []
    monkeypatch.setattr(memory, "release_free_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(cache_module, "_TRIM_AFTER_BYTES", 64 * KIB)
    cache = memory_cache(32 * KIB)
    for i in range(8):                      # fills the budget: no eviction, no trim
        cache.put(key_of(f"a{i}"), blob(f"a{i}", 4 * KIB))
    assert calls == []
    for i in range(40):                     # 40 evictions x 4 KiB = 160 KiB freed
        cache.put(key_of(f"b{i}"), blob(f"b{i}", 4 * KIB))
    assert cache.stats().evictions == 40
    assert len(calls) == 160 // 64         # once per 64 KiB freed
    cache.reset()                           # emptying the cache gives memory back too
    assert len(calls) == 160 // 64 + 1


def test_release_free_memory_works_on_this_platform():
    from owl_core.memory import release_free_memory

    assert release_free_memory() is (sys.platform.startswith("linux"))
