"""`Studio`: the app's behaviour, independent of the layout; it owns the sessions and one
handler object per area of the page. (`StudioConfig`, `Components` and `tab_id` live in
`ui.handlers.common`, which the areas import; they are re-exported here.)"""

from __future__ import annotations

import atexit
import secrets
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import gradio as gr

from owl_core.project.library import ProjectLibrary
from ui.escape import warning
from ui.handlers.api import ApiHandlers
from ui.handlers.boxes import BoxHandlers
from ui.handlers.classes import ClassHandlers
from ui.handlers.common import AreaContext, Components, StudioConfig, tab_id, user_of
from ui.handlers.describe import DescribeHandlers
from ui.handlers.embedding import EmbeddingHandlers
from ui.handlers.history import HistoryHandlers
from ui.handlers.images import ImageHandlers
from ui.handlers.library import LibraryHandlers
from ui.handlers.meter import MeterHandlers
from ui.handlers.preview import PreviewHandlers
from ui.handlers.project import ProjectHandlers
from ui.handlers.review import ReviewHandlers
from ui.handlers.views import legend_html, project_updates
from ui.runtime import ExportSpool, WorkDir, default_cache_bytes, shared_cache
from ui.session import Session, TabSessions


def default_embed_batch_size(model: Any) -> int:
    """4 on a GPU (batching fills it); 1 on a CPU. On the 2-core CPU the base model embedded
    at the same speed with batches of 1, 2 and 4 (6.2 s/image each: the vision tower is
    compute-bound there), so single images give the finest progress, the first results
    soonest and the lowest peak memory."""
    device = getattr(getattr(model, "device", None), "type", "cpu")
    return 4 if device == "cuda" else 1


class Studio:
    """Sessions plus the handlers of each area of the page (wired by `ui.layout`).

    Areas: `images` (uploads, samples, example selection), `embedding` (the background
    embedding step), `boxes` (annotator edits), `classes`, `preview` (detections,
    diagnostics, settings), `project` (example projects, `.pt` import/export, detection
    export) and `api` (the named endpoints).

    Args:
        model: the shared `OwlModel` every session's predictor uses.
        config: see `StudioConfig`.
        make_predictor: builds a predictor (default: `OwlPredictor(model, cache=self.cache,
            **kwargs)`: every predictor shares the server's one embedding cache).
    """

    legend_html = staticmethod(legend_html)

    def __init__(self, model: Any, config: StudioConfig | None = None,
                 make_predictor: Callable[[], Any] | None = None) -> None:
        self.model = model
        self.config = config or StudioConfig()
        if not self.config.embed_batch_size:
            self.config = replace(self.config,
                                  embed_batch_size=default_embed_batch_size(model))
        cfg = self.config
        self.cache = shared_cache(
            getattr(model, "device", "cpu"),
            default_cache_bytes() if cfg.cache_bytes is None else cfg.cache_bytes,
            cfg.device_cache_bytes, cfg.disk_cache_dir, cfg.disk_cache_bytes)
        if make_predictor is None:
            from owl_core import OwlPredictor

            def make_predictor():
                return OwlPredictor(model, cache=self.cache, **self.config.predictor_kwargs)

        self.make_predictor = make_predictor
        self.work = WorkDir(cfg.work_dir)
        self.exports = ExportSpool(self.work.path / "api-exports")
        self.projects = ProjectLibrary(cfg.projects_dir or self.work.path / "projects")
        self.projects.clean_scratch()
        self.store = TabSessions(make_predictor, self.work.path / "sessions", self.projects,
                                  cfg.max_sessions, cfg.preview_max_side)
        self.c = Components()
        # each area gets the shared context plus exactly the parts it uses, not the studio
        ctx = AreaContext(self.c, self.config, self.session, self.touched)
        self.preview = PreviewHandlers(ctx)
        self.images = ImageHandlers(ctx)
        self.embedding = EmbeddingHandlers(ctx, self.projects)
        self.boxes = BoxHandlers(ctx, self.preview)
        self.classes = ClassHandlers(ctx)
        self.describe = DescribeHandlers(ctx, self.preview)
        self.project = ProjectHandlers(ctx)
        self.api = ApiHandlers(ctx, self.make_predictor, self.exports)
        self.library = LibraryHandlers(ctx, self.store, self.projects)
        atexit.register(_close_at_exit, weakref.ref(self))  # a stopped server saves first
        self.review = ReviewHandlers(ctx, self.preview)
        self.meter = MeterHandlers(ctx, self.preview)
        self.history = HistoryHandlers(ctx, self.review)

    @property
    def browser_secret(self) -> str:
        """Key of the browser storage that remembers a tab's project: kept in the projects
        folder, so a restarted server can still read what browsers stored."""
        path = self.projects.root / ".browser-secret"
        try:
            return path.read_text().strip()
        except OSError:
            secret = secrets.token_hex(16)
            path.write_text(secret)
            return secret

    def session(self, request: gr.Request | None) -> Session:
        """The browser tab's session (created on first use, or opened again from disk). A tab
        this server does not know (it was restarted under an open page) gets the project its
        page shows (``?project=`` of the page's address), never a new empty one."""
        tab = tab_id(request)
        wanted = None if tab in self.store or self.store.tab_project(tab) \
            else page_project(request)
        return self.store.get(tab, wanted, owner=user_of(request))

    def touched(self, request: gr.Request | None) -> None:
        """After an event: tell the person once about a save that failed. (The save itself
        was scheduled when the event left the session lock: `ui.session.SessionLock`.)"""
        s = self.store.peek(tab_id(request))
        if s is not None:
            if s.save_error and s.save_error != s.warned:
                s.warned = s.save_error  # say it once per problem, not on every event
                warning(f"Not saved: {s.save_error}")

    def on_load(self, stored_id: str | None, request: gr.Request) -> dict:
        """Open the tab's project: the one named in the URL (``?project=<id>``), else the one
        this browser had open last, else a new one."""
        params = dict(getattr(request, "query_params", None) or {})
        wanted = params.get("project") or stored_id
        s = self.store.open_tab(tab_id(request), wanted if isinstance(wanted, str) else None,
                                owner=user_of(request))
        with s.lock:
            return project_updates(self.c, s, self.projects)

    def on_unload(self, request: gr.Request) -> None:
        """Save a closed tab's project and free its predictor and scratch files."""
        if getattr(request, "session_hash", None):
            self.store.drop(tab_id(request))  # with logins, the hash tied to the user

    def close(self) -> None:
        """Save every open project and delete the scratch folder (the server stops)."""
        self.store.close()
        self.work.close()


def page_project(request: gr.Request | None) -> str | None:
    """The project id in the address of the page that sent `request` (its ``Referer``: an
    event's own URL is Gradio's queue, not the page)."""
    headers = getattr(request, "headers", None) or {}
    try:
        referer = headers.get("referer") or ""
    except Exception:  # noqa: BLE001 -- a request without readable headers names nothing
        return None
    values = parse_qs(urlsplit(str(referer)).query).get("project") or []
    return values[0] if values and isinstance(values[0], str) else None


def _close_at_exit(ref: weakref.ref) -> None:
    studio = ref()
    if studio is not None:
        studio.close()


__all__ = ["Components", "Studio", "StudioConfig", "default_embed_batch_size", "tab_id"]
