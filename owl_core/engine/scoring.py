"""Score cached candidates against exemplars, all classes at once, then NMS.

Scores (per candidate box and class):
- reference mode: (max positive cosine + 1) / 2, as Roboflow Inference's OwlV2;
- calibrated mode: sigmoid((max positive cosine + logit_shift) * logit_scale), the model's own
  calibration (reference defect 8: it computes shift/scale and never uses them).

Negative exemplars act in two ways (both always on):
1. Per candidate (ours): a candidate whose similarity to a class's negative is at least its
   best positive similarity for that class is never that class's detection, whatever the
   confidence (reference defect 2: there a negative only acts if it clears the confidence).
2. Spatially (the reference's): per class, candidates scoring at least `confidence` against
   the class's negatives (same score formula, negatives in place of positives) take part in
   that class's NMS together with the positive candidates; afterwards only positive ones are
   kept. So a negative-like box that outscores an overlapping positive box (IoU above the NMS
   threshold) removes it, as in Roboflow Inference.

Boxes that lie wholly in the padding (zero area once clipped to the image) are dropped before
NMS: they are not objects of the image and never reported (the reference reports them).
Then per-class NMS (above), class-agnostic NMS, one class per box (its best: transformers'
text path keeps each box's best query; a no-op below an IoU threshold of 1), and the cut to
`max_detections`. NMS runs on the unclipped boxes, as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import batched_nms, nms

from owl_core.engine.embedding import ImageEmbeddings
from owl_core.engine.matching import Exemplars
from owl_core.errors import SettingsError
from owl_core.geometry import (
    square_cxcywh_to_xyxy_tensor,
    square_to_pixels_tensor,
    xyxy_to_response,
)
from owl_core.params import (
    DEFAULT_CONFIDENCE,
    DEFAULT_IOU_THRESHOLD,
    DEFAULT_MAX_DETECTIONS,
    SCORE_MODES,
    DetectParams,
    ScoreMode,
)


@dataclass(frozen=True)
class DetectionResult:
    """Detections on one image, in original-image pixels.

    Attributes:
        xyxy: (N, 4) float32 XYXY pixels, clipped to the image.
        confidence: (N,) float32 scores, descending.
        class_id: (N,) int64 index into `class_names`.
        class_names: class id -> name.
        image_size: (width, height).
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    class_names: tuple[str, ...]
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.confidence.shape[0])

    def counts(self) -> dict[str, int]:
        """Detections per class name (every class listed, zeros included)."""
        ids = np.bincount(self.class_id, minlength=len(self.class_names))
        return {name: int(ids[i]) for i, name in enumerate(self.class_names)}

    def to_json(self) -> dict:
        """The reference response: x, y = box centre; width, height in pixels."""
        width, height = self.image_size
        preds = []
        for box, conf, cid in zip(self.xyxy.tolist(), self.confidence.tolist(),
                                  self.class_id.tolist(), strict=True):
            preds.append({**xyxy_to_response(box), "confidence": conf,
                          "class": self.class_names[cid], "class_id": cid})
        return {"image": {"width": width, "height": height}, "predictions": preds}

    def to_supervision(self):
        """A `supervision.Detections` with data["class_name"]."""
        import supervision as sv

        return sv.Detections(
            xyxy=self.xyxy.astype(np.float32).reshape(-1, 4),
            confidence=self.confidence.astype(np.float32),
            class_id=self.class_id.astype(int),
            data={"class_name": np.array([self.class_names[i] for i in self.class_id],
                                         dtype=object).astype(str)},
        )

    @classmethod
    def empty(cls, class_names: tuple[str, ...], image_size: tuple[int, int]) -> DetectionResult:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                   np.zeros(0, np.int64), class_names, image_size)


@dataclass(frozen=True)
class GroupedExemplars:
    """Exemplars ordered by (sign, class), each group a contiguous row range: prepared once,
    then scored against many images.

    Attributes:
        class_names: class id -> name.
        embeds: (N, D) float32 exemplar embeddings, negatives after positives, by class id,
            the drawn order kept within a group.
        groups: (negative 0/1, class id, start, stop) row range of each non-empty group.
    """

    class_names: tuple[str, ...]
    embeds: torch.Tensor
    groups: tuple[tuple[int, int, int, int], ...]

    @classmethod
    def of(cls, exemplars: Exemplars,
           device: torch.device | str | None = None) -> GroupedExemplars:
        num_classes = max(1, len(exemplars.class_names))
        key = exemplars.negative.cpu().long() * num_classes + exemplars.class_ids.cpu()
        order = torch.argsort(key, stable=True)
        keys = key[order].tolist()
        groups, start = [], 0
        for i in range(1, len(keys) + 1):
            if i == len(keys) or keys[i] != keys[start]:
                groups.append((keys[start] // num_classes, keys[start] % num_classes, start, i))
                start = i
        embeds = exemplars.embeds.float()[order.to(exemplars.embeds.device)].contiguous()
        return cls(exemplars.class_names, embeds.to(device) if device is not None else embeds,
                   tuple(groups))


def class_similarities(emb: ImageEmbeddings, exemplars: Exemplars | GroupedExemplars
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Best cosine similarity of each candidate to each class's positive and negative
    exemplars: two (K, C) float tensors, -inf where the class has no such exemplar.

    One matrix product per (class, sign) with exactly that group's exemplars, (N_c, D) @
    (D, K), as Roboflow Inference computes it: a single product over all exemplars rounds
    differently in the last bit, which reorders near-tied candidates (flat image regions give
    many) in NMS and so changes which of them survive.
    """
    device = emb.class_embeds.device
    if isinstance(exemplars, Exemplars):
        exemplars = GroupedExemplars.of(exemplars, device)
    best = torch.full((2, len(exemplars.class_names), emb.num_boxes), float("-inf"),
                      device=device)
    if exemplars.groups:
        embeds = exemplars.embeds.to(device)
        image_t = emb.class_embeds.float().T  # (D, K)
        for negative, cls, start, stop in exemplars.groups:
            torch.amax(embeds[start:stop] @ image_t, 0, out=best[negative, cls])
    return best[0].T, best[1].T


def similarity_to_score(sims: torch.Tensor, logit_shift: torch.Tensor,
                        logit_scale: torch.Tensor, mode: ScoreMode) -> torch.Tensor:
    """Map (..., K, C) best similarities to scores in [0, 1] (0 where -inf: no exemplar).

    Args:
        sims: (..., K, C) cosine similarities.
        logit_shift, logit_scale: (..., K) per-candidate calibration (calibrated mode only).
    """
    if mode not in SCORE_MODES:
        raise SettingsError(f"unknown score mode {mode!r}; use one of {SCORE_MODES}.")
    if mode == "reference":
        scores = (sims + 1) / 2
    else:
        scores = torch.sigmoid((sims + logit_shift[..., None].float())
                               * logit_scale[..., None].float())
    return torch.where(torch.isfinite(sims), scores, torch.zeros_like(scores))


def positive_and_negative_scores(
    best_pos: torch.Tensor, best_neg: torch.Tensor, logit_shift: torch.Tensor,
    logit_scale: torch.Tensor, mode: ScoreMode,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., K, C) positive scores (0 where the class has no positive or negative rule 1
    removes the candidate) and negative scores (for the spatial rule 2)."""
    pos_scores = similarity_to_score(best_pos, logit_shift, logit_scale, mode)
    keep = torch.isfinite(best_pos) & (best_neg < best_pos)
    pos_scores = torch.where(keep, pos_scores, torch.zeros_like(pos_scores))
    return pos_scores, similarity_to_score(best_neg, logit_shift, logit_scale, mode)


def class_scores(emb: ImageEmbeddings, exemplars: Exemplars,
                 mode: ScoreMode = "reference") -> torch.Tensor:
    """(K, C) score of each cached candidate for each class; 0 where the class has no
    positives or a negative wins (rule 1; the spatial rule 2 acts in `detect`)."""
    best_pos, best_neg = class_similarities(emb, exemplars)
    return positive_and_negative_scores(best_pos, best_neg, emb.logit_shift, emb.logit_scale,
                                        mode)[0]


def in_image(boxes_cxcywh: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """(K,) bool: the box keeps some area once clipped to the (width, height) image (False for
    boxes wholly in the padding of the model's square)."""
    xyxy = square_to_pixels_tensor(boxes_cxcywh, image_size)
    return (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])


def select_detections(
    boxes_cxcywh: torch.Tensor,
    pos_scores: torch.Tensor,
    neg_scores: torch.Tensor,
    class_names: tuple[str, ...],
    image_size: tuple[int, int],
    params: DetectParams,
) -> DetectionResult:
    """Threshold, drop padding boxes, per-class NMS with the negative candidates (rule 2),
    class-agnostic NMS, cut to `max_detections`: one image.

    Args:
        boxes_cxcywh: (K, 4) candidate boxes normalised to the padded square.
        pos_scores, neg_scores: (K, C) from `positive_and_negative_scores`.
        image_size: (width, height) of the original image.
    """
    if len(class_names) == 0 or params.max_detections == 0:
        return DetectionResult.empty(class_names, image_size)
    inside = in_image(boxes_cxcywh, image_size)[:, None]
    conf = params.confidence
    pos_cand, pos_cls = ((pos_scores >= conf) & (pos_scores > 0) & inside).nonzero(as_tuple=True)
    if len(pos_cand) == 0:
        return DetectionResult.empty(class_names, image_size)
    neg_cand, neg_cls = ((neg_scores >= conf) & (neg_scores > 0) & inside).nonzero(as_tuple=True)
    cand = torch.cat([pos_cand, neg_cand])
    cls = torch.cat([pos_cls, neg_cls])
    scores = torch.cat([pos_scores[pos_cand, pos_cls], neg_scores[neg_cand, neg_cls]]).float()
    positive = torch.arange(len(cand), device=cand.device) < len(pos_cand)
    boxes = square_cxcywh_to_xyxy_tensor(boxes_cxcywh[cand])
    keep = batched_nms(boxes, scores, cls, params.iou_threshold)
    keep = keep[positive[keep]]  # negatives have done their job: suppressing
    keep = keep[nms(boxes[keep], scores[keep], params.iou_threshold)]
    keep = keep[_first_per_box(cand[keep])][:params.max_detections]
    pixels = square_to_pixels_tensor(boxes_cxcywh[cand[keep]], image_size)
    return DetectionResult(
        xyxy=pixels.cpu().numpy().astype(np.float32),
        confidence=scores[keep].cpu().numpy(),
        class_id=cls[keep].cpu().numpy().astype(np.int64),
        class_names=class_names,
        image_size=image_size,
    )


def _first_per_box(candidates: torch.Tensor) -> torch.Tensor:
    """Positions of the first occurrence of each candidate in a score-sorted list: one box is
    one object, so it keeps its best class only. (Class-agnostic NMS already does this below an
    IoU threshold of 1: a box overlaps itself at IoU 1; at 1.0 it would keep every class.)"""
    if len(candidates) < 2:
        return torch.arange(len(candidates), device=candidates.device)
    order = torch.arange(len(candidates), device=candidates.device)
    first = torch.full((int(candidates.max()) + 1,), len(candidates), dtype=torch.long,
                       device=candidates.device)
    first.scatter_reduce_(0, candidates, order, reduce="amin")
    return order[first[candidates] == order]


def detect(
    emb: ImageEmbeddings,
    exemplars: Exemplars | GroupedExemplars,
    confidence: float = DEFAULT_CONFIDENCE,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    max_detections: int = DEFAULT_MAX_DETECTIONS,
    mode: ScoreMode = "reference",
) -> DetectionResult:
    """Score, threshold, per-class NMS (negatives included), class-agnostic NMS, cut to
    max_detections. See the module docstring for the rules."""
    params = DetectParams(confidence=confidence, iou_threshold=iou_threshold,
                          max_detections=max_detections, score_mode=mode)
    best_pos, best_neg = class_similarities(emb, exemplars)
    pos_scores, neg_scores = positive_and_negative_scores(
        best_pos, best_neg, emb.logit_shift, emb.logit_scale, params.score_mode)
    return select_detections(emb.boxes, pos_scores, neg_scores, exemplars.class_names,
                             emb.image_size, params)


def detect_many(
    embs: list[ImageEmbeddings],
    exemplars: Exemplars,
    confidence: float = DEFAULT_CONFIDENCE,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    max_detections: int = DEFAULT_MAX_DETECTIONS,
    mode: ScoreMode = "reference",
) -> list[DetectionResult]:
    """`detect` for several images with the same exemplars, grouped once."""
    if not embs:
        return []
    grouped = GroupedExemplars.of(exemplars, embs[0].class_embeds.device)
    return [detect(emb, grouped, confidence, iou_threshold, max_detections, mode)
            for emb in embs]
