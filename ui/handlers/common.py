"""What every handler module shares: the `Area` base, the engine-error wrapper, and readers of
the values Gradio hands over (files, slider settings)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
from PIL import UnidentifiedImageError

from owl_core.scoring import SCORE_MODES
from ui.drawing import open_rgb
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


def engine_errors(fn: Callable) -> Callable:
    """Turn engine ValueError/RuntimeError/OSError into gr.Error with the same message (the
    engine's messages are written for users), and an empty update dict into `gr.skip()`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            out = fn(*args, **kwargs)
            # an empty {component: value} dict means "change nothing"; Gradio needs gr.skip()
            return gr.skip() if isinstance(out, dict) and not out else out
        except gr.Error:
            raise
        except (ValueError, RuntimeError, OSError) as exc:
            log.warning("%s failed: %s", fn.__name__, exc, exc_info=True)
            raise gr.Error(str(exc)) from exc

    return wrapper


def read_settings(confidence, iou_threshold, max_detections, score_mode,
                  show_examples=False) -> Settings:
    """The preview settings from the sliders' values (an unknown score mode reads as
    "reference": the radio can only send known ones)."""
    mode = score_mode if score_mode in SCORE_MODES else "reference"
    return Settings(float(confidence), float(iou_threshold), int(max_detections), mode,
                    bool(show_examples))


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) after EXIF rotation; ValueError for a file that is not an image."""
    try:
        return open_rgb(path).size
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{Path(path).name}: not an image this studio can read ({exc}).") from exc


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
