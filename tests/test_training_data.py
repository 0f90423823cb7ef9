"""Tests for owl_core.engine.training_data: the reference schema and its error messages."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from owl_core.engine.training_data import (
    PromptBox,
    TrainingDataError,
    TrainingImage,
    check_class_names,
    parse_box,
    parse_training_data,
)
from owl_core.errors import LimitError

BOX = {"x": 50, "y": 40, "w": 20, "h": 10, "cls": "coin", "negative": False}


def data_with_box(**changes) -> list[dict]:
    """One image with one box, the box updated by `changes` (value None deletes the key)."""
    box = dict(BOX)
    for key, value in changes.items():
        if value is None:
            box.pop(key, None)
        else:
            box[key] = value
    return [{"image": "a.png", "boxes": [box]}]


def test_reference_schema_parses():
    data = [
        {"image": "a.png", "boxes": [
            {"x": 50, "y": 40, "w": 20, "h": 10, "cls": "coin", "negative": False},
            {"x": 10.5, "y": 20.25, "w": 4, "h": 6, "cls": "coin", "negative": True},
        ]},
        {"image": "b.png", "boxes": [{"x": 5, "y": 5, "w": 2, "h": 2, "cls": "cup",
                                      "negative": False}]},
    ]
    original = copy.deepcopy(data)
    parsed = parse_training_data(data)
    assert parsed == [
        TrainingImage("a.png", (PromptBox(50.0, 40.0, 20.0, 10.0, "coin", False),
                                PromptBox(10.5, 20.25, 4.0, 6.0, "coin", True))),
        TrainingImage("b.png", (PromptBox(5.0, 5.0, 2.0, 2.0, "cup", False),)),
    ]
    assert data == original  # input not modified
    # x, y are the centre: XYXY spans half the size either side
    assert parsed[0].boxes[0].xyxy == (40.0, 35.0, 60.0, 45.0)


@pytest.mark.parametrize("data, expected_boxes", [
    # the project form: {"training_data": [...]}
    ({"training_data": data_with_box(), "classes": ["coin"]}, 1),
    # a tuple of entries
    (tuple(data_with_box()), 1),
    # an empty list: no examples at all
    ([], None),
    # an image without boxes
    ([{"image": "a.png", "boxes": []}], 0),
    # "boxes" may be left out
    ([{"image": "a.png"}], 0),
])
def test_accepted_containers(data, expected_boxes):
    parsed = parse_training_data(data)
    if expected_boxes is None:
        assert parsed == []
    else:
        assert len(parsed) == 1 and len(parsed[0].boxes) == expected_boxes


@pytest.mark.parametrize("changes, expected", [
    # "negative" left out means a positive example
    ({"negative": None}, PromptBox(50.0, 40.0, 20.0, 10.0, "coin", False)),
    # 0 / 1 for the flag
    ({"negative": 1}, PromptBox(50.0, 40.0, 20.0, 10.0, "coin", True)),
    # numpy bool for the flag
    ({"negative": np.bool_(True)}, PromptBox(50.0, 40.0, 20.0, 10.0, "coin", True)),
    # numeric strings and numpy numbers are numbers
    ({"x": "50", "w": np.float32(20)}, PromptBox(50.0, 40.0, 20.0, 10.0, "coin", False)),
    # class names are trimmed
    ({"cls": "  coin "}, PromptBox(50.0, 40.0, 20.0, 10.0, "coin", False)),
    # boxes may stick out of the image (clipped later, when the image size is known)
    ({"x": -5}, PromptBox(-5.0, 40.0, 20.0, 10.0, "coin", False)),
    # extra keys are ignored
    ({"confidence": 0.5}, PromptBox(50.0, 40.0, 20.0, 10.0, "coin", False)),
])
def test_box_values(changes, expected):
    assert parse_training_data(data_with_box(**changes))[0].boxes[0] == expected


WHERE = r"training_data\[0\]\.boxes\[0\]: "


@pytest.mark.parametrize("changes, message", [
    # missing coordinate
    ({"x": None}, WHERE + r"missing field 'x'; each box needs x, y, w, h \(centre and size"),
    # missing size
    ({"h": None}, WHERE + r"missing field 'h'"),
    # missing class
    ({"cls": None}, WHERE + r"missing field 'cls', the class name\."),
    # the class under the wrong key
    ({"cls": None, "class": "coin"}, WHERE + r"missing field 'cls'.*rename it to 'cls'"),
    # zero width
    ({"w": 0}, WHERE + r"width and height must be positive, got w=0\.0, h=10\.0\. x, y are the "
               r"box centre"),
    # negative height
    ({"h": -3}, WHERE + r"width and height must be positive, got w=20\.0, h=-3\.0"),
    # NaN
    ({"x": float("nan")}, WHERE + r"x must be a finite number of pixels, got nan"),
    # infinity
    ({"w": math.inf}, WHERE + r"w must be a finite number of pixels, got inf"),
    # "nan" as a string is still NaN
    ({"y": "nan"}, WHERE + r"y must be a finite number of pixels, got nan"),
    # not a number
    ({"y": "forty"}, WHERE + r"y must be a number of pixels, got 'forty'"),
    # a list instead of a number
    ({"x": [1, 2]}, WHERE + r"x must be a number of pixels, got \[1, 2\]"),
    # a bool is not a number of pixels
    ({"x": True}, WHERE + r"x must be a number of pixels, got True"),
    # empty class
    ({"cls": ""}, WHERE + r"empty\. Type a class name first \(for example: coin\)"),
    # blank class
    ({"cls": "   "}, WHERE + r"empty\. Type a class name first"),
    # class id instead of a name
    ({"cls": 3}, WHERE + r"'cls' must be a non-empty class name \(a string\), got 3"),
    # negative as a string
    ({"negative": "false"}, WHERE + r"'negative' must be true or false, got 'false'"),
    # negative as another number
    ({"negative": 2}, WHERE + r"'negative' must be true or false, got 2"),
    # negative as the word None
    ({"negative": "None"}, WHERE + r"'negative' must be true or false, got 'None'"),
])
def test_bad_boxes(changes, message):
    with pytest.raises(TrainingDataError, match=message):
        parse_training_data(data_with_box(**changes))


def test_null_negative_is_refused():
    data = data_with_box()
    data[0]["boxes"][0]["negative"] = None  # JSON null
    with pytest.raises(TrainingDataError,
                       match=WHERE + r"'negative' must be true or false, got None"):
        parse_training_data(data)


@pytest.mark.parametrize("data, message", [
    # top level is a dict without "training_data"
    ({"images": []}, (r"^training data must be a list of "
                      r"\{\"image\": \.\.\., \"boxes\": \[\.\.\.\]\} "
                      r"entries, got dict\.$")),
    # a single entry not wrapped in a list
    ({"image": "a.png", "boxes": []}, r"got dict \(a single entry\? wrap it in a list\)"),
    # a string (e.g. a path to the JSON instead of its content)
    ("train.json", r"must be a list of .* got str"),
    # None
    (None, r"must be a list of .* got NoneType"),
    # "training_data" that is not a list
    ({"training_data": {"image": "a.png"}}, r"must be a list of .* got dict"),
    # entry not a dict
    (["a.png"], r"^training_data\[0\]: expected a dict with 'image' and 'boxes', got str\.$"),
    # second entry not a dict
    ([{"image": "a.png", "boxes": []}, 7], r"^training_data\[1\]: expected a dict .* got int"),
    # entry without an image
    ([{"boxes": []}], r"^training_data\[0\]: missing field 'image' \(a path, PIL image, RGB array"),
    # image given as an empty string
    ([{"image": " ", "boxes": []}], r"^training_data\[0\]: missing field 'image'"),
    # boxes as a dict
    ([{"image": "a.png", "boxes": BOX}], (r"^training_data\[0\]: 'boxes' must be a list of box "
                                         r"dicts \(x, y, w, h, cls, negative\), got dict\.$")),
    # boxes as a string
    ([{"image": "a.png", "boxes": "x=1"}], r"'boxes' must be a list .* got str"),
    # a box that is a list of numbers
    ([{"image": "a.png", "boxes": [[1, 2, 3, 4]]}],
     r"^training_data\[0\]\.boxes\[0\]: a box must be a dict with x, y, w, h, cls; got list\.$"),
    # the error names the right box
    ([{"image": "a.png", "boxes": [BOX]}, {"image": "b.png", "boxes": [BOX, {**BOX, "w": 0}]}],
     r"^training_data\[1\]\.boxes\[1\]: width and height must be positive"),
])
def test_bad_structure(data, message):
    with pytest.raises(TrainingDataError, match=message):
        parse_training_data(data)


def test_errors_are_value_errors():
    # the UI and CLI catch ValueError
    assert issubclass(TrainingDataError, ValueError)


def test_already_parsed_values_pass_through():
    box = PromptBox(1.0, 2.0, 3.0, 4.0, "a", True)
    image = TrainingImage("x.png", (box,))
    assert parse_box(box, "here") is box
    assert parse_training_data([image]) == [image]
    assert parse_training_data([{"image": "x.png", "boxes": [box]}]) == [image]


# ---------------------------------------------------------------------------- bounds
@pytest.mark.parametrize("value", [
    # a 400-digit integer: float() would raise OverflowError
    10**400,
    # as a string
    "9" * 60,
    # finite but absurd
    1e300,
    # a 50 MB string
    "1" * 50_000_000,
])
def test_absurd_numbers_are_training_data_errors(value):
    with pytest.raises(TrainingDataError, match=r"boxes\[0\]: w must be a (finite )?number of "
                                                r"pixels, got (an integer of about 40\d digits|"
                                                r"a string of|[\d.e+]+)") as info:
        parse_training_data(data_with_box(w=value))
    assert len(str(info.value)) < 300


def test_huge_class_name_is_refused_cheaply_without_echoing_it():
    name = "x" * 50_000_000
    with pytest.raises(LimitError, match=r"boxes\[0\]: characters in the class name 'x+'\.\.\.: "
                                         r"50,000,000 is over the limit of 200 "
                                         r"\(max_class_name_chars\)") as info:
        parse_training_data(data_with_box(cls=name))
    assert isinstance(info.value, TrainingDataError)
    assert len(str(info.value)) < 400
    assert parse_training_data(data_with_box(cls="x" * 200))[0].boxes[0].cls == "x" * 200


@pytest.mark.parametrize("limit, env, data", [
    # classes
    ("max_classes", {"OWL_MAX_CLASSES": "2"},
     [{"image": "a.png", "boxes": [dict(BOX, cls=c) for c in "abc"]}]),
    # boxes on one image
    ("max_boxes_per_image", {"OWL_MAX_BOXES_PER_IMAGE": "2"},
     [{"image": "a.png", "boxes": [BOX] * 3}]),
    # boxes in all
    ("max_boxes_total", {"OWL_MAX_BOXES_TOTAL": "3"},
     [{"image": "a.png", "boxes": [BOX] * 2}, {"image": "b.png", "boxes": [BOX] * 2}]),
    # images
    ("max_training_images", {"OWL_MAX_TRAINING_IMAGES": "1"},
     [{"image": "a.png"}, {"image": "b.png"}]),
])
def test_counts_are_bounded(limit, env, data, monkeypatch):
    parse_training_data(data)  # fine with the default limits
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(LimitError, match=rf"is over the limit of \d+ \({limit}\); reduce it, or "
                                         rf"raise the limit with OWL_{limit.upper()}"):
        parse_training_data(data)


def test_default_limits_refuse_a_request_sized_attack():
    many = [{"image": "a.png", "boxes": [dict(BOX, cls=f"c{i}") for i in range(201)]}]
    with pytest.raises(LimitError, match=r"max_classes"):
        parse_training_data(many)


@pytest.mark.parametrize("value", [
    # arrays and tensors have no single truth value (numpy: ValueError, torch: RuntimeError)
    np.ones(2), torch.ones(2), torch.ones(0),
])
def test_negative_flag_that_is_an_array(value):
    with pytest.raises(TrainingDataError, match=r"'negative' must be true or false"):
        parse_training_data(data_with_box(negative=value))


def test_class_name_lists_are_checked_too():
    assert check_class_names([" a ", "b"]) == ["a", "b"]
    with pytest.raises(LimitError, match="max_class_name_chars"):
        check_class_names(["a", "b" * 201])
    with pytest.raises(TrainingDataError, match=r"unique; repeated: \['a'\]"):
        check_class_names(["a", "a "])
    with pytest.raises(TrainingDataError, match="non-empty class name"):
        check_class_names(["a", 3])
