"""Boxes: what the example annotator sends on every edit. (Detections become examples in the
review panel: `ui.handlers.review`, "Rejected → negative examples" / "Labels → positive
examples".)

The edit path is kept small, since a person waits for it after every mouse-up: the page sends
only the image's key and its box list (`on_edit`, from the preview view's ``edit`` trigger,
`ui.preview_view`), once the label dialog is closed (so the preview uses the class the person
ends up with), and the answer is the preview's detections only; the pager and the box
diagnostics (a picture drawn on the server) follow in `on_diagnostics`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from ui import labels as L
from ui.escape import info
from ui.handlers.common import Area, AreaContext, engine_errors, file_path
from ui.handlers.preview import PreviewHandlers
from ui.handlers.views import class_updates


class BoxHandlers(Area):
    """Example annotator edits (each edit refreshes `preview`)."""

    def __init__(self, ctx: AreaContext, preview: PreviewHandlers) -> None:
        super().__init__(ctx)
        self.preview = preview
        #: the examples' undo history (`ui.handlers.history.HistoryHandlers`), told each edit
        self.history: Any = None

    @engine_errors
    def on_boxes_edited(self, payload: dict | None, confidence, iou_threshold, max_detections,
                        score_mode, show_examples, request: gr.Request) -> dict:
        """The annotator changed (box drawn, moved, relabelled, deleted): store the boxes and
        update the preview. Never writes the annotator's value unless a new class was typed
        into the label dialog (then the boxes get that class's colour)."""
        s = self.session(request)
        with s.lock:
            self.preview.apply(s, confidence, iou_threshold, max_detections, score_mode,
                               show_examples)
        return self._store_boxes(s, payload)

    def _store_boxes(self, s: Any, payload: dict | None, diagnostics: bool = True) -> dict:
        """The annotator's `payload` (image and boxes) into the project, then the preview."""
        image = (payload or {}).get("image") or {}
        key = image.get("orig_name") or Path(file_path(image) or "").name
        with s.lock:
            record = s.example_by_key(key) if key else None
            if record is None:
                return {}
            boxes = L.parse_annotator_payload_boxes(payload.get("boxes") or [])
            s.view.current = record.id
            added = []
            for box in boxes:
                parsed = L.parse_box(box, s.core.classes)
                if parsed.kind in ("positive", "negative") and parsed.new_class:
                    try:
                        name = L.validate_class_name(parsed.cls, s.core.classes)
                    except ValueError:
                        continue
                    added.append(s.core.add_class(name))
            prompts = L.annotator_to_prompts(boxes, s.core.classes, s.active_class, record.size)
            s.core.set_prompt_boxes(record.id, [p for _, p in prompts])
            out: dict = {}
            if added:
                out.update(class_updates(self.c, s, with_value=True))
                info(f"New class: {', '.join(added)}")
            out.update(self.preview.refresh(s, what="edit", diagnostics=diagnostics))
            return out

    @engine_errors
    def on_edit(self, evt: gr.EventData, request: gr.Request) -> dict:
        """The page's box list of an example after an edit (its label dialog closed): store
        the boxes, record the step for undo, answer with the preview.

        The event's data (sent by `ui.preview_view`'s script) is ``{"seq": n, "image":
        {"path", "orig_name"}, "boxes": [annotator boxes]}``. The preview's value always comes
        back with ``ack: seq`` (even when no detection changed), so the page knows this edit
        is done and may send the next one."""
        data = getattr(evt, "_data", None) or {}
        payload = {"image": data.get("image") or {}, "boxes": data.get("boxes") or []}
        s = self.session(request)
        out = self._store_boxes(s, payload, diagnostics=False)
        if self.history is not None:
            self.history.on_examples_changed(payload, request)
        with s.lock:
            value = out.get(self.c.preview, s.shown.get("preview"))
        if isinstance(value, dict):
            out[self.c.preview] = {**value, "ack": data.get("seq")}
        return out

    @engine_errors
    def on_diagnostics(self, request: gr.Request) -> dict:
        """After an edit's detections are on screen: the pager and the box diagnostics."""
        s = self.session(request)
        with s.lock:
            return self.preview.diagnostics(s)
