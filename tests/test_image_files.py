"""Images by file name and by header, one rule each (`owl_core.images`): which file names are
images (`IMAGE_SUFFIXES`, GIF included) for every reader of a folder, and the upright (EXIF
turned) size for every reader of a header."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from owl_core.batch.job import list_inputs
from owl_core.images import (
    IMAGE_FORMATS,
    IMAGE_SUFFIXES,
    decode_bytes,
    is_image_name,
    upright_size,
)
from owl_core.project.data_dir import data_roots, folder_images
from owl_core.project.folder_import import find_images
from owl_core.project.model import inspect_image
from ui.formats import bundled_images
from ui.handlers.common import image_size


def _image_bytes(fmt: str, size=(24, 16), orientation: int | None = None) -> bytes:
    img = Image.new("RGB", size, (200, 40, 40))
    out = io.BytesIO()
    if orientation is None:
        img.save(out, format=fmt)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(out, format=fmt, exif=exif)
    return out.getvalue()


@pytest.fixture
def folder(tmp_path) -> Path:
    """a.gif, b.JPG, c.png, plus a hidden image, a text file and a hidden sub-folder."""
    root = tmp_path / "images"
    root.mkdir()
    (root / "a.gif").write_bytes(_image_bytes("GIF"))
    (root / "b.JPG").write_bytes(_image_bytes("JPEG"))
    (root / "c.png").write_bytes(_image_bytes("PNG"))
    (root / ".hidden.png").write_bytes(_image_bytes("PNG"))
    (root / "notes.txt").write_text("not an image")
    (root / ".thumbs").mkdir()
    (root / ".thumbs" / "d.png").write_bytes(_image_bytes("PNG"))
    return root


EXPECTED = ["a.gif", "b.JPG", "c.png"]
#: Every place that finds images in a folder by their names.
LISTERS = {
    "folder import": lambda root: [p.name for p in find_images(root)],
    "label job": lambda root: [im.name for im in list_inputs(root)],
    "--data-dir": lambda root: [rel for _, rel in folder_images(str(root),
                                                                data_roots([root]))],
    "studio samples": lambda root: [p.name for p in bundled_images(root.parent)],
}


@pytest.mark.parametrize("lister", LISTERS.values(), ids=LISTERS)
def test_every_folder_reader_takes_the_same_files_gif_included(folder, lister):
    assert lister(folder) == EXPECTED


def test_the_suffix_rule():
    assert ".gif" in IMAGE_SUFFIXES and ".tiff" in IMAGE_SUFFIXES
    assert is_image_name("x/A.GIF") and is_image_name("photo.jpeg")
    assert not is_image_name(".a.png") and not is_image_name("a.txt")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"])
def test_every_format_a_project_stores_is_read_back_by_its_name(fmt):
    """One list: the suffix a project stores a copy under is one every folder reader takes."""
    info = inspect_image(_image_bytes(fmt), f"x.{fmt.lower()}")
    assert info.suffix == IMAGE_FORMATS[fmt] and is_image_name(f"images/abc{info.suffix}")


def test_a_gif_decodes_as_its_first_frame():
    assert decode_bytes(_image_bytes("GIF"), "a.gif").shape == (16, 24, 3)


@pytest.mark.parametrize(("orientation", "upright"), [
    (None, (24, 16)),   # no EXIF
    (1, (24, 16)),      # as stored
    (3, (24, 16)),      # turned 180 degrees: same sides
    (6, (16, 24)),      # turned 90 degrees: sides swap
    (8, (16, 24)),      # turned 270 degrees
])
def test_every_header_reader_gives_the_upright_size(tmp_path, orientation, upright):
    data = _image_bytes("JPEG", orientation=orientation)
    path = tmp_path / "x.jpg"
    path.write_bytes(data)
    with Image.open(io.BytesIO(data)) as img:
        assert upright_size(img) == upright
    assert inspect_image(data, "x.jpg").size == upright                    # the project model
    assert image_size(path) == upright                                      # the studio upload
    height, width = decode_bytes(data, "x.jpg").shape[:2]                   # what is decoded
    assert (width, height) == upright


def test_malformed_exif_reads_as_not_turned():
    img = Image.new("RGB", (24, 16))
    img.getexif = lambda: (_ for _ in ()).throw(SyntaxError("bad EXIF"))  # type: ignore
    assert upright_size(img) == (24, 16)
    assert np.asarray(img).shape == (16, 24, 3)
