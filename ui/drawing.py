"""Pictures for the page: detections drawn with supervision, and the snapped-box diagnostics.

Drawing functions take an RGB PIL "canvas" (usually the image scaled down by `fit`) and boxes
already in canvas pixels (XYXY), and return a new RGB PIL image. supervision treats numpy
scenes as BGR and PIL scenes as RGB, so we always hand it PIL images.

`PictureCache` keeps a session's pictures: each image decoded and scaled once, each drawing
encoded once as a JPEG file named by what it shows, so an image whose detections did not
change costs nothing on the next refresh (and the browser keeps its copy: same file, same URL).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import supervision as sv
from PIL import Image, ImageOps

from ui.labels import NEGATIVE_COLOR, SUGGESTION_COLOR, class_color

#: Longest side of preview pictures; the browser shows them smaller anyway.
PREVIEW_MAX_SIDE = 960
#: Labels are moved apart so they don't overlap (supervision's smart_position) only up to this
#: many: that step grows faster than quadratically (300 labels took ~370 ms on one image,
#: 100 took ~30 ms), and a picture with that many labels is unreadable anyway.
SMART_LABELS_MAX = 40
#: JPEG quality of preview pictures (about 1 ms to encode a 960 px picture; PNG took ~90 ms).
JPEG_QUALITY = 85
#: Seconds a replaced picture file is kept (an event still being postprocessed may need it).
REPLACED_FILE_TTL = 60.0


def open_rgb(path: str | Path) -> Image.Image:
    """Open an image file as RGB, EXIF rotation applied (what the engine sees)."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        return img.convert("RGB")


def fit(image: Image.Image, max_side: int = PREVIEW_MAX_SIDE) -> tuple[Image.Image, float]:
    """The image scaled so its longest side is at most `max_side`, and the scale used
    (multiply image pixels by it to get canvas pixels)."""
    scale = min(1.0, max_side / max(image.size))
    if scale >= 1.0:
        return image, 1.0
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR), scale


def _text_scale(image: Image.Image) -> float:
    return float(np.clip(max(image.size) / 1400.0, 0.35, 0.7))


def _thickness(image: Image.Image) -> int:
    return max(2, round(max(image.size) / 400))


def draw_detections(
    canvas: Image.Image,
    xyxy: np.ndarray,
    class_id: np.ndarray,
    confidence: np.ndarray,
    class_names: Sequence[str],
    colors: Sequence[str] | None = None,
    labels: bool = True,
) -> Image.Image:
    """Boxes and "class score" labels, coloured by class (boxes only without `labels`: on a
    crowded picture the labels hide the objects).

    Args:
        canvas: RGB picture to draw on (not modified).
        xyxy: (N, 4) XYXY boxes in canvas pixels.
        class_id: (N,) ids into `class_names`.
        confidence: (N,) scores.
        class_names: class id -> name.
        colors: class id -> hex colour (default: `class_color(id)`).
        labels: draw the "class score" labels.
    """
    canvas = canvas.copy()
    if len(xyxy) == 0:
        return canvas
    colors = list(colors) if colors else [class_color(i) for i in range(len(class_names))]
    detections = sv.Detections(
        xyxy=np.asarray(xyxy, dtype=np.float32).reshape(-1, 4),
        confidence=np.asarray(confidence, dtype=np.float32),
        class_id=np.asarray(class_id, dtype=int),
    )
    palette = sv.ColorPalette.from_hex(colors)
    boxes = sv.BoxAnnotator(color=palette, thickness=_thickness(canvas))
    canvas = boxes.annotate(canvas, detections)
    if not labels:
        return canvas
    texts = [f"{class_names[c]} {s:.2f}"
             for c, s in zip(detections.class_id, detections.confidence, strict=True)]
    return sv.LabelAnnotator(
        color=palette, text_color=sv.Color.WHITE, text_scale=_text_scale(canvas),
        text_padding=3, smart_position=len(texts) <= SMART_LABELS_MAX,
    ).annotate(canvas, detections, labels=texts)


def draw_snaps(
    canvas: Image.Image,
    drawn: Sequence[tuple[float, float, float, float]],
    snapped: Sequence[tuple[float, float, float, float] | None],
    titles: Sequence[str],
    matched: Sequence[bool],
    negative: Sequence[bool],
    class_index: Sequence[int],
) -> Image.Image:
    """Each drawn box (thin, white) with the predicted box it snapped to (thick; class colour,
    red for negatives, grey when it did not match), labelled with `titles`. All boxes XYXY in
    canvas pixels."""
    canvas = canvas.copy()
    if not drawn:
        return canvas
    drawn_det = sv.Detections(xyxy=np.asarray(drawn, dtype=np.float32).reshape(-1, 4))
    canvas = sv.BoxAnnotator(color=sv.Color.WHITE, thickness=1,
                             color_lookup=sv.ColorLookup.INDEX).annotate(canvas, drawn_det)
    rows = [i for i, s in enumerate(snapped) if s is not None]
    if not rows:
        return canvas
    colors = [SUGGESTION_COLOR if not matched[i] else
              NEGATIVE_COLOR if negative[i] else class_color(class_index[i]) for i in rows]
    palette = sv.ColorPalette.from_hex(colors)
    snap_det = sv.Detections(
        xyxy=np.asarray([snapped[i] for i in rows], dtype=np.float32).reshape(-1, 4),
        class_id=np.arange(len(rows)),
    )
    canvas = sv.BoxAnnotator(color=palette, thickness=_thickness(canvas)).annotate(canvas, snap_det)
    return sv.LabelAnnotator(
        color=palette, text_color=sv.Color.WHITE, text_scale=_text_scale(canvas),
        text_padding=3, smart_position=True, text_position=sv.Position.BOTTOM_LEFT,
    ).annotate(canvas, snap_det, labels=[titles[i] for i in rows])


def signature(*parts: object) -> str:
    """A short hash of what a picture shows (numpy arrays by their bytes, the rest by repr)."""
    h = hashlib.blake2b(digest_size=12)
    for part in parts:
        h.update(part.tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
        h.update(b"|")
    return h.hexdigest()


class PictureCache:
    """A session's preview pictures (see the module docstring).

    Args:
        folder: where the JPEG files go (one per kind and image; a replaced one is deleted a
            while later, once Gradio has surely copied it into its own cache).
        max_side: longest side of the pictures, pixels.
    """

    def __init__(self, folder: str | Path, max_side: int = PREVIEW_MAX_SIDE) -> None:
        self.folder = Path(folder)
        self.max_side = int(max_side)
        self._bases: dict[str, tuple[Image.Image, float]] = {}
        self._files: dict[tuple[str, str], tuple[str, str]] = {}  # (kind, path) -> (sig, file)
        self._replaced: list[tuple[float, str]] = []  # (when, file) of files no longer shown

    def base(self, path: str) -> tuple[Image.Image, float]:
        """The image at picture size (decoded once) and its scale (image px -> picture px)."""
        if path not in self._bases:
            self._bases[path] = fit(open_rgb(path), self.max_side)
        return self._bases[path]

    def cached(self, kind: str, path: str, sig: str) -> str | None:
        """The file already drawn for this image and signature, if any."""
        entry = self._files.get((kind, path))
        return entry[1] if entry is not None and entry[0] == sig else None

    def render(self, kind: str, path: str, sig: str,
               draw: Callable[[Image.Image, float], Image.Image]) -> str:
        """The JPEG file of `draw(base picture, scale)`, drawn and encoded only when `sig`
        changed since the last call for this (kind, image)."""
        found = self.cached(kind, path, sig)
        if found is not None:
            return found
        picture = draw(*self.base(path))
        return self.save(kind, path, sig, picture)

    def save(self, kind: str, path: str, sig: str, picture: Image.Image) -> str:
        """Encode a drawn picture as this (kind, image)'s file for `sig`."""
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{kind}-{signature(path, sig)}.jpg"
        picture.save(target, "JPEG", quality=JPEG_QUALITY)
        now = time.monotonic()
        old = self._files.get((kind, path))
        if old is not None and old[1] != str(target):
            self._replaced.append((now, old[1]))
        while self._replaced and now - self._replaced[0][0] > REPLACED_FILE_TTL:
            Path(self._replaced.pop(0)[1]).unlink(missing_ok=True)
        self._files[(kind, path)] = (sig, str(target))
        return str(target)

    def clear(self) -> None:
        self._bases.clear()
        self._files.clear()
