"""Drawn boxes -> exemplar embeddings, and the per-box report the UI shows; how a class's
exemplars and phrases combine into what is scored (`combine_exemplars`).

Each drawn box snaps to the predicted box with the highest IoU over ALL patches (with
``preprocessing="roboflow"``, over the top-K candidates only, as Roboflow Inference does, so
exemplars match its own bit for bit); it becomes an exemplar only above the match threshold.
Labels travel with each box through every step, so a box that matches nothing can never shift
the class or polarity of another (reference defect 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from owl_core.engine.embedding import ImageEmbeddings
from owl_core.engine.training_data import PromptBox
from owl_core.errors import SettingsError
from owl_core.geometry import (
    clip_xyxy,
    pixels_to_square_tensor,
    square_cxcywh_to_xyxy_tensor,
    square_to_pixels_tensor,
)
from owl_core.params import COMBINE_MODES, DEFAULT_MATCH_THRESHOLD
from owl_core.phrases import PromptPhrase

#: Default IoU a drawn box needs with a predicted box to become an exemplar (reference: 0.3).


@dataclass(frozen=True)
class BoxMatch:
    """What became of one drawn box.

    Attributes:
        image_index, box_index: position in the training data.
        image_hash: content hash of its image.
        cls, negative: the box's label.
        drawn_xyxy: the drawn box, XYXY pixels (clipped to the image).
        matched: whether it became an exemplar.
        iou: best IoU with any predicted box (0.0 when the box lies outside the image).
        matched_xyxy: XYXY pixels of the predicted box it snapped to (None if no box at all).
        reason: why it did not match, in words (None when matched).
    """

    image_index: int
    box_index: int
    image_hash: str
    cls: str
    negative: bool
    drawn_xyxy: tuple[float, float, float, float]
    matched: bool
    iou: float
    matched_xyxy: tuple[float, float, float, float] | None
    reason: str | None = None


@dataclass(frozen=True)
class MatchReport:
    """Per-box outcome of `OwlPredictor.set_examples`, in training-data order."""

    boxes: tuple[BoxMatch, ...]
    class_names: tuple[str, ...]
    match_threshold: float
    phrases: tuple[PromptPhrase, ...] = ()

    @property
    def unmatched(self) -> list[BoxMatch]:
        return [b for b in self.boxes if not b.matched]

    def to_dicts(self) -> list[dict]:
        return [b.__dict__.copy() for b in self.boxes]


@dataclass(frozen=True)
class ExemplarSource:
    """Provenance of one exemplar, kept in exported files. A phrase's exemplar (its text
    embedding) has ``phrase`` set, no image (``image_hash == ""``), a zero box and IoU."""

    image_hash: str
    box_xyxy: tuple[float, float, float, float]
    cls: str
    negative: bool
    iou: float
    phrase: str = ""

    @classmethod
    def of_phrase(cls, phrase: PromptPhrase) -> ExemplarSource:
        return cls("", (0.0, 0.0, 0.0, 0.0), phrase.cls, phrase.negative, 0.0, phrase.text)


@dataclass(frozen=True)
class Exemplars:
    """All exemplars of a prompt set, ready for vectorised scoring.

    Attributes:
        class_names: class id -> name; classes may have no exemplars.
        embeds: (N, D) L2-normalised class embeddings.
        class_ids: (N,) int64 class id of each exemplar.
        negative: (N,) bool, True for "not this" exemplars.
        sources: N provenance records (empty strings/zeros when unknown, e.g. foreign files).
    """

    class_names: tuple[str, ...]
    embeds: torch.Tensor
    class_ids: torch.Tensor
    negative: torch.Tensor
    sources: tuple[ExemplarSource, ...] = field(default=())

    @classmethod
    def empty(cls, class_names: Sequence[str] = (), dim: int = 0) -> Exemplars:
        return cls(tuple(class_names), torch.zeros(0, dim), torch.zeros(0, dtype=torch.long),
                   torch.zeros(0, dtype=torch.bool), ())

    def __len__(self) -> int:
        return int(self.embeds.shape[0])

    def known_sources(self) -> tuple[ExemplarSource, ...]:
        """One provenance per row: `sources`, or blank ones (no image, no phrase) when unknown
        (rows of a file written by another tool)."""
        if len(self.sources) == len(self):
            return self.sources
        return tuple(ExemplarSource("", (0.0, 0.0, 0.0, 0.0), self.class_names[int(c)], bool(n),
                                    0.0)
                     for c, n in zip(self.class_ids.tolist(), self.negative.tolist(), strict=True))

    def text_mask(self) -> torch.Tensor:
        """(N,) bool: True for a phrase's row (False for every row without provenance)."""
        if len(self.sources) != len(self):
            return torch.zeros(len(self), dtype=torch.bool)
        return torch.tensor([bool(s.phrase) for s in self.sources], dtype=torch.bool)

    def phrases(self) -> tuple[PromptPhrase, ...]:
        """The phrases whose embeddings are rows here, in row order."""
        if len(self.sources) != len(self):
            return ()
        return tuple(PromptPhrase(s.cls, s.phrase, s.negative) for s in self.sources
                     if s.phrase)

    def with_phrases(self, phrases: Sequence[PromptPhrase], embeds: torch.Tensor) -> Exemplars:
        """These exemplars plus one row per phrase ((P, D) `embeds`), classes by name (new
        classes appended)."""
        if not phrases:
            return self
        names = list(self.class_names) + list(dict.fromkeys(
            p.cls for p in phrases if p.cls not in self.class_names))
        text = Exemplars(tuple(names), embeds.float().cpu().reshape(len(phrases), -1),
                         torch.tensor([names.index(p.cls) for p in phrases], dtype=torch.long),
                         torch.tensor([p.negative for p in phrases], dtype=torch.bool),
                         tuple(ExemplarSource.of_phrase(p) for p in phrases))
        return self.merged(text)

    def to(self, device: torch.device | str) -> Exemplars:
        return Exemplars(self.class_names, self.embeds.to(device), self.class_ids.to(device),
                         self.negative.to(device), self.sources)

    def merged(self, other: Exemplars) -> Exemplars:
        """Union of two exemplar sets; classes by name (this set's order first); an exemplar
        with the same provenance in both is kept once."""
        names = list(self.class_names) + [n for n in other.class_names
                                          if n not in self.class_names]
        remap = torch.tensor([names.index(n) for n in other.class_names], dtype=torch.long)
        seen = {s for s in self.sources if s.image_hash or s.phrase}
        keep = [i for i, s in enumerate(other.sources or [None] * len(other))
                if s is None or not (s.image_hash or s.phrase) or s not in seen]
        keep_t = torch.tensor(keep, dtype=torch.long)
        other_ids = remap[other.class_ids.cpu()][keep_t] if len(other) else other.class_ids.cpu()
        dim = self.embeds.shape[1] if len(self) else other.embeds.shape[1]
        embeds = torch.cat([self.embeds.cpu().reshape(-1, dim),
                            other.embeds.cpu()[keep_t].reshape(-1, dim)])
        if self.sources or other.sources:  # one provenance per row (blank where unknown)
            sources = self.known_sources() + tuple(other.known_sources()[i] for i in keep)
        else:
            sources = ()
        return Exemplars(tuple(names), embeds,
                         torch.cat([self.class_ids.cpu(), other_ids]),
                         torch.cat([self.negative.cpu(), other.negative.cpu()[keep_t]]),
                         sources)

    def to_train_data_dict(self) -> dict[str, dict[str, torch.Tensor | None]]:
        """The reference's ``{cls: {"positive": (N, D) | None, "negative": (M, D) | None}}``."""
        out: dict[str, dict[str, torch.Tensor | None]] = {}
        embeds, ids, neg = self.embeds.cpu(), self.class_ids.cpu(), self.negative.cpu()
        for cid, name in enumerate(self.class_names):
            pos_rows = embeds[(ids == cid) & ~neg]
            neg_rows = embeds[(ids == cid) & neg]
            out[name] = {"positive": pos_rows.clone() if len(pos_rows) else None,
                         "negative": neg_rows.clone() if len(neg_rows) else None}
        return out

    @classmethod
    def from_train_data_dict(cls, class_names: Sequence[str],
                             train_data_dict: dict[str, dict[str, torch.Tensor | None]],
                             sources: Sequence[ExemplarSource] = ()) -> Exemplars:
        """Inverse of `to_train_data_dict`; rows ordered class by class, positives first."""
        rows, ids, neg = [], [], []
        for cid, name in enumerate(class_names):
            entry = train_data_dict.get(name) or {}
            for flag, key in ((False, "positive"), (True, "negative")):
                t = entry.get(key)
                if t is not None and len(t):
                    rows.append(t.float().reshape(len(t), -1))
                    ids += [cid] * len(t)
                    neg += [flag] * len(t)
        if not rows:
            return cls.empty(class_names)
        sources = tuple(sources) if len(sources) == len(ids) else ()
        return cls(tuple(class_names), torch.cat(rows), torch.tensor(ids, dtype=torch.long),
                   torch.tensor(neg, dtype=torch.bool), sources)


def combine_exemplars(exemplars: Exemplars, mode: str = "max") -> Exemplars:
    """The rows that are scored, per `DetectParams.combine` mode.

    - "max": every row as it is: a phrase is one more positive exemplar, a candidate's score
      for a class is its best match among the class's boxes and phrases.
    - "fused" (Kaul et al., ICML 2023, "Multi-Modal Classifiers for Open-Vocabulary Object
      Detection"): one positive prototype per class, ``normalise(t + e)`` with ``t`` the
      normalised mean of the class's L2-normalised phrase embeddings and ``e`` the normalised
      mean of its L2-normalised box exemplars, added with equal weight (only ``t`` or only
      ``e`` when the class has only phrases or only boxes).

    Negative rows (boxes and negative phrases) stay as they are in both modes.
    """
    if mode not in COMBINE_MODES:
        raise SettingsError(f"unknown combine mode {mode!r}; use one of "
                            f"{', '.join(COMBINE_MODES)}.")
    if mode == "max" or len(exemplars) == 0:
        return exemplars
    embeds = exemplars.embeds.float().cpu()
    ids, neg = exemplars.class_ids.cpu(), exemplars.negative.cpu()
    text = exemplars.text_mask()
    rows, row_ids = [], []
    for cid in range(len(exemplars.class_names)):
        positive = (ids == cid) & ~neg
        parts = [F.normalize(F.normalize(embeds[positive & kind], dim=-1).mean(0), dim=-1)
                 for kind in (text, ~text) if bool((positive & kind).any())]
        if parts:
            rows.append(F.normalize(torch.stack(parts).sum(0), dim=-1))
            row_ids.append(cid)
    negatives = neg.nonzero(as_tuple=True)[0]
    dim = embeds.shape[1]
    return Exemplars(
        exemplars.class_names,
        torch.cat([torch.stack(rows) if rows else embeds.new_zeros(0, dim), embeds[negatives]]),
        torch.cat([torch.tensor(row_ids, dtype=torch.long), ids[negatives]]),
        torch.cat([torch.zeros(len(rows), dtype=torch.bool), torch.ones(len(negatives),
                                                                         dtype=torch.bool)]))


def match_boxes(
    emb: ImageEmbeddings,
    boxes: Sequence[PromptBox],
    threshold: float = DEFAULT_MATCH_THRESHOLD,
) -> list[tuple[int | None, float, tuple[float, float, float, float] | None, str | None]]:
    """Snap drawn boxes to predicted boxes.

    Args:
        emb: the image's embeddings (all-patch boxes used when present, else the top K).
        boxes: drawn boxes in pixels of that image.
        threshold: minimum IoU to accept a match.

    Returns:
        Per box: (patch index among all P patches, or None when unmatched; best IoU; XYXY
        pixels of the best predicted box; reason when unmatched). For embeddings imported from a
        `.pt` (top K only) the index is a row of `emb.class_embeds`; `exemplar_embedding`
        resolves either kind.
    """
    if not boxes:
        return []
    candidates = emb.patch_boxes if emb.patch_boxes is not None else emb.boxes
    cand_xyxy = square_cxcywh_to_xyxy_tensor(candidates)
    drawn = torch.tensor([clipped_xyxy(b, emb.image_size) for b in boxes], dtype=torch.float32)
    inside = (drawn[:, 2] > drawn[:, 0]) & (drawn[:, 3] > drawn[:, 1])
    norm = pixels_to_square_tensor(drawn, emb.image_size).to(cand_xyxy.device)
    iou = box_iou(norm, cand_xyxy)  # (n_drawn, P)
    best_iou, best_idx = iou.max(dim=1)
    best_pix = square_to_pixels_tensor(candidates[best_idx].float(), emb.image_size).cpu()
    out = []
    for i in range(len(boxes)):
        value = float(best_iou[i]) if bool(inside[i]) else 0.0
        snapped = tuple(float(v) for v in best_pix[i])
        if not bool(inside[i]):
            out.append((None, 0.0, None, "the box lies outside the image"))
        elif value < threshold:
            out.append((None, value, snapped,
                        f"best IoU {value:.2f} with any predicted box is below the match "
                        f"threshold {threshold:.2f}; draw the box tighter around the object or "
                        "lower the match threshold"))
        else:
            out.append((int(best_idx[i]), value, snapped, None))
    return out


def exemplar_embedding(emb: ImageEmbeddings, index: int) -> torch.Tensor | None:
    """(D,) embedding for an index returned by `match_boxes` (None if it must be recomputed
    with all-patch embeddings)."""
    if emb.patch_boxes is None:  # imported top-K only: index is a top-K row
        return emb.class_embeds[index]
    return emb.class_embed_for_patch(index)


def clipped_xyxy(box: PromptBox, image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The drawn box clipped to the (width, height) image, XYXY pixels."""
    return clip_xyxy(box.xyxy, image_size)
