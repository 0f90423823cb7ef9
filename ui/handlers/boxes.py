"""Boxes: what the example annotator sends on every edit. (Detections become examples in the
review panel: `ui.handlers.review`, "Rejected → negative examples" / "Labels → positive
examples".)"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from ui import labels as L
from ui.escape import info
from ui.handlers.common import Area, AreaContext, engine_errors, file_path, read_settings
from ui.handlers.preview import PreviewHandlers
from ui.handlers.views import class_updates, recolor


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
        settings = read_settings(confidence, iou_threshold, max_detections, score_mode,
                                 show_examples)
        image = (payload or {}).get("image") or {}
        key = image.get("orig_name") or Path(file_path(image) or "").name
        with s.lock:
            p = s.project
            found = p.example_by_key(key) if key else None
            if found is None:
                return {}
            index, item = found
            boxes = L.parse_annotator_payload_boxes(payload.get("boxes") or [])
            for box in boxes:
                box["color"] = L.normalise_color(box.get("color"))
            item.boxes = boxes
            p.current = index
            added = []
            for box in boxes:
                parsed = L.parse_box(box, p.classes)
                if parsed.kind in ("positive", "negative") and parsed.new_class:
                    try:
                        name = L.validate_class_name(parsed.cls, p.classes)
                    except ValueError:
                        continue
                    p.classes.append(name)
                    added.append(name)
            out: dict = {}
            if added:
                recolor(p)
                out.update(class_updates(self.c, p, with_value=True))
                info(f"New class: {', '.join(added)}")
            out.update(self.preview.refresh(s, settings, what="edit"))
            return out
