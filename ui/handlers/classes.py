"""Classes: pick, add, rename, remove. A box carries its class in its label, so renaming or
removing a class rewrites the boxes too; the preview refresh is chained by the layout."""

from __future__ import annotations

import gradio as gr

from ui import labels as L
from ui.escape import error, info
from ui.handlers.common import Area, engine_errors
from ui.handlers.views import class_updates, label_list_updates, recolor
from ui.session import NEW_PROJECT_CLASSES, Project


def drop_unused_default_classes(p: Project) -> bool:
    """Remove the new-project placeholder class(es) (`object`) once the person has named a
    real class, unless a box still uses one: a placeholder nobody draws with only clutters
    the class list and the label dialog. Recolours the boxes when one went; True if so."""
    if not any(c not in NEW_PROJECT_CLASSES for c in p.classes):
        return False
    used = {L.parse_box(b, p.classes).cls for item in p.examples + p.queries for b in item.boxes}
    unused = [c for c in p.classes if c in NEW_PROJECT_CLASSES and c not in used]
    for name in unused:
        p.classes.remove(name)
    if not unused:
        return False
    if p.active_class not in p.classes:
        p.active_class = p.classes[0]
    recolor(p)
    return True


class ClassHandlers(Area):
    """The class list and the boxes that use it."""

    def on_class_pick(self, value: str | None, request: gr.Request) -> dict:
        """The class a box gets while its label dialog is still open, and the one that
        dialog opens on: first in both annotators' label lists."""
        s = self.session(request)
        with s.lock:
            if value not in s.project.classes:
                return {}
            s.project.active_class = value
            return label_list_updates(self.c, s.project)

    @engine_errors
    def on_add_class(self, name: str, request: gr.Request) -> dict:
        s = self.session(request)
        with s.lock:
            p = s.project
            try:
                name = L.validate_class_name(name, p.classes)
            except ValueError as exc:
                raise error(str(exc)) from None
            p.classes.append(name)
            p.active_class = name
            dropped = drop_unused_default_classes(p)
            out = class_updates(self.c, p, with_value=dropped)
            out[self.c.class_name] = ""
            return out

    @engine_errors
    def on_rename_class(self, selected: str | None, name: str, request: gr.Request) -> dict:
        """Rename the picked class; its boxes (positive and negative) follow."""
        s = self.session(request)
        with s.lock:
            p = s.project
            if selected not in p.classes:
                raise error("Pick the class to rename in the Class list first.")
            others = [c for c in p.classes if c != selected]
            try:
                name = L.validate_class_name(name, others)
            except ValueError as exc:
                raise error(str(exc)) from None
            p.classes[p.classes.index(selected)] = name
            for item in p.examples:
                for box in item.boxes:
                    parsed = L.parse_box(box, p.classes)
                    if parsed.cls != selected:
                        continue
                    box["label"] = L.negative_label(name) if parsed.kind == "negative" else name
            if p.active_class == selected:
                p.active_class = name
            drop_unused_default_classes(p)  # recolours; the annotator value below shows it
            out = class_updates(self.c, p, with_value=True)
            out[self.c.class_name] = ""
            return out

    @engine_errors
    def on_remove_class(self, selected: str | None, request: gr.Request) -> dict:
        """Remove the picked class and every box of it."""
        s = self.session(request)
        with s.lock:
            p = s.project
            if selected not in p.classes:
                raise error("Pick the class to remove in the Class list first.")
            removed = 0
            for item in p.examples:
                keep = [b for b in item.boxes if L.parse_box(b, p.classes).cls != selected]
                removed += len(item.boxes) - len(keep)
                item.boxes = keep
            p.classes.remove(selected)
            if p.active_class == selected:
                p.active_class = p.classes[0] if p.classes else ""
            recolor(p)
            if removed:
                info(f"Removed class {selected!r} and its {removed} box(es).")
            return class_updates(self.c, p, with_value=True)
