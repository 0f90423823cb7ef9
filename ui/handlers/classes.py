"""Classes: pick, add, rename, remove. Every class edit goes through the project model
(`owl_core.project.model.Project.rename_class` / `remove_class`), so the prompt boxes AND the
reviewed labels of the class follow; removing asks first, saying what goes. The preview
refresh is chained by the layout."""

from __future__ import annotations

import gradio as gr

from ui import labels as L
from ui.escape import error, info, warning
from ui.handlers.common import Area, engine_errors
from ui.handlers.views import class_updates, label_list_updates
from ui.session import NEW_PROJECT_CLASSES, Session

REMOVE_LABEL = "Remove"


def drop_unused_default_classes(s: Session) -> bool:
    """Remove the new-project placeholder class(es) (`object`) once the person has named a
    real class, unless a box or label still uses one: a placeholder nobody draws with only
    clutters the class list and the label dialog. True if one went."""
    core = s.core
    if not any(c not in NEW_PROJECT_CLASSES for c in core.classes):
        return False
    unused = [c for c in core.classes if c in NEW_PROJECT_CLASSES
              and core.class_usage(c)[2] == 0]
    for name in unused:
        core.remove_class(name)
    return bool(unused)


def removal_text(name: str, usage: tuple[int, int, int]) -> str:
    """What removing class `name` deletes, for the question asked before it is removed."""
    prompts, labels, images = usage
    if not prompts and not labels:
        return f"Class {name!r} has no boxes and no labels."
    return (f"Removing class {name!r} deletes {prompts} example box{'es' if prompts != 1 else ''}"
            f" and {labels} reviewed label{'s' if labels != 1 else ''} on {images} "
            f"image{'s' if images != 1 else ''}.")


class ClassHandlers(Area):
    """The class list and the boxes and labels that use it."""

    def on_class_pick(self, value: str | None, request: gr.Request) -> dict:
        """The class a box gets while its label dialog is still open, and the one that
        dialog opens on: first in both annotators' label lists."""
        s = self.session(request)
        with s.lock:
            if value not in s.core.classes:
                return {}
            s.view.active_class = value
            out = label_list_updates(self.c, s)
            if s.view.pending_removal is not None:  # another class picked: nothing removed
                s.view.pending_removal = None
                out[self.c.remove_class] = gr.update(value=REMOVE_LABEL)
            return out

    @engine_errors
    def on_add_class(self, name: str, request: gr.Request) -> dict:
        s = self.session(request)
        with s.lock:
            try:
                name = L.validate_class_name(name, s.core.classes)
            except ValueError as exc:
                raise error(str(exc)) from None
            s.view.active_class = s.core.add_class(name)
            dropped = drop_unused_default_classes(s)
            out = class_updates(self.c, s, with_value=dropped)
            out[self.c.class_name] = ""
            return out

    @engine_errors
    def on_rename_class(self, selected: str | None, name: str, request: gr.Request) -> dict:
        """Rename the picked class; its boxes (positive and negative) and reviewed labels
        follow."""
        s = self.session(request)
        with s.lock:
            if selected not in s.core.classes:
                raise error("Pick the class to rename in the Class list first.")
            others = [c for c in s.core.classes if c != selected]
            try:
                name = L.validate_class_name(name, others)
            except ValueError as exc:
                raise error(str(exc)) from None
            picked = s.active_class == selected
            name = s.core.rename_class(selected, name)
            if picked:
                s.view.active_class = name
            drop_unused_default_classes(s)
            out = class_updates(self.c, s, with_value=True)
            out[self.c.class_name] = ""
            return out

    @engine_errors
    def on_remove_class(self, selected: str | None, request: gr.Request) -> dict:
        """Remove the picked class with every box and label of it. The first click says
        what goes and asks for a second click (the button then reads "Confirm remove");
        a class with nothing of it goes at once."""
        s = self.session(request)
        with s.lock:
            if selected not in s.core.classes:
                raise error("Pick the class to remove in the Class list first.")
            usage = s.core.class_usage(selected)
            if any(usage[:2]) and s.view.pending_removal != selected:
                s.view.pending_removal = selected
                warning(removal_text(selected, usage) + " Click Confirm remove to "
                           "remove them, or pick another class to keep them.")
                return {self.c.remove_class: gr.update(value="Confirm remove")}
            s.view.pending_removal = None
            s.core.remove_class(selected)
            if any(usage[:2]):
                info(f"Removed class {selected!r}: {usage[0]} example box(es) and "
                        f"{usage[1]} reviewed label(s).")
            out = class_updates(self.c, s, with_value=True)
            out[self.c.remove_class] = gr.update(value=REMOVE_LABEL)
            return out
