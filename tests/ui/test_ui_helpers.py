"""Pure helpers of the studio: labels, the project's training data, sessions, drawing, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from owl_core.project.library import ProjectLibrary
from owl_core.project.model import Prompt, load_project
from ui import labels as L
from ui.drawing import draw_detections, fit
from ui.formats import (
    bundled_images,
    bundled_projects,
)
from ui.session import TabSessions, safe_file_name

ASSETS = Path(__file__).resolve().parents[2] / "assets"
GREY = L.hex_to_rgb(L.SUGGESTION_COLOR)


@pytest.mark.parametrize("box, kind, cls, new", [
    # a class name: positive
    ({"label": "coin", "color": (30, 136, 229)}, "positive", "coin", False),
    # "NOT " prefix: negative, whatever the colour
    ({"label": "NOT coin", "color": GREY}, "negative", "coin", False),
    # the prefix is case-insensitive and spaces are normalised
    ({"label": "  not   coin ", "color": None}, "negative", "coin", False),
    # grey: a suggestion (a detection copied into the annotator)
    ({"label": "coin", "color": "rgb(158, 158, 158)"}, "suggestion", "coin", False),
    # no label yet (the label dialog is still open)
    ({"label": "", "color": None}, "unlabeled", "", False),
    # a name typed into the dialog that is not a class yet
    ({"label": "spoon", "color": (1, 2, 3)}, "positive", "spoon", True),
    ({"label": "NOT spoon"}, "negative", "spoon", True),
])
def test_parse_box(box, kind, cls, new):
    parsed = L.parse_box(box, ["coin"])
    assert (parsed.kind, parsed.cls, parsed.new_class) == (kind, cls, new)


@pytest.mark.parametrize("name, error", [
    ("", "Type a class name"),                 # empty
    ("NOT coin", "can't start with 'NOT'"),    # would read as a negative label
    ("coin", "already a class"),               # duplicate
])
def test_validate_class_name_rejects(name, error):
    with pytest.raises(ValueError, match=error):
        L.validate_class_name(name, ["coin"])


def test_validate_class_name_cleans_spaces_and_allows_not_inside_words():
    assert L.validate_class_name("  red   cup ") == "red cup"
    assert L.validate_class_name("Notebook") == "Notebook"


def test_label_choices_pair_each_class_with_a_red_negative():
    labels, colors = L.label_choices(["coin", "cup"])
    assert labels == ["coin", "NOT coin", "cup", "NOT cup"]
    assert colors[1] == colors[3] == L.NEGATIVE_COLOR
    assert colors[0] != colors[2] and L.NEGATIVE_COLOR not in (colors[0], colors[2])


def test_label_choices_put_the_picked_class_first_and_keep_each_class_colour():
    # the label dialog opens a new box on the first entry: the class picked in the page
    labels, colors = L.label_choices(["coin", "cup", "key"], "key")
    assert labels == ["key", "NOT key", "coin", "NOT coin", "cup", "NOT cup"]
    assert colors == [L.class_color(2), L.NEGATIVE_COLOR, L.class_color(0), L.NEGATIVE_COLOR,
                      L.class_color(1), L.NEGATIVE_COLOR]
    # the review annotator lists classes only; an unknown pick keeps the class order
    assert L.label_choices(["coin", "cup"], "cup", negatives=False) == (
        ["cup", "coin"], [L.class_color(1), L.class_color(0)])
    assert L.label_choices(["coin", "cup"], "gone")[0] == ["coin", "NOT coin", "cup", "NOT cup"]


def test_payload_boxes_are_scaled_back_to_image_pixels():
    raw = [{"xmin": 50, "ymin": 20, "xmax": 150, "ymax": 70, "label": "coin",
            "color": "rgb(30, 136, 229)", "scaleFactor": 0.5}]
    (box,) = L.parse_annotator_payload_boxes(raw)
    assert (box["xmin"], box["ymin"], box["xmax"], box["ymax"]) == (100, 40, 300, 140)
    assert L.normalise_color(box["color"]) == (30, 136, 229)


def test_reference_boxes_round_trip_and_clip():
    ref = L.xyxy_to_reference((10, 20, 50, 80), "coin", True)
    assert ref == {"x": 30, "y": 50, "w": 40, "h": 60, "cls": "coin", "negative": True}
    assert L.reference_to_xyxy(ref) == (10, 20, 50, 80)
    assert L.clip_xyxy((120, -5, -10, 40), (100, 30)) == (0, 0, 100, 30)
    assert L.iou_xyxy((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)


def _box(x0, y0, x1, y1, label, color=(30, 136, 229)):
    return {"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1, "label": label, "color": color}


def test_annotator_boxes_become_prompts_with_their_labels():
    boxes = [
        _box(10, 10, 30, 30, "coin"),
        _box(0, 0, 1, 1, "coin"),                 # no area: ignored
        _box(40, 40, 60, 60, "coin", GREY),       # suggestion: ignored
        _box(50, 50, 90, 120, "NOT coin"),        # clipped to the image
        _box(5, 5, 25, 25, ""),                   # unlabeled: the active class
    ]
    pairs = L.annotator_to_prompts(boxes, ["coin", "cup"], "cup", (100, 80))
    # the annotator lists the newest box first: box 1 is the oldest (last in the list)
    assert [(i, p.xyxy, p.cls, p.negative) for i, p in pairs] == [
        (4, (5.0, 5.0, 25.0, 25.0), "cup", False),
        (3, (50.0, 50.0, 90.0, 80.0), "coin", True),
        (0, (10.0, 10.0, 30.0, 30.0), "coin", False),
    ]
    assert L.annotator_to_prompts([_box(1, 1, 9, 9, "coin", GREY)], ["coin"], "coin",
                                  (50, 50)) == []


class FakePredictor:
    def clear_imported(self):
        pass


def test_sessions_are_isolated_bounded_and_come_back_from_disk(tmp_path):
    made: list[FakePredictor] = []

    def make():
        made.append(FakePredictor())
        return made[-1]

    store = TabSessions(make, tmp_path / "scratch", ProjectLibrary(tmp_path / "projects"),
                         max_sessions=2)
    a, b = store.get("a"), store.get("b")
    assert a is not b and a.predictor is not b.predictor and a.core is not b.core
    assert a.project_id != b.project_id
    a.core.add_class("coin")
    assert b.core.classes == ["object"]
    assert store.get("a") is a                       # same id, same session; "a" now newest
    with b.lock:
        record = b.add_image(ASSETS / "images" / "coins.png", "coins.png", as_example=True)
        b.core.set_prompt_boxes(record.id, [Prompt((131, 28, 180, 74), "object")])
    folder_b = b.dir
    store.get("c")                                   # over the bound: "b" (LRU) is dropped
    assert store.ids() == ["a", "c"]
    assert b.predictor is None and not folder_b.exists()
    again = store.get("b")                           # b's next event: opened from disk
    assert again is not b and again.project_id == b.project_id and store.restored == 1
    assert [e.name for e in again.examples()] == ["coins.png"]
    assert [(p.xyxy, p.cls) for p in again.examples()[0].prompts] \
        == [((131, 28, 180, 74), "object")]
    assert store.ids() == ["c", "b"]                 # reopening "b" dropped "a"
    assert store.drop("c") and not store.drop("c")
    store.close()


def test_images_are_copied_into_the_project_under_safe_names(tmp_path):
    store = TabSessions(FakePredictor, tmp_path / "scratch", ProjectLibrary(tmp_path / "p"))
    session = store.get("x")
    src = ASSETS / "images" / "coins.png"
    first = session.add_image(src, "../../etc/coins.png", as_example=True)
    second = session.add_image(src, "coins.png", as_example=False)
    folder = session.core.folder / "images"
    assert Path(session.path(first)).parent == Path(session.path(second)).parent == folder
    assert first.name == second.name == "coins.png" and first.id != second.id
    assert safe_file_name("My project: v2/3") == "3"
    assert safe_file_name("Coin counter") == "Coin-counter"
    store.close()


def test_annotator_boxes_and_project_prompts_convert_both_ways():
    classes = ["coin", "cup"]
    boxes = [_box(5, 5, 25, 25, "NOT cup"), _box(10, 10, 30, 30, "coin"),
             _box(40, 40, 60, 60, "coin", GREY)]       # a suggestion is not a prompt
    pairs = L.annotator_to_prompts(boxes, classes, "coin", (100, 80))
    assert [(i, p.xyxy, p.cls, p.negative) for i, p in pairs] == [
        (1, (10, 10, 30, 30), "coin", False), (0, (5, 5, 25, 25), "cup", True)]
    back = L.prompts_to_annotator([p for _, p in pairs], classes)
    assert [(b["xmin"], b["label"]) for b in back] == [(5, "NOT cup"), (10, "coin")]
    assert L.annotator_to_prompts(back, classes, "coin", (100, 80)) == pairs


def test_detections_are_drawn_in_rgb_class_colours():
    canvas = Image.new("RGB", (200, 100), (0, 0, 0))
    out = draw_detections(canvas, np.array([[20, 30, 120, 90]]), np.array([0]), np.array([0.9]),
                          ["coin"], ["#1E88E5"])
    assert out.size == canvas.size and canvas.getpixel((20, 60)) == (0, 0, 0)  # copy
    assert out.getpixel((20, 60)) == (30, 136, 229)   # left edge, RGB (not BGR)
    small, scale = fit(Image.new("RGB", (1920, 1080)), 960)
    assert small.size == (960, 540) and scale == 0.5


def test_bundled_assets_and_project_files():
    assert {p.name for p in bundled_images()} >= {"coins.png", "chelsea.png"}
    projects = bundled_projects()
    assert next(iter(projects)) == "coins"
    project = load_project(projects["coins"], allow_external=True)  # the one reader
    assert project.classes == ["coin"]
    training = project.training_data()
    assert Path(training[0]["image"]).is_file()
    assert len(training[0]["boxes"]) == 5


def test_detections_without_labels_are_boxes_only():
    canvas = Image.new("RGB", (200, 100), (0, 0, 0))
    args = (np.array([[20, 30, 120, 90]]), np.array([0]), np.array([0.9]), ["coin"],
            ["#1E88E5"])
    with_labels = np.asarray(draw_detections(canvas, *args))
    boxes_only = np.asarray(draw_detections(canvas, *args, labels=False))
    inside = (slice(35, 85), slice(25, 115))  # within the box's edges
    assert not boxes_only[inside].any()  # nothing drawn but the box outline
    assert (with_labels != boxes_only).any()  # the label is drawn when asked for
    assert boxes_only[60, 20].tolist() == [30, 136, 229]  # the box still is
