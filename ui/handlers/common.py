"""What every handler module shares: the `Area` base and the `AreaContext` the studio hands each
area, the studio's config and components, the engine-error wrapper, and readers of the values
Gradio hands over (files, slider settings).

`ui.handlers.studio` imports the areas and this module; the areas import this module, never the
studio: what an area needs from the rest of the page is handed to it when it is built."""

from __future__ import annotations

import functools
import hashlib
import html
import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from owl_core import limits
from owl_core.engine.scoring import SCORE_MODES
from owl_core.errors import ImageError, OwlError
from owl_core.images import check_header, upright_size
from owl_core.params import DetectParams
from ui.drawing import PREVIEW_MAX_SIDE
from ui.escape import error
from ui.session import Session

log = logging.getLogger("ui.handlers")


@dataclass
class StudioConfig:
    """How the studio runs (filled from the command line by `app.py`).

    Attributes:
        predictor_kwargs: passed to every `OwlPredictor` (top_k, match_threshold).
        random_preset: name of the random-weights preset in use (None for real weights).
        max_sessions: live sessions kept at most (least recently used dropped first).
        work_dir: parent folder of the server's scratch folder (the system temp folder when
            None); scratch folders of servers that died are deleted at start.
        cache_bytes: RAM budget of the one embedding cache all sessions and API calls share
            (None: `ui.runtime.DEFAULT_CACHE_FRACTION` of the machine's RAM).
        device_cache_bytes: accelerator-memory budget of that cache (ignored on CPU).
        disk_cache_dir: folder of its persistent tier (None: no disk tier).
        disk_cache_bytes: byte budget of that folder (None: the cache's default).
        projects_dir: where projects are kept (None: inside the scratch folder, so they
            last only as long as the server; `ui.main` passes the user's data folder).
        preview_max_side: longest side of preview pictures, pixels.
        default_confidence: the confidence slider's start value.
        embed_batch_size: images per vision-tower pass when embedding uploads; None picks
            `default_embed_batch_size` for the model's device.
        data_dirs: folders on the server the page may add images from (``--data-dir``;
            `owl_core.project.data_dir`); empty: none, the folder row is not shown.
    """

    predictor_kwargs: dict[str, Any] = field(default_factory=dict)
    random_preset: str | None = None
    max_sessions: int = 8
    work_dir: str | None = None
    cache_bytes: int | None = None
    device_cache_bytes: int = 1024 * 1024 ** 2
    disk_cache_dir: str | None = None
    disk_cache_bytes: int | None = None
    projects_dir: str | None = None
    preview_max_side: int = PREVIEW_MAX_SIDE
    default_confidence: float = 0.9
    embed_batch_size: int | None = None
    data_dirs: tuple[str, ...] = ()


class Components:
    """The page's components, filled in by `ui.layout.build_demo` (attribute per component)."""

    def __getattr__(self, name: str) -> Any:  # only reached for missing attributes
        raise AttributeError(f"component {name!r} was not created by the layout")


def tab_id(request: gr.Request | None) -> str:
    """The tab's session id: Gradio's ``session_hash`` (chosen by the browser), tied to the
    logged-in user when there is one, so nobody reaches another user's tab by its hash."""
    session = getattr(request, "session_hash", None) or "default"
    user = user_of(request)
    if user is None:
        return session
    return f"{session}-{hashlib.sha256(user.encode()).hexdigest()[:16]}"


def user_of(request: gr.Request | None) -> str | None:
    """The logged-in user of a request (None: the studio runs without logins)."""
    user = getattr(request, "username", None)
    return user if isinstance(user, str) and user else None


@dataclass(frozen=True)
class AreaContext:
    """What every area shares, handed over by the `Studio` that builds them.

    Attributes:
        c: the page's components.
        config: how the studio runs.
        session: the tab's `Session` for a request (created or reopened on first use).
        touched: called after each event (reports a failed save once).
    """

    c: Components
    config: StudioConfig
    session: Callable[[gr.Request | None], Session]
    touched: Callable[[gr.Request | None], None]


class Area:
    """The handlers of one part of the page.

    Areas are small on purpose. Each gets the shared `AreaContext` (components, config,
    sessions); an area that needs another area or a server part (the preview, the project
    library) gets exactly that as a constructor argument, never the whole studio.
    """

    def __init__(self, ctx: AreaContext) -> None:
        self.ctx = ctx

    @property
    def c(self) -> Components:
        return self.ctx.c

    @property
    def config(self) -> StudioConfig:
        return self.ctx.config

    def session(self, request: gr.Request | None) -> Session:
        return self.ctx.session(request)


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
        except gr.Error as exc:  # said on the page; one line in the log, no traceback
            log.warning("%s: %s", fn.__name__, html.unescape(str(exc.message))[:300])
            raise
        except (OwlError, ValueError) as exc:
            log.warning("%s refused: %s", fn.__name__, str(exc)[:300])
            raise error(user_message(exc)) from exc
        except (RuntimeError, OSError) as exc:
            log.exception("%s failed", fn.__name__)
            raise error(f"Something went wrong on the server ({type(exc).__name__}); the "
                        "details are in its log.") from exc
        finally:  # a failed save is reported (saving itself: ui.session.SessionLock)
            area = args[0] if args else None
            request = next((a for a in (*args, *kwargs.values())
                            if isinstance(a, gr.Request)), None)
            if isinstance(area, Area) and request is not None:
                area.ctx.touched(request)

    return wrapper


def read_settings(confidence, iou_threshold, max_detections, score_mode,
                  current: DetectParams | None = None) -> DetectParams:
    """The detection settings from the sliders' values, on top of `current` (the project's:
    the match threshold has its own slider). An unknown score mode reads as "reference": the
    radio can only send known ones."""
    mode = score_mode if score_mode in SCORE_MODES else "reference"
    return (current or DetectParams()).replace(
        confidence=float(confidence), iou_threshold=float(iou_threshold),
        max_detections=int(max_detections), score_mode=mode)


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
    with Image.open(io.BytesIO(data)) as img:  # the header check above has read it already
        return upright_size(img)


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
