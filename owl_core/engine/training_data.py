"""The reference training-data schema, validated up front so bad input never reaches the model.

Schema (Roboflow Inference OwlV2): a list of ``{"image": ..., "boxes": [{"x", "y", "w", "h",
"cls", "negative"}]}`` where x, y are the box centre and w, h its size, in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from owl_core import limits
from owl_core.errors import TrainingDataError
from owl_core.geometry import cxcywh_to_xyxy
from owl_core.images import ImageInput
from owl_core.limits import TrainingDataLimitError
from owl_core.naming import class_key, clean_class_name

#: Largest coordinate / size accepted, in pixels: far beyond any image the pixel limit allows,
#: small enough that box arithmetic never overflows.
MAX_COORDINATE = 1e9




@dataclass(frozen=True)
class PromptBox:
    """One drawn box. x, y = centre; w, h = size; all in pixels of its image."""

    x: float
    y: float
    w: float
    h: float
    cls: str
    negative: bool = False

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return cxcywh_to_xyxy(self.x, self.y, self.w, self.h)


@dataclass(frozen=True)
class TrainingImage:
    image: ImageInput
    boxes: tuple[PromptBox, ...]


def _number(box: dict, key: str, where: str) -> float:
    if key not in box:
        raise TrainingDataError(f"{where}: missing field {key!r}; each box needs x, y, w, h "
                                "(centre and size in pixels) and cls.")
    value = box[key]
    if isinstance(value, bool):  # float(True) == 1.0 would hide a mix-up of fields
        raise TrainingDataError(f"{where}: {key} must be a number of pixels, got {value!r}.")
    if isinstance(value, str) and len(value) > 64:
        raise TrainingDataError(f"{where}: {key} must be a number of pixels, got a string of "
                                f"{len(value):,} characters.")
    try:
        value = float(value)
    except OverflowError:  # a 400-digit integer
        value = math.inf
    except (TypeError, ValueError):
        shown = repr(box[key])
        shown = shown if len(shown) <= 60 else shown[:60] + "..."
        raise TrainingDataError(f"{where}: {key} must be a number of pixels, got "
                                f"{shown}.") from None
    if not math.isfinite(value) or abs(value) > MAX_COORDINATE:
        raise TrainingDataError(f"{where}: {key} must be a finite number of pixels, got "
                                f"{_short_number(box[key])} (at most {MAX_COORDINATE:.0e} in "
                                "size).")
    return value


def _short_number(value: Any) -> str:
    """A number for a message: huge integers are not printed digit by digit."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    text = str(value)
    return text if len(text) <= 40 else text[:40] + "..."


def check_class_name(cls: Any, where: str) -> str:
    """A box's class name, cleaned by the one class-name rule (`owl_core.naming`)."""
    return clean_class_name(cls, where, TrainingDataError)


def parse_box(box: Any, where: str, lim: limits.Limits | None = None) -> PromptBox:
    """Validate one box dict; see the module docstring for the schema."""
    if isinstance(box, PromptBox):
        return box
    if not isinstance(box, dict):
        raise TrainingDataError(f"{where}: a box must be a dict with x, y, w, h, cls; "
                                f"got {type(box).__name__}.")
    x, y, w, h = (_number(box, key, where) for key in ("x", "y", "w", "h"))
    if w <= 0 or h <= 0:
        raise TrainingDataError(f"{where}: width and height must be positive, got w={w}, h={h}. "
                                "x, y are the box centre and w, h its size in pixels.")
    if "cls" not in box:
        hint = " (found 'class': rename it to 'cls')" if "class" in box else ""
        raise TrainingDataError(f"{where}: missing field 'cls', the class name{hint}.")
    cls = check_class_name(box["cls"], where)
    negative = box.get("negative", False)
    if not isinstance(negative, bool):
        try:  # 0 / 1 (and numpy bools) are fine; strings such as "false" are not
            flag = not isinstance(negative, (str, bytes)) and negative in (0, 1)
        except (TypeError, ValueError, RuntimeError):  # arrays / tensors have no single truth
            flag = False
        if flag:
            negative = bool(negative)
        else:
            raise TrainingDataError(f"{where}: 'negative' must be true or false, got {negative!r}.")
    return PromptBox(x, y, w, h, cls, negative)


def training_entries(data: Any) -> Any:
    """The reference-schema entries in what a caller passed as training data: an object with a
    ``training_data()`` method (a `owl_core.project.model.Project`: its prompts, absolute
    paths), a project dict (its "training_data"), or the data as it is. The one rule every
    reader of training data follows (`parse_training_data`, the HTTP API).

    The engine asks for the method rather than the class: it never imports the project layer.
    """
    if isinstance(data, Mapping):
        return data["training_data"] if "training_data" in data else data
    to_entries = getattr(data, "training_data", None)
    return to_entries() if callable(to_entries) else data


def parse_training_data(data: Any) -> list[TrainingImage]:
    """Validate reference-schema training data (a list of image entries).

    Counts and lengths are checked against `owl_core.limits` before anything is copied (a
    50 MB class name is refused after reading its length).

    Raises:
        TrainingDataError: naming the entry (and box) that is wrong and how to fix it; a
            `LimitError` too when a bound is exceeded.
    """
    lim = limits.current()
    data = training_entries(data)  # a Project or project dict: its entries (one rule)
    if not isinstance(data, Sequence) or isinstance(data, (str, bytes)):
        hint = (" (a single entry? wrap it in a list)" if isinstance(data, dict) and "image" in data
                else "")
        raise TrainingDataError('training data must be a list of {"image": ..., "boxes": [...]} '
                                f"entries, got {type(data).__name__}{hint}.")
    lim.check("max_training_images", len(data), "training data: images",
              TrainingDataLimitError)
    parsed = []
    total = 0
    classes: set[str] = set()
    for i, entry in enumerate(data):
        where = f"training_data[{i}]"
        if isinstance(entry, TrainingImage):
            parsed.append(entry)
            total += len(entry.boxes)
            classes.update(b.cls for b in entry.boxes)
            _check_counts(lim, where, len(entry.boxes), total, classes)
            continue
        if not isinstance(entry, dict):
            raise TrainingDataError(f"{where}: expected a dict with 'image' and 'boxes', "
                                    f"got {type(entry).__name__}.")
        image = entry.get("image")
        if image is None or (isinstance(image, str) and not image.strip()):
            raise TrainingDataError(f"{where}: missing field 'image' (a path, PIL image, RGB "
                                    "array or base64 string).")
        boxes = entry.get("boxes", [])
        if not isinstance(boxes, Sequence) or isinstance(boxes, (str, bytes)):
            raise TrainingDataError(f"{where}: 'boxes' must be a list of box dicts "
                                    f"(x, y, w, h, cls, negative), got {type(boxes).__name__}.")
        total += len(boxes)
        _check_counts(lim, where, len(boxes), total, classes)
        parsed_boxes = []
        for j, b in enumerate(boxes):
            box = parse_box(b, f"{where}.boxes[{j}]", lim)
            if box.cls not in classes:
                classes.add(box.cls)
                _check_counts(lim, where, len(boxes), total, classes)
            parsed_boxes.append(box)
        parsed.append(TrainingImage(image=entry["image"], boxes=tuple(parsed_boxes)))
    return parsed


def _check_counts(lim: limits.Limits, where: str, boxes: int, total: int,
                  classes: set[str]) -> None:
    lim.check("max_boxes_per_image", boxes, f"{where}: boxes", TrainingDataLimitError)
    lim.check("max_boxes_total", total, "training data: boxes in all", TrainingDataLimitError)
    lim.check("max_classes", len(classes), "training data: classes", TrainingDataLimitError)


def check_class_names(names: Sequence[Any]) -> list[str]:
    """A caller's class list (order = class id): bounded count, each name cleaned by the one
    class-name rule (`owl_core.naming`), unique regardless of case."""
    lim = limits.current()
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise TrainingDataError(f"class names must be a list of strings, got "
                                f"{type(names).__name__}.")
    lim.check("max_classes", len(names), "class names", TrainingDataLimitError)
    out = [clean_class_name(n, f"class_names[{i}]", TrainingDataError)
           for i, n in enumerate(names)]
    keys = [class_key(n) for n in out]
    if len(set(keys)) != len(keys):
        dupes = sorted({n for n, k in zip(out, keys, strict=True) if keys.count(k) > 1})[:5]
        raise TrainingDataError(f"class names must be unique; repeated: {dupes}.")
    return out
