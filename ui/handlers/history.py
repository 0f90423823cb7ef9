"""Undo / redo of box edits (Ctrl+Z / Ctrl+Shift+Z, or the ↶ / ↷ buttons), on the server.

Each annotator (the example annotator, the review annotator) reports every change; the
history keeps, per session, surface and image, the box lists it went through (bounded). Undo
sends the previous list back to the annotator; its change event then stores it through the
surface's own handler (`ui.handlers.boxes` / `ui.handlers.review`), exactly as if the person had
made that edit, so the preview, labels and project follow. That echo is recognised (same boxes
as the history's current entry) and not recorded again.

The annotator's change events reach the server on their own queue, so one sent before an undo
can be handled after it (a slow preview holds the session lock; the label step of a box is
often still queued when Ctrl+Z comes). Such a late record would look like a new edit and wipe
the redo stack, so undo / redo read the annotator's value at the click (the page's truth) and,
until the echo of the state they sent comes back, the history ignores other records.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import gradio as gr

from ui import labels as L
from ui.escape import info
from ui.handlers.common import Area, AreaContext, engine_errors, file_path
from ui.handlers.review import ReviewHandlers, same_boxes
from ui.session import Session

#: Steps kept per image and surface.
MAX_STEPS = 100
SURFACES = ("examples", "review")


class BoxHistory:
    """The undo and redo stacks of one image on one surface."""

    def __init__(self) -> None:
        self.done: list[list[dict]] = []
        self.undone: list[list[dict]] = []
        #: the state an undo / redo sent to the page, until its echo comes back
        self.pending: list[dict] | None = None

    def record(self, boxes: list[dict]) -> bool:
        """Remember a new state (not when it is the current one); clears the redo stack.

        While an undo / redo is on its way to the page, a record that is not its echo was sent
        before the page got it (stale) and is ignored."""
        if self.pending is not None:
            if same_boxes(self.pending, boxes):
                self.pending = None
            return False
        if self.done and same_boxes(self.done[-1], boxes):
            return False
        if self.done and any(not str(b.get("label") or "").strip() for b in self.done[-1]):
            self.done[-1] = boxes  # a box whose label dialog was open: one step with its label
            self.undone.clear()
            return True
        self.done.append(boxes)
        del self.done[:-MAX_STEPS]
        self.undone.clear()
        return True

    def step(self, current: list[dict] | None, back: bool) -> list[dict] | None:
        """One undo (`back`) or redo from `current`, the boxes the page shows at the click
        (recorded first: records still queued are then stale); None when there is none."""
        if current is not None:
            self.pending = None
            self.record(current)
        state = self.undo() if back else self.redo()
        if state is not None and not (current is not None and same_boxes(state, current)):
            self.pending = state  # the page changes: its echo will come
        return state

    def undo(self) -> list[dict] | None:
        if len(self.done) < 2:
            return None
        self.undone.append(self.done.pop())
        return self.done[-1]

    def redo(self) -> list[dict] | None:
        if not self.undone:
            return None
        self.done.append(self.undone.pop())
        return self.done[-1]


def _key(payload: dict | None) -> str:
    image = (payload or {}).get("image") or {}
    return image.get("orig_name") or Path(file_path(image) or "").name


class HistoryHandlers(Area):
    """Records each annotator's states and steps back and forth through them."""

    def __init__(self, ctx: AreaContext, review: ReviewHandlers | None = None) -> None:
        super().__init__(ctx)
        self.review = review  # told what an undo / redo sends (an edit, not an echo)
        self._hist: weakref.WeakKeyDictionary[Session, dict[tuple[str, str], BoxHistory]] = \
            weakref.WeakKeyDictionary()
        self._shown: weakref.WeakKeyDictionary[Session, dict[str, tuple[str, str]]] = \
            weakref.WeakKeyDictionary()

    def history(self, s: Session, surface: str, key: str) -> BoxHistory:
        per = self._hist.setdefault(s, {})
        if (surface, key) not in per and len(per) >= 2000:  # bound: forget the oldest image
            per.pop(next(iter(per)))
        return per.setdefault((surface, key), BoxHistory())

    def record(self, surface: str, payload: dict | None, request: gr.Request) -> None:
        """An annotator changed: remember its boxes (and which image it shows)."""
        key = _key(payload)
        if not key:
            return
        s = self.session(request)
        boxes = L.parse_annotator_payload_boxes((payload or {}).get("boxes") or [])
        for box in boxes:
            box["color"] = L.normalise_color(box.get("color"))
        with s.lock:
            self._shown.setdefault(s, {})[surface] = (key, str((payload or {}).get("image", {})
                                                               .get("path") or ""))
            self.history(s, surface, key).record(boxes)

    def on_examples_changed(self, payload: dict | None, request: gr.Request) -> None:
        self.record("examples", payload, request)

    def on_review_changed(self, payload: dict | None, request: gr.Request) -> None:
        self.record("review", payload, request)

    def _step(self, surface: str, back: bool, payload: dict | None,
              request: gr.Request) -> Any:
        """The annotator's value one step back (or forward) from `payload` (its value at the
        click), as ``{annotator: value}``."""
        s = self.session(request)
        current = None
        if _key(payload):
            current = L.parse_annotator_payload_boxes((payload or {}).get("boxes") or [])
            for box in current:
                box["color"] = L.normalise_color(box.get("color"))
        with s.lock:
            key, path = self._shown.get(s, {}).get(surface, ("", ""))
            if _key(payload):
                key, path = _key(payload), str((payload or {}).get("image", {}).get("path") or "")
                self._shown.setdefault(s, {})[surface] = (key, path)
            if not key:
                return gr.skip()
            state = self.history(s, surface, key).step(current, back)
            if state is None:
                info("Nothing to undo." if back else "Nothing to redo.")
                return gr.skip()
            item = self._image_path(s, surface, key) or path
            if surface == "review" and self.review is not None:
                self.review.state(s).expect(state)
            target = self.c.annotator if surface == "examples" else self.c.review_annotator
            return {target: {"image": item, "boxes": [dict(b) for b in state]}}

    @staticmethod
    def _image_path(s: Session, surface: str, key: str) -> str | None:
        items = s.examples() if surface == "examples" else s.queries() + s.examples()
        return next((s.path(r) for r in items if Path(r.file).name == key), None)

    @engine_errors
    def on_undo_examples(self, payload: dict | None, request: gr.Request) -> Any:
        return self._step("examples", True, payload, request)

    @engine_errors
    def on_redo_examples(self, payload: dict | None, request: gr.Request) -> Any:
        return self._step("examples", False, payload, request)

    @engine_errors
    def on_undo_review(self, payload: dict | None, request: gr.Request) -> Any:
        return self._step("review", True, payload, request)

    @engine_errors
    def on_redo_review(self, payload: dict | None, request: gr.Request) -> Any:
        return self._step("review", False, payload, request)
