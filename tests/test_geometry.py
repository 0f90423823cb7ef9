"""`owl_core.geometry`, the one place boxes change format: every conversion on exact values
(asymmetric boxes, so a swapped x/y, w/h or a sign flip shows), both directions, edge cases.
Part of the mutation check's test selection (bench/mutation.sh)."""

from __future__ import annotations

import pytest
import torch

from owl_core.geometry import (
    area_xyxy,
    clip_xyxy,
    cxcywh_to_xyxy,
    denormalize_xyxy,
    iou_xyxy,
    is_finite_box,
    normalize_xyxy,
    order_xyxy,
    pixels_to_square_tensor,
    reference_to_xyxy,
    square_cxcywh_to_xyxy_tensor,
    square_to_pixels_tensor,
    xyxy_to_cxcywh,
    xyxy_to_reference,
    xyxy_to_response,
)

BOX = (10.0, 20.0, 50.0, 80.0)  # x0, y0, x1, y1: width 40, height 60, centre (30, 50)


@pytest.mark.parametrize("box, expected", [
    (BOX, BOX),                                  # already ordered
    ((50, 80, 10, 20), BOX),                     # drawn bottom-right to top-left
    ((50, 20, 10, 80), BOX),                     # x flipped only
    ((10, 80, 50, 20), BOX),                     # y flipped only
])
def test_order_xyxy(box, expected):
    out = order_xyxy(box)
    assert out == expected and all(isinstance(v, float) for v in out)


@pytest.mark.parametrize("box, size, expected", [
    (BOX, (100, 90), BOX),                               # inside: unchanged
    ((-5, -7, 120, 95), (100, 90), (0, 0, 100, 90)),     # past every edge
    ((120, 95, -5, -7), (100, 90), (0, 0, 100, 90)),     # inverted and past every edge
    ((10, 20, 50, 80), (30, 70), (10, 20, 30, 70)),      # width and height clip differently
    ((-9, -9, -1, -2), (30, 70), (0, 0, 0, 0)),          # wholly outside, top-left
    ((40, 90, 45, 99), (30, 70), (30, 70, 30, 70)),      # wholly outside, bottom-right
])
def test_clip_xyxy(box, size, expected):
    assert clip_xyxy(box, size) == expected


@pytest.mark.parametrize("box, expected", [
    (BOX, 2400.0),
    ((50, 80, 10, 20), 0.0),          # inverted: no area
    ((10, 20, 10, 80), 0.0),          # zero width
    ((10, 80, 50, 20), 0.0),          # negative height only
    ((50, 20, 10, 80), 0.0),          # negative width only
])
def test_area_xyxy(box, expected):
    assert area_xyxy(box) == expected


@pytest.mark.parametrize("a, b, expected", [
    (BOX, BOX, 1.0),
    (BOX, (30, 20, 70, 80), 1200 / 3600),      # half overlap in x
    (BOX, (10, 50, 50, 110), 1200 / 3600),     # half overlap in y
    (BOX, (60, 20, 90, 80), 0.0),              # apart in x
    (BOX, (10, 90, 50, 99), 0.0),              # apart in y
    ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),         # no area: 0, not a division by zero
    (BOX, (20, 30, 40, 60), 600 / 2400),       # one inside the other
    ((0, 0, 0.5, 0.5), (0, 0, 0.5, 0.5), 1.0),  # normalised boxes: a union under 1 is fine
    ((0, 0, 0.5, 0.5), (0, 0, 0.25, 0.5), 0.5),
])
def test_iou_xyxy(a, b, expected):
    assert iou_xyxy(a, b) == pytest.approx(expected)
    assert iou_xyxy(b, a) == pytest.approx(expected)


def test_centre_size_conversions_both_ways():
    assert cxcywh_to_xyxy(30, 50, 40, 60) == BOX
    assert xyxy_to_cxcywh(BOX) == (30.0, 50.0, 40.0, 60.0)
    assert xyxy_to_cxcywh([1, 2, 4, 8]) == (2.5, 5.0, 3.0, 6.0)
    assert all(isinstance(v, float) for v in xyxy_to_cxcywh([1, 2, 4, 8]))
    assert cxcywh_to_xyxy(*xyxy_to_cxcywh((1.5, 2.25, 7.75, 9.5))) == (1.5, 2.25, 7.75, 9.5)


def test_reference_boxes_both_ways():
    assert reference_to_xyxy({"x": 30, "y": 50, "w": 40, "h": 60, "cls": "a"}) == BOX
    assert xyxy_to_reference(BOX, "coin") == {"x": 30.0, "y": 50.0, "w": 40.0, "h": 60.0,
                                              "cls": "coin", "negative": False}
    assert xyxy_to_reference(BOX, "coin", negative=1)["negative"] is True
    odd = (0.0, 0.0, 1.0 / 3, 2.0 / 3)
    assert xyxy_to_reference(odd, "c") == {"x": 0.17, "y": 0.33, "w": 0.33, "h": 0.67,
                                           "cls": "c", "negative": False}  # 2 digits
    assert xyxy_to_reference(odd, "c", ndigits=3)["h"] == 0.667
    exact = xyxy_to_reference(odd, "c", ndigits=None)
    assert (exact["x"], exact["y"], exact["w"], exact["h"]) == (1 / 6, 1 / 3, 1 / 3, 2 / 3)


def test_response_box_is_centre_and_size():
    assert xyxy_to_response(BOX) == {"x": 30.0, "y": 50.0, "width": 40.0, "height": 60.0}
    assert list(xyxy_to_response(BOX)) == ["x", "y", "width", "height"]


def test_normalised_boxes_both_ways():
    size = (200, 100)  # width != height: a swapped axis shows
    assert normalize_xyxy(BOX, size) == (0.05, 0.2, 0.25, 0.8)
    assert denormalize_xyxy((0.05, 0.2, 0.25, 0.8), size) == pytest.approx(BOX)


@pytest.mark.parametrize("box, expected", [
    (BOX, True),
    ((0, 0, 1, 2), True),
    ((0, 0, 1), False),                        # three numbers
    ((0, 0, 1, 2, 3), False),                  # five
    ((0, 0, 1, float("nan")), False),
    ((float("inf"), 0, 1, 2), False),
    ((0, "1", 2, 3), False),                   # a string is not a number
])
def test_is_finite_box(box, expected):
    assert is_finite_box(box) is expected


def test_padded_square_to_pixels_clips_to_the_image():
    # 200 x 100 image: the square's side is 200; y beyond the image's 100 rows is clipped
    boxes = torch.tensor([[0.25, 0.25, 0.1, 0.2],     # -> 40, 30, 60, 70
                          [0.9, 0.6, 0.4, 0.2]],      # -> 140, 100, 220->200, 140->100
                         dtype=torch.float16)
    out = square_to_pixels_tensor(boxes, (200, 100))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[40.0, 30.0, 60.0, 70.0],
                                                  [140.0, 100.0, 200.0, 100.0]]),
                               atol=0.2, rtol=0)
    tall = square_to_pixels_tensor(torch.tensor([[0.5, 0.5, 0.2, 0.2]]), (50, 100))
    torch.testing.assert_close(tall, torch.tensor([[40.0, 40.0, 50.0, 60.0]]))  # x clipped
    low = square_to_pixels_tensor(torch.tensor([[0.0, 0.0, 0.2, 0.4]]), (50, 100))
    torch.testing.assert_close(low, torch.tensor([[0.0, 0.0, 10.0, 20.0]]))  # clamped at 0


def test_pixels_to_padded_square_and_back():
    xyxy = torch.tensor([[40.0, 30.0, 60.0, 70.0]], dtype=torch.float64)
    square = pixels_to_square_tensor(xyxy, (200, 100))
    assert square.dtype == torch.float32
    torch.testing.assert_close(square, torch.tensor([[0.2, 0.15, 0.3, 0.35]]))
    torch.testing.assert_close(pixels_to_square_tensor(xyxy, (100, 200)),
                               torch.tensor([[0.2, 0.15, 0.3, 0.35]]))  # the longer side


def test_square_cxcywh_to_xyxy_tensor():
    out = square_cxcywh_to_xyxy_tensor(torch.tensor([[0.5, 0.4, 0.2, 0.6]], dtype=torch.float16))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[0.4, 0.1, 0.6, 0.7]]), atol=1e-3, rtol=0)
