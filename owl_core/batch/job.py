"""`owl-studio label`: run a prompt set over a whole dataset, resumably, at tower speed.

    python -m owl_core label --weights prompts.pt INPUT --out OUT --format coco
    python -m owl_core label --model DIR --training-data train.json INPUT --out OUT

A job has three phases:

1. *Embed*: every input image not in the embedding store yet is read, hashed, decoded and
   preprocessed on worker threads (a bounded prefetch queue) while the vision tower runs on the
   main thread; its top-K embeddings go to the store (`owl_core.engine.embedding_store`).
   Images already stored (same bytes, same model and settings) are never embedded again,
   whatever the prompts.
2. *Score*: all images are scored from the store, batched (`owl_core.engine.batch_scoring`). A
   fresh run and a re-label with other prompts / thresholds read the same stored values, so they
   give the same bytes.
3. *Write*: outputs are written atomically (`owl_core.batch.outputs`), then the summary.

Resumable: the job folder ``OUT/.owl_label/`` holds ``manifest.json`` (settings and inputs of
the job; a resume with other ones is refused unless ``--restart``) and ``journal.jsonl``, an
append-only, fsynced log of finished images (path, size, mtime, content hash) and failures. After
Ctrl-C or a crash the same command skips every journalled image; at most the images of the last
unwritten shard (``--flush-seconds``) are embedded again. Outputs only appear at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from owl_core.batch.outputs import (
    FORMATS,
    OUTPUT_ENTRIES,
    SUMMARY_FILE,
    describe_error,
    write_annotated,
    write_outputs,
)
from owl_core.durable import atomic_write
from owl_core.engine.embedding_store import EmbeddingStore, model_fingerprint
from owl_core.engine.matching import Exemplars
from owl_core.engine.transforms import OwlTransform
from owl_core.errors import LimitError, OwlError, SettingsError
from owl_core.images import IMAGE_SUFFIXES, is_image_name
from owl_core.params import DetectParams
from owl_core.project.prompt_sources import add_prompt_arguments, read_prompts

JOB_DIR = ".owl_label"
STORE_DIR = "embeddings"
#: Most images one job accepts (env OWL_MAX_LABEL_IMAGES) and the largest list file.
MAX_LABEL_IMAGES = 10_000_000
MAX_LIST_FILE_BYTES = 1024**3
_MANIFEST_VERSION = 1


# ---------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class InputImage:
    """One image of the job: its file and its name in the outputs (relative POSIX path)."""

    path: Path
    name: str


def _max_images() -> int:
    raw = os.environ.get("OWL_MAX_LABEL_IMAGES")
    try:
        return int(raw) if raw else MAX_LABEL_IMAGES
    except ValueError:
        raise LimitError(f"OWL_MAX_LABEL_IMAGES={raw!r} is not an integer.") from None


def list_inputs(source: str | Path, exclude: Sequence[Path] = ()) -> list[InputImage]:
    """The images of INPUT: a folder (searched recursively for `owl_core.images.IMAGE_SUFFIXES`;
    hidden folders and `exclude` skipped) or a list file (one path per line, relative to the
    file's folder; blank lines and ``#`` comments ignored). Sorted by name.

    Raises:
        SettingsError: INPUT missing, empty, or two list entries with the same name.
        LimitError: more images than OWL_MAX_LABEL_IMAGES.
    """
    source = Path(source)
    limit = _max_images()
    skip = {p.resolve() for p in exclude}
    images: list[InputImage] = []
    if source.is_dir():
        root = source.resolve()
        for folder, dirs, files in os.walk(root):
            here = Path(folder)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                             and (here / d).resolve() not in skip)
            for file in sorted(files):
                if is_image_name(file):
                    path = here / file
                    images.append(InputImage(path, path.relative_to(root).as_posix()))
                    if len(images) > limit:
                        raise LimitError(f"{source}: more than {limit:,} images; split the job "
                                         "or raise OWL_MAX_LABEL_IMAGES.")
    elif source.is_file():
        if source.stat().st_size > MAX_LIST_FILE_BYTES:
            raise LimitError(f"{source}: the list file is over {MAX_LIST_FILE_BYTES:,} bytes.")
        base = source.resolve().parent
        paths = []
        for line in source.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                paths.append((base / Path(line).expanduser()).resolve())
                if len(paths) > limit:
                    raise LimitError(f"{source}: more than {limit:,} images; split the list or "
                                     "raise OWL_MAX_LABEL_IMAGES.")
        images = inputs_from_paths(paths)
    else:
        raise SettingsError(f"{source}: no such folder or list file; pass a folder of images or "
                            "a text file with one image path per line.")
    if not images:
        raise SettingsError(f"{source}: no images found (looked for "
                            f"{', '.join(IMAGE_SUFFIXES)}).")
    images.sort(key=lambda im: im.name)
    names = [im.name for im in images]
    dupes = sorted({n for n, m in itertools.pairwise(names) if n == m})
    if dupes:
        raise SettingsError(f"{source}: the same image is listed twice ({dupes[:3]}); remove "
                            "the duplicates.")
    return images


def inputs_from_paths(paths: Sequence[Path]) -> list[InputImage]:
    """Images named by their path relative to the folder that holds them all."""
    if not paths:
        return []
    paths = [Path(p).resolve() for p in paths]
    root = Path(os.path.commonpath([p.parent for p in paths]))
    return [InputImage(p, p.relative_to(root).as_posix()) for p in paths]


# ---------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class LabelConfig:
    """Settings of a label job.

    Attributes:
        out: output folder (created).
        fmt: one of `label_io.FORMATS`.
        params: detection settings.
        store_dir: embedding store folder (default ``OUT/embeddings``; a project's store or
            another job's store may be shared).
        store_dtype: "fp16" or "fp32" class embeddings in the store.
        batch_size: images per vision-tower pass (1 is fastest on CPU).
        workers: threads that read, hash, decode and preprocess ahead of the tower.
        prefetch: preprocessed images waiting for the tower at most (bounds memory:
            3 x S x S float32 each, 11 MB at 960 px).
        flush_seconds, flush_rows: a store shard (and the journal) is written at least this
            often / every this many images: what a crash may cost.
        annotated: folder for pictures with the detections drawn, or None.
        restart: start over when the unfinished job in OUT had other settings or inputs.
        progress: show a tqdm progress bar on stderr.
    """

    out: Path
    fmt: str = "coco"
    params: DetectParams = field(default_factory=DetectParams)
    store_dir: Path | None = None
    store_dtype: str = "fp16"
    batch_size: int = 1
    workers: int = 2
    prefetch: int = 4
    flush_seconds: float = 30.0
    flush_rows: int = 256
    annotated: Path | None = None
    restart: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise SettingsError(f"unknown format {self.fmt!r}; use one of {', '.join(FORMATS)}.")
        for name in ("batch_size", "workers", "prefetch", "flush_rows"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= 4096:
                raise SettingsError(f"{name} must be an integer in 1..4096, got {value!r}.")
        if not 0 < float(self.flush_seconds) <= 86400:
            raise SettingsError(f"flush_seconds must be in (0, 86400], got {self.flush_seconds}.")

    @property
    def job_dir(self) -> Path:
        return Path(self.out) / JOB_DIR

    @property
    def store_path(self) -> Path:
        return Path(self.store_dir) if self.store_dir else Path(self.out) / STORE_DIR


@dataclass
class LabelSummary:
    """What a job did. `embedded` counts images that went through the tower in this run."""

    images: int = 0
    labelled: int = 0
    embedded: int = 0
    reused: int = 0
    boxes: int = 0
    boxes_per_class: dict[str, int] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    embed_seconds: float = 0.0
    tower_seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)

    def to_file_dict(self, classes: Sequence[str], params: DetectParams) -> dict:
        """The deterministic part written to ``summary.json`` (no timings)."""
        return {"images": self.images, "labelled": self.labelled, "boxes": self.boxes,
                "boxes_per_class": self.boxes_per_class, "failures": self.failures,
                "classes": list(classes), "settings": params.to_dict()}


def exemplars_digest(exemplars: Exemplars) -> str:
    """Identity of a prompt set (class names, exemplar rows, polarity)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(list(exemplars.class_names)).encode())
    h.update(exemplars.embeds.detach().float().cpu().contiguous().numpy().tobytes())
    h.update(exemplars.class_ids.cpu().numpy().astype(np.int64).tobytes())
    h.update(exemplars.negative.cpu().numpy().astype(np.bool_).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------- journal
class Journal:
    """Append-only, fsynced JSON-lines log of finished images and failures.

    A line torn by a crash is cut off when the journal is opened again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1
            if end != len(data):  # torn last line: cut it
                with open(path, "r+b") as f:
                    f.truncate(end)
                    os.fsync(f.fileno())
            for line in data[:end].splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                    self.entries[entry["path"]] = entry
        self._file = open(path, "ab")  # noqa: SIM115  held open for appends; see close()

    def append(self, entries: Iterable[dict]) -> None:
        lines = [json.dumps(e, sort_keys=True) for e in entries]
        if not lines:
            return
        self._file.write("".join(f"{line}\n" for line in lines).encode())
        self._file.flush()
        os.fsync(self._file.fileno())
        for entry in entries:
            self.entries[entry["path"]] = entry

    def close(self) -> None:
        self._file.close()


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


# ---------------------------------------------------------------------------- sink
@dataclass
class _Done:
    """An image read by a worker: its content hash, or why it failed."""

    image: InputImage
    stat: tuple[int, int] | None
    content_hash: str | None = None
    pixels: torch.Tensor | None = None  # (3, S, S) preprocessed, None when already stored
    size: tuple[int, int] | None = None
    error: str | None = None


class EmbedSink:
    """Where the embed phase (local threads or Ray) delivers images: it stores embeddings,
    journals finished images once their shard is durable, and reports failures."""

    def __init__(self, store: EmbeddingStore, journal: Journal, config: LabelConfig,
                 total: int, done: int, log: Callable[[str], None]) -> None:
        self.store = store
        self.journal = journal
        self.config = config
        self.log = log
        self._pending: list[dict] = []  # journal lines waiting for their shard
        self._last_flush = time.monotonic()
        self.embedded = 0
        self.reused = 0
        self.failed = 0
        self.tower_seconds = 0.0
        self._bar = None
        if config.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=done, unit="img", desc="label",
                             dynamic_ncols=True, file=sys.stderr, smoothing=0.1)

    def _entry(self, image: InputImage, stat: tuple[int, int] | None, **extra) -> dict:
        size, mtime = stat if stat else (-1, -1)
        return {"path": str(image.path), "size": size, "mtime_ns": mtime, **extra}

    def stored(self, image: InputImage, stat: tuple[int, int] | None, content_hash: str) -> None:
        """An image whose embeddings are (or were just put) in the store."""
        self.reused += 1
        self._pending.append(self._entry(image, stat, hash=content_hash))
        self._tick()

    def embedded_image(self, image: InputImage, stat: tuple[int, int] | None,
                       content_hash: str, emb) -> None:
        wrote_shard = self.store.add(content_hash, emb)
        self.embedded += 1
        self._pending.append(self._entry(image, stat, hash=content_hash))
        if wrote_shard:  # the store wrote a full shard by itself: journal its images now
            self.flush()
        self._tick()

    def failure(self, image: InputImage, stat: tuple[int, int] | None, error: str) -> None:
        self.failed += 1
        self.journal.append([self._entry(image, stat, error=error)])
        self.log(f"skipped {image.name}: {error}")
        self._tick()

    def _tick(self) -> None:
        if self._bar is not None:
            self._bar.update(1)
            if self.failed:
                self._bar.set_postfix(failed=self.failed, refresh=False)
        if (self.store.pending >= self.config.flush_rows
                or time.monotonic() - self._last_flush >= self.config.flush_seconds):
            self.flush()

    def flush(self) -> None:
        """Write the buffered embeddings as a shard, then journal the images they cover."""
        self.store.flush()
        self.journal.append(self._pending)
        self._pending = []
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        if self._bar is not None:
            self._bar.close()


# ---------------------------------------------------------------------------- the job
class LabelJob:
    """One labelling job: inputs, a prompt set, a model, settings.

    Args:
        owl: the loaded model (`OwlPredictor.owl`).
        exemplars: the prompt set (`OwlPredictor.exemplars`).
        inputs: from `list_inputs`.
        config: see `LabelConfig`.
        top_k: candidates kept per image.
        transform: preprocessing (`OwlPredictor.transform`).
        log: where messages for a person go (stderr by default).
    """

    def __init__(self, owl, exemplars: Exemplars, inputs: Sequence[InputImage],
                 config: LabelConfig, top_k: int, transform: OwlTransform,
                 log: Callable[[str], None] | None = None) -> None:
        self.owl = owl
        self.exemplars = exemplars
        self.inputs = list(inputs)
        self.config = config
        self.top_k = min(int(top_k), owl.grid_size ** 2)
        self.transform = transform
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.fingerprint = model_fingerprint(owl, self.top_k, transform)

    # ------------------------------------------------------------------ manifest
    def _manifest(self) -> dict:
        names = hashlib.blake2b(digest_size=16)
        for image in self.inputs:
            names.update(f"{image.name}\0{image.path}\n".encode())
        return {
            "version": _MANIFEST_VERSION,
            "settings": {
                "prompts": exemplars_digest(self.exemplars), "format": self.config.fmt,
                "params": self.config.params.to_dict(), "fingerprint": self.fingerprint,
                "store": str(self.config.store_path.resolve()),
                "store_dtype": self.config.store_dtype,
                "annotated": str(self.config.annotated) if self.config.annotated else None},
            "inputs": {"count": len(self.inputs), "digest": names.hexdigest()},
        }

    def _check_manifest(self) -> None:
        path = self.config.job_dir / "manifest.json"
        wanted = self._manifest()
        if path.exists() and not self.config.restart:
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = {}
            if old.get("state") == "running":
                diff = [k for k in wanted["settings"]
                        if old.get("settings", {}).get(k) != wanted["settings"][k]]
                if old.get("inputs") != wanted["inputs"]:
                    diff.append("inputs")
                if diff:
                    raise SettingsError(
                        f"{self.config.out} holds an unfinished job with other {', '.join(diff)}; "
                        "run the same command again to finish it, or pass --restart to start "
                        "this job instead (stored embeddings are kept and reused).")
        atomic_write(path, json.dumps({**wanted, "state": "running"}, indent=1).encode())

    def _mark_done(self) -> None:
        atomic_write(self.config.job_dir / "manifest.json",
                     json.dumps({**self._manifest(), "state": "done"}, indent=1).encode())

    # ------------------------------------------------------------------ run
    def run(self, embed_phase: Callable[[LabelJob, list[InputImage], EmbedSink], None]
            | None = None) -> LabelSummary:
        """Embed what is missing, score everything, write the outputs.

        Args:
            embed_phase: replaces the local threaded embedding (`owl_core.batch.ray_embed` passes
                its Ray Data pipeline); called with the images still to read and the sink.
        """
        from filelock import FileLock, Timeout

        config = self.config
        config.job_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(config.job_dir / "job.lock", timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise SettingsError(f"another label job is running on {config.out}; wait for it "
                                "or use another --out.") from None
        try:
            return self._run(embed_phase)
        finally:
            lock.release()

    def _run(self, embed_phase) -> LabelSummary:
        start = time.perf_counter()
        config = self.config
        self._check_manifest()
        store = EmbeddingStore(config.store_path, self.fingerprint, config.store_dtype,
                               shard_rows=config.flush_rows)
        journal = Journal(config.job_dir / "journal.jsonl")
        summary = LabelSummary(images=len(self.inputs))
        todo = []
        for image in self.inputs:
            entry = journal.entries.get(str(image.path))
            if (entry and entry.get("hash") in store
                    and (entry["size"], entry["mtime_ns"]) == _stat_key(image.path)):
                continue
            todo.append(image)
        summary.reused = len(self.inputs) - len(todo)
        sink = EmbedSink(store, journal, config, len(self.inputs), summary.reused, self.log)
        embed_start = time.perf_counter()
        try:
            (embed_phase or LabelJob._embed_local)(self, todo, sink)
        finally:  # Ctrl-C or an error: keep what was embedded
            sink.close()
            journal.close()
        summary.embed_seconds = time.perf_counter() - embed_start
        summary.embedded = sink.embedded
        summary.reused += sink.reused
        summary.tower_seconds = sink.tower_seconds
        entries = self._score(store, journal, summary)
        classes = self.exemplars.class_names
        summary.outputs = [str(p) for p in write_outputs(
            Path(config.out), config.job_dir, config.fmt, classes, entries,
            summary.to_file_dict(classes, config.params))]
        if config.annotated is not None:
            self._annotate(entries)
        self._mark_done()
        summary.seconds = time.perf_counter() - start
        return summary

    def _score(self, store: EmbeddingStore, journal: Journal,
               summary: LabelSummary) -> list[tuple[str, DetectionResult]]:  # noqa: F821
        from owl_core.engine.batch_scoring import score_batch

        hashes: dict[str, str] = {}
        for image in self.inputs:
            entry = journal.entries.get(str(image.path), {})
            if entry.get("hash") in store:
                hashes[image.name] = entry["hash"]
            else:
                summary.failures.append({"file": image.name,
                                         "error": entry.get("error", "not embedded")})
        by_hash = {}
        for batch in store.iter_batches(hashes.values()):
            for content_hash, result in zip(batch.hashes, score_batch(
                    batch, self.exemplars, self.config.params), strict=True):
                by_hash[content_hash] = result
        entries = [(name, by_hash[h]) for name, h in hashes.items()]
        counts = {name: 0 for name in self.exemplars.class_names}
        for _, result in entries:
            for name, n in result.counts().items():
                counts[name] += n
        summary.labelled = len(entries)
        summary.boxes = sum(counts.values())
        summary.boxes_per_class = counts
        return entries

    def _annotate(self, entries) -> None:
        from owl_core.images import resolve_image

        paths = {image.name: image.path for image in self.inputs}
        for name, result in entries:
            try:
                rgb = resolve_image(paths[name]).decode()
            except OwlError as exc:  # changed since it was labelled
                self.log(f"not annotated {name}: {exc}")
                continue
            write_annotated(Path(self.config.annotated), name, rgb, result)

    # ------------------------------------------------------------------ local embedding
    def _read(self, image: InputImage, store: EmbeddingStore) -> _Done:
        """Worker thread: read + hash; decode + preprocess unless the content is stored."""
        from owl_core.images import resolve_image

        stat = _stat_key(image.path)
        try:
            source = resolve_image(image.path)
            if source.content_hash in store:
                return _Done(image, stat, source.content_hash)
            rgb = source.decode()
            pixels = self.transform.preprocess(rgb)
        except (OwlError, OSError, ValueError) as exc:
            return _Done(image, stat, error=describe_error(exc))
        return _Done(image, stat, source.content_hash, pixels, (rgb.shape[1], rgb.shape[0]))

    def _embed_local(self, todo: list[InputImage], sink: EmbedSink) -> None:
        """Embed `todo` in order; reading runs `prefetch` images ahead on worker threads."""
        batch: list[_Done] = []
        for item in prefetch(todo, lambda im: self._read(im, sink.store),
                             self.config.workers, self.config.prefetch):
            if item.error is not None:
                sink.failure(item.image, item.stat, item.error)
            elif item.pixels is None or item.content_hash in sink.store:
                sink.stored(item.image, item.stat, item.content_hash)
            else:
                batch.append(item)
                if len(batch) >= self.config.batch_size:
                    self._embed_batch(batch, sink)
                    batch = []
        if batch:
            self._embed_batch(batch, sink)

    def _embed_batch(self, batch: list[_Done], sink: EmbedSink) -> None:
        from owl_core.engine.embedding import compute_embeddings

        tick = time.perf_counter()
        embs = compute_embeddings(self.owl, torch.stack([d.pixels for d in batch]),
                                  [d.size for d in batch], self.top_k)
        sink.tower_seconds += time.perf_counter() - tick
        for item, emb in zip(batch, embs, strict=True):
            if item.content_hash in sink.store:  # the same bytes twice in one batch
                sink.stored(item.image, item.stat, item.content_hash)
            else:
                sink.embedded_image(item.image, item.stat, item.content_hash, emb)


def prefetch(items: Sequence, fn: Callable, workers: int, depth: int) -> Iterator:
    """`fn(item)` for each item, in order, computed up to `depth` items ahead on `workers`
    threads that use one intra-op torch thread each (the caller keeps its own count)."""
    threads = torch.get_num_threads()
    ready = threading.Barrier(workers + 1)

    def init() -> None:
        torch.set_num_threads(1)
        ready.wait()

    pool = ThreadPoolExecutor(workers, thread_name_prefix="owl-label-read", initializer=init)
    try:
        for _ in range(workers):  # start every worker now, then restore the caller's count
            pool.submit(lambda: None)
        ready.wait()
        torch.set_num_threads(threads)
        queue: list[Future] = []
        it = iter(items)
        for item in it:
            queue.append(pool.submit(fn, item))
            if len(queue) >= depth:
                break
        while queue:
            result = queue.pop(0).result()
            nxt = next(it, None)
            if nxt is not None:
                queue.append(pool.submit(fn, nxt))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------- CLI
def default_dtype(device: torch.device, cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """bf16 on a CPU with native bf16 (AVX512-BF16 or AMX), unless OWL_DTYPE says otherwise;
    else None (the loader's default: fp32 on CPU, fp16 on CUDA)."""
    if os.environ.get("OWL_DTYPE", "").strip() or device.type != "cpu":
        return None
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return "bf16" if flags & {"avx512_bf16", "amx_bf16"} else None
    except OSError:
        pass
    return None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `label` subcommand's arguments."""
    from owl_core.params import (
        DEFAULT_CONFIDENCE,
        DEFAULT_IOU_THRESHOLD,
        DEFAULT_MAX_DETECTIONS,
        SCORE_MODES,
    )

    p.add_argument("input", nargs="?", default=None,
                   help="folder of images (searched recursively) or a list file (optional with "
                        "--project: its query images)")
    add_prompt_arguments(p, ("weights", "training_data", "project"))
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", default="coco", choices=FORMATS)
    p.add_argument("--annotated", default=None, help="folder for pictures with boxes drawn")
    p.add_argument("--store", default=None,
                   help=f"embedding store folder (default OUT/{STORE_DIR}; share it between "
                        "jobs to re-label without embedding again)")
    p.add_argument("--store-dtype", default="fp16", choices=["fp16", "fp32"])
    p.add_argument("--confidence", type=float, default=None,
                   help=f"(default {DEFAULT_CONFIDENCE}, or the .pt's / project's setting)")
    p.add_argument("--iou-threshold", type=float, default=None,
                   help=f"(default {DEFAULT_IOU_THRESHOLD})")
    p.add_argument("--max-detections", type=int, default=None,
                   help=f"(default {DEFAULT_MAX_DETECTIONS})")
    p.add_argument("--score-mode", default=None, choices=SCORE_MODES)
    p.add_argument("--match-threshold", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--preprocessing", default=None, choices=["hf", "roboflow"],
                   help="image preprocessing (default: hf, or the mode of the --weights .pt)")
    p.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"],
                   help="vision tower autocast (default: bf16 on CPUs with native bf16, fp16 "
                        "on CUDA, else fp32)")
    p.add_argument("--batch-size", type=int, default=None, help="(default 1 on CPU, 8 on CUDA)")
    p.add_argument("--workers", type=int, default=2, help="reader/decoder threads")
    p.add_argument("--prefetch", type=int, default=4, help="images decoded ahead of the tower")
    p.add_argument("--flush-seconds", type=float, default=30.0,
                   help="write the store/journal at least this often (what a crash may cost)")
    p.add_argument("--restart", action="store_true",
                   help="start over when OUT holds an unfinished job with other settings")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="run with Ray Data (local cluster, or the cluster at ADDRESS)")
    p.add_argument("--ray-actors", type=int, default=None,
                   help="model actors (default: GPUs in the cluster, else 1)")


def build_job(args: argparse.Namespace, log: Callable[[str], None]) -> LabelJob:
    """Load the prompts (validated before the model), the model and the inputs."""
    from owl_core.engine.loading import DEFAULT_MODEL_ID, resolve_device
    from owl_core.engine.predictor import OwlPredictor

    out = Path(args.out)
    exclude = [out] + ([Path(args.annotated)] if args.annotated else [])
    if args.input is None and not args.project:
        raise SettingsError("give INPUT: a folder of images or a list file (only --project "
                            "can do without: it labels the project's query images).")
    inputs = list_inputs(args.input, exclude=exclude) if args.input is not None else []
    store_dir = Path(args.store) if args.store else None
    if not args.weights and not args.project and not args.model:
        log(f"no --model given: using {DEFAULT_MODEL_ID}")
    prompts = read_prompts(args)  # validated before the model is loaded
    if prompts.project is not None and not args.weights:
        store_dir = store_dir or prompts.project.embedding_dir / "label-store"
        if args.input is None:
            inputs = inputs_from_paths(list(prompts.queries))
            if not inputs:
                raise SettingsError(f"{args.project}: the project has no query images; pass "
                                    "INPUT (a folder or a list file).")
    params = prompts.params(args)
    device = resolve_device(args.device)
    dtype = args.dtype or default_dtype(device)
    predictor = OwlPredictor(prompts.model, device=device, dtype=dtype, top_k=prompts.top_k,
                             match_threshold=params.match_threshold,
                             preprocessing=args.preprocessing)
    prompts.apply(predictor, log)
    batch = args.batch_size or (1 if predictor.owl.device.type == "cpu" else 8)
    config = LabelConfig(
        out=out, fmt=args.format, params=params,
        store_dir=store_dir, store_dtype=args.store_dtype,
        batch_size=batch, workers=args.workers, prefetch=args.prefetch,
        flush_seconds=args.flush_seconds, annotated=Path(args.annotated) if args.annotated
        else None, restart=args.restart, progress=not args.no_progress)
    return LabelJob(predictor.owl, predictor.exemplars, inputs, config, predictor.top_k,
                    predictor.transform, log=log)


def print_summary(summary: LabelSummary, log: Callable[[str], None]) -> None:
    per_class = ", ".join(f"{k}: {v}" for k, v in summary.boxes_per_class.items()) or "none"
    rate = summary.embedded / summary.embed_seconds if summary.embed_seconds else 0.0
    log(f"labelled {summary.labelled}/{summary.images} images ({summary.embedded} embedded, "
        f"{summary.reused} from the store), {summary.boxes} boxes ({per_class}); "
        f"{len(summary.failures)} failed; {summary.seconds:.1f} s"
        + (f", {rate:.2f} images/s embedding" if summary.embedded else ""))
    for failure in summary.failures[:20]:
        log(f"  failed: {failure['file']}: {failure['error']}")
    if len(summary.failures) > 20:
        log(f"  ... and {len(summary.failures) - 20} more (see {SUMMARY_FILE})")
    for path in summary.outputs:
        log(f"wrote {path}")


def run_args(args: argparse.Namespace) -> int:
    """Run the `label` subcommand from parsed arguments (errors propagate)."""
    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    job = build_job(args, log)
    phase = None
    if args.ray is not None:
        from owl_core.batch.ray_embed import ray_embed_phase

        phase = ray_embed_phase(args.ray, actors=args.ray_actors)
    try:
        summary = job.run(phase)
    except KeyboardInterrupt:
        log("interrupted: what was embedded is kept; run the same command again to finish")
        raise
    print_summary(summary, log)
    return 0


def add_subcommand(sub) -> argparse.ArgumentParser:
    """Register ``label`` on an argparse subparsers object."""
    p = sub.add_parser("label", help="label a folder of images with a prompt set (resumable)",
                       description=__doc__.split("\n")[0])
    add_arguments(p)
    p.set_defaults(handler=run_args)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m owl_core.batch.job ...``: one-line errors (status 2), 130 on Ctrl-C."""
    parser = argparse.ArgumentParser(prog="owl-studio label", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_args(args)
    except (OwlError, ValueError, RuntimeError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


__all__ = [
    "OUTPUT_ENTRIES",
    "EmbedSink",
    "InputImage",
    "LabelConfig",
    "LabelJob",
    "LabelSummary",
    "add_subcommand",
    "build_job",
    "default_dtype",
    "list_inputs",
    "main",
]

if __name__ == "__main__":
    raise SystemExit(main())
