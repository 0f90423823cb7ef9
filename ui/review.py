"""Reviewing detections into labels: pure helpers between the review annotator and the
project's reviewed labels (`owl_core.project.model.Label`).

The review annotator shows one image with two kinds of boxes:

* **pending** detections, grey (`ui.labels.SUGGESTION_COLOR`, the page's "not used yet"
  colour): the model's detections above the current confidence that no label covers yet;
* **labels**, in their class colour: what the person accepted, corrected or drew.

So every review action is one annotator gesture: confirming a grey box's class in the label
dialog accepts it, picking another class relabels it, deleting it rejects it, moving a box
corrects it, and drawing a new box adds a missed object. `boxes_to_labels` reads the annotator's
boxes back as labels and says where each came from, by comparing with the detections:

* ``accepted``: same class and the same place (within `SAME_PLACE_PX`) as a detection;
* ``corrected``: overlaps a detection (IoU >= `MATCH_IOU`) but moved or relabelled;
* ``drawn``: overlaps no detection.

A label that is exactly a label the image had before keeps its earlier source (a detection
that disappeared after a prompt change does not turn an accepted box into a drawn one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from owl_core.project.model import Label
from ui import labels as L

#: A box overlapping a detection this much is that detection (accepted or corrected).
MATCH_IOU = 0.5
#: A box within this many pixels of a detection on every side was not moved.
SAME_PLACE_PX = 1.0
#: Review statuses, in the order the page lists them, with the words it shows.
STATUS_WORDS = {"not_reviewed": "not reviewed", "in_review": "in review", "done": "done"}


@dataclass(frozen=True)
class Proposal:
    """One detection offered for review: XYXY pixels, class name, score."""

    xyxy: tuple[float, float, float, float]
    cls: str
    confidence: float


def proposals_from(result: Any, classes: Sequence[str]) -> list[Proposal]:
    """The detections of a `DetectionResult` (best first) whose class is one of `classes`
    (detections of an imported `.pt`'s own classes cannot become labels of this project)."""
    if result is None:
        return []
    out = []
    for xyxy, cid, conf in zip(result.xyxy.tolist(), result.class_id.tolist(),
                               result.confidence.tolist(), strict=True):
        name = result.class_names[cid]
        if name in classes:
            out.append(Proposal(tuple(float(v) for v in xyxy), name, float(conf)))
    return out


def _same_place(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(abs(float(x) - float(y)) <= SAME_PLACE_PX for x, y in zip(a, b, strict=True))


def pending(proposals: Sequence[Proposal], labels: Sequence[Label]) -> list[Proposal]:
    """Detections no label covers yet (IoU < `MATCH_IOU` with every label, any class)."""
    return [p for p in proposals
            if not any(L.iou_xyxy(p.xyxy, b.xyxy) >= MATCH_IOU for b in labels)]


def review_boxes(labels: Sequence[Label], proposals: Sequence[Proposal],
                 classes: Sequence[str], show_pending: bool = True) -> list[dict]:
    """Annotator boxes for an image under review: its labels in class colours, then (with
    `show_pending`) the detections no label covers, grey."""
    boxes = [L.box_for_label(b.xyxy, b.cls, False, classes) for b in labels
             if b.cls in classes]
    if show_pending:
        boxes += [L.annotator_box(p.xyxy, p.cls, L.SUGGESTION_COLOR)
                  for p in pending(proposals, labels)]
    return boxes


def _source(xyxy: Sequence[float], cls: str, proposals: Sequence[Proposal],
            before: Sequence[Label]) -> tuple[str, float | None]:
    for old in before:
        if old.cls == cls and _same_place(old.xyxy, xyxy):
            return old.source, old.confidence
    best, best_iou = None, 0.0
    for p in proposals:
        iou = L.iou_xyxy(p.xyxy, xyxy)
        if iou > best_iou:
            best, best_iou = p, iou
    if best is None or best_iou < MATCH_IOU:
        return "drawn", None
    if best.cls == cls and _same_place(best.xyxy, xyxy):
        return "accepted", best.confidence
    return "corrected", None


def boxes_to_labels(boxes: Sequence[dict], proposals: Sequence[Proposal],
                    classes: Sequence[str], size: tuple[int, int],
                    before: Sequence[Label] = ()) -> list[Label]:
    """The labels the review annotator's boxes stand for, oldest first. Grey boxes (pending
    detections), boxes without area, negatives and boxes of unknown classes are not labels."""
    out = []
    for box in reversed(list(boxes)):  # the annotator keeps the newest box first
        parsed = L.parse_box(box, classes)
        if parsed.kind != "positive" or parsed.cls not in classes \
                or not L.box_is_usable(box, size):
            continue
        xyxy = L.clip_xyxy((box["xmin"], box["ymin"], box["xmax"], box["ymax"]), size)
        source, confidence = _source(xyxy, parsed.cls, proposals, before)
        out.append(Label(xyxy, parsed.cls, source, confidence))
    return out


def accept_all(labels: Sequence[Label], proposals: Sequence[Proposal]) -> list[Label]:
    """The labels plus every detection no label covers yet, accepted as it is."""
    return list(labels) + [Label(p.xyxy, p.cls, "accepted", p.confidence)
                           for p in pending(proposals, labels)]


def rejected(proposals: Sequence[Proposal], boxes: Sequence[dict]) -> list[Proposal]:
    """Detections the person deleted: no annotator box (label or grey) overlaps them."""
    kept = [(b["xmin"], b["ymin"], b["xmax"], b["ymax"]) for b in boxes]
    return [p for p in proposals if not any(L.iou_xyxy(p.xyxy, k) >= MATCH_IOU for k in kept)]


def newly_rejected(proposals: Sequence[Proposal], before: Sequence[dict],
                   after: Sequence[dict]) -> list[Proposal]:
    """Detections an edit deleted: a box (grey or a label) covered them in `before` and none
    does in `after`."""
    gone = rejected(proposals, after)
    was = rejected(proposals, before)
    return [p for p in gone if p not in was]


def same_detection(a: Proposal, b: Proposal) -> bool:
    """Whether two detections are the same object: same class, IoU >= `MATCH_IOU` (a prompt
    change moves a detection a little)."""
    return a.cls == b.cls and L.iou_xyxy(a.xyxy, b.xyxy) >= MATCH_IOU


def update_rejected(known: Sequence[Proposal], deleted: Sequence[Proposal],
                    boxes: Sequence[dict]) -> list[Proposal]:
    """The detections rejected on an image after an edit: those `known` before, plus the ones
    it `deleted`, less any that a box covers again (an undo, a box drawn back)."""
    kept = [(b["xmin"], b["ymin"], b["xmax"], b["ymax"]) for b in boxes]
    out = [p for p in [*known, *deleted]
           if not any(L.iou_xyxy(p.xyxy, k) >= MATCH_IOU for k in kept)]
    return [p for i, p in enumerate(out) if not any(same_detection(p, q) for q in out[:i])]


def not_rejected(proposals: Sequence[Proposal], rejected_: Sequence[Proposal]) -> list[Proposal]:
    """The detections the person has not rejected on the image."""
    return [p for p in proposals if not any(same_detection(p, r) for r in rejected_)]


def status_word(status: str) -> str:
    return STATUS_WORDS.get(status, status)
