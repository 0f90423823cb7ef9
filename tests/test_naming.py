"""One class-name rule (`owl_core.naming`), applied the same way by every reader of a class name:
the project model, training data, a `.pt` / caller class list, the studio's class dialog and
the REST request schema."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from owl_core.engine.training_data import check_class_names, parse_training_data
from owl_core.errors import OwlError, ProjectError, TrainingDataError
from owl_core.naming import class_key, clean_class_name
from owl_core.project.model import Project
from owl_core.rest.models import TrainBox
from ui import labels as L


def _project(name):
    return Project(name="p", classes=[name]).classes[0]


def _training_data(name):
    data = [{"image": "a.png", "boxes": [{"x": 5, "y": 5, "w": 4, "h": 4, "cls": name}]}]
    return parse_training_data(data)[0].boxes[0].cls


def _class_list(name):
    return check_class_names([name])[0]


def _rest(name):
    return TrainBox(x=5, y=5, w=4, h=4, cls=name).cls


#: Every place a class name comes in; each must clean and refuse exactly as the rule does.
READERS = {
    "project": _project,
    "training data": _training_data,
    "class list": _class_list,
    "studio dialog": L.validate_class_name,
    "REST": _rest,
}
REFUSED = (OwlError, ValidationError)


@pytest.mark.parametrize("reader", READERS.values(), ids=READERS)
@pytest.mark.parametrize(("name", "cleaned"), [
    ("coin", "coin"),
    ("  red \t  cup ", "red cup"),       # whitespace runs collapse, ends stripped
    ("Notebook", "Notebook"),            # "NOT" inside a word is fine
    ("pièce", "pièce"),                  # any printable text
])
def test_every_reader_cleans_a_name_the_same_way(reader, name, cleaned):
    assert reader(name) == cleaned == clean_class_name(name)


@pytest.mark.parametrize("reader", READERS.values(), ids=READERS)
@pytest.mark.parametrize("name", [
    "",                 # empty
    "   ",              # only whitespace
    "NOT coin",         # reads as a negative box of "coin" in the studio
    "not coin",         # ... in any case
    "coin\x00",         # a control character
    "c" * 201,          # over max_class_name_chars (200)
])
def test_every_reader_refuses_the_same_names(reader, name):
    with pytest.raises(REFUSED):
        reader(name)


@pytest.mark.parametrize(("error", "name", "message"), [
    (ProjectError, "", r"class name: empty\. Type a class name first"),
    (ProjectError, "NOT cup", r"can't start with 'NOT'"),
    (ProjectError, "a\x07b", r"control characters; remove them"),
    (TrainingDataError, 3, r"'cls' must be a non-empty class name \(a string\), got 3"),
    (TrainingDataError, "x" * 300, r"300 is over the limit of 200 \(max_class_name_chars\)"),
])
def test_the_message_names_the_problem_and_the_callers_error_class(error, name, message):
    with pytest.raises(error, match=message):
        clean_class_name(name, error=error)


def test_a_huge_name_is_refused_as_the_callers_limit_error():
    from owl_core.limits import LimitError

    with pytest.raises(LimitError) as info:
        clean_class_name("x" * 10_000_000, "boxes[0]", TrainingDataError)
    assert isinstance(info.value, TrainingDataError) and len(str(info.value)) < 300


def test_one_class_regardless_of_case_and_spacing():
    assert class_key("Red  Cup") == class_key("red cup")
    with pytest.raises(TrainingDataError, match="unique"):
        check_class_names(["Coin", "coin"])
    with pytest.raises(ProjectError, match="already a class"):
        Project(name="p", classes=["Coin", "coin"])
    with pytest.raises(ProjectError, match="already a class"):
        L.validate_class_name("COIN", ["coin"])
