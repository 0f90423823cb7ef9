"""Image input: decode any supported form to RGB pixels, and name images by content.

Images arrive as paths, PIL images, numpy arrays, raw bytes or base64 strings. Encoded inputs
(path, bytes, base64) are keyed by a hash of their bytes, so a cached image is never decoded
again and an edited file gets a new key; decoded inputs are keyed by a hash of their pixels.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from owl_core import limits
from owl_core.errors import ImageError
from owl_core.limits import ImageLimitError

ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray

#: PIL's decompression-bomb message, from which the declared size is read.
_BOMB = re.compile(r"Image size \((\d+) pixels\)")

#: A data URL with a base64 payload (any media type, optional parameters).
_DATA_URL = re.compile(r"^data:[^,]*;base64,", re.IGNORECASE)
#: Standard or URL-safe base64, possibly wrapped in lines, with optional padding.
_BASE64 = re.compile(r"^[A-Za-z0-9+/\-_\s]+={0,2}\s*$")
#: Strings longer than this are never tried as file paths (a base64 image is longer).
_MAX_PATH_CHARS = 4096
_HEX = re.compile(r"^[0-9a-f]+$")

#: The image formats taken (Pillow's format name -> the suffix a project stores a copy under).
#: GIF is in: decoding reads its first frame like any other image. MPO: a JPEG from a camera
#: that adds a second picture (read as its first).
IMAGE_FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp",
                 "GIF": ".gif", "TIFF": ".tif"}
#: File suffixes read as images wherever images are found by name (a folder import, a label
#: job's folder, ``--data-dir``, the bundled samples): those of `IMAGE_FORMATS` and their other
#: spellings.
IMAGE_SUFFIXES = (*dict.fromkeys(IMAGE_FORMATS.values()), ".jpeg", ".tiff")
#: The EXIF orientation tag; its values 5-8 turn the picture by 90 degrees (sides swap).
EXIF_ORIENTATION = 0x0112
_TRANSPOSED = frozenset({5, 6, 7, 8})


def is_image_name(name: str | os.PathLike) -> bool:
    """Whether a file is taken as an image by its name: one of `IMAGE_SUFFIXES` (any case),
    not hidden (``.name``)."""
    name = Path(name).name
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def exif_orientation(img: Image.Image) -> int:
    """An opened image's EXIF orientation (1 = as stored; 1 too when the EXIF is missing or
    malformed: decoding ignores such a tag as well)."""
    try:
        return int(img.getexif().get(EXIF_ORIENTATION, 1) or 1)
    except Exception:  # noqa: BLE001 -- malformed EXIF of any kind
        return 1


def upright_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened image as it is shown: after its EXIF orientation (the
    sizes that boxes on it refer to). Reads the header, decodes no pixels (PNG's EXIF
    excepted)."""
    width, height = img.size
    return (height, width) if exif_orientation(img) in _TRANSPOSED else (width, height)




@dataclass(frozen=True)
class ImageSource:
    """An image input resolved to a content hash, with its bytes or pixels kept for decoding.

    Attributes:
        content_hash: hex digest of the encoded bytes (path/bytes/base64) or of the pixels.
        encoded: the encoded file bytes, when the input was encoded.
        pixels: (H, W, 3) uint8 RGB, when the input was already decoded.
        label: a short human name for error messages (file name or kind of input).
    """

    content_hash: str
    encoded: bytes | None
    pixels: np.ndarray | None
    label: str

    def decode(self) -> np.ndarray:
        """Return the (H, W, 3) uint8 RGB pixels, decoding the bytes if needed."""
        if self.pixels is not None:
            return self.pixels
        assert self.encoded is not None
        return decode_bytes(self.encoded, self.label)


def content_hasher() -> hashlib.blake2b:
    """A hasher whose ``hexdigest()`` is the content hash of the bytes fed to it: hash a file
    as a stream, without holding it whole."""
    return hashlib.blake2b(digest_size=16)


def _hash_bytes(*parts: bytes) -> str:
    h = content_hasher()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def _too_large(label: str, size: str, pixels: int, limit: int) -> ImageLimitError:
    return ImageLimitError(
        f"{label}: the image is too large ({size}{pixels:,} pixels; the limit is {limit:,}, "
        "max_image_pixels). Downscale it first, or raise the limit with the environment "
        "variable OWL_MAX_IMAGE_PIXELS.")


def _check_size(width: int, height: int, label: str) -> None:
    """Refuse empty images and images over `max_image_pixels` (read when called)."""
    if width <= 0 or height <= 0:
        raise ImageError(f"{label}: the image is empty ({width}x{height} pixels).")
    limit = limits.current().max_image_pixels
    if width * height > limit:
        raise _too_large(label, f"{width}x{height} = ", width * height, limit)


def _bomb_error(exc: Image.DecompressionBombError, label: str) -> ImageLimitError:
    """PIL refuses to even open images over twice its own limit; say it with ours."""
    found = _BOMB.search(str(exc))
    pixels = int(found.group(1)) if found else 0
    return _too_large(label, "", pixels, limits.current().max_image_pixels)


def check_header(data: bytes, label: str = "image") -> tuple[int, int] | None:
    """(width, height) from the header alone, after checking it against the pixel limit;
    None when PIL does not recognise the bytes (decoding then says why). Nothing is decoded.

    Raises:
        ImageError: an image over `max_image_pixels` (also a `LimitError`) or empty.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            size = img.size
    except Image.DecompressionBombError as exc:
        raise _bomb_error(exc, label) from None
    except Exception:  # noqa: BLE001 -- unreadable: reported when decoded
        return None
    _check_size(size[0], size[1], label)
    return size


def decode_bytes(data: bytes, label: str = "image") -> np.ndarray:
    """Decode encoded image bytes to (H, W, 3) uint8 RGB, honouring EXIF orientation.
    The header's size is checked against the pixel limit before any pixel is decoded."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            _check_size(img.width, img.height, label)
            img.load()  # a damaged file fails here, never as a partly black picture
            return pil_to_rgb(_exif_upright(img))
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise _bomb_error(exc, label) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, zlib.error) as exc:
        raise ImageError(
            f"{label}: could not read the image ({exc}); the file is damaged or not an image. "
            "Use a PNG, JPEG, WebP, BMP or TIFF file."
        ) from exc


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any PIL mode.

    Alpha is composited on black (numpy RGBA arrays get the same treatment, so one picture
    gives one set of pixels whatever its form); palette and greyscale are expanded; 16/32-bit
    integer greyscale (16-bit PNG) is scaled from 0..65535 and float greyscale ("F") follows
    the float-array rule of `array_to_rgb`.
    """
    if img.mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        arr = np.asarray(img)
        if img.mode == "F":
            return array_to_rgb(arr.astype(np.float32), "PIL image")
        grey = np.clip(np.rint(arr.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
            img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGB", img.size, (0, 0, 0))
        background.paste(img, mask=img.getchannel("A"))
        return np.asarray(background, dtype=np.uint8)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def array_to_rgb(array: np.ndarray, label: str = "array") -> np.ndarray:
    """Validate an RGB(A)/greyscale array and return it as contiguous (H, W, 3) uint8.

    Accepted: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of uint8, of other integers / bool
    with values in 0..255 (bool: False -> 0, True -> 255), or of floats in [0, 1] or [0, 255]
    (an array whose maximum is <= 1 is read as [0, 1]). RGBA is composited on black.
    """
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError(
            f"{label}: expected an (H, W, 3) RGB array (or (H, W) greyscale, (H, W, 4) RGBA), "
            f"got shape {tuple(arr.shape)}. Pass pixels as height x width x channels (convert "
            "BGR from OpenCV with arr[..., ::-1], CHW tensors with arr.transpose(1, 2, 0))."
        )
    _check_size(arr.shape[1], arr.shape[0], label)
    if arr.dtype != np.uint8:
        if arr.dtype == bool:
            arr = arr.astype(np.uint8) * np.uint8(255)
        elif np.issubdtype(arr.dtype, np.floating):
            if not np.isfinite(arr).all():
                raise ImageError(f"{label}: the array holds NaN or infinite values; "
                                 "pass finite pixel values in [0, 1] or [0, 255].")
            low, high = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
            if low < 0.0 or high > 255.0:
                raise ImageError(f"{label}: float pixels must lie in [0, 1] or [0, 255], got "
                                 f"values from {low:g} to {high:g}. Undo any normalisation "
                                 "first.")
            scale = 255.0 if high <= 1.0 else 1.0
            arr = np.rint(arr.astype(np.float64) * scale).astype(np.uint8)
        elif np.issubdtype(arr.dtype, np.integer):
            low, high = int(arr.min(initial=0)), int(arr.max(initial=0))
            if low < 0 or high > 255:
                raise ImageError(f"{label}: integer pixels must lie in 0..255, got values from "
                                 f"{low} to {high}. Convert to uint8 first (16-bit: "
                                 "(arr // 257).astype(np.uint8)).")
            arr = arr.astype(np.uint8)
        else:
            raise ImageError(f"{label}: unsupported array dtype {arr.dtype}; use uint8 RGB.")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 4:
        return pil_to_rgb(Image.fromarray(np.ascontiguousarray(arr), "RGBA"))
    return np.ascontiguousarray(arr)


def _looks_like_base64(text: str) -> bool:
    """Plain base64 of an image file: long enough, base64 characters only, and not a bare hex
    digest (content hashes look like base64 but never are images)."""
    return len(text) >= 40 and bool(_BASE64.match(text)) and not _HEX.match(text)


def decode_base64(text: str) -> bytes:
    """Bytes of a base64 image (plain, URL-safe, unpadded or a data: URL); ImageError if not."""
    text = text.strip()
    if text[:5].lower() == "data:" and not _DATA_URL.match(text):
        raise ImageError(f"data URL {text[:40]!r}...: only base64 data URLs are supported "
                         "(data:image/png;base64,...).")
    payload = "".join(_DATA_URL.sub("", text, count=1).split())
    altchars = b"-_" if ("-" in payload or "_" in payload) else None
    payload += "=" * (-len(payload) % 4)
    try:
        data = base64.b64decode(payload, altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"base64 image: not valid base64 ({exc}). Pass the file's bytes "
                         "encoded with base64, optionally as a data:image/...;base64, URL."
                         ) from exc
    if not data:
        raise ImageError("base64 image: the payload is empty.")
    return data


def resolve_image(image: ImageInput) -> ImageSource:
    """Resolve any supported image input to an `ImageSource` (hash computed, pixels not yet
    decoded for encoded inputs).

    Strings are tried as a data URL, then as a file path, then as plain base64.

    Raises:
        ImageError: missing file, unreadable data, bad array shape, or an image over the limit.
    """
    if isinstance(image, ImageSource):
        return image
    if isinstance(image, Image.Image):
        _check_size(image.width, image.height, "PIL image")
        try:
            image.load()  # a lazily opened, damaged file fails here, not as black pixels
        except (OSError, ValueError, SyntaxError, zlib.error) as exc:
            raise ImageError(f"PIL image: could not read the image ({exc}); the file is "
                             "damaged.") from exc
        return _from_pixels(pil_to_rgb(_exif_upright(image)), "PIL image")
    if isinstance(image, np.ndarray):
        return _from_pixels(array_to_rgb(image), "array")
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not data:
            raise ImageError("image bytes: empty input; pass the bytes of an image file.")
        check_header(data, "image bytes")
        return ImageSource(_hash_bytes(data), data, None, "image bytes")
    if isinstance(image, (str, os.PathLike)):
        text = os.fspath(image)
        if isinstance(text, bytes):
            text = os.fsdecode(text)
        if isinstance(image, str) and text.lstrip()[:5].lower() == "data:":
            data = decode_base64(text)
            check_header(data, "base64 image")
            return ImageSource(_hash_bytes(data), data, None, "base64 image")
        if not text.strip():
            raise ImageError("empty image path; pass a file path, PIL image, RGB array, bytes or "
                             "a base64 string.")
        error: str | None = None
        if len(text) <= _MAX_PATH_CHARS and "\0" not in text:
            path = Path(text).expanduser()
            name = path.name or "image file"  # never the folder: uploads live in temp folders
            try:
                if path.is_file():
                    limits.current().check("max_image_file_bytes", path.stat().st_size,
                                           f"{name}: bytes in the file", ImageLimitError)
                    data = path.read_bytes()
                    if not data:
                        raise ImageError(f"{name}: the file is empty; re-export or re-download "
                                         "the image.")
                    check_header(data, name)
                    return ImageSource(_hash_bytes(data), data, None, name)
                if path.is_dir():
                    error = f"{name}: is a folder, not an image file."
            except OSError as exc:
                error = f"{name}: cannot read the file ({exc.strerror or 'error'})."
        if error is None and isinstance(image, str) and _looks_like_base64(text):
            try:
                data = decode_base64(text)
            except ImageError:
                data = b""
            if data and _is_image_header(data):
                check_header(data, "base64 image")
                return ImageSource(_hash_bytes(data), data, None, "base64 image")
            error = (f"{text[:60]}{'...' if len(text) > 60 else ''}: no such image file, and not "
                     "a base64-encoded image either. Check the path, or pass base64 of an image "
                     "file's bytes.")
        if error is not None:
            raise ImageError(error)
        shown = Path(text).name if len(text) <= _MAX_PATH_CHARS else text[:60] + "..."
        where = ("relative paths start in the working folder" if not os.path.isabs(text)
                 else "the folder is not shown")
        raise ImageError(f"{shown or 'image'}: no such image file. Check the path ({where}).")
    raise ImageError(
        f"unsupported image input of type {type(image).__name__}; pass a file path, PIL image, "
        "RGB numpy array, bytes or a base64 string."
    )


def _is_image_header(data: bytes) -> bool:
    """Whether PIL recognises the bytes as an image (reads the header only)."""
    try:
        with Image.open(io.BytesIO(data)):
            return True
    except Image.DecompressionBombError:  # an image, too large: check_header says so
        return True
    except Exception:  # noqa: BLE001 -- any failure to identify: not an image
        return False


def _exif_upright(image: Image.Image) -> Image.Image:
    """The image turned upright per its EXIF orientation (as decoding a file does); no copy
    when there is nothing to turn. Call on a loaded image: only EXIF errors are ignored here,
    a pixel decoding error must have surfaced before (PNG's getexif() loads the pixels)."""
    return ImageOps.exif_transpose(image) if exif_orientation(image) != 1 else image


def _from_pixels(pixels: np.ndarray, label: str) -> ImageSource:
    h, w = pixels.shape[:2]
    digest = _hash_bytes(f"{h}x{w}:".encode(), pixels.tobytes())
    return ImageSource(digest, None, pixels, label)
