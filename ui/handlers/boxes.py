"""Boxes: what the example annotator sends on every edit. (Detections become examples in the
review panel: `ui.handlers.review`, "Rejected → negative examples" / "Labels → positive
examples".)"""

from __future__ import annotations

from pathlib import Path

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

    @engine_errors
    def on_boxes_edited(self, payload: dict | None, confidence, iou_threshold, max_detections,
                        score_mode, show_examples, request: gr.Request) -> dict:
        """The annotator changed (box drawn, moved, relabelled, deleted): store the boxes and
        update the preview. Never writes the annotator's value unless a new class was typed
        into the label dialog (then the boxes get that class's colour)."""
        s = self.session(request)
        image = (payload or {}).get("image") or {}
        key = image.get("orig_name") or Path(file_path(image) or "").name
        with s.lock:
            self.preview.apply(s, confidence, iou_threshold, max_detections, score_mode,
                               show_examples)
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
            out.update(self.preview.refresh(s, what="edit"))
            return out
