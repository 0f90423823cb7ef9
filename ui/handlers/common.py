"""What every handler module shares: the `Area` base, the engine-error wrapper, and readers of
the values Gradio hands over (files, slider settings)."""

from __future__ import annotations

import functools
import io
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
from PIL import Image

from owl_core import limits
from owl_core.engine.scoring import SCORE_MODES
from owl_core.errors import ImageError, OwlError
from owl_core.images import check_header
from ui.session import Session, Settings

if TYPE_CHECKING:
    from ui.handlers.studio import Components, Studio, StudioConfig

log = logging.getLogger("ui.handlers")


class Area:
    """The handlers of one part of the page.

    Areas are small on purpose; they reach each other through the `Studio` that owns them
    (``self.studio.preview.refresh(...)``), and share its config, components and sessions.
    """

    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    @property
    def c(self) -> Components:
        return self.studio.c

    @property
    def config(self) -> StudioConfig:
        return self.studio.config

    def session(self, request: gr.Request | None) -> Session:
        return self.studio.session(request)


#: An absolute path on the server (POSIX or Windows), as it may appear in an error message.
_SERVER_PATH = re.compile(r"""(?<![\w.])(?:[A-Za-z]:)?[/\\](?:[^\s'"/\\:]+[/\\])+""")


def user_message(exc: BaseException) -> str:
    """An error's message without server folders (``/tmp/gradio/ab12/x.png`` -> ``x.png``)."""
    return _SERVER_PATH.sub("", str(exc)).strip() or type(exc).__name__


def engine_errors(fn: Callable) -> Callable:
    """Turn the engine's refusals (`OwlError`, and ValueError from older code) into `gr.Error`
    with the same message minus server paths (the messages are written for users); anything
    else is a bug: logged with its traceback, and the page says so without details. An empty
    update dict becomes `gr.skip()`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            out = fn(*args, **kwargs)
            # an empty {component: value} dict means "change nothing"; Gradio needs gr.skip()
            return gr.skip() if isinstance(out, dict) and not out else out
        except gr.Error:
            raise
        except (OwlError, ValueError) as exc:
            log.info("%s refused: %s", fn.__name__, exc)
            raise gr.Error(user_message(exc)) from exc
        except (RuntimeError, OSError) as exc:
            log.exception("%s failed", fn.__name__)
            raise gr.Error(f"Something went wrong on the server ({type(exc).__name__}); the "
                           "details are in its log.") from exc
        finally:  # a failed save is reported (saving itself: ui.session.SessionLock)
            area = args[0] if args else None
            request = next((a for a in (*args, *kwargs.values())
                            if isinstance(a, gr.Request)), None)
            if isinstance(area, Area) and request is not None:
                area.studio.touched(request)

    return wrapper


def read_settings(confidence, iou_threshold, max_detections, score_mode,
                  show_examples=False) -> Settings:
    """The preview settings from the sliders' values (an unknown score mode reads as
    "reference": the radio can only send known ones)."""
    mode = score_mode if score_mode in SCORE_MODES else "reference"
    return Settings(float(confidence), float(iou_threshold), int(max_detections), mode,
                    bool(show_examples))


#: EXIF orientations that swap width and height (rotations by 90 / 270 degrees).
_TRANSPOSED = {5, 6, 7, 8}


def image_size(path: str | Path, name: str | None = None) -> tuple[int, int]:
    """(width, height) after EXIF rotation, from the file's header only: an image over the
    pixel limit (or a decompression bomb) is refused by `owl_core.images.check_header` before
    any pixel is decoded; a file over ``max_upload_bytes`` is not even read.

    Raises:
        ImageError / LimitError: not an image, or too large (the message names `name`, never
            the path).
    """
    label = name or Path(path).name
    try:
        limits.current().check("max_upload_bytes", Path(path).stat().st_size,
                               f"{label}: file size")
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageError(f"{label}: the file could not be read ({exc.strerror}).") from None
    size = check_header(data, label)
    if size is None:
        raise ImageError(f"{label}: not an image this studio can read. Use a PNG, JPEG, WebP, "
                         "BMP or TIFF file.")
    try:
        with Image.open(io.BytesIO(data)) as img:
            orientation = img.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 -- malformed EXIF: decoding ignores it too
        orientation = None
    width, height = size
    return (height, width) if orientation in _TRANSPOSED else (width, height)


def file_path(value: Any) -> str | None:
    """A file path out of what Gradio hands over (a str, a FileData-like dict or object)."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        return str(value)
    if isinstance(value, dict):
        return value.get("path") or value.get("name")
    return getattr(value, "path", None) or getattr(value, "name", None)


def uploaded(files: Any) -> list[tuple[str, str]]:
    """(path, file name) of each uploaded file (one file or a list)."""
    files = files if isinstance(files, list) else [files]
    out = []
    for f in files:
        path = file_path(f)
        if path:
            out.append((path, Path(path).name))
    return out


def size_text(path: str | Path) -> str:
    """A file's size for people ("412 KB", "3.1 MB")."""
    size = Path(path).stat().st_size
    return f"{size / 1024:.0f} KB" if size < 1024 ** 2 else f"{size / 1024 ** 2:.1f} MB"
