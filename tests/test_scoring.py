"""Scoring semantics on hand-built embeddings: formulas, negatives, NMS, output shape."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from owl_core.engine.embedding import ImageEmbeddings
from owl_core.engine.matching import Exemplars
from owl_core.engine.scoring import DetectionResult, class_scores, detect, detect_many

D = 8


def unit(*values):
    v = torch.zeros(D)
    v[: len(values)] = torch.tensor(values, dtype=torch.float32)
    return F.normalize(v, dim=0)


def make_emb(vectors, boxes=None, size=(200, 100), shift=0.0, scale=1.0):
    k = len(vectors)
    if boxes is None:  # well separated boxes: no NMS interaction
        boxes = [[0.1 + 0.2 * (i % 5), 0.1 + 0.2 * (i // 5), 0.05, 0.05] for i in range(k)]
    return ImageEmbeddings(
        objectness=torch.linspace(0.9, 0.1, k),
        boxes=torch.tensor(boxes, dtype=torch.float32),
        class_embeds=torch.stack(vectors),
        logit_shift=torch.full((k,), shift),
        logit_scale=torch.full((k,), scale),
        image_size=size,
    )


def make_ex(names, rows):
    """rows: (vector, class_id, negative)."""
    if not rows:
        return Exemplars.empty(names, D)
    return Exemplars(tuple(names), torch.stack([r[0] for r in rows]),
                     torch.tensor([r[1] for r in rows]), torch.tensor([r[2] for r in rows]))


def test_reference_score_is_max_positive_cosine_mapped():
    a, b = unit(1, 0), unit(0, 1)
    cand = unit(1, 1)  # cos 0.7071 with a and b
    other = unit(1, -1)  # cos 0.7071 with a, -0.7071 with b
    emb = make_emb([cand, other])
    ex = make_ex(["x"], [(a, 0, False), (b, 0, False)])
    scores = class_scores(emb, ex, "reference")
    c = 1 / math.sqrt(2)
    assert scores[0, 0].item() == pytest.approx((c + 1) / 2, abs=1e-6)
    assert scores[1, 0].item() == pytest.approx((c + 1) / 2, abs=1e-6)  # max over exemplars


def test_calibrated_score_uses_logit_shift_and_scale():
    a = unit(1, 0)
    emb = make_emb([unit(1, 1)], shift=-0.5, scale=3.0)
    ex = make_ex(["x"], [(a, 0, False)])
    expected = 1 / (1 + math.exp(-((1 / math.sqrt(2) - 0.5) * 3.0)))
    assert class_scores(emb, ex, "calibrated")[0, 0].item() == pytest.approx(expected, abs=1e-6)


def test_negative_suppresses_even_below_confidence():
    # the reference only lets a negative act when the negative itself clears `confidence`
    pos, neg = unit(1, 0), unit(0, 1)
    closer_to_neg = unit(1, 1.2)
    closer_to_pos = unit(1.2, 1)
    emb = make_emb([closer_to_neg, closer_to_pos])
    ex = make_ex(["x"], [(pos, 0, False), (neg, 0, True)])
    res = detect(emb, ex, confidence=0.5)
    assert len(res) == 1
    # only the second candidate (cx 0.3, cy 0.1, side 0.05 of the 200 px square) survives
    np.testing.assert_allclose(res.xyxy[0], [55, 15, 65, 25], atol=1e-3)


def test_negative_only_acts_on_its_own_class():
    pos_a, pos_b = unit(1, 0), unit(1, 0.1)
    emb = make_emb([unit(1, 0.05)])
    ex = make_ex(["a", "b"], [(pos_a, 0, False), (pos_b, 1, False), (unit(1, 0.05), 1, True)])
    scores = class_scores(emb, ex)
    assert scores[0, 0] > 0.9 and scores[0, 1] == 0


@pytest.mark.parametrize("rows,names", [
    ([(unit(1, 0), 0, True)], ["neg_only"]),  # a class with only negatives
    ([], ["no_boxes"]),  # a class with no exemplars at all
    ([], []),  # no classes
])
def test_classes_without_positives_detect_nothing(rows, names):
    emb = make_emb([unit(1, 0), unit(0, 1)])
    res = detect(emb, make_ex(names, rows), confidence=0.0)
    assert len(res) == 0
    assert res.to_json()["predictions"] == []


def test_vectorised_over_classes_matches_per_class_loop():
    g = torch.Generator().manual_seed(0)
    cands = [F.normalize(torch.randn(D, generator=g), dim=0) for _ in range(30)]
    rows = [(F.normalize(torch.randn(D, generator=g), dim=0), int(c), bool(n))
            for c, n in zip(torch.randint(0, 4, (25,), generator=g),
                            torch.rand(25, generator=g) < 0.3, strict=True)]
    emb, ex = make_emb(cands), make_ex(["a", "b", "c", "d"], rows)
    scores = class_scores(emb, ex)
    for c in range(4):
        pos = [r[0] for r in rows if r[1] == c and not r[2]]
        neg = [r[0] for r in rows if r[1] == c and r[2]]
        for k, v in enumerate(cands):
            if not pos:
                assert scores[k, c] == 0
                continue
            best_pos = max(float(v @ p) for p in pos)
            best_neg = max((float(v @ n) for n in neg), default=-2.0)
            want = (best_pos + 1) / 2 if best_neg < best_pos else 0.0
            assert scores[k, c].item() == pytest.approx(want, abs=1e-5)


def test_nms_per_class_then_across_classes_and_max_detections():
    a, b = unit(1, 0), unit(0, 1)
    boxes = [[0.5, 0.5, 0.2, 0.2], [0.505, 0.5, 0.2, 0.2], [0.51, 0.5, 0.2, 0.2],
             [0.1, 0.1, 0.1, 0.1], [0.9, 0.9, 0.1, 0.1]]
    vectors = [unit(1, 0.01), unit(1, 0.02), unit(0.02, 1), unit(1, 0.3), unit(1, 0.4)]
    emb = make_emb(vectors, boxes=boxes, size=(100, 100))
    ex = make_ex(["a", "b"], [(a, 0, False), (b, 1, False)])
    res = detect(emb, ex, confidence=0.5, iou_threshold=0.3)
    # the three overlapping boxes collapse to the best one, across classes too
    assert len(res) == 3
    assert res.confidence.tolist() == sorted(res.confidence.tolist(), reverse=True)
    cut = detect(emb, ex, confidence=0.5, iou_threshold=0.3, max_detections=2)
    assert cut.confidence.shape == (2,)
    assert len(detect(emb, ex, confidence=0.5, iou_threshold=0.99)) == 5


def test_output_in_pixels_clipped_and_json_shape():
    emb = make_emb([unit(1, 0)], boxes=[[0.95, 0.3, 0.2, 0.2]], size=(200, 100))
    res = detect(emb, make_ex(["x"], [(unit(1, 0), 0, False)]), confidence=0.5)
    # padded square side = 200: x 170..210 -> clipped to 200; y 40..80
    np.testing.assert_allclose(res.xyxy[0], [170, 40, 200, 80], atol=1e-3)
    assert res.xyxy.dtype == np.float32
    pred = res.to_json()["predictions"][0]
    assert res.to_json()["image"] == {"width": 200, "height": 100}
    assert pred["x"] == pytest.approx(185) and pred["width"] == pytest.approx(30)
    assert pred["class"] == "x" and pred["class_id"] == 0
    det = res.to_supervision()
    assert det.data["class_name"].tolist() == ["x"] and len(det) == 1


def two_detections() -> DetectionResult:
    return DetectionResult(xyxy=np.array([[10, 20, 50, 80], [0, 0, 4, 2]], np.float32),
                           confidence=np.array([0.9, 0.25], np.float32),
                           class_id=np.array([1, 0], np.int64), class_names=("cup", "coin"),
                           image_size=(200, 100))


def test_json_is_the_reference_response_field_for_field():
    """Roboflow's response keys and values: a renamed or dropped key breaks every client."""
    out = two_detections().to_json()
    assert out == {"image": {"width": 200, "height": 100}, "predictions": [
        {"x": 30.0, "y": 50.0, "width": 40.0, "height": 60.0, "confidence": pytest.approx(0.9),
         "class": "coin", "class_id": 1},
        {"x": 2.0, "y": 1.0, "width": 4.0, "height": 2.0, "confidence": 0.25,
         "class": "cup", "class_id": 0}]}
    assert two_detections().counts() == {"cup": 1, "coin": 1}


def test_supervision_detections_carry_every_field_with_its_dtype():
    det = two_detections().to_supervision()
    assert det.xyxy.dtype == np.float32 and det.xyxy.shape == (2, 4)
    np.testing.assert_array_equal(det.xyxy[1], [0, 0, 4, 2])
    assert det.confidence.dtype == np.float32 and det.confidence.tolist() == [
        pytest.approx(0.9), 0.25]
    assert np.issubdtype(det.class_id.dtype, np.integer) and det.class_id.tolist() == [1, 0]
    assert det.data["class_name"].tolist() == ["coin", "cup"]
    empty = DetectionResult.empty(("cup",), (10, 10)).to_supervision()
    assert len(empty) == 0 and empty.xyxy.shape == (0, 4)


@pytest.mark.parametrize("kwargs,match", [
    ({"confidence": 1.5}, "confidence"),  # out of range
    ({"iou_threshold": -0.1}, "iou_threshold"),  # out of range
    ({"max_detections": -1}, "max_detections"),  # negative
    ({"mode": "fancy"}, "score mode"),  # unknown mode
])
def test_bad_parameters_raise(kwargs, match):
    emb = make_emb([unit(1, 0)])
    with pytest.raises(ValueError, match=match):
        detect(emb, make_ex(["x"], [(unit(1, 0), 0, False)]), **kwargs)


# ---------------------------------------------------------------- negatives act spatially too
# Candidate A is positive-like for class "x" (cos 0.8 with the positive: score 0.9); candidate
# B is negative-like (cos 0.954 with the negative: negative score 0.977; cos 0.301 with the
# positive). Boxes in the 200 px square of a 200 x 200 image.
POS, NEG = unit(1, 0), unit(0, 1)
A_VEC = unit(0.8, 0, 0.6)
B_VEC = unit(0.3, 0.95)
WEAK_B_VEC = unit(0.3, 0.7, math.sqrt(1 - 0.09 - 0.49))  # negative score 0.85
A_BOX = [0.30, 0.30, 0.10, 0.10]
OVERLAPPING = [0.32, 0.30, 0.10, 0.10]  # IoU with A 0.67
APART = [0.70, 0.70, 0.10, 0.10]  # IoU with A 0


@pytest.mark.parametrize("b_vec, b_box, b_class, a_kept", [
    # a negative-like box that outscores an overlapping positive one removes it
    (B_VEC, OVERLAPPING, 0, False),
    # ... only where they overlap (IoU above the NMS threshold)
    (B_VEC, APART, 0, True),
    # ... only when it outscores the positive (0.85 < 0.9: A suppresses it instead)
    (WEAK_B_VEC, OVERLAPPING, 0, True),
    # ... only within its own class (a negative of "y" leaves class "x" alone)
    (B_VEC, OVERLAPPING, 1, True),
])
def test_negative_like_box_suppresses_overlapping_positive(b_vec, b_box, b_class, a_kept):
    emb = make_emb([A_VEC, b_vec], boxes=[A_BOX, b_box], size=(200, 200))
    ex = make_ex(["x", "y"], [(POS, 0, False), (NEG, b_class, True),
                              (unit(0, 0, 0, 1), 1, False)])
    res = detect(emb, ex, confidence=0.8, iou_threshold=0.3)
    # the negative-like box itself is never a detection
    assert res.class_id.tolist() == ([0] if a_kept else [])
    if a_kept:
        np.testing.assert_allclose(res.xyxy[0], [50, 50, 70, 70], atol=1e-3)
        assert res.confidence[0] == pytest.approx(0.9, abs=1e-5)


@pytest.mark.parametrize("a_cos, confidence, a_kept", [
    # the negative-like box (0.977) is below the confidence: it takes no part, A (0.995) stays
    (0.99, 0.98, True),
    # lowering the confidence lets it act, but A still outscores it
    (0.99, 0.97, True),
    # against a weaker A (0.95) it wins
    (0.90, 0.90, False),
])
def test_negative_like_box_acts_only_above_the_confidence(a_cos, confidence, a_kept):
    a_vec = unit(a_cos, 0, math.sqrt(1 - a_cos**2))
    emb = make_emb([a_vec, B_VEC], boxes=[A_BOX, OVERLAPPING], size=(200, 200))
    ex = make_ex(["x"], [(POS, 0, False), (NEG, 0, True)])
    assert len(detect(emb, ex, confidence=confidence, iou_threshold=0.3)) == int(a_kept)


# ---------------------------------------------------------------- boxes in the padding
def test_boxes_wholly_in_the_padding_are_never_reported_nor_suppress():
    # 200 x 100 image: the square is 200 px, the image covers y in [0, 0.5] of it
    in_padding = [0.50, 0.56, 0.10, 0.10]  # y 0.51..0.61: nothing left after clipping
    straddling = [0.50, 0.50, 0.10, 0.20]  # y 0.40..0.60: IoU with the one above 0.43
    far_in_padding = [0.20, 0.90, 0.10, 0.10]
    emb = make_emb([unit(1, 0), unit(1, 0.3), unit(1, 0)],
                   boxes=[in_padding, straddling, far_in_padding], size=(200, 100))
    res = detect(emb, make_ex(["x"], [(unit(1, 0), 0, False)]), confidence=0.5,
                 iou_threshold=0.3)
    assert len(res) == 1  # the straddling box, although the padding box scores higher
    np.testing.assert_allclose(res.xyxy[0], [90, 80, 110, 100], atol=1e-3)
    assert res.counts() == {"x": 1}


@pytest.mark.parametrize("images, mode", [
    (3, "reference"),
    (1, "reference"),    # one image: nothing past the first is looked at
    (2, "calibrated"),   # the score mode reaches every image
])
def test_detect_many_equals_detect_per_image(images, mode):
    g = torch.Generator().manual_seed(3)
    embs = [make_emb([F.normalize(torch.randn(D, generator=g), dim=0) for _ in range(12)],
                     size=(200, 200), shift=0.5, scale=4.0) for _ in range(images)]
    rows = [(F.normalize(torch.randn(D, generator=g), dim=0), i % 2, i % 3 == 2)
            for i in range(7)]
    ex = make_ex(["a", "b"], rows)
    many = detect_many(embs, ex, confidence=0.55, iou_threshold=0.3, mode=mode)
    assert len(many) == images and sum(len(r) for r in many) > 0
    for emb, got in zip(embs, many, strict=True):
        want = detect(emb, ex, confidence=0.55, iou_threshold=0.3, mode=mode)
        assert np.array_equal(got.xyxy, want.xyxy)
        assert np.array_equal(got.confidence, want.confidence)
        assert np.array_equal(got.class_id, want.class_id)
    assert detect_many([], ex) == []
