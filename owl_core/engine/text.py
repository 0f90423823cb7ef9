"""Text embeddings: a phrase -> the query embedding OWLv2's class head compares with each box.

In OWLv2 a text query and an image exemplar live in one space: the text tower's pooled output,
projected (``Owlv2Model.get_text_features``) and L2-normalised, is what the class head compares
with every patch's class embedding, exactly as an exemplar's class embedding is compared in
image-guided detection. So a phrase is one more (D,) exemplar row (`owl_core.engine.matching`).

Each phrase is embedded once per model and kept in an `EmbeddingCache` (byte-bounded, with a
disk tier), keyed by the model and the phrase: editing one phrase embeds only that phrase.
Tokenisation is transformers' own (the checkpoint's tokenizer, ``padding="max_length"`` as
`Owlv2Processor` does); a phrase longer than the text tower's positions (16 tokens for OWLv2,
start and end tokens included) is refused, never silently cut.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from owl_core.engine.cache import EmbeddingCache
from owl_core.errors import TrainingDataError

if TYPE_CHECKING:
    from owl_core.engine.loading import OwlModel

#: Phrases per text-tower forward pass.
TEXT_BATCH = 64
#: Default byte budget of a predictor's text-embedding memory tier (a base phrase: 2 KiB).
DEFAULT_TEXT_CACHE_BYTES = 32 * 1024**2
#: Default byte budget of its disk tier.
DEFAULT_TEXT_DISK_BYTES = 256 * 1024**2
#: Sub-folder of an image cache's disk folder that holds the text entries.
TEXT_DISK_SUBDIR = "text"
_NORM_EPS = 1e-6
_TOKENIZERS: dict[str, Any] = {}
_TOKENIZER_LOCK = threading.Lock()


@dataclass(frozen=True)
class TextEmbedding:
    """One phrase's query embedding: (D,) float32, L2-normalised as the class head uses it."""

    embed: torch.Tensor

    def nbytes(self) -> int:
        return self.embed.numel() * self.embed.element_size()

    def to(self, device: torch.device | str) -> TextEmbedding:
        return TextEmbedding(self.embed.to(device))

    def to_state(self) -> dict[str, Any]:
        return {"embed": self.embed.cpu()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TextEmbedding:
        embed = state.get("embed")
        if not isinstance(embed, torch.Tensor) or embed.ndim != 1 or not embed.is_floating_point():
            raise ValueError("text embedding state must hold a (D,) float tensor")
        return cls(embed.float())


def new_text_cache(disk_dir: Any = None, *, memory_bytes: int = DEFAULT_TEXT_CACHE_BYTES,
                   disk_bytes: int = DEFAULT_TEXT_DISK_BYTES) -> EmbeddingCache[TextEmbedding]:
    """A CPU text-embedding cache (byte-bounded LRU), with a disk tier in `disk_dir` if given."""
    return EmbeddingCache(device="cpu", device_bytes=int(memory_bytes), host_bytes=0,
                          disk_dir=disk_dir, disk_bytes=disk_bytes if disk_dir else None,
                          value_type=TextEmbedding)


def text_key(owl: OwlModel, phrase: str) -> str:
    """Cache key of a phrase for a model: the checkpoint (resolved folder or hub id) and the
    phrase (the text tower runs in fp32 whatever the image autocast)."""
    return hashlib.blake2b(f"text|{owl.source or owl.model_id}|{phrase}".encode(),
                           digest_size=16).hexdigest()


def max_text_tokens(owl: OwlModel) -> int:
    """Tokens the text tower reads (start and end tokens included): 16 for OWLv2."""
    return int(owl.model.config.text_config.max_position_embeddings)


def tokenizer_for(owl: OwlModel) -> Any:
    """The checkpoint's tokenizer (loaded once per checkpoint, from its folder or the local
    Hugging Face cache; fetched from the hub only when the model itself came from there)."""
    source = owl.source or owl.model_id
    with _TOKENIZER_LOCK:
        tok = _TOKENIZERS.get(source)
        if tok is not None:
            return tok
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as local_exc:
        from owl_core.engine.loading import ModelLoadError, _offline

        if _offline() or "/" not in source or source.startswith((".", "/")):
            raise ModelLoadError(owl.model_id, "it has no tokenizer (tokenizer.json / vocab.json"
                                 " and merges.txt), which text prompts need "
                                 f"({str(local_exc)[:200]}).", "Use boxes only, or a "
                                 "checkpoint folder that includes its tokenizer.") from local_exc
        try:
            tok = AutoTokenizer.from_pretrained(source)
        except Exception as exc:  # network, missing files
            raise ModelLoadError(owl.model_id, f"its tokenizer could not be loaded ({exc})."
                                 ) from exc
    with _TOKENIZER_LOCK:
        _TOKENIZERS.setdefault(source, tok)
        return _TOKENIZERS[source]


def tokenize(owl: OwlModel, phrases: Sequence[str]) -> dict[str, torch.Tensor]:
    """``input_ids`` / ``attention_mask`` of (N, max_text_tokens), padded as `Owlv2Processor`
    pads; a phrase over the token limit is refused with its token count."""
    tok = tokenizer_for(owl)
    limit = max_text_tokens(owl)
    ids = tok(list(phrases))["input_ids"]
    for phrase, row in zip(phrases, ids, strict=True):
        if len(row) > limit:
            raise TrainingDataError(
                f"the phrase {phrase[:60]!r} is {len(row) - 2} tokens long; this model reads "
                f"at most {limit - 2} (its text tower has {limit} positions, start and end "
                "tokens included). Shorten it (a few words work best, e.g. 'a red car').")
    return dict(tok(list(phrases), padding="max_length", max_length=limit,
                    return_tensors="pt"))


def compute_text_embeddings(owl: OwlModel, phrases: Sequence[str]) -> torch.Tensor:
    """(N, D) query embeddings of phrases, float32 on CPU: the text tower's pooled output,
    projected and L2-normalised (as `Owlv2Model.forward`), then divided by (norm + 1e-6) as
    the class head does with a query."""
    rows = []
    for start in range(0, len(phrases), TEXT_BATCH):
        inputs = tokenize(owl, phrases[start:start + TEXT_BATCH])
        with torch.inference_mode():
            out = owl.model.owlv2.get_text_features(
                input_ids=inputs["input_ids"].to(owl.device),
                attention_mask=inputs["attention_mask"].to(owl.device))
            embeds = getattr(out, "pooler_output", out).float()
            embeds = embeds / torch.linalg.norm(embeds, dim=-1, keepdim=True)
            embeds = embeds / (torch.linalg.norm(embeds, dim=-1, keepdim=True) + _NORM_EPS)
        rows.append(embeds.cpu())
    if not rows:
        return torch.zeros(0, int(owl.class_embed_dim))
    return torch.cat(rows)


def text_embeddings(owl: OwlModel, phrases: Sequence[str],
                    cache: EmbeddingCache[TextEmbedding] | None) -> torch.Tensor:
    """(N, D) embeddings of `phrases`, each computed once per model: cached ones are looked up,
    the others embedded in one batch and cached."""
    keys = [text_key(owl, p) for p in phrases]
    found: dict[str, torch.Tensor] = {}
    if cache is not None:
        for phrase, key in zip(phrases, keys, strict=True):
            hit = cache.get(key)
            if hit is not None:
                found[phrase] = hit.embed
    todo = list(dict.fromkeys(p for p in phrases if p not in found))
    if todo:
        for phrase, row in zip(todo, compute_text_embeddings(owl, todo), strict=True):
            found[phrase] = row
            if cache is not None:
                cache.put(text_key(owl, phrase), TextEmbedding(row.clone()))
    if not phrases:
        return torch.zeros(0, int(owl.class_embed_dim))
    return torch.stack([found[p].float().cpu() for p in phrases])
