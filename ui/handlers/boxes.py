"""Boxes: what the annotator sends on every edit, and the grey suggestion boxes that turn the
preview's detections into examples with one relabel ("NOT coin" for a false positive)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from ui import labels as L
from ui.handlers.common import Area, engine_errors, file_path, read_settings
from ui.handlers.views import (
    annotator_value,
    class_updates,
    examples_updates,
    recolor,
    status_text,
)
from ui.session import ImageItem

#: A detection overlapping a drawn box this much is not offered as a suggestion.
SUGGESTION_OVERLAP = 0.5
#: At most this many detections (the best) become suggestions, so the annotator stays usable.
MAX_SUGGESTIONS = 60


class BoxHandlers(Area):
    """Annotator edits, suggestions from the preview."""

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
                gr.Info(f"New class: {', '.join(added)}")
            out.update(self.studio.preview.refresh(s, settings, what="edit"))
            return out

    @engine_errors
    def on_clear_suggestions(self, request: gr.Request) -> dict:
        """Drop the grey suggestion boxes from the annotator's image."""
        s = self.session(request)
        with s.lock:
            item = s.project.current_example
            if item is None:
                return {}
            item.boxes = [b for b in item.boxes if L.parse_box(b, []).kind != "suggestion"]
            return {self.c.annotator: gr.update(value=annotator_value(s.project))}

    @engine_errors
    def on_correct(self, request: gr.Request) -> dict:
        """Open the selected preview image in the annotator with its detections as grey
        suggestion boxes: relabel one to "NOT class" to make a false positive a negative,
        draw a box for a missed object."""
        s = self.session(request)
        with s.lock:
            p = s.project
            item = self.studio.preview.selected_item(s)
            found = next((i for i, e in enumerate(p.examples) if e.path == item.path
                          or (e.content_hash and e.content_hash == item.content_hash)), None)
            if found is None:
                p.examples.append(ImageItem(item.path, item.name, item.size, content_hash=None,
                                            file=item.file, file_hash=item.file_hash))
                found = len(p.examples) - 1
            example = p.examples[found]
            p.current = found
            real = [b for b in example.boxes if L.parse_box(b, p.classes).kind != "suggestion"]
            result = s.results.get(item.path)
            suggestions = []
            taken = [(b["xmin"], b["ymin"], b["xmax"], b["ymax"]) for b in real]
            if result is not None:  # detections come best first
                for xyxy, cid in zip(result.xyxy.tolist(), result.class_id.tolist(), strict=True):
                    if any(L.iou_xyxy(xyxy, t) > SUGGESTION_OVERLAP for t in taken):
                        continue  # already an example there
                    suggestions.append(L.annotator_box(
                        xyxy, result.class_names[cid], L.SUGGESTION_COLOR))
                    if len(suggestions) == MAX_SUGGESTIONS:
                        break
            example.boxes = suggestions + real
            gr.Info(f"{item.name}: {len(suggestions)} detections as grey boxes. Relabel one "
                    "'NOT …' to make it a negative; draw what was missed.")
            out = examples_updates(self.c, p)
            out[self.c.annotator] = gr.update(value=annotator_value(p))
            out[self.c.status] = status_text(s)
            return out
