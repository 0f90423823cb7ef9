"""Tests for the quality meter (`owl_core.project.evaluate`): numbers against a hand computation,
the suggested confidence, example images left out, bad input refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from PIL import Image
from supervision.metrics import AveragingMethod, F1Score, Precision, Recall

from owl_core.cli.main import main as cli_main
from owl_core.engine.predictor import OwlPredictor
from owl_core.engine.scoring import DetectionResult
from owl_core.errors import ProjectError, SettingsError
from owl_core.params import DetectParams
from owl_core.project.evaluate import (
    evaluate,
    evaluate_project,
    measure_project,
    suggest_confidence,
)
from owl_core.project.model import Project, load_project, save_project

CLASSES = ["cat", "dog"]
CAT, DOG = 0, 1


def dets(rows, scores: bool = True) -> sv.Detections:
    """rows: (x0, y0, x1, y1, class_id[, confidence])."""
    if not rows:
        return sv.Detections.empty()
    arr = np.array(rows, dtype=float)
    return sv.Detections(xyxy=arr[:, :4], class_id=arr[:, 4].astype(int),
                         confidence=arr[:, 5] if scores else None)


# Two images, two classes. Every prediction is marked with what it is at confidence 0.5.
GT_A = dets([(0, 0, 10, 10, CAT), (20, 0, 30, 10, CAT), (0, 20, 10, 30, DOG)], scores=False)
PRED_A = dets([
    (0, 0, 10, 10, CAT, 0.9),      # TP (cat 1)
    (40, 40, 50, 50, CAT, 0.8),    # FP (nothing there)
    (0, 20, 10, 30, DOG, 0.6),     # TP (the dog)
    (20, 0, 30, 10, CAT, 0.3),     # below 0.5: cat 2 is a FN at 0.5
])
GT_B = dets([(0, 0, 20, 20, DOG)], scores=False)
PRED_B = dets([
    (50, 50, 60, 60, DOG, 0.7),    # FP
    (60, 60, 70, 70, CAT, 0.55),   # FP (image B has no cat)
    (1, 1, 20, 20, DOG, 0.4),      # below 0.5 (IoU 361/400 with the dog): dog of B is a FN
    (80, 80, 90, 90, CAT, 0.2),    # FP, below 0.5
])


def test_counts_and_scores_match_a_hand_computation():
    ev = evaluate([GT_A, GT_B], [PRED_A, PRED_B], CLASSES, confidence=0.5)
    cat, dog = ev.classes
    # cat: TP = cat 1; FP = (40,40) and (60,60) in B; FN = cat 2 (its detection scores 0.3)
    assert (cat.true_positives, cat.false_positives, cat.false_negatives) == (1, 2, 1)
    assert cat.precision == pytest.approx(1 / 3)
    assert cat.recall == pytest.approx(1 / 2)
    assert cat.f1 == pytest.approx(2 * 1 / (2 * 1 + 2 + 1))
    # dog: TP = the dog of A; FP = (50,50) in B; FN = the dog of B (its detection scores 0.4)
    assert (dog.true_positives, dog.false_positives, dog.false_negatives) == (1, 1, 1)
    assert (dog.precision, dog.recall, dog.f1) == pytest.approx((0.5, 0.5, 0.5))
    # all classes pooled: TP 2, FP 3, FN 2
    assert (ev.overall.true_positives, ev.overall.false_positives,
            ev.overall.false_negatives) == (2, 3, 2)
    assert ev.overall.precision == pytest.approx(2 / 5)
    assert ev.overall.recall == pytest.approx(2 / 4)
    assert ev.overall.f1 == pytest.approx(4 / 9)
    assert ev.images_measured == 2 and ev.left_out == ()


def test_ap50_matches_a_hand_computation():
    ev = evaluate([GT_A, GT_B], [PRED_A, PRED_B], CLASSES, confidence=0.5)
    # cat, by score: .9 hit, .8 miss, .55 miss, .3 hit, .2 miss; 2 cats. Interpolated precision
    # is 1 up to recall 0.5 (51 of COCO's 101 recall points) and 0.5 above (50 points).
    cat_ap = (51 * 1.0 + 50 * 0.5) / 101
    # dog, by score: .7 miss, .6 hit, .4 hit; 2 dogs. Precision 2/3 at recall 1 is the
    # interpolated precision everywhere.
    dog_ap = 2 / 3
    assert ev.classes[CAT].ap50 == pytest.approx(cat_ap)
    assert ev.classes[DOG].ap50 == pytest.approx(dog_ap)
    assert ev.map50 == pytest.approx((cat_ap + dog_ap) / 2)


def test_suggested_confidence_is_the_known_f1_optimum():
    # All 8 detections by score, hit or miss; 4 ground-truth boxes. F1 = 2 TP / (kept + 4):
    #   .9 hit 2/5  .8 miss 2/6  .7 miss 2/7  .6 hit 4/8  .55 miss 4/9  .4 hit 6/10
    #   .3 hit 8/11 (best)  .2 miss 8/12
    ev = evaluate([GT_A, GT_B], [PRED_A, PRED_B], CLASSES, confidence=0.5)
    assert ev.suggested is not None
    assert ev.suggested.confidence == pytest.approx(0.3)
    assert ev.suggested.f1 == pytest.approx(8 / 11)
    assert ev.suggested.precision == pytest.approx(4 / 7)
    assert ev.suggested.recall == pytest.approx(1.0)
    # applying it gives the same reading
    again = evaluate([GT_A, GT_B], [PRED_A, PRED_B], CLASSES, ev.suggested.confidence)
    assert again.overall.f1 == pytest.approx(ev.suggested.f1)


@pytest.mark.parametrize("height, hit", [
    (4.5, False),  # IoU 0.45 with the 10x10 box: a miss
    (5.0, True),   # IoU 0.50: counts
    (5.5, True),   # IoU 0.55: a hit
])
def test_a_detection_needs_iou_half_to_count(height, hit):
    gt = dets([(0, 0, 10, 10, CAT)], scores=False)
    ev = evaluate([gt], [dets([(0, 0, 10, height, CAT, 0.9)])], CLASSES, 0.5)
    assert ev.overall.true_positives == int(hit)
    assert ev.overall.false_positives == int(not hit)
    assert ev.suggested is None if not hit else ev.suggested.f1 == 1.0


def test_suggested_confidence_prefers_the_higher_of_equal_optima():
    gt = dets([(0, 0, 10, 10, CAT)], scores=False)
    # 0.9: 1 hit of 1 kept -> F1 1.0; nothing lower can beat it
    pred = dets([(0, 0, 10, 10, CAT, 0.9), (50, 50, 60, 60, CAT, 0.5)])
    assert suggest_confidence([gt], [pred]) == pytest.approx(0.9)
    # two detections with the same score are kept or dropped together
    tied = dets([(0, 0, 10, 10, CAT, 0.5), (50, 50, 60, 60, CAT, 0.5),
                 (20, 20, 30, 30, CAT, 0.1)])
    assert suggest_confidence([gt], [tied]) == pytest.approx(0.5)


def test_suggested_confidence_counts_every_kept_detection_in_the_f1():
    # 2 ground-truth boxes; by score .9 hit, .8 miss, .7 hit. F1 = 2 TP / (kept + 2):
    #   .9 -> 2/3,  .8 -> 2/4,  .7 -> 4/5 (best)
    gt = dets([(0, 0, 10, 10, CAT), (20, 0, 30, 10, CAT)], scores=False)
    pred = dets([(0, 0, 10, 10, CAT, 0.9), (50, 50, 60, 60, CAT, 0.8),
                 (20, 0, 30, 10, CAT, 0.7)])
    assert suggest_confidence([gt], [pred]) == pytest.approx(0.7)
    ev = evaluate([gt], [pred], CLASSES, 0.5)
    assert ev.suggested.f1 == pytest.approx(4 / 5)


def test_suggested_confidence_is_none_without_ground_truth_or_detections():
    assert suggest_confidence([sv.Detections.empty()], [PRED_A]) is None
    assert suggest_confidence([GT_A], [sv.Detections.empty()]) is None
    ev = evaluate([GT_A], [None], CLASSES, 0.5)
    assert ev.suggested is None and ev.overall.recall == 0.0
    assert ev.overall.false_negatives == 3 and ev.map50 == 0.0


def test_suggestion_equals_the_brute_force_optimum_of_the_meter():
    """On random images (each detection near at most one object, several near the same one),
    the vectorised sweep picks the threshold the meter itself scores best."""
    rng = np.random.default_rng(3)
    gts, preds = [], []
    for _ in range(6):
        n = int(rng.integers(0, 6))
        cells = rng.choice(36, size=n, replace=False)
        gt_rows = [(c % 6 * 100, c // 6 * 100, c % 6 * 100 + 40, c // 6 * 100 + 40,
                    int(rng.integers(0, 2))) for c in cells]
        pred_rows = []
        for x0, y0, x1, y1, cls in gt_rows:
            for _ in range(int(rng.integers(0, 3))):
                dx, dy = rng.integers(-8, 9, size=2)
                pred_rows.append((x0 + dx, y0 + dy, x1 + dx, y1 + dy,
                                  cls if rng.random() < 0.8 else 1 - cls, rng.random()))
        for _ in range(int(rng.integers(0, 4))):  # in the empty gaps between grid cells
            x, y = rng.integers(0, 6, size=2) * 100 + 55
            pred_rows.append((x, y, x + 30, y + 30, int(rng.integers(0, 2)), rng.random()))
        gts.append(dets(gt_rows, scores=False))
        preds.append(dets(pred_rows))
    best = suggest_confidence(gts, preds)
    scores = np.unique(np.concatenate([p.confidence for p in preds if len(p)]))
    brute = [evaluate(gts, preds, CLASSES, float(s)).overall.f1 for s in scores]
    assert evaluate(gts, preds, CLASSES, best).overall.f1 == pytest.approx(max(brute))


@pytest.mark.parametrize("confidence", [0.0, 0.35, 0.5, 0.85])
def test_counts_agree_with_supervisions_own_metrics(confidence):
    ev = evaluate([GT_A, GT_B], [PRED_A, PRED_B], CLASSES, confidence)
    kept = [p[p.confidence >= confidence] for p in (PRED_A, PRED_B)]
    targets = [GT_A, GT_B]
    for metric, field, at_50, per_class in (
            (Precision, "precision", "precision_at_50", "precision_per_class"),
            (Recall, "recall", "recall_at_50", "recall_per_class"),
            (F1Score, "f1", "f1_50", "f1_per_class")):
        result = metric(averaging_method=AveragingMethod.MICRO).update(kept, targets).compute()
        assert getattr(ev.overall, field) == pytest.approx(getattr(result, at_50))
        # per-class rows follow result.matched_classes; column 0 is IoU 0.5
        rows = getattr(result, per_class)[:, 0]
        assert len(rows) == len(result.matched_classes) > 0
        for row, cid in zip(rows, result.matched_classes, strict=True):
            assert getattr(ev.classes[cid], field) == pytest.approx(row)


def test_example_images_are_left_out_and_counted():
    ev = evaluate([GT_A, GT_B], [PRED_A, PRED_B], CLASSES, 0.5, is_example=[False, True],
                  image_names=["a.jpg", "b.jpg"])
    assert ev.left_out == ("b.jpg",) and ev.images_measured == 1
    cat, dog = ev.classes
    # image A alone: cat TP 1, FP 1 (40,40), FN 1; dog TP 1
    assert (cat.true_positives, cat.false_positives, cat.false_negatives) == (1, 1, 1)
    assert (dog.true_positives, dog.false_positives, dog.false_negatives) == (1, 0, 0)
    assert ev.to_dict()["images_left_out"] == 1
    # a left-out image needs no detections at all
    assert evaluate([GT_A, GT_B], [PRED_A, None], CLASSES, 0.5,
                    is_example=[False, True]).overall == ev.overall


def test_class_without_ground_truth_has_no_ap():
    ev = evaluate([GT_A], [PRED_A], CLASSES + ["bird"], 0.5)
    assert ev.classes[2].ap50 is None and ev.classes[2].support == 0
    assert "bird" in ev.table() and "left out" in ev.table()


def test_detection_results_are_mapped_to_the_project_classes_by_name():
    # the detector's class order differs from the project's
    result = DetectionResult(np.array([[0, 0, 10, 10], [0, 20, 10, 30]], np.float32),
                             np.array([0.9, 0.8], np.float32), np.array([1, 0]),
                             ("dog", "cat"), (100, 100))
    ev = evaluate([GT_A], [result], CLASSES, 0.5)
    assert ev.classes[CAT].true_positives == 1 and ev.classes[DOG].true_positives == 1
    stranger = DetectionResult(result.xyxy, result.confidence, result.class_id,
                               ("dog", "horse"), (100, 100))
    with pytest.raises(ProjectError, match="horse"):
        evaluate([GT_A], [stranger], CLASSES, 0.5)


@pytest.mark.parametrize("kwargs, error, match", [
    # confidence outside [0, 1]
    ({"confidence": 1.5}, SettingsError, "confidence"),
    # one prediction list for two images
    ({"predictions": [PRED_A]}, ProjectError, "1 entries for 2"),
    # a class id beyond the class list
    ({"ground_truth": [dets([(0, 0, 1, 1, 5)], scores=False), GT_B]}, ProjectError,
     "outside"),
    # detections without scores
    ({"predictions": [dets([(0, 0, 1, 1, 0)], scores=False), PRED_B]}, ProjectError,
     "confidence"),
    # duplicate class names
    ({"class_names": ["cat", "cat"]}, ProjectError, "unique"),
])
def test_bad_input_is_refused(kwargs, error, match):
    args = {"ground_truth": [GT_A, GT_B], "predictions": [PRED_A, PRED_B],
            "class_names": CLASSES, "confidence": 0.5, **kwargs}
    with pytest.raises(error, match=match):
        evaluate(**args)


# ------------------------------------------------------------------------------- projects
# 128x96 pictures of coloured rectangles; the tiny model (256 px input, 8 px patches) sees each
# image pixel as 2x2 model pixels.
WIDTH, HEIGHT = 128, 96
RED, BLUE = (220, 30, 30), (30, 30, 220)
EXAMPLE_RECTS = [((10, 10, 34, 34), RED, "red"), ((20, 55, 44, 79), BLUE, "blue")]
QUERY_RECTS = [((70, 8, 98, 36), RED, "red"), ((8, 40, 36, 68), RED, "red"),
               ((80, 56, 108, 84), BLUE, "blue")]
OTHER_RECTS = [((40, 30, 70, 60), BLUE, "blue")]


def picture(rects) -> Image.Image:
    img = np.full((HEIGHT, WIDTH, 3), 200, np.uint8)
    for (x0, y0, x1, y1), colour, _ in rects:
        img[y0:y1, x0:x1] = colour
    return Image.fromarray(img)


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory) -> Path:
    """A saved project: an example image (prompts, reviewed), the same picture added again as a
    reviewed query, a reviewed query, an unreviewed query and a reviewed empty query."""
    root = tmp_path_factory.mktemp("eval_project")
    for name, rects in (("example.png", EXAMPLE_RECTS), ("query.png", QUERY_RECTS),
                        ("other.png", OTHER_RECTS), ("empty.png", [])):
        picture(rects).save(root / name)
    project = Project(name="meter", classes=["red", "blue"], folder=root / "project")
    example = project.add_image(root / "example.png", role="example")
    project.set_prompt_boxes(example.id, [{"xyxy": list(xyxy), "cls": cls, "negative": False}
                                          for xyxy, _, cls in EXAMPLE_RECTS])
    labels = [{"xyxy": list(xyxy), "cls": cls, "source": "drawn"}
              for xyxy, _, cls in EXAMPLE_RECTS]
    project.set_labels(example.id, labels, status="done")
    again = project.add_image(root / "example.png", name="example-again.png", role="query")
    project.set_labels(again.id, labels, status="done")
    query = project.add_image(root / "query.png", role="query")
    project.set_labels(query.id, [{"xyxy": list(xyxy), "cls": cls, "source": "accepted"}
                                  for xyxy, _, cls in QUERY_RECTS], status="done")
    other = project.add_image(root / "other.png", role="query")  # labelled, still in review
    project.set_labels(other.id, [{"xyxy": list(xyxy), "cls": cls, "source": "drawn"}
                                  for xyxy, _, cls in OTHER_RECTS], status="in_review")
    empty = project.add_image(root / "empty.png", role="query")
    project.set_status(empty.id, "done")
    project.set_settings(DetectParams(confidence=0.5, iou_threshold=0.3))
    save_project(project)
    return root / "project"


@pytest.fixture(scope="module")
def predictor(tiny_model_dir) -> OwlPredictor:
    # every patch is a candidate (32 x 32 grid): a drawn box's own patch scores 1.0
    return OwlPredictor(str(tiny_model_dir), device="cpu", dtype="fp32", top_k=1024)


def test_project_measures_reviewed_non_example_images_only(project_dir, predictor):
    project = load_project(project_dir)
    predictor.set_examples(project.training_data(), project.classes)
    measurement = measure_project(project, predictor)
    # done: example (prompts), example-again (same picture), query, empty; "other" in review
    assert measurement.image_names == ("example.png", "example-again.png", "query.png",
                                       "empty.png")
    assert measurement.is_example == (True, True, False, False)
    # no detection is run on the left-out images
    assert measurement.predictions[0] is None and measurement.predictions[1] is None
    ev = evaluate_project(project, predictor)
    assert ev.left_out == ("example.png", "example-again.png")
    assert ev.images_measured == 2
    assert ev.confidence == 0.5
    # the labels of query.png are the ground truth: 2 red, 1 blue
    assert [c.support for c in ev.classes] == [2, 1]


def test_thresholding_once_equals_detecting_at_each_confidence(project_dir, predictor):
    """The meter detects once at confidence 0 and thresholds; `detect` at the confidence
    itself must give the same numbers."""
    project = load_project(project_dir)
    predictor.set_examples(project.training_data(), project.classes)
    measurement = measure_project(project, predictor)
    scores = np.concatenate([p.confidence for p in measurement.predictions if p is not None])
    assert len(scores) > 3
    images = [project.image_path(r) for r in project.images
              if r.status == "done" and r.name in ("query.png", "empty.png")]
    for confidence in np.quantile(scores, [0.0, 0.5, 0.9, 1.0]).tolist():
        params = project.settings.replace(confidence=confidence)
        direct = evaluate(list(measurement.ground_truth[2:]),
                          predictor.detect_many(images, params), project.classes, confidence)
        assert measurement.at(confidence).classes == direct.classes
        assert measurement.at(confidence).overall == direct.overall


def test_cli_evaluate_prints_a_table_and_json(project_dir, tiny_model_dir, predictor, capsys):
    flags = ["evaluate", "--project", str(project_dir), "--model", str(tiny_model_dir),
             "--device", "cpu", "--dtype", "fp32", "--top-k", "1024", "--confidence", "0.6"]
    assert cli_main(flags) == 0
    table = capsys.readouterr().out
    assert "red" in table and "blue" in table and "2 left out" in table
    assert cli_main([*flags, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    project = load_project(project_dir)
    predictor.set_examples(project.training_data(), project.classes)
    expected = evaluate_project(project, predictor, project.settings.replace(confidence=0.6))
    assert out["confidence"] == 0.6 and out["images_left_out"] == 2
    assert out["overall"]["f1"] == pytest.approx(expected.overall.f1)
    assert [c["name"] for c in out["classes"]] == ["red", "blue"]
    assert out["map50"] == pytest.approx(expected.map50)


def test_cli_evaluate_refuses_a_project_without_reviewed_images(tmp_path, capsys):
    project = Project(name="fresh", classes=["red"], folder=tmp_path / "p")
    save_project(project)
    assert cli_main(["evaluate", "--project", str(tmp_path / "p")]) == 2
    assert "no image is reviewed" in capsys.readouterr().err


def test_pictures_the_predictors_exemplars_came_from_are_left_out(project_dir, predictor):
    """Examples drawn outside the project (or imported from a .pt) on a picture the project
    has reviewed: that picture is an example too."""
    project = load_project(project_dir)
    query = next(r for r in project.images if r.name == "query.png")
    predictor.set_examples([*project.training_data(), {
        "image": str(project.image_path(query)),
        "boxes": [{"x": 84, "y": 22, "w": 28, "h": 28, "cls": "red", "negative": False}]}],
        project.classes)
    ev = evaluate_project(project, predictor)
    assert ev.left_out == ("example.png", "example-again.png", "query.png")
    assert ev.images_measured == 1


def _f32(rows) -> sv.Detections:
    """`dets` with float32 scores, as the engine returns them."""
    d = dets(rows)
    if len(d):
        d.confidence = d.confidence.astype(np.float32)
    return d


@pytest.mark.parametrize("rows, expected", [
    # the detection scores 0.9452: rounding to the slider's 0.95 would drop it (F1 0)
    ([(0, 0, 10, 10, CAT, 0.9452), (40, 40, 50, 50, CAT, 0.3)], 0.94),
    # a false positive at 0.9449 sits between 0.94 and the hit: no slider value keeps the hit
    # without it, so the promise is the grid's best (both kept, F1 2/3), not the off-grid 1.0
    ([(0, 0, 10, 10, CAT, 0.9452), (40, 40, 50, 50, CAT, 0.9449)], 0.94),
    # float32 0.95 is just below 0.95: the slider's 0.95 still keeps it (compared in float32)
    ([(0, 0, 10, 10, CAT, 0.95), (40, 40, 50, 50, CAT, 0.3)], 0.95),
])
def test_a_suggestion_on_the_sliders_step_reads_what_it_promises(rows, expected):
    gt = dets([(0, 0, 10, 10, CAT)], scores=False)
    pred = _f32(rows)
    ev = evaluate([gt], [pred], CLASSES, 0.5, confidence_step=0.01)
    sg = ev.suggested
    assert sg is not None and sg.confidence == expected
    applied = evaluate([gt], [pred], CLASSES, sg.confidence).overall
    assert (applied.precision, applied.recall, applied.f1) == (sg.precision, sg.recall, sg.f1)


def test_a_stepped_suggestion_is_the_best_slider_value():
    """On random float32 scores: the stepped suggestion is a multiple of the step, applying it
    reads exactly the promised P/R/F1, and no slider value reads a better F1."""
    rng = np.random.default_rng(7)
    gts, preds = [], []
    for _ in range(5):
        gt_rows = [(i * 100, 0, i * 100 + 40, 40, int(rng.integers(0, 2))) for i in range(4)]
        pred_rows = [(x0 + int(rng.integers(-5, 6)), 0, x1, 40,
                      cls if rng.random() < 0.8 else 1 - cls, float(rng.random()))
                     for x0, _, x1, _, cls in gt_rows]
        pred_rows += [(500, 500, 540, 540, 0, float(rng.random()))]
        gts.append(dets(gt_rows, scores=False))
        preds.append(_f32(pred_rows))
    ev = evaluate(gts, preds, CLASSES, 0.5, confidence_step=0.01)
    sg = ev.suggested
    assert sg is not None and round(sg.confidence * 100) == pytest.approx(sg.confidence * 100)
    applied = evaluate(gts, preds, CLASSES, sg.confidence).overall
    assert (applied.precision, applied.recall, applied.f1) == (sg.precision, sg.recall, sg.f1)
    grid = [evaluate(gts, preds, CLASSES, k / 100).overall.f1 for k in range(101)]
    assert sg.f1 == pytest.approx(max(grid))


def test_metrics_of_a_class_with_nothing_to_measure_are_undefined():
    """A class with no labels and no detections has no precision, recall or F1 (None, "-" in
    the table), not 0; a class with labels but no detections has recall 0."""
    ev = evaluate([GT_A], [PRED_A], CLASSES + ["bird"], 0.5)
    bird = ev.classes[2]
    assert (bird.precision, bird.recall, bird.f1) == (None, None, None)
    assert ev.classes[DOG].recall == 1.0
    row = next(line for line in ev.table().splitlines() if line.startswith("bird"))
    assert row.split()[1:4] == ["-", "-", "-"]
    nothing = evaluate([sv.Detections.empty()], [sv.Detections.empty()], CLASSES, 0.5)
    assert nothing.overall.f1 is None and nothing.to_dict()["overall"]["f1"] is None
