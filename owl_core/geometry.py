"""Box geometry: the one place boxes change format.

Inside the project boxes are XYXY pixels of the image as shown upright (EXIF applied). The
formats that cross its edges:

- reference (Roboflow training data / responses): ``{"x", "y", "w", "h"}``, x, y = box centre,
  w, h = size, in pixels;
- normalised XYXY in [0, 1] of the image (YOLO writes its own cxcywh from supervision);
- the model's space: cxcywh normalised to the *padded square* whose side is max(width, height)
  (OWLv2 pads bottom/right to a square before resizing).

Functions on single boxes take and return plain float tuples; `*_tensor` functions take (N, 4)
tensors. Sizes are always ``(width, height)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.ops import box_convert

XYXY = tuple[float, float, float, float]


def order_xyxy(box: Sequence[float]) -> XYXY:
    """An XYXY box with x0 <= x1 and y0 <= y1 (a box drawn right-to-left is flipped)."""
    x0, x1 = sorted((float(box[0]), float(box[2])))
    y0, y1 = sorted((float(box[1]), float(box[3])))
    return (x0, y0, x1, y1)


def clip_xyxy(box: Sequence[float], size: tuple[int, int]) -> XYXY:
    """Order an XYXY pixel box and clip it to a (width, height) image."""
    width, height = size
    x0, y0, x1, y1 = order_xyxy(box)
    return (min(max(x0, 0.0), width), min(max(y0, 0.0), height),
            min(max(x1, 0.0), width), min(max(y1, 0.0), height))


def area_xyxy(box: Sequence[float]) -> float:
    """Area of an XYXY box (0 for an empty or inverted one)."""
    return max(0.0, float(box[2]) - float(box[0])) * max(0.0, float(box[3]) - float(box[1]))


def iou_xyxy(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two XYXY boxes (0 when either has no area)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = area_xyxy(a) + area_xyxy(b) - inter
    return inter / union if union > 0 else 0.0


def cxcywh_to_xyxy(x: float, y: float, w: float, h: float) -> XYXY:
    """Centre + size -> XYXY (same units)."""
    return (x - w / 2, y - h / 2, x + w / 2, y + h / 2)


def xyxy_to_cxcywh(box: Sequence[float]) -> XYXY:
    """XYXY -> (centre x, centre y, width, height) (same units)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return ((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0)


def reference_to_xyxy(box: dict) -> XYXY:
    """Reference box ``{"x", "y", "w", "h", ...}`` (centre + size, pixels) -> XYXY pixels."""
    return cxcywh_to_xyxy(*(float(box[k]) for k in ("x", "y", "w", "h")))


def xyxy_to_reference(box: Sequence[float], cls: str, negative: bool = False,
                      ndigits: int | None = 2) -> dict:
    """XYXY pixels -> reference training box ``{"x", "y", "w", "h", "cls", "negative"}``."""
    values = xyxy_to_cxcywh(box)
    if ndigits is not None:
        values = tuple(round(v, ndigits) for v in values)  # type: ignore[assignment]
    x, y, w, h = values
    return {"x": x, "y": y, "w": w, "h": h, "cls": cls, "negative": bool(negative)}


def xyxy_to_response(box: Sequence[float]) -> dict:
    """XYXY pixels -> the reference response's ``{"x", "y", "width", "height"}``."""
    x, y, w, h = xyxy_to_cxcywh(box)
    return {"x": x, "y": y, "width": w, "height": h}


def normalize_xyxy(box: Sequence[float], size: tuple[int, int]) -> XYXY:
    """XYXY pixels -> XYXY in [0, 1] of a (width, height) image."""
    width, height = size
    return (box[0] / width, box[1] / height, box[2] / width, box[3] / height)


def denormalize_xyxy(box: Sequence[float], size: tuple[int, int]) -> XYXY:
    """XYXY in [0, 1] of a (width, height) image -> XYXY pixels."""
    width, height = size
    return (box[0] * width, box[1] * height, box[2] * width, box[3] * height)


def is_finite_box(box: Sequence[float]) -> bool:
    return len(box) == 4 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)


# ---------------------------------------------------------------- the model's padded square
def square_to_pixels_tensor(boxes_cxcywh: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 4) cxcywh normalised to the padded square -> (N, 4) XYXY float pixels, clipped to
    the (width, height) image."""
    width, height = size
    xyxy = box_convert(boxes_cxcywh.float(), "cxcywh", "xyxy") * max(width, height)
    xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, width)
    xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, height)
    return xyxy


def pixels_to_square_tensor(xyxy: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 4) XYXY pixels of a (width, height) image -> (N, 4) XYXY normalised to the padded
    square (the space predicted boxes live in)."""
    return xyxy.float() / max(size)


def square_cxcywh_to_xyxy_tensor(boxes_cxcywh: torch.Tensor) -> torch.Tensor:
    """(N, 4) cxcywh -> (N, 4) XYXY, same units (the padded square's)."""
    return box_convert(boxes_cxcywh.float(), "cxcywh", "xyxy")
