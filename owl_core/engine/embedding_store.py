"""Embedding store: every labelled image's top-K candidates, stored once, scored many times.

A store is a folder of safetensors shards (an open columnar format readable from any language).
Each *fingerprint* (model weights + preprocessing + top-K + autocast dtype + stored dtype) gets
its own subfolder, so embeddings made with other settings are never mixed up::

    STORE/<key>/store.json            {"fingerprint": ..., "dtype": "fp16", "top_k": K, "dim": D}
    STORE/<key>/shard-<uuid>.safetensors
        objectness (N, K) f32, boxes (N, K, 4) f32 (cxcywh, padded square),
        class_embeds (N, K, D) fp16 (or fp32), logit_shift (N, K) f32, logit_scale (N, K) f32,
        image_size (N, 2) int64 (width, height); metadata "hashes": JSON list of N content hashes

Only the class embeddings (99% of the bytes) take the stored dtype; boxes and calibration stay
float32 so pixel coordinates don't move. A shard is written to a temporary name, fsynced and
renamed, so a crash never leaves a half-written shard; an image is "stored" once its shard is.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from owl_core.durable import atomic_write
from owl_core.engine.embedding import ImageEmbeddings
from owl_core.errors import SettingsError

if TYPE_CHECKING:
    from owl_core.engine.loading import OwlModel
    from owl_core.engine.transforms import OwlTransform

STORE_DTYPES: dict[str, torch.dtype] = {"fp16": torch.float16, "fp32": torch.float32}
_FORMAT_VERSION = 1
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_DIGEST_MEMO: dict[tuple[str, int, int], str] = {}


def _digest_file(path: Path) -> str:
    """blake2b of a file's bytes, memoised per (path, size, mtime) within the process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGEST_MEMO:
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _DIGEST_MEMO[key] = h.hexdigest()
    return _DIGEST_MEMO[key]


def model_identity(source: str) -> str:
    """What the embeddings depend on in the checkpoint: for a local folder a digest of its
    config and weight files (so a moved or copied folder keeps its store, an overwritten one
    doesn't); for a hub id the id itself."""
    folder = Path(source)
    if not folder.is_dir():
        return f"hub:{source}"
    h = hashlib.blake2b(digest_size=16)
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.name == "config.json" or path.suffix in _WEIGHT_SUFFIXES):
            h.update(f"{path.name}:{_digest_file(path)};".encode())
    return f"weights:{h.hexdigest()}"


def model_fingerprint(owl: OwlModel, top_k: int, transform: OwlTransform) -> str:
    """Everything besides the pixels that changes a stored embedding (the store key)."""
    dtype = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(owl.autocast_dtype, "fp32")
    return json.dumps({
        "model": model_identity(owl.source or owl.model_id), "input_size": transform.input_size,
        "mean": list(transform.image_mean), "std": list(transform.image_std),
        "pad_value": transform.pad_value,
        "preprocessing": getattr(transform, "preprocessing", "hf"),
        "top_k": int(top_k), "autocast": dtype}, sort_keys=True)


@dataclass(frozen=True)
class StoredBatch:
    """Rows of one shard, stacked: see the module docstring for shapes."""

    hashes: tuple[str, ...]
    objectness: torch.Tensor
    boxes: torch.Tensor
    class_embeds: torch.Tensor
    logit_shift: torch.Tensor
    logit_scale: torch.Tensor
    image_size: torch.Tensor

    def __len__(self) -> int:
        return len(self.hashes)

    def embedding(self, i: int) -> ImageEmbeddings:
        """Row `i` as `ImageEmbeddings` (class embeddings float32, as scoring expects)."""
        width, height = (int(v) for v in self.image_size[i])
        return ImageEmbeddings(
            objectness=self.objectness[i], boxes=self.boxes[i],
            class_embeds=self.class_embeds[i].float(), logit_shift=self.logit_shift[i],
            logit_scale=self.logit_scale[i], image_size=(width, height))


class EmbeddingStore:
    """Append-only, content-addressed store of per-image embeddings for one fingerprint.

    Args:
        root: the store folder (created if missing).
        fingerprint: see `model_fingerprint`.
        dtype: "fp16" (default, half the bytes) or "fp32" for the class embeddings.
        shard_rows: rows buffered before `add` writes a shard by itself.
    """

    def __init__(self, root: str | Path, fingerprint: str, dtype: str = "fp16",
                 shard_rows: int = 256) -> None:
        if dtype not in STORE_DTYPES:
            raise SettingsError(f"store dtype must be one of {sorted(STORE_DTYPES)}, got "
                                f"{dtype!r}.")
        self.fingerprint = fingerprint
        self.dtype = dtype
        self.shard_rows = max(1, int(shard_rows))
        key = hashlib.blake2b(f"{fingerprint}|{dtype}|v{_FORMAT_VERSION}".encode(),
                              digest_size=8).hexdigest()
        self.folder = Path(root) / key
        self.folder.mkdir(parents=True, exist_ok=True)
        info = self.folder / "store.json"
        if not info.exists():
            atomic_write(info, json.dumps({"fingerprint": fingerprint, "dtype": dtype,
                                            "version": _FORMAT_VERSION}, indent=1).encode())
        self._lock = threading.Lock()
        self._index: dict[str, tuple[str, int]] = {}  # hash -> (shard file name, row)
        self._buffer: dict[str, ImageEmbeddings] = {}
        for shard in sorted(self.folder.glob("shard-*.safetensors")):
            self._index_shard(shard)

    # ------------------------------------------------------------------ reading
    def _index_shard(self, shard: Path) -> None:
        from safetensors import safe_open

        try:
            with safe_open(str(shard), "pt") as f:
                hashes = json.loads((f.metadata() or {}).get("hashes", "[]"))
        except Exception:  # noqa: BLE001  an unreadable shard (disk error): its images are embedded again
            return
        for row, content_hash in enumerate(hashes):
            self._index.setdefault(content_hash, (shard.name, row))

    def __contains__(self, content_hash: object) -> bool:
        return content_hash in self._index or content_hash in self._buffer

    def __len__(self) -> int:
        return len(self._index) + len(self._buffer)

    def hashes(self) -> set[str]:
        """Content hashes of every stored (or buffered) image."""
        with self._lock:
            return set(self._index) | set(self._buffer)

    def iter_batches(self, hashes: Iterable[str]) -> Iterator[StoredBatch]:
        """The stored rows of `hashes` (each once), one `StoredBatch` per shard read.

        Raises:
            KeyError: a hash that is not stored (flush the buffer first).
        """
        from safetensors.torch import load_file

        by_shard: dict[str, list[tuple[str, int]]] = {}
        for content_hash in dict.fromkeys(hashes):
            shard, row = self._index[content_hash]
            by_shard.setdefault(shard, []).append((content_hash, row))
        for shard in sorted(by_shard):
            rows = by_shard[shard]
            tensors = load_file(str(self.folder / shard))  # memory-mapped
            names = ("objectness", "boxes", "class_embeds", "logit_shift", "logit_scale",
                     "image_size")
            picked = [row for _, row in rows]
            if picked != list(range(int(tensors["image_size"].shape[0]))):
                index = torch.tensor(picked, dtype=torch.long)
                tensors = {name: tensors[name].index_select(0, index) for name in names}
            yield StoredBatch(hashes=tuple(h for h, _ in rows),
                              **{name: tensors[name] for name in names})

    # ------------------------------------------------------------------ writing
    def add(self, content_hash: str, emb: ImageEmbeddings) -> bool:
        """Buffer one image's top-K embeddings; returns True when a shard was written."""
        with self._lock:
            if content_hash in self._index or content_hash in self._buffer:
                return False
            self._buffer[content_hash] = emb
            full = len(self._buffer) >= self.shard_rows
        return bool(full and self.flush())

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def flush(self) -> list[str]:
        """Write the buffered rows as one shard (atomically); returns their hashes."""
        from safetensors.torch import save

        with self._lock:
            items = list(self._buffer.items())
            if not items:
                return []
            store_dtype = STORE_DTYPES[self.dtype]
            embs = [emb for _, emb in items]
            tensors = {
                "objectness": torch.stack([e.objectness.float().cpu() for e in embs]),
                "boxes": torch.stack([e.boxes.float().cpu() for e in embs]),
                "class_embeds": torch.stack([e.class_embeds.cpu() for e in embs]).to(store_dtype),
                "logit_shift": torch.stack([e.logit_shift.float().cpu() for e in embs]),
                "logit_scale": torch.stack([e.logit_scale.float().cpu() for e in embs]),
                "image_size": torch.tensor([list(e.image_size) for e in embs], dtype=torch.long),
            }
            hashes = [h for h, _ in items]
            name = f"shard-{uuid.uuid4().hex}.safetensors"
            data = save({k: v.contiguous() for k, v in tensors.items()},
                        metadata={"hashes": json.dumps(hashes), "fingerprint": self.fingerprint})
            atomic_write(self.folder / name, data)
            for row, content_hash in enumerate(hashes):
                self._index.setdefault(content_hash, (name, row))
            self._buffer.clear()
            return hashes


