"""Tests for owl_core.images: every input form decodes to the same RGB pixels, content hashing,
EXIF orientation, and helpful errors."""

from __future__ import annotations

import base64
import contextlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from owl_core.errors import LimitError
from owl_core.images import (
    ImageError,
    ImageSource,
    array_to_rgb,
    decode_bytes,
    resolve_image,
)

H, W = 12, 18  # small, non-square: a transposed result can't pass for the right one


def colour_picture() -> np.ndarray:
    """(H, W, 3) uint8 with six flat colour blocks plus a one-pixel marker in the top-left
    corner; few colours, so an explicit palette image can hold it exactly."""
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255],
                        [255, 255, 0], [0, 255, 255], [128, 64, 32]], np.uint8)
    rows, cols = np.indices((H, W))
    arr = colours[(rows // 6) * 3 + cols // 6]
    arr[0, 0] = (255, 255, 255)
    return arr


def grey_picture() -> np.ndarray:
    """(H, W, 3) uint8 with R == G == B (a picture that greyscale forms can hold exactly)."""
    level = ((np.arange(H)[:, None] * 17 + np.arange(W)[None, :] * 5) % 256).astype(np.uint8)
    return np.repeat(level[:, :, None], 3, axis=2)


def png_bytes(arr: np.ndarray, mode: str | None = None, **save_kw) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    img.save(buf, format=save_kw.pop("format", "PNG"), **save_kw)
    return buf.getvalue()


def palette_image(arr: np.ndarray) -> Image.Image:
    """Mode "P" image built from an explicit palette (exact, unlike quantize())."""
    colours, index = np.unique(arr.reshape(-1, 3), axis=0, return_inverse=True)
    img = Image.fromarray(index.reshape(arr.shape[:2]).astype(np.uint8), "L")
    img = img.convert("P")
    img.putpalette(colours.flatten().tolist())
    return img


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ one picture, many forms
COLOUR_FORMS = {
    # a PNG file given as a str path
    "path str": lambda arr, tmp: str(write(tmp, "a.png", png_bytes(arr))),
    # the same file as a pathlib.Path
    "pathlib.Path": lambda arr, tmp: write(tmp, "a.png", png_bytes(arr)),
    # a BMP file: another container, same pixels
    "bmp path": lambda arr, tmp: str(write(tmp, "a.bmp", png_bytes(arr, format="BMP"))),
    # PIL RGB
    "PIL RGB": lambda arr, tmp: Image.fromarray(arr),
    # PIL RGBA, fully opaque: alpha must not change the colours
    "PIL RGBA opaque": lambda arr, tmp: Image.fromarray(arr).convert("RGBA"),
    # PIL palette image
    "PIL P": lambda arr, tmp: palette_image(arr),
    # numpy uint8 RGB
    "numpy uint8": lambda arr, tmp: arr.copy(),
    # numpy RGBA, fully opaque
    "numpy RGBA opaque": lambda arr, tmp: np.dstack([arr, np.full(arr.shape[:2], 255, np.uint8)]),
    # numpy float32 in [0, 1]
    "numpy float [0,1]": lambda arr, tmp: arr.astype(np.float32) / 255.0,
    # numpy float64 in [0, 255]
    "numpy float [0,255]": lambda arr, tmp: arr.astype(np.float64),
    # numpy int64 in 0..255 (e.g. np.array of Python ints)
    "numpy int64": lambda arr, tmp: arr.astype(np.int64),
    # a non-contiguous view (BGR flipped back to RGB)
    "numpy strided view": lambda arr, tmp: np.ascontiguousarray(arr[..., ::-1])[..., ::-1],
    # encoded bytes
    "bytes": lambda arr, tmp: png_bytes(arr),
    # bytearray and memoryview are bytes too
    "bytearray": lambda arr, tmp: bytearray(png_bytes(arr)),
    # memoryview
    "memoryview": lambda arr, tmp: memoryview(png_bytes(arr)),
    # plain base64 of the file bytes (contains '/' and '+' in general)
    "base64 plain": lambda arr, tmp: base64.b64encode(png_bytes(arr)).decode(),
    # base64 wrapped at 76 columns (MIME style)
    "base64 wrapped": lambda arr, tmp: base64.encodebytes(png_bytes(arr)).decode(),
    # URL-safe base64 without padding
    "base64 urlsafe": lambda arr, tmp: (
        base64.urlsafe_b64encode(png_bytes(arr)).decode().rstrip("=")),
    # a data URL, as browsers produce
    "data URL": lambda arr, tmp: (
        "data:image/png;base64," + base64.b64encode(png_bytes(arr)).decode()),
    # a data URL with an extra parameter and upper-case scheme
    "data URL params": lambda arr, tmp: ("DATA:image/png;name=a.png;base64,"
                                         + base64.b64encode(png_bytes(arr)).decode()),
}

GREY_FORMS = {
    # PIL greyscale
    "PIL L": lambda arr, tmp: Image.fromarray(arr[:, :, 0], "L"),
    # numpy (H, W)
    "numpy 2-D": lambda arr, tmp: arr[:, :, 0].copy(),
    # numpy (H, W, 1)
    "numpy (H, W, 1)": lambda arr, tmp: arr[:, :, :1].copy(),
    # greyscale PNG file
    "L png path": lambda arr, tmp: str(write(tmp, "g.png", png_bytes(arr, "L"))),
    # 16-bit greyscale PNG: 0..65535 must scale to 0..255, not saturate
    "16-bit png": lambda arr, tmp: write(tmp, "g16.png", png_bytes(
        (arr[:, :, 0].astype(np.uint16) * 257), format="PNG")),
    # greyscale + alpha, opaque
    "PIL LA opaque": lambda arr, tmp: Image.fromarray(arr[:, :, 0], "L").convert("LA"),
}


@pytest.mark.parametrize("form", list(COLOUR_FORMS))
def test_every_colour_form_decodes_to_the_same_pixels(form, tmp_path):
    arr = colour_picture()
    source = resolve_image(COLOUR_FORMS[form](arr, tmp_path))
    pixels = source.decode()
    assert pixels.dtype == np.uint8 and pixels.shape == (H, W, 3)
    assert pixels.flags.c_contiguous
    np.testing.assert_array_equal(pixels, arr)


@pytest.mark.parametrize("form", list(GREY_FORMS))
def test_every_grey_form_decodes_to_the_same_pixels(form, tmp_path):
    arr = grey_picture()
    pixels = resolve_image(GREY_FORMS[form](arr, tmp_path)).decode()
    assert pixels.dtype == np.uint8 and pixels.shape == (H, W, 3)
    np.testing.assert_array_equal(pixels, arr)


def composite_on_black(rgba: np.ndarray) -> np.ndarray:
    """Independent reference: out = round(rgb * alpha / 255), half up."""
    rgb = rgba[..., :3].astype(np.int64)
    alpha = rgba[..., 3:].astype(np.int64)
    return ((rgb * alpha * 2 + 255) // 510).astype(np.uint8)


@pytest.mark.parametrize("form", [
    "PIL RGBA",   # PIL image with varying alpha
    "numpy RGBA",  # the same pixels as an array: must match the PIL path exactly
    "png bytes",  # encoded with alpha
])
def test_translucent_rgba_composites_on_black_in_every_form(form):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (H, W, 4), dtype=np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255  # fully transparent and fully opaque pixels
    value = {"PIL RGBA": Image.fromarray(rgba, "RGBA"), "numpy RGBA": rgba,
             "png bytes": png_bytes(rgba)}[form]
    pixels = resolve_image(value).decode()
    np.testing.assert_array_equal(pixels, composite_on_black(rgba))
    assert tuple(pixels[0, 0]) == (0, 0, 0)
    assert tuple(pixels[0, 1]) == tuple(rgba[0, 1, :3])


@pytest.mark.parametrize("value, expected", [
    # bool: False -> black, True -> white (as PIL mode "1")
    (np.array([[False, True]]), [[0, 0, 0], [255, 255, 255]]),
    # float arrays with max <= 1 are read as [0, 1]
    (np.array([[0.0, 0.5, 1.0]], np.float32), [[0] * 3, [128] * 3, [255] * 3]),
    # float arrays with max > 1 are read as [0, 255] and rounded
    (np.array([[0.4, 127.6, 255.0]]), [[0] * 3, [128] * 3, [255] * 3]),
    # uint16 holding 0..255 values is taken as is
    (np.array([[3, 250]], np.uint16), [[3] * 3, [250] * 3]),
])
def test_array_dtypes_convert_to_uint8(value, expected):
    np.testing.assert_array_equal(array_to_rgb(value)[0], np.array(expected, np.uint8))


# ---------------------------------------------------------------------------- hashing
def test_encoded_inputs_hash_by_bytes(tmp_path):
    data = png_bytes(colour_picture())
    path = write(tmp_path, "a.png", data)
    copy = write(tmp_path, "copy-with-another-name.png", data)
    b64 = base64.b64encode(data).decode()
    hashes = {
        "path": resolve_image(str(path)).content_hash,
        "copy": resolve_image(copy).content_hash,
        "bytes": resolve_image(data).content_hash,
        "base64": resolve_image(b64).content_hash,
        "data URL": resolve_image("data:image/png;base64," + b64).content_hash,
    }
    assert len(set(hashes.values())) == 1, hashes
    # encoded sources keep the bytes and decode lazily
    source = resolve_image(data)
    assert source.encoded == data and source.pixels is None


def test_decoded_inputs_hash_by_pixels():
    arr = colour_picture()
    hashes = {
        "numpy": resolve_image(arr).content_hash,
        "PIL RGB": resolve_image(Image.fromarray(arr)).content_hash,
        "PIL RGBA": resolve_image(Image.fromarray(arr).convert("RGBA")).content_hash,
        "PIL P": resolve_image(palette_image(arr)).content_hash,
        "float": resolve_image(arr / 255.0).content_hash,
    }
    assert len(set(hashes.values())) == 1, hashes
    source = resolve_image(arr)
    assert source.encoded is None and source.pixels is not None


def test_different_encodings_of_one_picture_have_different_hashes():
    # encoded inputs are keyed by their bytes: PNG and BMP bytes differ
    arr = colour_picture()
    png, bmp = png_bytes(arr), png_bytes(arr, format="BMP")
    assert resolve_image(png).content_hash != resolve_image(bmp).content_hash
    assert resolve_image(png).content_hash != resolve_image(arr).content_hash


def one_pixel_changed() -> np.ndarray:
    arr = colour_picture()
    arr[H - 1, W - 1, 2] ^= 1
    return arr


@pytest.mark.parametrize("a, b", [
    # one channel of one pixel changed by one step
    (colour_picture(), one_pixel_changed()),
    # the same bytes in another shape must not collide
    (np.zeros((2, 6, 3), np.uint8), np.zeros((6, 2, 3), np.uint8)),
])
def test_different_pixels_have_different_hashes(a, b):
    assert resolve_image(a).content_hash != resolve_image(b).content_hash


def test_edited_file_gets_a_new_hash_and_new_pixels(tmp_path):
    path = tmp_path / "photo.png"
    first = colour_picture()
    path.write_bytes(png_bytes(first))
    before = resolve_image(path)
    second = first.copy()
    second[5, 5] = (1, 2, 3)
    path.write_bytes(png_bytes(second))  # same path, new content
    after = resolve_image(path)
    assert after.content_hash != before.content_hash
    np.testing.assert_array_equal(after.decode(), second)
    np.testing.assert_array_equal(before.decode(), first)  # the old source kept its bytes
    # writing the first content back gives the first hash again
    path.write_bytes(png_bytes(first))
    assert resolve_image(path).content_hash == before.content_hash


def test_resolve_returns_an_image_source_unchanged():
    source = resolve_image(colour_picture())
    assert resolve_image(source) is source


# ---------------------------------------------------------------------------- EXIF orientation
@pytest.mark.parametrize("orientation, upright", [
    # 1: already upright
    (1, lambda a: a),
    # 2: mirrored left-right
    (2, lambda a: a[:, ::-1]),
    # 3: rotated 180 degrees
    (3, lambda a: a[::-1, ::-1]),
    # 6: shown after a 90 degree clockwise turn (phone held upright)
    (6, lambda a: np.rot90(a, k=-1)),
    # 8: shown after a 90 degree counter-clockwise turn
    (8, lambda a: np.rot90(a, k=1)),
])
@pytest.mark.parametrize("form", ["path", "bytes", "PIL opened from the file"])
def test_exif_orientation_is_applied(orientation, upright, form, tmp_path):
    arr = colour_picture()
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = png_bytes(arr, exif=exif)
    path = write(tmp_path, "exif.png", data)
    value = {"path": path, "bytes": data, "PIL opened from the file": Image.open(path)}[form]
    np.testing.assert_array_equal(resolve_image(value).decode(), upright(arr))


# ---------------------------------------------------------------------------- errors
def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match=r"missing\.png: no such image file\. Check the path"):
        resolve_image(str(tmp_path / "missing.png"))


def test_missing_file_as_pathlib(tmp_path):
    with pytest.raises(ImageError, match=r"no such image file"):
        resolve_image(tmp_path / "missing.png")


def test_empty_file(tmp_path):
    path = write(tmp_path, "empty.png", b"")
    with pytest.raises(ImageError, match=r"empty\.png: the file is empty; re-export"):
        resolve_image(path)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(ImageError, match=r"is a folder, not an image file"):
        resolve_image(str(tmp_path))


@pytest.mark.parametrize("data", [
    # not an image at all
    b"this is not an image, just some text " * 4,
    # a PNG cut in half
    png_bytes(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))[:300],
    # PNG signature and nothing else
    b"\x89PNG\r\n\x1a\n",
])
def test_garbage_bytes(data, tmp_path):
    with pytest.raises(ImageError,
                       match=r"image bytes: could not read the image .*Use a PNG, JPEG"):
        resolve_image(data).decode()
    path = write(tmp_path, "bad.png", data)
    with pytest.raises(ImageError, match=r"bad\.png: could not read the image .*Use a PNG, JPEG"):
        resolve_image(path).decode()


@pytest.mark.parametrize("value, message", [
    # empty bytes
    (b"", r"image bytes: empty input; pass the bytes of an image file"),
    # empty string
    ("", r"empty image path; pass a file path"),
    # a data URL whose payload is not base64
    ("data:image/png;base64,@@@@", r"base64 image: not valid base64 .*Pass the file's bytes"),
    # a data URL that is not base64 at all
    ("data:image/svg+xml,<svg></svg>", r"only base64 data URLs are supported"),
    # a data URL with nothing in it
    ("data:image/png;base64,", r"base64 image: the payload is empty"),
    # long base64-looking text that decodes to no image
    ("QUJD" * 20, r"no such image file, and not a base64-encoded image either"),
    # a content hash is not an image either
    ("0123456789abcdef0123456789abcdef", r"no such image file\. Check the path"),
    # unsupported type
    (12345, r"unsupported image input of type int; pass a file path, PIL image"),
    # list of pixels instead of an array
    ([[0, 0, 0]], r"unsupported image input of type list"),
])
def test_bad_inputs(value, message):
    with pytest.raises(ImageError, match=message):
        resolve_image(value).decode()


@pytest.mark.parametrize("array, message", [
    # two channels
    (np.zeros((4, 4, 2), np.uint8), r"expected an \(H, W, 3\) RGB array .*got shape \(4, 4, 2\)"),
    # channels first (CHW)
    (np.zeros((3, 8, 9), np.uint8), r"got shape \(3, 8, 9\).*transpose\(1, 2, 0\)"),
    # 1-D
    (np.zeros(12, np.uint8), r"got shape \(12,\)"),
    # batch of images
    (np.zeros((1, 4, 4, 3), np.uint8), r"got shape \(1, 4, 4, 3\)"),
    # no pixels
    (np.zeros((0, 5, 3), np.uint8), r"the image is empty \(5x0 pixels\)"),
    # NaN
    (np.full((4, 4, 3), np.nan, np.float32), r"NaN or infinite values; pass finite pixel values"),
    # inf
    (np.where(np.eye(4)[:, :, None] > 0, np.inf, 0.5).repeat(3, 2), r"NaN or infinite"),
    # normalised floats (negative)
    (np.full((4, 4, 3), -0.5), r"float pixels must lie in \[0, 1\] or \[0, 255\].*-0\.5"),
    # floats above 255
    (np.full((4, 4, 3), 300.0), r"float pixels must lie .* to 300"),
    # 16-bit values in an integer array would saturate silently
    (np.full((4, 4, 3), 4000, np.uint16), r"integer pixels must lie in 0\.\.255.*\(arr // 257\)"),
    # negative integers
    (np.full((4, 4), -1, np.int32), r"integer pixels must lie in 0\.\.255, got values from -1"),
    # complex numbers
    (np.zeros((4, 4, 3), np.complex64), r"unsupported array dtype complex64; use uint8 RGB"),
])
def test_bad_arrays(array, message):
    with pytest.raises(ImageError, match=message):
        resolve_image(array)


@pytest.mark.parametrize("form", ["path", "bytes", "base64", "PIL", "numpy"])
def test_images_over_the_pixel_limit_are_refused(form, tmp_path, monkeypatch):
    monkeypatch.setenv("OWL_MAX_IMAGE_PIXELS", str(H * W - 1))  # read when called
    arr = colour_picture()
    data = png_bytes(arr)
    value = {"path": write(tmp_path, "big.png", data), "bytes": data,
             "base64": base64.b64encode(data).decode(), "PIL": Image.fromarray(arr),
             "numpy": arr}[form]
    with pytest.raises(LimitError, match=rf"too large \({W}x{H} = {H * W:,} pixels; the limit is "
                                         rf"{H * W - 1:,}, max_image_pixels\)\. Downscale it "
                                         r"first, or raise the limit with the environment "
                                         r"variable OWL_MAX_IMAGE_PIXELS") as info:
        resolve_image(value).decode()
    assert isinstance(info.value, ImageError)


def test_images_at_the_pixel_limit_are_accepted(monkeypatch):
    monkeypatch.setenv("OWL_MAX_IMAGE_PIXELS", str(H * W))
    assert resolve_image(png_bytes(colour_picture())).decode().shape == (H, W, 3)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` and holds no pixels: what a decompression bomb
    looks like to anything that reads only the header."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [
    # 900 MP: PIL itself refuses to open it (DecompressionBombError)
    30_000,
    # 169 MP: PIL opens it, our limit (80 MP) refuses it from the header
    13_000,
])
@pytest.mark.parametrize("form", ["bytes", "path", "base64", "decode_bytes"])
def test_header_size_is_checked_before_decoding(side, form, tmp_path):
    data = png_header_only(side, side)
    folder = tmp_path / "gradio" / "5f1e"
    folder.mkdir(parents=True)
    path = write(folder, "bomb.png", data)
    act = {"bytes": lambda: resolve_image(data).decode(),
           "path": lambda: resolve_image(path).decode(),
           "base64": lambda: resolve_image(base64.b64encode(data).decode()).decode(),
           "decode_bytes": lambda: decode_bytes(data, "bomb.png")}[form]
    # between PIL's own limit and twice it, PIL opens the file with a warning; ours refuses it
    warned = (pytest.warns(Image.DecompressionBombWarning)
              if Image.MAX_IMAGE_PIXELS < side * side <= 2 * Image.MAX_IMAGE_PIXELS
              else contextlib.nullcontext())
    refused = pytest.raises(ImageError, match=rf"too large \(.*{side * side:,} pixels; the "
                                              r"limit is 80,000,000, max_image_pixels\)")
    with warned, refused as info:
        act()
    assert isinstance(info.value, LimitError)
    assert not isinstance(info.value, Image.DecompressionBombError)
    assert str(folder) not in str(info.value)


def test_error_messages_show_file_names_not_server_folders(tmp_path):
    folder = tmp_path / "gradio" / "0a1b2c"
    folder.mkdir(parents=True)
    for path, message in ((write(folder, "empty.png", b""), "empty.png: the file is empty"),
                          (write(folder, "bad.png", b"not an image" * 9), "bad.png: could not"),
                          (folder / "gone.png", "gone.png: no such image file")):
        with pytest.raises(ImageError, match=message) as info:
            resolve_image(str(path)).decode()
        assert str(folder) not in str(info.value) and str(tmp_path) not in str(info.value)


def test_decode_bytes_labels_errors():
    with pytest.raises(ImageError, match=r"^upload\.jpg: could not read the image"):
        decode_bytes(b"nope", "upload.jpg")


def test_image_source_is_frozen():
    source = resolve_image(colour_picture())
    with pytest.raises(AttributeError, match=r"cannot assign to field 'content_hash'"):
        source.content_hash = "x"  # type: ignore[misc]
    assert isinstance(source, ImageSource)


def _damaged_png() -> bytes:
    """A gradient PNG (compressible, so its zlib stream is real) with 4 bytes of the stream
    inverted: the header is intact, the pixel data is not."""
    ramp = np.linspace(0, 255, 120).astype(np.uint8)
    data = bytearray(png_bytes(np.stack([np.tile(ramp, (120, 1))] * 3, -1)))
    start = data.index(b"IDAT") + 4 + 40
    data[start:start + 4] = bytes(b ^ 0xFF for b in data[start:start + 4])
    return bytes(data)


@pytest.mark.parametrize("form", ["bytes", "path", "PIL"])
def test_a_damaged_png_is_an_error_not_a_black_picture(form, tmp_path):
    data = _damaged_png()
    (tmp_path / "bad.png").write_bytes(data)
    value = {"bytes": data, "path": tmp_path / "bad.png",
             "PIL": Image.open(tmp_path / "bad.png")}[form]
    with pytest.raises(ImageError, match="could not read the image"):
        resolve_image(value).decode()


def test_an_image_file_over_the_byte_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    with path.open("r+b") as fh:  # sparse: large on paper, nothing written
        fh.truncate(10_000)
    monkeypatch.setenv("OWL_MAX_IMAGE_FILE_BYTES", "5000")
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("read before the check"))
    with pytest.raises(ImageError, match="max_image_file_bytes"):
        resolve_image(path)
