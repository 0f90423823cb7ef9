"""Box labels and colours shared by the annotator, the preview and the API.

A drawn box carries its class and polarity in its label text, so the annotator component
(`gradio_image_annotation`) can show and edit both with its own label dialog:

* ``"coin"``      a positive example of class ``coin`` (the class colour);
* ``"NOT coin"``  a negative example ("do not detect things like this"), always red;
* ``"coin"`` in grey: a *suggestion*, a detection copied into the annotator so that one relabel
  turns it into an example ("NOT coin": a negative; "coin": a positive, which also gives it the
  class colour). Suggestions are never used as examples. (Grey marks them rather than a text
  suffix: the component's label dialog only lists choices that contain the current label.)

Annotator boxes are XYXY pixels (``xmin, ymin, xmax, ymax``); the engine's reference schema is
centre + size (``x, y, w, h``). Geometry lives in `owl_core.geometry` (re-exported here).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from owl_core.errors import ProjectError
from owl_core.geometry import (  # noqa: F401 (re-exported)
    clip_xyxy,
    iou_xyxy,
    reference_to_xyxy,
    xyxy_to_reference,
)
from owl_core.naming import NEGATIVE_PREFIX, class_key, clean_class_name
from owl_core.project.model import Prompt

#: Negatives are red whatever their class, so they never look like a positive.
NEGATIVE_COLOR = "#D50000"
SUGGESTION_COLOR = "#9E9E9E"  # exact colour: a box with it is a suggestion
#: Class colours: saturated, no reds (red means "negative"), readable with white text.
CLASS_COLORS = (
    "#1E88E5",  # blue
    "#43A047",  # green
    "#FB8C00",  # orange
    "#8E24AA",  # purple
    "#00ACC1",  # cyan
    "#3949AB",  # indigo
    "#C0CA33",  # lime
    "#6D4C41",  # brown
    "#00897B",  # teal
    "#F4511E",  # deep orange
)
SUGGESTION_RGB = (0x9E, 0x9E, 0x9E)
#: Boxes smaller than this (pixels, either side) are drawing accidents and are ignored.
MIN_BOX_SIDE = 2.0


def class_color(index: int) -> str:
    """Hex colour of the class with this id (cycles through `CLASS_COLORS`)."""
    return CLASS_COLORS[index % len(CLASS_COLORS)]


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """``"#1E88E5"`` -> ``(30, 136, 229)``."""
    color = color.lstrip("#")
    return int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16)


def negative_label(cls: str) -> str:
    return f"{NEGATIVE_PREFIX}{cls}"


def label_choices(classes: Sequence[str], active: str | None = None, *,
                  negatives: bool = True) -> tuple[list[str], list[str]]:
    """The annotator's label list and matching colours: each class, then its negative (none
    with ``negatives=False``, as in the review annotator).

    The `active` class (the one picked in the page) comes first: the annotator's label dialog
    opens a new box on the list's first entry, and draws the box in the first colour while it
    is dragged. Each label keeps its class's colour (`class_color` of its place in `classes`)
    whatever the order.
    """
    order = list(range(len(classes)))
    if active in classes:
        first = list(classes).index(active)
        order = [first] + [i for i in order if i != first]
    labels: list[str] = []
    colors: list[str] = []
    for i in order:
        labels.append(classes[i])
        colors.append(class_color(i))
        if negatives:
            labels.append(negative_label(classes[i]))
            colors.append(NEGATIVE_COLOR)
    return labels, colors


def validate_class_name(name: str, existing: Sequence[str] = ()) -> str:
    """A cleaned class name, or ValueError (`ProjectError`) saying what is wrong with it: the
    one class-name rule (`owl_core.naming`), and not yet among `existing` (case ignored)."""
    name = clean_class_name(str(name or ""))
    taken = next((c for c in existing if class_key(c) == class_key(name)), None)
    if taken is not None:
        raise ProjectError(f"There is already a class called {taken!r}.")
    return name


@dataclass(frozen=True)
class ParsedLabel:
    """What a box label means.

    Attributes:
        kind: "positive", "negative", "suggestion" or "unlabeled".
        cls: the class name ("" when unlabeled).
        new_class: the class is not in the class list yet (typed into the label dialog).
    """

    kind: str
    cls: str
    new_class: bool = False


def label_color(parsed: ParsedLabel, classes: Sequence[str]) -> str:
    """The hex colour a parsed label is drawn in (a class not in `classes` yet gets the colour
    it will have once appended)."""
    if parsed.kind == "suggestion":
        return SUGGESTION_COLOR
    if parsed.kind == "negative":
        return NEGATIVE_COLOR
    index = list(classes).index(parsed.cls) if parsed.cls in classes else len(classes)
    return class_color(index)


def parse_box(box: dict, classes: Sequence[str]) -> ParsedLabel:
    """What an annotator box means: its label, and grey colour for suggestions."""
    parsed = parse_label(box.get("label"), classes)
    if parsed.kind == "positive" and normalise_color(box.get("color")) == SUGGESTION_RGB:
        return ParsedLabel("suggestion", parsed.cls, parsed.new_class)
    return parsed


def parse_label(label: str | None, classes: Sequence[str]) -> ParsedLabel:
    """Read a box label (see the module docstring; suggestions need the colour: `parse_box`)."""
    text = " ".join(str(label or "").split())
    if not text:
        return ParsedLabel("unlabeled", "")
    if text.upper().startswith(NEGATIVE_PREFIX) and len(text) > len(NEGATIVE_PREFIX):
        cls = text[len(NEGATIVE_PREFIX):].strip()
        return ParsedLabel("negative", cls, cls not in classes)
    return ParsedLabel("positive", text, text not in classes)


def annotator_box(xyxy: Sequence[float], label: str, color: str) -> dict:
    """A box in the annotator's value format (colour as an RGB tuple)."""
    x0, y0, x1, y1 = xyxy
    return {"xmin": round(float(x0), 1), "ymin": round(float(y0), 1),
            "xmax": round(float(x1), 1), "ymax": round(float(y1), 1),
            "label": label, "color": hex_to_rgb(color)}


def box_for_label(xyxy: Sequence[float], cls: str, negative: bool, classes: Sequence[str]) -> dict:
    """An annotator box for a class/polarity, coloured like the label list colours it."""
    parsed = ParsedLabel("negative" if negative else "positive", cls, cls not in classes)
    label = negative_label(cls) if negative else cls
    return annotator_box(xyxy, label, label_color(parsed, classes))


def parse_annotator_payload_boxes(raw_boxes: Iterable[dict]) -> list[dict]:
    """Boxes from the annotator's raw (not preprocessed) payload, in image pixels.

    The browser sends canvas coordinates with a ``scaleFactor``; dividing by it gives image
    pixels (what the component's own preprocessing does, minus its rounding).
    """
    boxes = []
    for box in raw_boxes or []:
        scale = float(box.get("scaleFactor") or 1.0) or 1.0
        boxes.append({
            "xmin": float(box["xmin"]) / scale, "ymin": float(box["ymin"]) / scale,
            "xmax": float(box["xmax"]) / scale, "ymax": float(box["ymax"]) / scale,
            "label": str(box.get("label") or ""), "color": box.get("color"),
        })
    return boxes


def normalise_color(color) -> tuple[int, int, int] | None:
    """``"rgb(1, 2, 3)"``, ``"#010203"`` or a 3-sequence -> an RGB tuple (None if unreadable)."""
    if isinstance(color, (list, tuple)) and len(color) == 3:
        return tuple(int(c) for c in color)  # type: ignore[return-value]
    if isinstance(color, str):
        match = re.match(r"rgba?\((\d+),\s*(\d+),\s*(\d+)", color)
        if match:
            return tuple(int(match.group(i)) for i in range(1, 4))  # type: ignore[return-value]
        if re.fullmatch(r"#[0-9a-fA-F]{6}", color):
            return hex_to_rgb(color)
    return None


def box_is_usable(box: dict, size: tuple[int, int]) -> bool:
    """Whether an annotator box covers at least `MIN_BOX_SIDE` pixels of the image each way."""
    x0, y0, x1, y1 = clip_xyxy((box["xmin"], box["ymin"], box["xmax"], box["ymax"]), size)
    return (x1 - x0) >= MIN_BOX_SIDE and (y1 - y0) >= MIN_BOX_SIDE


# ------------------------------------------------------------------ annotator <-> project
# The one place the annotator's boxes become the project's prompts and back.

def annotator_to_prompts(boxes: Sequence[dict], classes: Sequence[str], active_class: str,
                         size: tuple[int, int]) -> list[tuple[int, Prompt]]:
    """The project prompts (XYXY pixels, clipped to the image) an example's annotator boxes
    stand for, oldest first, each with the index of its annotator box.

    The annotator puts a new box first in its list, so boxes are read last to first: the oldest
    box is box 1 and numbers don't shift when a box is added. Suggestions, boxes without area
    and boxes of unknown classes are left out; an unlabeled box (its label dialog is still
    open) counts as `active_class`.
    """
    out = []
    for index in reversed(range(len(boxes))):
        box = boxes[index]
        parsed = parse_box(box, classes)
        if parsed.kind == "suggestion" or not box_is_usable(box, size):
            continue
        cls = parsed.cls if parsed.kind != "unlabeled" else active_class
        if cls not in classes:
            continue
        xyxy = clip_xyxy((box["xmin"], box["ymin"], box["xmax"], box["ymax"]), size)
        out.append((index, Prompt(xyxy, cls, parsed.kind == "negative")))
    return out


def prompts_to_annotator(prompts: Sequence[Prompt], classes: Sequence[str]) -> list[dict]:
    """Annotator boxes for project prompts (newest first, as the annotator keeps them)."""
    return [box_for_label(p.xyxy, p.cls, p.negative, classes) for p in reversed(prompts)]
