"""`Studio`: the app's behaviour, independent of the layout; it owns the sessions and one
handler object per area of the page."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import gradio as gr

from ui.drawing import PREVIEW_MAX_SIDE
from ui.handlers.api import ApiHandlers
from ui.handlers.boxes import BoxHandlers
from ui.handlers.classes import ClassHandlers
from ui.handlers.embedding import EmbeddingHandlers
from ui.handlers.images import ImageHandlers
from ui.handlers.preview import PreviewHandlers
from ui.handlers.project import ProjectHandlers
from ui.handlers.views import legend_html, status_text
from ui.session import Session, SessionStore


@dataclass
class StudioConfig:
    """How the studio runs (filled from the command line by `app.py`).

    Attributes:
        predictor_kwargs: passed to every session's `OwlPredictor` (cache sizes, top_k, ...).
        random_preset: name of the random-weights preset in use (None for real weights).
        max_sessions: live sessions kept at most (least recently used dropped first).
        work_dir: folder for sessions' files (a temporary folder when None).
        preview_max_side: longest side of preview pictures, pixels.
        default_confidence: the confidence slider's start value.
        embed_batch_size: images per vision-tower pass when embedding uploads; None picks
            `default_embed_batch_size` for the model's device.
    """

    predictor_kwargs: dict[str, Any] = field(default_factory=dict)
    random_preset: str | None = None
    max_sessions: int = 8
    work_dir: str | None = None
    preview_max_side: int = PREVIEW_MAX_SIDE
    default_confidence: float = 0.9
    embed_batch_size: int | None = None


def default_embed_batch_size(model: Any) -> int:
    """4 on a GPU (batching fills it); 1 on a CPU. On the 2-core CPU the base model embedded
    at the same speed with batches of 1, 2 and 4 (6.2 s/image each: the vision tower is
    compute-bound there), so single images give the finest progress, the first results
    soonest and the lowest peak memory."""
    device = getattr(getattr(model, "device", None), "type", "cpu")
    return 4 if device == "cuda" else 1


class Components:
    """The page's components, filled in by `ui.layout.build_demo` (attribute per component)."""

    def __getattr__(self, name: str) -> Any:  # only reached for missing attributes
        raise AttributeError(f"component {name!r} was not created by the layout")


class Studio:
    """Sessions plus the handlers of each area of the page (wired by `ui.layout`).

    Areas: `images` (uploads, samples, example selection), `embedding` (the background
    embedding step), `boxes` (annotator edits, suggestions), `classes`, `preview` (detections,
    diagnostics, settings), `project` (example projects, `.pt` import/export, detection
    export) and `api` (the named endpoints).

    Args:
        model: the shared `OwlModel` every session's predictor uses.
        config: see `StudioConfig`.
        make_predictor: builds a session's predictor (default: `OwlPredictor(model, **kwargs)`).
    """

    legend_html = staticmethod(legend_html)

    def __init__(self, model: Any, config: StudioConfig | None = None,
                 make_predictor: Callable[[], Any] | None = None) -> None:
        self.model = model
        self.config = config or StudioConfig()
        if not self.config.embed_batch_size:
            self.config = replace(self.config,
                                  embed_batch_size=default_embed_batch_size(model))
        if make_predictor is None:
            from owl_core import OwlPredictor

            def make_predictor():
                return OwlPredictor(model, **self.config.predictor_kwargs)

        root = self.config.work_dir or tempfile.mkdtemp(prefix="owl-studio-")
        self.store = SessionStore(make_predictor, root, self.config.max_sessions,
                                  self.config.preview_max_side)
        self.c = Components()
        self.images = ImageHandlers(self)
        self.embedding = EmbeddingHandlers(self)
        self.boxes = BoxHandlers(self)
        self.classes = ClassHandlers(self)
        self.preview = PreviewHandlers(self)
        self.project = ProjectHandlers(self)
        self.api = ApiHandlers(self)

    def session(self, request: gr.Request | None) -> Session:
        """The browser tab's session (created on first use)."""
        session_id = getattr(request, "session_hash", None) or "default"
        return self.store.get(session_id)

    def on_load(self, request: gr.Request) -> dict:
        """Create the tab's session (the page's initial widgets already show a new project)."""
        s = self.session(request)
        with s.lock:
            return {self.c.status: status_text(s)}

    def on_unload(self, request: gr.Request) -> None:
        """Free a closed tab's predictor, caches and files."""
        session_id = getattr(request, "session_hash", None)
        if session_id:
            self.store.drop(session_id)
