"""The quality meter: how well the current prompt finds the reviewed labels.

Reviewed labels (a person accepted, corrected or drew them) are the ground truth. At a given
confidence the meter reports per class and overall precision, recall and F1 (a detection is a
true positive when it overlaps an unmatched ground-truth box of its class with IoU >= 0.5,
matched highest-IoU first by `supervision.match_detections`, the matcher behind supervision's
`Precision` / `Recall` / `F1Score`), plus mAP@50 over all detections
(`supervision.metrics.MeanAveragePrecision`, COCO rules), and a *suggested confidence*: the one
that maximises overall F1 on the measured images. The sweep behind it rates every distinct
score in one vectorised pass; it ranks hits COCO-style (each detection, by descending score,
takes the best free label), so a detection's hit never depends on lower-scoring ones. That rule
and the meter's highest-IoU-first matcher give the same counts unless a detection overlaps two
labels of its class at IoU >= 0.5 (labels that overlap each other heavily); the P/R/F1 reported
with the suggestion are recounted by the meter itself, so applying it shows the same numbers.

Images that carry prompt boxes, or that an exemplar in use was taken from (example images), are
left out and counted as such: grading a prompt on its own examples would flatter it.

Detections are computed once at confidence 0 (`measure_project`), then thresholded for every
confidence: score thresholding commutes with the greedy NMS the engine runs, so the thresholded
result is exactly what `detect` at that confidence returns (a test checks it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import supervision as sv
import torch
from supervision.metrics import MeanAveragePrecision

from owl_core.engine.matching import Exemplars, combine_exemplars
from owl_core.engine.scoring import DetectionResult, detect_many
from owl_core.errors import ProjectError, SettingsError
from owl_core.params import DetectParams

if TYPE_CHECKING:
    from owl_core.engine.predictor import OwlPredictor
    from owl_core.project.model import Project

#: IoU a detection needs with a ground-truth box of its class to count as found.
MATCH_IOU = 0.5

Prediction = sv.Detections | DetectionResult


@dataclass(frozen=True)
class ClassScore:
    """Counts and scores of one class (or of all classes pooled, name ``"all"``).

    Attributes:
        name: the class name, or "all".
        true_positives / false_positives / false_negatives: at the evaluated confidence.
        precision, recall, f1: from those counts (0 when the denominator is 0); None when
            the class has neither ground truth nor detections (nothing to measure).
        ap50: average precision at IoU 0.5 over all detections; None without ground truth.
    """

    name: str
    true_positives: int
    false_positives: int
    false_negatives: int
    precision: float | None
    recall: float | None
    f1: float | None
    ap50: float | None

    @property
    def support(self) -> int:
        """Ground-truth boxes of the class."""
        return self.true_positives + self.false_negatives


@dataclass(frozen=True)
class Suggestion:
    """The confidence that maximises overall F1, with the overall scores it gives."""

    confidence: float
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class Evaluation:
    """The meter's reading.

    Attributes:
        confidence: the confidence the counts are taken at.
        classes: one `ClassScore` per class, in class order.
        overall: the counts of all classes pooled (micro average); ``ap50`` is mAP@50.
        suggested: the F1-maximising confidence, or None without detections or ground truth.
        images_measured: reviewed images measured.
        left_out: names of reviewed images left out because they are example images.
    """

    confidence: float
    classes: tuple[ClassScore, ...]
    overall: ClassScore
    suggested: Suggestion | None
    images_measured: int
    left_out: tuple[str, ...]

    @property
    def map50(self) -> float | None:
        return self.overall.ap50

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the CLI's ``--json``)."""
        out = asdict(self)
        out["map50"] = self.map50
        out["left_out"] = list(self.left_out)
        out["images_left_out"] = len(self.left_out)
        return out

    def table(self) -> str:
        """A fixed-width text table: one row per class, then "all"."""
        width = max([len(c.name) for c in self.classes] + [5])
        head = (f"{'class':<{width}}  {'P':>6} {'R':>6} {'F1':>6} {'AP50':>6} "
                f"{'TP':>5} {'FP':>5} {'FN':>5}")
        rows = [head, "-" * len(head)]
        for c in (*self.classes, self.overall):
            p, r, f1, ap = (_text(v) for v in (c.precision, c.recall, c.f1, c.ap50))
            rows.append(f"{c.name:<{width}}  {p:>6} {r:>6} {f1:>6} {ap:>6} "
                        f"{c.true_positives:>5} {c.false_positives:>5} {c.false_negatives:>5}")
        rows.append(f"confidence {self.confidence:g}; {self.images_measured} reviewed image(s) "
                    f"measured, {len(self.left_out)} left out (example images)")
        if self.suggested is not None:
            s = self.suggested
            rows.append(f"suggested confidence {s.confidence:.4f}: P {s.precision:.3f} "
                        f"R {s.recall:.3f} F1 {s.f1:.3f}")
        return "\n".join(rows)


def _text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


def _score(name: str, tp: int, fp: int, fn: int, ap50: float | None) -> ClassScore:
    if tp + fp + fn == 0:  # no ground truth, no detection: nothing to measure
        return ClassScore(name, 0, 0, 0, None, None, None, ap50)
    return ClassScore(name, int(tp), int(fp), int(fn), _ratio(tp, tp + fp), _ratio(tp, tp + fn),
                      _ratio(2 * tp, 2 * tp + fp + fn), ap50)


def as_project_detections(item: Prediction | None, class_names: Sequence[str], what: str,
                          need_confidence: bool = False) -> sv.Detections:
    """A validated `sv.Detections` whose class ids index `class_names` (a `DetectionResult`'s
    classes are mapped by name); `ProjectError` names `what` when it can't be."""
    if item is None:
        return sv.Detections.empty()
    if isinstance(item, DetectionResult):
        if tuple(item.class_names) != tuple(class_names):
            missing = sorted(set(item.class_names) - set(class_names))
            if missing:
                raise ProjectError(f"{what}: classes {missing} are not project classes "
                                   f"{list(class_names)}; detect with the project's classes.")
            remap = np.array([list(class_names).index(n) for n in item.class_names], dtype=int)
            item = DetectionResult(item.xyxy, item.confidence, remap[item.class_id],
                                   tuple(class_names), item.image_size)
        det = item.to_supervision()
    elif isinstance(item, sv.Detections):
        det = item
    else:
        raise ProjectError(f"{what}: expected supervision.Detections or DetectionResult, got "
                           f"{type(item).__name__}.")
    if len(det) == 0:
        return sv.Detections.empty()
    if det.class_id is None:
        raise ProjectError(f"{what}: boxes without class ids; set Detections.class_id.")
    ids = np.asarray(det.class_id)
    if ids.min() < 0 or ids.max() >= len(class_names):
        raise ProjectError(f"{what}: class id {int(ids.max())} is outside the "
                           f"{len(class_names)} classes {list(class_names)}.")
    if need_confidence and det.confidence is None:
        raise ProjectError(f"{what}: detections without confidence; pass the detector's scores.")
    if not np.isfinite(det.xyxy).all():
        raise ProjectError(f"{what}: a box has a non-finite coordinate.")
    return det


def _above(det: sv.Detections, confidence: float) -> sv.Detections:
    return det[det.confidence >= confidence] if len(det) else det


def _counts(gts: Sequence[sv.Detections], preds: Sequence[sv.Detections], confidence: float,
            num_classes: int) -> np.ndarray:
    """(C, 3) true positives, false positives, false negatives per class at `confidence`."""
    tp = np.zeros(num_classes, np.int64)
    n_pred = np.zeros(num_classes, np.int64)
    n_gt = np.zeros(num_classes, np.int64)
    for gt, pred in zip(gts, preds, strict=True):
        pred = _above(pred, confidence)
        if len(gt):
            n_gt += np.bincount(gt.class_id, minlength=num_classes)
        if len(pred):
            n_pred += np.bincount(pred.class_id, minlength=num_classes)
        if len(gt) and len(pred):
            pairs, _, _ = sv.match_detections(pred, gt, MATCH_IOU)
            tp += np.bincount(pred.class_id[pairs[:, 0]], minlength=num_classes)
    return np.stack([tp, n_pred - tp, n_gt - tp], axis=1)


def _ranked_hits(gt: sv.Detections, pred: sv.Detections) -> np.ndarray:
    """(P,) bool, per prediction (in the given order): whether it finds a ground-truth box of
    its class not found by a higher-scoring prediction (IoU >= `MATCH_IOU`, best IoU first).
    Under this rule a prediction's hit doesn't depend on the lower-scoring ones, so one pass
    rates every threshold."""
    hits = np.zeros(len(pred), bool)
    if not len(gt) or not len(pred):
        return hits
    order = np.argsort(-pred.confidence, kind="stable")
    iou = sv.box_iou_batch(pred.xyxy[order], gt.xyxy)
    iou[pred.class_id[order][:, None] != gt.class_id[None, :]] = -1.0
    free = np.ones(len(gt), bool)
    for rank in np.flatnonzero(iou.max(axis=1) >= MATCH_IOU):  # the rest find nothing
        row = np.where(free, iou[rank], -1.0)
        best = int(row.argmax())
        if row[best] >= MATCH_IOU:
            hits[order[rank]] = True
            free[best] = False
    return hits


def suggest_confidence(gts: Sequence[sv.Detections], preds: Sequence[sv.Detections],
                       step: float | None = None) -> float | None:
    """The detection score that, used as the confidence, maximises overall F1 (ties: the
    highest such score). None without ground truth or detections, or when no detection finds
    anything (every threshold gives F1 = 0).

    Every distinct score is tried at once: hits ranked by score, cumulated, F1 = 2 TP /
    (detections kept + ground truth).

    Args:
        step: only confidences that are multiples of `step` (a slider's step, e.g. 0.01) are
            tried, so the suggestion can be set exactly: a score rounded to the slider could
            drop the very detection it was chosen for (0.9452 -> 0.95).
    """
    n_gt = sum(len(g) for g in gts)
    confs = [p.confidence for p in preds if len(p)]
    if n_gt == 0 or not confs:
        return None
    if step is not None:
        return _suggest_on_grid(gts, preds, n_gt, step)
    conf = np.concatenate(confs).astype(np.float64)
    hits = np.concatenate([_ranked_hits(g, p) for g, p in zip(gts, preds, strict=True)
                           if len(p)])
    order = np.argsort(-conf, kind="stable")
    conf, cum_tp = conf[order], np.cumsum(hits[order])
    # the last detection of each run of equal scores: a threshold keeps the whole run
    last = np.flatnonzero(np.append(conf[1:] != conf[:-1], True))
    f1 = 2 * cum_tp[last] / (last + 1 + n_gt)
    best = int(np.argmax(f1))
    return float(conf[last[best]]) if f1[best] > 0 else None


def _suggest_on_grid(gts: Sequence[sv.Detections], preds: Sequence[sv.Detections], n_gt: int,
                     step: float) -> float | None:
    """`suggest_confidence` over the confidences k * `step` in [0, 1]. Each grid value is
    compared with the scores in their own dtype, as `_above` does (a float32 0.95 is kept at
    the slider's 0.95)."""
    if not 0 < step <= 1:
        raise SettingsError(f"confidence step must be in (0, 1], got {step}.")
    decimals = max(0, -int(np.floor(np.log10(step))) + 2)
    grid = np.round(np.arange(int(np.floor(1 / step + 1e-9)) + 1) * step, decimals)
    kept = np.zeros(len(grid), np.int64)
    tp = np.zeros(len(grid), np.int64)
    for gt, pred in zip(gts, preds, strict=True):
        if not len(pred):
            continue
        conf = np.asarray(pred.confidence)
        above = conf[None, :] >= grid.astype(conf.dtype)[:, None]  # (grid, detections)
        kept += above.sum(axis=1)
        tp += (above & _ranked_hits(gt, pred)[None, :]).sum(axis=1)
    f1 = 2 * tp / (kept + n_gt)
    best = len(f1) - 1 - int(np.argmax(f1[::-1]))  # ties: the highest confidence
    return float(grid[best]) if f1[best] > 0 else None


def _average_precision(gts: Sequence[sv.Detections], preds: Sequence[sv.Detections],
                       num_classes: int) -> tuple[float | None, list[float | None]]:
    """mAP@50 and AP@50 per class (None for classes without ground truth)."""
    per_class: list[float | None] = [None] * num_classes
    if not any(len(g) for g in gts):
        return None, per_class
    most = max([len(p) for p in preds] + [0])
    metric = MeanAveragePrecision(max_detection_thresholds=(1, 10, max(100, most)))
    result = metric.update(list(preds), list(gts)).compute()
    for cid, ap in zip(result.matched_classes.tolist(), result.ap_per_class[:, 0].tolist(),
                       strict=True):
        if 0 <= cid < num_classes and ap >= 0:
            per_class[cid] = float(ap)
    return (float(result.map50) if result.map50 >= 0 else None), per_class


class Meter:
    """Reviewed labels and detections, validated once; the numbers that don't depend on the
    confidence (mAP@50, the suggested confidence) are computed on first use and kept, so
    reading the meter at another confidence (`at`) only recounts.

    Args:
        ground_truth: per image, the reviewed labels: `sv.Detections` with (N, 4) XYXY pixels and
            class ids indexing `class_names`.
        predictions: per image, the detections (`sv.Detections` with confidence, or
            `DetectionResult`), ideally taken at confidence 0 so the sweep and mAP see all of
            them; None for an image that is left out.
        class_names: class id -> name.
        is_example: per image, whether it carries prompt boxes (then it is left out).
        image_names: per image, a name for the "left out" list (default: its index).
        confidence_step: suggest only multiples of this step (a slider's; see
            `suggest_confidence`); None: any detection score.

    Raises:
        ProjectError: lists of different lengths, class ids out of range, missing scores.
    """

    def __init__(
        self,
        ground_truth: Sequence[sv.Detections],
        predictions: Sequence[Prediction | None],
        class_names: Sequence[str],
        *,
        is_example: Sequence[bool] | None = None,
        image_names: Sequence[str] | None = None,
        confidence_step: float | None = None,
    ) -> None:
        n = len(ground_truth)
        for what, seq in (("predictions", predictions), ("is_example", is_example),
                          ("image_names", image_names)):
            if seq is not None and len(seq) != n:
                raise ProjectError(f"{what} has {len(seq)} entries for {n} ground-truth "
                                   "images; give one per image.")
        names = tuple(class_names)
        if len(set(names)) != len(names):
            raise ProjectError(f"class names must be unique, got {list(names)}.")
        flags = list(is_example) if is_example is not None else [False] * n
        labels = ([str(x) for x in image_names] if image_names is not None
                  else [str(i) for i in range(n)])
        self.class_names = names
        self.confidence_step = confidence_step
        self.ground_truth: list[sv.Detections] = []
        self.predictions: list[sv.Detections] = []
        for i in range(n):
            if flags[i]:
                continue
            self.ground_truth.append(as_project_detections(
                ground_truth[i], names, f"ground truth of image {labels[i]}"))
            self.predictions.append(as_project_detections(
                predictions[i], names, f"detections on image {labels[i]}",
                need_confidence=True))
        self.left_out = tuple(labels[i] for i in range(n) if flags[i])

    def _counts(self, confidence: float) -> np.ndarray:
        return _counts(self.ground_truth, self.predictions, confidence, len(self.class_names))

    @cached_property
    def _fixed(self) -> tuple[float | None, list[float | None], Suggestion | None]:
        """(mAP@50, AP@50 per class, suggestion): independent of the confidence."""
        map50, ap = _average_precision(self.ground_truth, self.predictions,
                                       len(self.class_names))
        best = suggest_confidence(self.ground_truth, self.predictions, self.confidence_step)
        suggested = None
        if best is not None:
            at_best = _score("all", *self._counts(best).sum(axis=0), None)
            suggested = Suggestion(best, at_best.precision, at_best.recall, at_best.f1)
        return map50, ap, suggested

    def at(self, confidence: float) -> Evaluation:
        """The reading at `confidence` (in [0, 1], else `SettingsError`)."""
        confidence = DetectParams(confidence=confidence).confidence
        counts = self._counts(confidence)
        map50, ap, suggested = self._fixed
        classes = tuple(_score(name, *counts[c], ap[c]) for c, name in enumerate(self.class_names))
        overall = _score("all", *counts.sum(axis=0), map50)
        return Evaluation(confidence, classes, overall, suggested, len(self.ground_truth),
                          self.left_out)


def evaluate(
    ground_truth: Sequence[sv.Detections],
    predictions: Sequence[Prediction | None],
    class_names: Sequence[str],
    confidence: float,
    *,
    is_example: Sequence[bool] | None = None,
    image_names: Sequence[str] | None = None,
    confidence_step: float | None = None,
) -> Evaluation:
    """Measure detections against reviewed labels at one confidence (arguments as `Meter`;
    keep a `Meter` to read several confidences).

    Raises:
        SettingsError: confidence out of [0, 1].
        ProjectError: lists of different lengths, class ids out of range, missing scores.
    """
    DetectParams(confidence=confidence)  # refuse a bad confidence before any work
    return Meter(ground_truth, predictions, class_names, is_example=is_example,
                 image_names=image_names, confidence_step=confidence_step).at(confidence)


# ------------------------------------------------------------------------------- projects
@dataclass(frozen=True)
class Measurement:
    """A project's reviewed images with their detections at confidence 0: read the meter at any
    confidence without detecting again (`at`). Detections depend on the prompts, the IoU
    threshold, max_detections and score mode; a new confidence needs none of that.

    Attributes:
        class_names: the project's classes (class id -> name).
        ground_truth: per reviewed image, its labels (XYXY pixels, class ids).
        predictions: per reviewed image, its detections at confidence 0 (None: left out).
        is_example: per reviewed image, whether it carries prompt boxes (left out).
        image_names: per reviewed image, its file name.
        confidence_step: the suggestion's step (see `Meter`); None: any detection score.
    """

    class_names: tuple[str, ...]
    ground_truth: tuple[sv.Detections, ...]
    predictions: tuple[DetectionResult | None, ...]
    is_example: tuple[bool, ...]
    image_names: tuple[str, ...]
    confidence_step: float | None = None

    @cached_property
    def meter(self) -> Meter:
        """The validated `Meter` (mAP and the suggestion computed once, on first read)."""
        return Meter(self.ground_truth, self.predictions, self.class_names,
                     is_example=self.is_example, image_names=self.image_names,
                     confidence_step=self.confidence_step)

    def at(self, confidence: float) -> Evaluation:
        """The meter's reading at `confidence`."""
        return self.meter.at(confidence)


def reviewed_ground_truth(project: Project, example_hashes: Iterable[str] = (),
                          ) -> list[tuple[Any, sv.Detections, bool]]:
    """(record, labels as `sv.Detections`, is an example image) of every image reviewed "done".

    An image is an example when it, or another record of the same picture, carries prompt
    boxes, or when its content hash is in `example_hashes` (the pictures a predictor's
    exemplars came from, e.g. those of an imported `.pt`)."""
    prompted = {r.content_hash for r in project.images if r.prompts} | set(example_hashes)
    out = []
    for record in project.images:
        if record.status != "done":
            continue
        if record.labels:
            gt = sv.Detections(
                xyxy=np.array([b.xyxy for b in record.labels], dtype=np.float32).reshape(-1, 4),
                class_id=np.array([project.class_index(b.cls) for b in record.labels],
                                  dtype=int))
        else:
            gt = sv.Detections.empty()
        out.append((record, gt, record.content_hash in prompted))
    return out


def measure_project(project: Project, predictor: OwlPredictor,
                    params: DetectParams | None = None, *,
                    confidence_step: float | None = None,
                    exemplars: Exemplars | None = None) -> Measurement:
    """Detect, with the predictor's current prompts, on the project's reviewed ("done") images
    that are not example images, once, at confidence 0 (embeddings come from the predictor's
    cache when it has them). Example images: those with prompt boxes in the project, and any
    picture one of the predictor's exemplars was taken from (an imported `.pt`'s too).

    Args:
        params: IoU threshold, max_detections and score mode to detect with (default: the
            project's settings); its confidence is not used here.
        confidence_step: the suggested confidence's step (a slider's); see `Meter`.
        exemplars: score with these rows instead of all the predictor's (part of its prompt,
            `prompt_part`), combined by ``params.combine``; the same images are left out.
    """
    params = (params or project.settings).replace(confidence=0.0)
    sources = predictor.exemplars.sources
    items = reviewed_ground_truth(project, (s.image_hash for s in sources if s.image_hash))
    measured = [r for r, _, example in items if not example]
    paths = [project.image_path(r) for r in measured]
    if exemplars is None:
        found = predictor.detect_many(paths, params) if measured else []
    else:
        found = detect_many([predictor.embeddings(p) for p in paths],
                            combine_exemplars(exemplars, params.combine), params.confidence,
                            params.iou_threshold, params.max_detections, params.score_mode)
    results = iter(found)
    predictions = tuple(None if example else next(results) for _, _, example in items)
    return Measurement(tuple(project.classes), tuple(gt for _, gt, _ in items), predictions,
                       tuple(example for _, _, example in items),
                       tuple(r.name for r, _, _ in items), confidence_step)


#: The parts of a prompt the meter compares (`compare_prompt_parts`).
PROMPT_PARTS = ("phrases only", "boxes only", "both")


def prompt_part(exemplars: Exemplars, part: str) -> Exemplars | None:
    """The rows of one part of a prompt: "phrases only" (positive and negative phrases),
    "boxes only" (box exemplars, positive and negative, imported ones included) or "both"
    (all); None when that part has no positive row (it detects nothing: undefined)."""
    if part not in PROMPT_PARTS:
        raise SettingsError(f"unknown prompt part {part!r}; use one of {PROMPT_PARTS}.")
    text = exemplars.text_mask()
    keep = {"phrases only": text, "boxes only": ~text,
            "both": torch.ones(len(exemplars), dtype=torch.bool)}[part]
    if not bool((keep & ~exemplars.negative.cpu()).any()):
        return None
    index = keep.nonzero(as_tuple=True)[0]
    sources = tuple(exemplars.sources[i] for i in index.tolist()) if exemplars.sources else ()
    return Exemplars(exemplars.class_names, exemplars.embeds.cpu()[index],
                     exemplars.class_ids.cpu()[index], exemplars.negative.cpu()[index], sources)


def compare_prompt_parts(project: Project, predictor: OwlPredictor,
                         params: DetectParams | None = None, *,
                         confidence_step: float | None = None,
                         ) -> dict[str, Measurement | None]:
    """A `Measurement` of each part of the predictor's prompt (`PROMPT_PARTS`) on the same
    reviewed images, so a person sees whether the words, the boxes or both find the labels
    best; None for a part the prompt lacks."""
    rows = predictor.exemplars
    out: dict[str, Measurement | None] = {}
    for part in PROMPT_PARTS:
        sub = prompt_part(rows, part)
        out[part] = None if sub is None else measure_project(
            project, predictor, params, confidence_step=confidence_step, exemplars=sub)
    return out


def evaluate_project(project: Project, predictor: OwlPredictor,
                     params: DetectParams | None = None) -> Evaluation:
    """The meter for a project with the predictor's current prompts (see `measure_project`),
    read at ``params.confidence`` (default: the project's settings)."""
    params = params or project.settings
    return measure_project(project, predictor, params).at(params.confidence)


# ------------------------------------------------------------------------------- command line
def add_predictor_arguments(p: argparse.ArgumentParser, confidence_help: str) -> None:
    """The flags that pick the prompts and detection settings for a project command."""
    from owl_core.params import SCORE_MODES
    from owl_core.project.prompt_sources import add_prompt_arguments

    add_prompt_arguments(p, ("weights",), of_project=True)
    p.add_argument("--confidence", type=float, default=None, help=confidence_help)
    p.add_argument("--iou-threshold", type=float, default=None,
                   help="NMS IoU (default: the project's setting)")
    p.add_argument("--max-detections", type=int, default=None,
                   help="(default: the project's setting)")
    p.add_argument("--score-mode", default=None, choices=SCORE_MODES,
                   help="(default: the project's setting)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: auto)")
    p.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"])
    p.add_argument("--top-k", type=int, default=None, help="candidates kept per image")
    p.add_argument("--cache-dir", default=None, help="persistent embedding cache folder")


def project_params(args: argparse.Namespace, project: Project) -> DetectParams:
    """The project's settings, overridden by the flags given."""
    return project.settings.replace(confidence=args.confidence,
                                    iou_threshold=args.iou_threshold,
                                    max_detections=args.max_detections,
                                    score_mode=args.score_mode,
                                    combine=getattr(args, "combine", None))


def project_predictor(args: argparse.Namespace, project: Project,
                      params: DetectParams) -> OwlPredictor:
    """A predictor with the prompts of ``--weights`` or else of the project's example boxes and
    phrases, plus ``--text`` (read by the one prompt reader, `owl_core.project.prompt_sources`;
    unmatched example boxes are reported on stderr)."""
    from owl_core.engine.predictor import OwlPredictor
    from owl_core.project.prompt_sources import read_prompts

    prompts = read_prompts(args, project)
    predictor = OwlPredictor(prompts.model, device=args.device, dtype=args.dtype,
                             top_k=prompts.top_k, match_threshold=params.match_threshold,
                             disk_cache_dir=args.cache_dir)
    prompts.apply(predictor, lambda line: print(line, file=sys.stderr))
    return predictor


def add_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``evaluate --project DIR [--weights PT] [--confidence C] [--json]`` to a CLI."""
    p = subparsers.add_parser(
        "evaluate", help="measure the prompt on a project's reviewed images (P/R/F1, mAP@50)",
        description="Detect on the project's reviewed ('done') images that are not example "
                    "images and compare with their labels: precision, recall, F1 at the "
                    "confidence, AP@50 per class, and the confidence that maximises F1.")
    add_predictor_arguments(p, "confidence of the P/R/F1 counts (default: the project's "
                               "setting)")
    p.add_argument("--json", action="store_true", help="print one JSON object, not a table")
    p.set_defaults(handler=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    """The ``evaluate`` subcommand: prints a table (or ``--json``); returns the exit status."""
    from owl_core.project.model import load_project

    project = load_project(args.project)
    params = project_params(args, project)
    if not reviewed_ground_truth(project):
        raise ProjectError(f"{args.project}: no image is reviewed ('done') yet, so there is "
                           "nothing to measure; review some images first.")
    predictor = project_predictor(args, project, params)
    result = measure_project(project, predictor, params).at(params.confidence)
    if result.images_measured == 0:
        print(f"warning: all {len(result.left_out)} reviewed images are example images and "
              "were left out; review images without example boxes to measure.",
              file=sys.stderr)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.table())
    return 0
