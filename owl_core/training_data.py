"""The reference training-data schema, validated up front so bad input never reaches the model.

Schema (Roboflow Inference OwlV2): a list of ``{"image": ..., "boxes": [{"x", "y", "w", "h",
"cls", "negative"}]}`` where x, y are the box centre and w, h its size, in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from owl_core.errors import TrainingDataError
from owl_core.geometry import cxcywh_to_xyxy
from owl_core.images import ImageInput




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
    if not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TrainingDataError(f"{where}: {key} must be a number of pixels, got "
                                    f"{box[key]!r}.") from None
    value = float(value)
    if not math.isfinite(value):
        raise TrainingDataError(f"{where}: {key} must be a finite number of pixels, got {value}.")
    return value


def parse_box(box: Any, where: str) -> PromptBox:
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
    cls = box["cls"]
    if not isinstance(cls, str) or not cls.strip():
        raise TrainingDataError(f"{where}: 'cls' must be a non-empty class name (a string), "
                                f"got {cls!r}.")
    negative = box.get("negative", False)
    if not isinstance(negative, bool):
        try:  # 0 / 1 (and numpy bools) are fine; strings such as "false" are not
            flag = not isinstance(negative, (str, bytes)) and negative in (0, 1)
        except (TypeError, ValueError):
            flag = False
        if flag:
            negative = bool(negative)
        else:
            raise TrainingDataError(f"{where}: 'negative' must be true or false, got {negative!r}.")
    return PromptBox(x, y, w, h, cls.strip(), negative)


def parse_training_data(data: Any) -> list[TrainingImage]:
    """Validate reference-schema training data (a list of image entries).

    Raises:
        TrainingDataError: naming the entry (and box) that is wrong and how to fix it.
    """
    if isinstance(data, dict) and "training_data" in data:
        data = data["training_data"]
    if not isinstance(data, Sequence) or isinstance(data, (str, bytes)):
        hint = (" (a single entry? wrap it in a list)" if isinstance(data, dict) and "image" in data
                else "")
        raise TrainingDataError('training data must be a list of {"image": ..., "boxes": [...]} '
                                f"entries, got {type(data).__name__}{hint}.")
    parsed = []
    for i, entry in enumerate(data):
        where = f"training_data[{i}]"
        if isinstance(entry, TrainingImage):
            parsed.append(entry)
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
        parsed.append(TrainingImage(
            image=entry["image"],
            boxes=tuple(parse_box(b, f"{where}.boxes[{j}]") for j, b in enumerate(boxes)),
        ))
    return parsed
