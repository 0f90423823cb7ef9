"""`OwlPredictor`: embed images once, then answer any set of examples from the cache.

Set up once per user session; the model is shared (see `load_model`), caches are the
predictor's own. Prompt state lives in one frozen `_Prompts` record replaced as a whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from owl_core.engine.cache import CacheStats, EmbeddingCache
from owl_core.engine.embedding import ImageEmbeddings, compute_embeddings
from owl_core.engine.loading import DEFAULT_MODEL_ID, OwlModel, load_model
from owl_core.engine.matching import (
    DEFAULT_MATCH_THRESHOLD,
    BoxMatch,
    Exemplars,
    ExemplarSource,
    MatchReport,
    clipped_xyxy,
    combine_exemplars,
    exemplar_embedding,
    match_boxes,
)
from owl_core.engine.prompt_file import (
    SerializedPrompts,
    build_payload,
    public_model_id,
    save_pt,
)
from owl_core.engine.prompt_file import load_pt as _load_pt_file
from owl_core.engine.scoring import DetectionResult, detect, detect_many
from owl_core.engine.text import TEXT_DISK_SUBDIR, TextEmbedding, new_text_cache, text_embeddings
from owl_core.engine.training_data import (
    TrainingDataError,
    TrainingImage,
    check_class_names,
    parse_training_data,
)
from owl_core.engine.transforms import (
    DEFAULT_PREPROCESSING,
    OwlTransform,
    Preprocessing,
    check_preprocessing,
)
from owl_core.errors import ImageError, PtFormatError, SettingsError
from owl_core.images import ImageInput, ImageSource, resolve_image
from owl_core.params import CombineMode, DetectParams, ScoreMode
from owl_core.phrases import PromptPhrase, parse_phrases, phrase_classes

DEFAULT_TOP_K = 300
#: Cache budgets (MB) when neither the caller nor the environment (OWL_DEVICE_CACHE_MB,
#: OWL_HOST_CACHE_MB) says otherwise; the environment is read when a predictor is built.
DEFAULT_DEVICE_CACHE_MB = 1024
DEFAULT_HOST_CACHE_MB = 2048


def _cache_bytes_from_env(name: str, default_mb: int) -> int:
    """A cache budget in bytes from the environment variable `name` (MB), read now."""
    text = os.environ.get(name, "").strip()
    try:
        return int(text or default_mb) * 1024**2
    except ValueError:
        raise SettingsError(f"{name}={text!r}: expected a whole number of MB.") from None
_HASH_RE = re.compile(r"[0-9a-f]{32}")
_CLASS_CACHE_ENTRIES = 64
_T = TypeVar("_T")
_LIGHT_POOL: ThreadPoolExecutor | None = None
_LIGHT_POOL_LOCK = threading.Lock()


def _run_light(fn: Callable[..., _T], *args: Any) -> _T:
    """Run small tensor work (matching, scoring, NMS: ops of ~100 us) on one long-lived thread
    that uses a single intra-op thread, and wait for it.

    With OpenMP's fork/join every small op otherwise waits for a second thread, which a busy CPU
    (a background embedding, other processes) may not schedule for milliseconds: a 20-image
    preview measured 9 ms this way vs 65 ms on the 2-core CPU under load. `torch.set_num_threads`
    is per thread for OpenMP/MKL but also sets the default of threads started later, so it is
    set once in the worker and the default restored right away.
    """
    if torch.get_num_threads() == 1 or threading.current_thread().name.startswith("owl-light"):
        return fn(*args)
    global _LIGHT_POOL
    with _LIGHT_POOL_LOCK:
        if _LIGHT_POOL is None:
            threads = torch.get_num_threads()
            pool = ThreadPoolExecutor(1, thread_name_prefix="owl-light")
            pool.submit(torch.set_num_threads, 1).result()
            torch.set_num_threads(threads)
            _LIGHT_POOL = pool
    return _LIGHT_POOL.submit(fn, *args).result()


def pt_preprocessing(prompts: SerializedPrompts) -> Preprocessing:
    """The preprocessing a `.pt`'s exemplars were made with: our metadata's "preprocessing"
    ("hf" in files written before it was recorded); "roboflow" for a file without our
    metadata (written by Roboflow Inference)."""
    if not prompts.meta:
        return "roboflow"
    mode = prompts.meta.get("preprocessing", DEFAULT_PREPROCESSING)
    try:
        return check_preprocessing(mode)
    except SettingsError as exc:
        raise PtFormatError(f"the .pt records preprocessing {mode!r}, which this version does "
                            "not know; load it with an explicit preprocessing= or export it "
                            "again.") from exc


def _params(params: DetectParams | None, confidence: float | None, iou_threshold: float | None,
            max_detections: int | None, score_mode: str | None,
            combine: str | None = None) -> DetectParams:
    """`params` (or the defaults) with the explicitly given keyword values applied."""
    return (params or DetectParams()).replace(
        confidence=confidence, iou_threshold=iou_threshold, max_detections=max_detections,
        score_mode=score_mode, combine=combine)


@dataclass(frozen=True)
class _Prompts:
    """Everything `detect` reads, swapped atomically."""

    examples: Exemplars
    imported: Exemplars
    combined: Exemplars
    report: MatchReport | None = None


@dataclass(frozen=True)
class EmbedInfo:
    """Result of embedding one image: its content hash and (width, height)."""

    content_hash: str
    image_size: tuple[int, int]
    cached: bool


@dataclass
class _StatMemo:
    """path -> content hash, valid while (mtime_ns, ctime_ns, size, inode) are unchanged, so a
    warm preview needn't re-read files; any edit changes the stat and forces a re-hash."""

    entries: OrderedDict[str, tuple[tuple[int, int, int, int], str]] = field(
        default_factory=OrderedDict)
    max_entries: int = 4096


class OwlPredictor:
    """Few-shot OWLv2 detector with content-keyed embedding caches.

    Args:
        model: an `OwlModel` or a hub id / local folder passed to `load_model`.
        device, dtype, compile: forwarded to `load_model` when `model` is a string.
        top_k: candidate boxes kept per image by objectness (clamped to the patch count).
        match_threshold: IoU a drawn box needs with a predicted box to become an exemplar.
        device_cache_bytes, host_cache_bytes: byte budgets of the memory tiers (None: the
            environment's OWL_DEVICE_CACHE_MB / OWL_HOST_CACHE_MB, read now, else 1024 / 2048
            MB).
        disk_cache_dir: folder of a persistent embedding cache shared between processes.
        disk_cache_bytes: byte budget of that folder.
        cache: an existing `EmbeddingCache` to use instead of making one (the cache
            arguments above are then ignored): a server shares one between its sessions, so
            one budget bounds them all (embeddings are keyed by image content + model
            settings, so sharing is safe).
        preprocessing: "hf" (transformers' processor) or "roboflow" (Roboflow Inference's
            OwlV2, to reproduce its detections; drawn boxes then also snap among the top-K
            candidates only, as there); None = "hf" unless a loaded `.pt` says otherwise (a
            file written by Roboflow selects "roboflow", see `load_pt`).
        text_cache: phrase embeddings (`owl_core.engine.text`) to share; default: this
            predictor's own, with a disk tier in ``<image cache disk folder>/text`` when the
            image cache has one.
    """

    def __init__(
        self,
        model: OwlModel | str = DEFAULT_MODEL_ID,
        *,
        device: str | torch.device | None = None,
        dtype: str | None = None,
        compile: bool = False,
        top_k: int = DEFAULT_TOP_K,
        match_threshold: float = DEFAULT_MATCH_THRESHOLD,
        device_cache_bytes: int | None = None,
        host_cache_bytes: int | None = None,
        disk_cache_dir: str | Path | None = None,
        disk_cache_bytes: int | None = None,
        cache: EmbeddingCache[ImageEmbeddings] | None = None,
        preprocessing: Preprocessing | None = None,
        text_cache: EmbeddingCache[TextEmbedding] | None = None,
    ) -> None:
        if preprocessing is not None:
            check_preprocessing(preprocessing)
        if isinstance(model, OwlModel):
            self.owl = model
        else:
            self.owl = load_model(model, device=device, dtype=dtype, compile=compile)
        if int(top_k) < 1:
            raise SettingsError(f"top_k must be >= 1, got {top_k}.")
        if not 0.0 < float(match_threshold) <= 1.0:
            raise SettingsError(f"match_threshold must be in (0, 1], got {match_threshold}.")
        self.top_k = min(int(top_k), self.owl.grid_size ** 2)
        self.match_threshold = float(match_threshold)
        self.transform = OwlTransform.for_mode(
            self.owl.input_size, tuple(self.owl.image_mean), tuple(self.owl.image_std),
            preprocessing or DEFAULT_PREPROCESSING)
        #: None = not chosen by the caller: a loaded `.pt` may select its own (see `load_pt`)
        self._preprocessing_choice: Preprocessing | None = preprocessing
        if device_cache_bytes is None:
            device_cache_bytes = _cache_bytes_from_env("OWL_DEVICE_CACHE_MB",
                                                       DEFAULT_DEVICE_CACHE_MB)
        if host_cache_bytes is None:
            host_cache_bytes = _cache_bytes_from_env("OWL_HOST_CACHE_MB", DEFAULT_HOST_CACHE_MB)
        if cache is None:
            cache = EmbeddingCache(
                device=self.owl.device, device_bytes=int(device_cache_bytes),
                host_bytes=int(host_cache_bytes), disk_dir=disk_cache_dir,
                disk_bytes=disk_cache_bytes, value_type=ImageEmbeddings)
        self._cache: EmbeddingCache[ImageEmbeddings] = cache
        if text_cache is None:
            disk = cache.disk_dir
            text_cache = new_text_cache(disk / TEXT_DISK_SUBDIR if disk is not None else None)
        self._text_cache: EmbeddingCache[TextEmbedding] = text_cache
        #: embeddings that came in a loaded `.pt`: data from the file's author, kept with this
        #: predictor's imported prompts, never put in `_cache` (shared, maybe on disk)
        self._file_embeds: EmbeddingCache[ImageEmbeddings] = EmbeddingCache(
            device=self.owl.device, device_bytes=0, host_bytes=int(host_cache_bytes))
        self._compute_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._class_cache: OrderedDict[str, tuple[Exemplars, MatchReport]] = OrderedDict()
        self._stat_memo = _StatMemo()
        empty = Exemplars.empty((), self.owl.class_embed_dim)
        self._prompts = _Prompts(empty, empty, empty)

    # ------------------------------------------------------------------ identity and keys
    @property
    def fingerprint(self) -> str:
        """Everything besides the pixels that changes an embedding."""
        dtype = str(self.owl.autocast_dtype) if self.owl.autocast_dtype else "fp32"
        return (f"{self.owl.source}|{self.owl.input_size}|{self.transform.pad_value}|"
                f"{self.top_k}|{dtype}|{self.transform.preprocessing}")

    @property
    def preprocessing(self) -> Preprocessing:
        """The image preprocessing in use: "hf" or "roboflow" (see `owl_core.engine.transforms`)."""
        return self.transform.preprocessing

    def set_preprocessing(self, preprocessing: Preprocessing) -> None:
        """Switch the image preprocessing (and pin it: a later `load_pt` keeps it).

        Embeddings are cached per mode, so images are embedded again on first use in the new
        mode; exemplars already set stay as they are (call `set_examples` again to re-match
        them on the new embeddings).
        """
        self._switch_preprocessing(check_preprocessing(preprocessing))
        self._preprocessing_choice = preprocessing

    def _switch_preprocessing(self, preprocessing: Preprocessing) -> None:
        if preprocessing == self.transform.preprocessing:
            return
        with self._compute_lock:  # no embedding is keyed with one mode and computed in another
            self.transform = OwlTransform.for_mode(
                self.transform.input_size, self.transform.image_mean, self.transform.image_std,
                preprocessing)

    def _key(self, content_hash: str) -> str:
        return hashlib.blake2b(f"{content_hash}|{self.fingerprint}".encode(),
                               digest_size=16).hexdigest()

    def _resolve(self, image: ImageInput | str) -> ImageSource | str:
        """An `ImageSource`, or a bare content hash for inputs known without reading them."""
        if isinstance(image, str) and _HASH_RE.fullmatch(image) and self._has(self._key(image)):
            return image
        if isinstance(image, (str, os.PathLike)) and not str(image).startswith("data:"):
            path = os.fspath(image)
            try:
                st = os.stat(path)
            except OSError:
                return resolve_image(image)
            stamp = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
            memo = self._stat_memo.entries.get(path)
            if memo is not None and memo[0] == stamp and self._has(self._key(memo[1])):
                return memo[1]
            source = resolve_image(image)
            self._stat_memo.entries[path] = (stamp, source.content_hash)
            if len(self._stat_memo.entries) > self._stat_memo.max_entries:
                self._stat_memo.entries.popitem(last=False)
            return source
        return resolve_image(image)

    # ------------------------------------------------------------------ embedding
    def embed(self, image: ImageInput, *, keep_patches: bool = False) -> str:
        """Embed one image (no-op when cached) and return its content hash.

        Args:
            image: path, PIL image, (H, W, 3) uint8 RGB array, bytes, base64 string, or the
                content hash of an image already cached.
            keep_patches: also keep all patches' class embeddings (for example images).
        """
        return self.embed_many([image], keep_patches=keep_patches)[0].content_hash

    def embed_many(
        self,
        images: Sequence[ImageInput],
        *,
        batch_size: int = 4,
        keep_patches: bool | Sequence[bool] = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[EmbedInfo]:
        """Embed many images in batches; cached ones cost a hash lookup only.

        Args:
            images: see `embed`.
            batch_size: images per forward pass.
            keep_patches: per image or for all; see `embed`.
            progress: called as progress(done, total) after each batch.
        """
        flags = ([keep_patches] * len(images) if isinstance(keep_patches, bool)
                 else list(keep_patches))
        if len(flags) != len(images):
            raise SettingsError("keep_patches must be a bool or one flag per image.")
        return [info for info, _ in self._embed(images, flags, batch_size, progress)]

    def _embed(
        self,
        images: Sequence[ImageInput],
        flags: list[bool],
        batch_size: int = 4,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[tuple[EmbedInfo, ImageEmbeddings]]:
        """Embeddings of each image, from the cache or computed in batches (also returned when
        the cache is too small to keep them)."""
        results: list[tuple[EmbedInfo, ImageEmbeddings] | None] = [None] * len(images)
        todo: list[tuple[int, ImageSource]] = []
        for i, image in enumerate(images):
            source = self._resolve(image)
            content_hash = source if isinstance(source, str) else source.content_hash
            cached = self._lookup(self._key(content_hash))
            if cached is not None and (not flags[i] or self._enough(cached)):
                results[i] = (EmbedInfo(content_hash, cached.image_size, True), cached)
            elif isinstance(source, str) and not (isinstance(image, str) and image == source):
                # a path memoised as its hash, but the cached entry lacks the all-patch
                # embeddings asked for: read the file after all
                todo.append((i, resolve_image(image)))
            elif isinstance(source, str):
                raise ImageError(f"image {source} is known only by its hash and is no longer "
                                 "cached (or lacks what is needed); pass the image itself.")
            else:
                todo.append((i, source))
        # the same content twice in one call is embedded once, with all patches if any copy
        # asks for them (else a later top-K-only copy would replace the full entry)
        flags = list(flags)
        first: dict[str, int] = {}
        copies: list[tuple[int, int]] = []
        unique: list[tuple[int, ImageSource]] = []
        for i, source in todo:
            j = first.setdefault(source.content_hash, i)
            if j == i:
                unique.append((i, source))
            else:
                copies.append((i, j))
                flags[j] = flags[j] or flags[i]
        total = len(unique)
        if progress is not None:
            progress(0, total)
        step = max(1, int(batch_size))
        for start in range(0, total, step):
            chunk = unique[start:start + step]
            with self._compute_lock:
                for (i, _), pair in zip(chunk, self._compute(chunk, flags), strict=True):
                    results[i] = pair
            if progress is not None:
                progress(min(start + len(chunk), total), total)
        for i, j in copies:
            results[i] = results[j]
        return [pair for pair in results if pair is not None]

    @staticmethod
    def _enough(emb: ImageEmbeddings) -> bool:
        # imported (top-K only) entries are used as they are: recomputing would defeat reuse
        return emb.has_patches or emb.patch_boxes is None

    def _compute(self, chunk: list[tuple[int, ImageSource]],
                 flags: list[bool]) -> list[tuple[EmbedInfo, ImageEmbeddings]]:
        out: dict[int, tuple[EmbedInfo, ImageEmbeddings]] = {}
        pending: list[tuple[int, ImageSource]] = []
        for i, source in chunk:  # another thread may have finished it while we waited
            key = self._key(source.content_hash)
            cached = self._lookup(key) if self._has(key) else None
            if cached is not None and (not flags[i] or self._enough(cached)):
                out[i] = (EmbedInfo(source.content_hash, cached.image_size, True), cached)
            else:
                pending.append((i, source))
        if pending:
            pixels = [source.decode() for _, source in pending]
            sizes = [(p.shape[1], p.shape[0]) for p in pixels]
            batch = self.transform.preprocess_batch(pixels)
            embs = compute_embeddings(self.owl, batch, sizes, self.top_k,
                                      [flags[i] for i, _ in pending])
            for (i, source), emb in zip(pending, embs, strict=True):
                self._cache.put(self._key(source.content_hash), emb)
                out[i] = (EmbedInfo(source.content_hash, emb.image_size, False), emb)
        return [out[i] for i, _ in chunk]

    def embeddings(self, image: ImageInput, *, keep_patches: bool = False) -> ImageEmbeddings:
        """The cached (or freshly computed) `ImageEmbeddings` of an image."""
        return self._embed([image], [keep_patches])[0][1]

    # ------------------------------------------------------------------ examples
    @property
    def class_names(self) -> tuple[str, ...]:
        return self._prompts.combined.class_names

    @property
    def exemplars(self) -> Exemplars:
        """Exemplars in use: imported from a `.pt` plus those from `set_examples`."""
        return self._prompts.combined

    @property
    def imported_exemplars(self) -> Exemplars:
        return self._prompts.imported

    @property
    def last_report(self) -> MatchReport | None:
        return self._prompts.report

    def set_examples(
        self,
        training_data: Any = None,
        class_names: Sequence[str] | None = None,
        *,
        phrases: Any = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> MatchReport:
        """Replace the prompts: drawn examples (reference schema) and phrases; return the
        per-box report (its `phrases` lists the phrases in use).

        A class detects with its phrases (zero or more), positive boxes and negative boxes
        (and negative phrases); it needs at least one phrase or positive box to detect
        anything. How phrases and boxes combine is `DetectParams.combine`.

        Args:
            training_data: ``[{"image": ..., "boxes": [{"x", "y", "w", "h", "cls",
                "negative"}]}]``, x/y the box centre in pixels; None = no boxes.
            class_names: the class list (order = class id); defaults to the order of first
                appearance (boxes, then phrases). Classes without boxes or phrases are allowed
                and simply detect nothing.
            phrases: ``{class: [phrase, ...]}`` or ``[{"cls", "text", "negative"}]`` (see
                `owl_core.phrases.parse_phrases`); each phrase is embedded once per model
                (cached, `owl_core.engine.text`).
            progress: forwarded to `embed_many` for images not cached yet.

        Raises:
            TrainingDataError: malformed data, or a phrase the tokenizer can't take (too
                many tokens); nothing is changed then.
        """
        parsed = parse_training_data([] if training_data is None else training_data)
        phrase_list = parse_phrases(phrases)
        names = self._class_list(parsed, class_names, phrase_list)
        # phrases first: a phrase that is too long fails before any image is embedded
        text_rows = self.embed_phrases([p.text for p in phrase_list])
        # all-patch embeddings only where a box must be matched against every patch (roboflow
        # mode matches among the top K alone)
        all_patches = self.transform.preprocessing != "roboflow"
        pairs = self._embed([t.image for t in parsed],
                            [bool(t.boxes) and all_patches for t in parsed], progress=progress)
        hashes = [info.content_hash for info, _ in pairs]
        key = self._examples_key(parsed, hashes, names)
        with self._state_lock:
            hit = self._class_cache.get(key)
            if hit is not None:
                self._class_cache.move_to_end(key)
        if hit is None:
            hit = self._light(self._match_all, parsed, pairs, names)
            with self._state_lock:
                self._class_cache[key] = hit
                while len(self._class_cache) > _CLASS_CACHE_ENTRIES:
                    self._class_cache.popitem(last=False)
        exemplars, report = hit
        if phrase_list:
            exemplars = exemplars.with_phrases(phrase_list, text_rows)
            report = dataclasses.replace(report, phrases=phrase_list)
        with self._state_lock:
            imported = self._prompts.imported
            self._prompts = _Prompts(exemplars, imported, imported.merged(exemplars)
                                     if len(imported.class_names) else exemplars, report)
        return report

    def clear_imported(self) -> None:
        """Forget exemplars that came from a loaded `.pt`."""
        with self._state_lock:
            examples = self._prompts.examples
            empty = Exemplars.empty((), self.owl.class_embed_dim)
            self._prompts = _Prompts(examples, empty, examples, self._prompts.report)
        self._file_embeds.reset()  # the file's embeddings went with its prompts
        if self._preprocessing_choice is None:  # the file's mode no longer applies
            self._switch_preprocessing(DEFAULT_PREPROCESSING)

    @staticmethod
    def _class_list(parsed: list[TrainingImage], class_names: Sequence[str] | None,
                    phrases: Sequence[PromptPhrase] = ()) -> list[str]:
        seen = list(dict.fromkeys(b.cls for t in parsed for b in t.boxes))
        if class_names is None:
            return check_class_names(seen + [c for c in phrase_classes(phrases)
                                             if c not in seen])
        names = check_class_names(class_names)  # bounded count / lengths, non-empty, unique
        missing = [n for n in seen if n not in names]
        if missing:
            raise TrainingDataError(f"boxes use classes {missing} that are not in class_names "
                                    f"{names}; add them or fix the boxes.")
        missing = [n for n in phrase_classes(phrases) if n not in names]
        if missing:
            raise TrainingDataError(f"phrases use classes {missing} that are not in "
                                    f"class_names {names}; add them or fix the phrases.")
        return names

    def _examples_key(self, parsed: list[TrainingImage], hashes: list[str],
                      names: list[str]) -> str:
        payload = {
            "fp": self.fingerprint, "thr": self.match_threshold, "names": names,
            "images": [[h, [[b.x, b.y, b.w, b.h, b.cls, b.negative] for b in t.boxes]]
                       for h, t in zip(hashes, parsed, strict=True)],
        }
        return hashlib.blake2b(json.dumps(payload).encode(), digest_size=16).hexdigest()

    def _match_all(self, parsed: list[TrainingImage],
                   pairs: list[tuple[EmbedInfo, ImageEmbeddings]],
                   names: list[str]) -> tuple[Exemplars, MatchReport]:
        rows: list[torch.Tensor] = []
        ids: list[int] = []
        neg: list[bool] = []
        sources: list[ExemplarSource] = []
        report: list[BoxMatch] = []
        for i, (entry, (info, emb)) in enumerate(zip(parsed, pairs, strict=True)):
            content_hash = info.content_hash
            if self.transform.preprocessing == "roboflow":  # as the reference: among the top K
                emb = emb.top_k_only()
            for j, (box, (idx, iou, snapped, reason)) in enumerate(
                    zip(entry.boxes, match_boxes(emb, entry.boxes, self.match_threshold),
                        strict=True)):
                drawn = clipped_xyxy(box, emb.image_size)
                vector = exemplar_embedding(emb, idx) if idx is not None else None
                if vector is not None:
                    rows.append(vector.float().cpu())
                    ids.append(names.index(box.cls))
                    neg.append(box.negative)
                    sources.append(ExemplarSource(content_hash, drawn, box.cls, box.negative, iou))
                report.append(BoxMatch(i, j, content_hash, box.cls, box.negative, drawn,
                                       vector is not None, iou, snapped, reason))
        dim = self.owl.class_embed_dim
        exemplars = Exemplars(
            tuple(names),
            torch.stack(rows) if rows else torch.zeros(0, dim),
            torch.tensor(ids, dtype=torch.long), torch.tensor(neg, dtype=torch.bool),
            tuple(sources))
        return exemplars, MatchReport(tuple(report), tuple(names), self.match_threshold)

    # ------------------------------------------------------------------ detection
    def detect(
        self,
        image: ImageInput,
        params: DetectParams | None = None,
        *,
        confidence: float | None = None,
        iou_threshold: float | None = None,
        max_detections: int | None = None,
        score_mode: ScoreMode | None = None,
        combine: CombineMode | None = None,
    ) -> DetectionResult:
        """Detect the current classes on one image (embedding it first if needed).

        Args:
            params: detection settings (defaults: `DetectParams()`); keyword arguments given
                explicitly override its fields.

        Returns:
            `DetectionResult` in original-image pixels (XYXY, clipped).
        """
        p = _params(params, confidence, iou_threshold, max_detections, score_mode, combine)
        return self._light(detect, self.embeddings(image), self.scored_exemplars(p.combine),
                           p.confidence, p.iou_threshold, p.max_detections, p.score_mode)

    def detect_many(
        self,
        images: Iterable[ImageInput],
        params: DetectParams | None = None,
        *,
        confidence: float | None = None,
        iou_threshold: float | None = None,
        max_detections: int | None = None,
        score_mode: ScoreMode | None = None,
        combine: CombineMode | None = None,
    ) -> list[DetectionResult]:
        """`detect` for several images with the same prompts and thresholds."""
        p = _params(params, confidence, iou_threshold, max_detections, score_mode, combine)
        prompts = self.scored_exemplars(p.combine)
        embs = [self.embeddings(img) for img in images]  # any embedding runs here, not below
        return self._light(detect_many, embs, prompts, p.confidence, p.iou_threshold,
                           p.max_detections, p.score_mode)

    def scored_exemplars(self, combine: CombineMode = "max") -> Exemplars:
        """The rows `detect` scores: the exemplars in use (boxes and phrases) combined per
        class by `combine` ("max" or "fused", see `matching.combine_exemplars`)."""
        return combine_exemplars(self._prompts.combined, combine)

    def winners(self, image: ImageInput, result: DetectionResult) -> list[ExemplarSource | None]:
        """For each detection of `result` (made on `image` with the current prompts), the box
        exemplar or phrase of its class that wins it (the closest positive row, see
        `owl_core.engine.attribution`); None where unknown."""
        from owl_core.engine.attribution import winning_rows

        exemplars = self._prompts.combined
        rows = self._light(winning_rows, self.embeddings(image), result, exemplars)
        sources = exemplars.known_sources()
        return [sources[r] if r >= 0 else None for r in rows]

    def embed_phrases(self, phrases: Sequence[str]) -> torch.Tensor:
        """(N, D) query embeddings of phrases (cached per model and phrase). On a CPU the text
        tower runs on the one-intra-op-thread worker (`_run_light`): 16 tokens per phrase are
        small ops, and on a busy 2-core machine OpenMP's fork/join made one base phrase take
        5.1 s with 2 threads vs 0.23 s with one (bench/text_bench.py)."""
        if not phrases:
            return text_embeddings(self.owl, [], self._text_cache)
        return self._light(text_embeddings, self.owl, list(phrases), self._text_cache)

    def text_cache_stats(self) -> CacheStats:
        return self._text_cache.stats()

    def _light(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Small CPU tensor work on the single-intra-op-thread worker (see `_run_light`)."""
        if self.owl.device.type != "cpu":
            return fn(*args)
        return _run_light(fn, *args)

    # ------------------------------------------------------------------ export / import
    def export(
        self,
        path: str | Path,
        *,
        small: bool = False,
        previous: str | Path | None = None,
        roboflow_id: str | None = None,
        settings: dict[str, Any] | None = None,
        public: bool = False,
    ) -> Path:
        """Write the current exemplars as a `.pt` (atomically) and return its path.

        Args:
            path: destination file.
            small: leave out `image_embeds` (only the class embeddings).
            previous: an earlier export whose exemplars and image embeddings are kept too.
            roboflow_id: for Roboflow's `SerializedOwlV2`, which needs ``owlv2/<model name>``
                (it loads ``google/<model name>``); None or "" = derived from the model id
                (`serialization.default_roboflow_id`).
            settings: extra metadata (e.g. the preview's thresholds) stored under "settings".
            public: the file is for someone else (the studio's downloads): a local model
                folder is named by its last part only (`prompt_file.public_model_id`).
        """
        exemplars = self._prompts.combined
        image_embeds: dict[str, ImageEmbeddings] = {}
        if previous is not None:
            prev = self.check_compatible(_load_pt_file(previous))
            exemplars = prev.exemplars.merged(exemplars) if len(prev.exemplars.class_names) \
                else exemplars
            image_embeds.update(prev.image_embeds)
        if not small:
            for source in exemplars.sources:
                if source.image_hash and source.image_hash not in image_embeds:
                    emb = self._lookup(self._key(source.image_hash))
                    if emb is not None:
                        image_embeds[source.image_hash] = emb
        payload = build_payload(
            huggingface_id=public_model_id(self.owl.model_id) if public else self.owl.model_id,
            exemplars=exemplars,
            image_embeds=None if small else image_embeds, roboflow_id=roboflow_id,
            meta=self._meta(settings))
        return save_pt(payload, path)

    def _meta(self, settings: dict[str, Any] | None) -> dict[str, Any]:
        import transformers

        return {
            "input_size": self.owl.input_size, "pad_value": self.transform.pad_value,
            "preprocessing": self.transform.preprocessing,
            "top_k": self.top_k, "match_threshold": self.match_threshold,
            "fingerprint": self.fingerprint, "transformers_version": str(transformers.__version__),
            "torch_version": str(torch.__version__), "settings": dict(settings or {}),
        }

    def check_compatible(self, prompts: SerializedPrompts) -> SerializedPrompts:
        """Raise if the file's embeddings can't be compared with this model's."""
        dim = self.owl.class_embed_dim
        if len(prompts.exemplars) and prompts.exemplars.embeds.shape[1] != dim:
            raise PtFormatError(
                f"the .pt holds {prompts.exemplars.embeds.shape[1]}-dim embeddings from "
                f"{prompts.huggingface_id!r}, but the loaded model {self.owl.model_id!r} makes "
                f"{dim}-dim ones; load the matching model (--model {prompts.huggingface_id}).")
        return prompts

    def load_pt(self, path: str | Path, *,
                preprocessing: Preprocessing | None = None) -> SerializedPrompts:
        """Load an exported `.pt`: its exemplars become the imported set, and its image
        embeddings (when made with the same settings) serve this predictor only: they stay
        with the imported prompts, never in the shared cache or its disk tier.

        Images scored against the file are preprocessed as its exemplars were: unless
        `preprocessing` is given here or was given to the constructor, the predictor switches
        to the file's mode (our metadata's "preprocessing", "hf" when absent; "roboflow" for a
        file without our metadata, i.e. written by Roboflow Inference).

        Raises:
            PtFormatError: unreadable, hostile or malformed file (nothing is changed then).
            ValueError: embeddings of another model size.
        """
        prompts = self.check_compatible(_load_pt_file(path))
        if preprocessing is not None:
            self.set_preprocessing(preprocessing)
        elif self._preprocessing_choice is None:
            self._switch_preprocessing(pt_preprocessing(prompts))
        self._preload(prompts)
        with self._state_lock:
            examples = self._prompts.examples
            combined = prompts.exemplars.merged(examples) if len(examples.class_names) \
                else prompts.exemplars
            self._prompts = _Prompts(examples, prompts.exemplars, combined, self._prompts.report)
        return prompts

    def preload_embeddings(self, path: str | Path) -> SerializedPrompts:
        """Keep a `.pt`'s image embeddings for this predictor (when made with this model and
        these settings) without touching the prompts, so its images are not embedded again.
        They never enter the shared cache (see `_preload`)."""
        prompts = self.check_compatible(_load_pt_file(path))
        self._preload(prompts)
        return prompts

    def _preload(self, prompts: SerializedPrompts) -> None:
        # a file's embeddings are a stranger's data: they serve this predictor only (so its
        # images aren't embedded again), never the shared cache or its disk tier, where they
        # would feed fake boxes to every session using them
        if prompts.meta.get("fingerprint") == self.fingerprint:
            for content_hash, emb in prompts.image_embeds.items():
                if _HASH_RE.fullmatch(content_hash):
                    self._file_embeds.put(self._key(content_hash), emb)

    def _lookup(self, key: str) -> ImageEmbeddings | None:
        """Embeddings under `key`: a loaded file's own first (they belong with its prompts),
        then the (possibly shared) cache."""
        if key in self._file_embeds:
            found = self._file_embeds.get(key)
            if found is not None:
                return found
        return self._cache.get(key)

    def _has(self, key: str) -> bool:
        return key in self._file_embeds or key in self._cache

    @classmethod
    def from_pt(cls, path: str | Path, model: OwlModel | str | None = None,
                **kwargs: Any) -> OwlPredictor:
        """A predictor for an exported file, loading the model the file names unless given."""
        prompts = _load_pt_file(path)
        predictor = cls(model if model is not None else prompts.huggingface_id, **kwargs)
        predictor.load_pt(path)
        return predictor

    # ------------------------------------------------------------------ cache
    def cache_stats(self) -> CacheStats:
        return self._cache.stats()

    def reset_cache(self, disk: bool = False) -> None:
        """Drop cached embeddings and class embeddings (and the disk tier if `disk`)."""
        self._cache.reset(disk=disk)
        self._file_embeds.reset()
        with self._state_lock:
            self._class_cache.clear()
            self._stat_memo.entries.clear()
