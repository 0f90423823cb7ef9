"""OWLv2 input geometry: resize the longest side, pad bottom/right to a square, normalise.

OWLv2 sees every image as the top-left part of a padded square, so predicted boxes are
normalised to that square: pixel = normalised * max(width, height). `OwlTransform` keeps the
image and the box conversions in one place, in both directions.

Two preprocessings (`PREPROCESSING_MODES`), both legitimate; embeddings of one never mix with
the other's (the mode is part of the embedding cache key and of every `.pt`'s metadata):

- ``"hf"`` (default): current transformers' `Owlv2ImageProcessor`: antialiased resize, pad 0.0.
- ``"roboflow"``: Roboflow Inference's OwlV2: plain bilinear resize WITHOUT antialiasing to
  ``(int(r * h), int(r * w))`` with ``r = min(S / h, S / w)``, pasted top-left on a canvas of
  0.5 (in [0, 1] pixel units, i.e. before normalisation), then the whole canvas normalised.
  Needed to reproduce that reference's detections (its exemplars and `.pt` files).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from owl_core.errors import ImageError, SettingsError
from owl_core.geometry import pixels_to_square_tensor, square_to_pixels_tensor

#: Pad value in [0, 1] pixel space (before normalisation). Current transformers pads with 0.0
#: (reported LVIS AP 44.0 vs 43.4 with the old 0.5).
DEFAULT_PAD_VALUE = 0.0
#: Pad value of Roboflow Inference's OwlV2 preprocessing (in [0, 1] pixel space).
ROBOFLOW_PAD_VALUE = 0.5

Preprocessing = Literal["hf", "roboflow"]
PREPROCESSING_MODES: tuple[str, ...] = ("hf", "roboflow")
DEFAULT_PREPROCESSING: Preprocessing = "hf"


def check_preprocessing(value: object) -> Preprocessing:
    """`value` if it names a preprocessing mode, else a `SettingsError` naming the choices."""
    if value not in PREPROCESSING_MODES:
        raise SettingsError(f"unknown preprocessing {value!r}; use one of "
                            f"{', '.join(PREPROCESSING_MODES)}.")
    return value  # type: ignore[return-value]


def default_pad_value(preprocessing: Preprocessing) -> float:
    """The pad value each preprocessing mode is defined with."""
    return ROBOFLOW_PAD_VALUE if preprocessing == "roboflow" else DEFAULT_PAD_VALUE


@dataclass(frozen=True)
class OwlTransform:
    """Preprocessing and coordinate transforms for one model input size.

    Attributes:
        input_size: side of the square model input, in pixels (960 base, 1008 large).
        image_mean: per-channel mean in [0, 1] space (CLIP).
        image_std: per-channel std in [0, 1] space (CLIP).
        pad_value: fill of the padded area in [0, 1] pixel space; None = the mode's own
            (0.0 for "hf", 0.5 for "roboflow").
        preprocessing: "hf" (transformers' processor) or "roboflow" (Roboflow Inference's
            OwlV2); see the module docstring.
    """

    input_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    pad_value: float | None = None
    preprocessing: Preprocessing = DEFAULT_PREPROCESSING

    def __post_init__(self) -> None:
        check_preprocessing(self.preprocessing)
        if self.pad_value is None:
            object.__setattr__(self, "pad_value", default_pad_value(self.preprocessing))
        object.__setattr__(self, "pad_value", float(self.pad_value))

    @classmethod
    def for_mode(cls, input_size: int, image_mean: tuple[float, float, float],
                 image_std: tuple[float, float, float],
                 preprocessing: Preprocessing = DEFAULT_PREPROCESSING) -> OwlTransform:
        """The transform of a preprocessing mode, with that mode's pad value."""
        return cls(input_size, image_mean, image_std, None, check_preprocessing(preprocessing))

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the image content inside the padded square (longest side = input_size)."""
        if self.preprocessing == "roboflow":
            return _roboflow_shape(height, width, self.input_size)
        scale = self.input_size / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def preprocess(self, rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (3, S, S) float32 normalised model input.

        `Owlv2ImageProcessor` pads to a square first, then Gaussian-blurs and bilinearly resizes
        the whole square. Here only the image plus a thin strip of pad-valued pixels (a margin
        of about one resampling footprint) is resized, on uint8 with torch's vectorised
        antialiased bilinear kernel, at exactly the square's scale S / max(H, W); the rest of
        the canvas is the normalised pad value. So the image lands where the processor puts it
        (no rounding of its size) and its bottom/right edge fades into the pad as it does
        there. Agrees with the processor to within the tolerances pinned in
        tests/test_transforms.py (uint8 rounding and the antialiasing filter differ slightly).
        """
        if isinstance(rgb, np.ndarray) and (not rgb.flags.writeable
                                            or any(stride < 0 for stride in rgb.strides)):
            # torch refuses negative strides (arr[..., ::-1]) and warns on read-only arrays
            # (np.asarray(PIL image)); a copy costs ~4 ms for 12 MP, less than the resize
            rgb = np.array(rgb, order="C")
        image = torch.as_tensor(rgb)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != torch.uint8:
            raise ImageError(
                f"expected (H, W, 3) uint8 RGB pixels, got shape {tuple(image.shape)} "
                f"{image.dtype}; decode images with owl_core.images.resolve_image(...).decode()."
            )
        height, width = int(image.shape[0]), int(image.shape[1])
        if height == 0 or width == 0:
            raise ImageError(f"expected a non-empty image, got {height}x{width} pixels.")
        if self.preprocessing == "roboflow":
            return self._preprocess_roboflow(image)
        size = self.input_size
        side = max(height, width)
        if side != size:
            scale = size / side
            # Pad-valued margin so the edge blends into the pad as in the processor: one pixel
            # when upsampling or mildly downsampling, else the antialiasing footprint. Padded
            # in (H, W, 3) layout: the uint8 kernel is ~9x faster on channels-last memory.
            margin = 1 if scale > 0.5 else math.ceil(1 / scale) + 1
            pad_h, pad_w = min(margin, side - height), min(margin, side - width)
            if pad_h or pad_w:
                fill = round(min(max(self.pad_value, 0.0), 1.0) * 255)
                image = F.pad(image, (0, 0, 0, pad_w, 0, pad_h), value=fill)
            chw = image.permute(2, 0, 1).unsqueeze(0)  # channels-last memory, NCHW view
            # scale_factor (not size) keeps the square's exact scale; the 1e-9 nudge makes
            # floor(side * scale) == size despite float rounding (a shift of 1e-6 pixel).
            chw = F.interpolate(chw, scale_factor=scale * (1 + 1e-9), mode="bilinear",
                                antialias=True, align_corners=False,
                                recompute_scale_factor=False)
            # Output rows/cols whose filter footprint reaches the image (output i samples the
            # input at (i + 0.5) / scale with a triangle of radius max(1, 1 / scale) input
            # pixels); further ones are pure pad and keep the exact pad value (the uint8 fill
            # can't hold e.g. 0.5 exactly).
            reach_h, reach_w = (math.ceil(max((n + 0.5) * scale - 0.5, (n - 0.5) * scale + 0.5))
                                for n in (height, width))
        else:
            chw = image.permute(2, 0, 1).unsqueeze(0)
            reach_h, reach_w = height, width
        new_h = min(size, int(chw.shape[2]), reach_h)
        new_w = min(size, int(chw.shape[3]), reach_w)
        mean = torch.tensor(self.image_mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.image_std, dtype=torch.float32).view(3, 1, 1)
        out = torch.empty(3, size, size, dtype=torch.float32)
        out.copy_(((self.pad_value - mean) / std).expand_as(out))
        content = chw[0, :, :new_h, :new_w].to(torch.float32).mul_(1 / 255.0).sub_(mean).div_(std)
        out[:, :new_h, :new_w] = content
        return out

    def _preprocess_roboflow(self, image: torch.Tensor) -> torch.Tensor:
        """(H, W, 3) uint8 -> (3, S, S): Roboflow Inference's OwlV2 preprocessing, step for
        step in the same float32 operations (so its embeddings are reproduced bit for bit):
        /255, bilinear resize without antialiasing (on the channels-last view, as there),
        paste top-left on a pad-valued canvas, normalise the whole canvas."""
        size = self.input_size
        new_h, new_w = _roboflow_shape(int(image.shape[0]), int(image.shape[1]), size)
        chw = image.permute(2, 0, 1).unsqueeze(0).to(torch.float32) / 255.0
        chw = F.interpolate(chw, size=(new_h, new_w), mode="bilinear", align_corners=False)
        canvas = torch.full((1, 3, size, size), self.pad_value, dtype=torch.float32)
        canvas[:, :, :new_h, :new_w] = chw
        mean = torch.tensor(self.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        return ((canvas - mean) / std)[0]

    def preprocess_batch(self, images: list[np.ndarray]) -> torch.Tensor:
        """List of (H, W, 3) uint8 RGB -> (B, 3, S, S) float32."""
        return torch.stack([self.preprocess(img) for img in images])

    @staticmethod
    def boxes_to_pixels(boxes_cxcywh: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """See `geometry.square_to_pixels_tensor`."""
        return square_to_pixels_tensor(boxes_cxcywh, image_size)

    @staticmethod
    def pixels_to_boxes(xyxy: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """See `geometry.pixels_to_square_tensor`."""
        return pixels_to_square_tensor(xyxy, image_size)


def _roboflow_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) Roboflow resizes to: ``int(r * h), int(r * w)`` with ``r = min(S / h, S / w)``
    (truncated, so the long side may come out one pixel short of S), at least 1."""
    r = min(size / height, size / width)
    return max(1, int(r * height)), max(1, int(r * width))
