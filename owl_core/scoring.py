"""Score cached candidates against exemplars, all classes at once, then NMS.

reference mode: score = (max positive cosine + 1) / 2, as Roboflow Inference's OwlV2.
calibrated mode: sigmoid((max positive cosine + logit_shift) * logit_scale), the model's own
calibration (reference defect 8: it computes shift/scale and never uses them).
A negative exemplar suppresses a candidate whose similarity to it is at least the candidate's
best positive similarity for that class, whatever the confidence (reference defect 2).
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import torch
from torchvision.ops import batched_nms, box_convert, nms

from owl_core.embedding import ImageEmbeddings
from owl_core.errors import SettingsError
from owl_core.geometry import square_to_pixels_tensor
from owl_core.matching import Exemplars
from owl_core.params import (DEFAULT_CONFIDENCE, DEFAULT_IOU_THRESHOLD,  # noqa: F401 (re-exported)
                             DEFAULT_MAX_DETECTIONS, SCORE_MODES, DetectParams, ScoreMode)



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
        for (x0, y0, x1, y1), conf, cid in zip(self.xyxy.tolist(), self.confidence.tolist(),
                                               self.class_id.tolist()):
            preds.append({"x": (x0 + x1) / 2, "y": (y0 + y1) / 2, "width": x1 - x0,
                          "height": y1 - y0, "confidence": conf,
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
    def empty(cls, class_names: tuple[str, ...], image_size: tuple[int, int]) -> "DetectionResult":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                   np.zeros(0, np.int64), class_names, image_size)


def class_scores(emb: ImageEmbeddings, exemplars: Exemplars,
                 mode: ScoreMode = "reference") -> torch.Tensor:
    """(K, C) score of each cached candidate for each class; 0 where the class has no
    positives or a negative wins."""
    if mode not in SCORE_MODES:
        raise SettingsError(f"unknown score mode {mode!r}; use one of {SCORE_MODES}.")
    num_classes = len(exemplars.class_names)
    k = emb.num_boxes
    device = emb.class_embeds.device
    if num_classes == 0 or len(exemplars) == 0:
        return torch.zeros(k, num_classes, device=device)
    ex = exemplars.to(device)
    sims = emb.class_embeds.float() @ ex.embeds.float().T  # (K, N)
    index = ex.class_ids.expand(k, -1)
    neg_inf = torch.full((k, num_classes), float("-inf"), device=device)
    pos = ~ex.negative
    best_pos = neg_inf.scatter_reduce(1, index[:, pos], sims[:, pos], "amax")
    best_neg = neg_inf.scatter_reduce(1, index[:, ~pos], sims[:, ~pos], "amax")
    if mode == "reference":
        scores = (best_pos + 1) / 2
    else:
        scores = torch.sigmoid((best_pos + emb.logit_shift[:, None]) * emb.logit_scale[:, None])
    keep = torch.isfinite(best_pos) & (best_neg < best_pos)
    return torch.where(keep, scores, torch.zeros_like(scores))


def detect(
    emb: ImageEmbeddings,
    exemplars: Exemplars,
    confidence: float = DEFAULT_CONFIDENCE,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    max_detections: int = DEFAULT_MAX_DETECTIONS,
    mode: ScoreMode = "reference",
) -> DetectionResult:
    """Score, threshold, per-class NMS, class-agnostic NMS, cut to max_detections."""
    _check_thresholds(confidence, iou_threshold, max_detections)
    names = exemplars.class_names
    scores = class_scores(emb, exemplars, mode)
    cand, cls = (scores >= confidence).nonzero(as_tuple=True)
    cand_scores = scores[cand, cls]
    cand_scores_pos = cand_scores > 0
    cand, cls, cand_scores = cand[cand_scores_pos], cls[cand_scores_pos], cand_scores[cand_scores_pos]
    if len(cand) == 0 or max_detections == 0:
        return DetectionResult.empty(names, emb.image_size)
    boxes = box_convert(emb.boxes[cand].float(), "cxcywh", "xyxy")
    keep = batched_nms(boxes, cand_scores, cls, iou_threshold)
    keep = keep[nms(boxes[keep], cand_scores[keep], iou_threshold)][:max_detections]
    pixels = square_to_pixels_tensor(emb.boxes[cand[keep]], emb.image_size)
    return DetectionResult(
        xyxy=pixels.cpu().numpy().astype(np.float32),
        confidence=cand_scores[keep].float().cpu().numpy(),
        class_id=cls[keep].cpu().numpy().astype(np.int64),
        class_names=names,
        image_size=emb.image_size,
    )


def _check_thresholds(confidence: float, iou_threshold: float, max_detections: int) -> None:
    DetectParams(confidence=confidence, iou_threshold=iou_threshold,
                 max_detections=max_detections)
