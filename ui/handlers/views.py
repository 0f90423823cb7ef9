"""Component values built from a session's state: legend, annotator value, galleries, the
status line. Pure functions of the project (plus the page's components to address), so
every handler shows the same state the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gradio as gr

from owl_core.project.model import ImageRecord
from ui import labels as L
from ui.escape import html_text, md_text
from ui.session import Session


def legend_html(classes: Sequence[str]) -> str:
    """Colour chips for each class and its negative; the first nine show their number key."""
    if not classes:
        return "<div class='legend'><i>No classes yet: add one.</i></div>"
    chips = []
    for i, name in enumerate(classes):
        color = L.class_color(i)
        safe = html_text(name)
        # the number is the key that picks this class in the label dialog (`ui.annotator_scripts`)
        key = f"<span class='key'>{i + 1}</span> " if i < 9 else ""
        chips.append(f"<span class='chip' data-class='{safe}' style='background:{color}'>"
                     f"{key}{safe}</span>"
                     f"<span class='chip neg' style='background:{L.NEGATIVE_COLOR}'>"
                     f"{L.NEGATIVE_PREFIX}{safe}</span>")
    return "<div class='legend'>" + "".join(chips) + "</div>"


def example_boxes(s: Session, record: ImageRecord) -> list[dict]:
    """An example's prompts as annotator boxes (newest first), each in its label's colour."""
    return L.prompts_to_annotator(record.prompts, s.core.classes)


def annotator_value(s: Session) -> dict | None:
    """The current example image with its boxes, each in the colour its label means."""
    record = s.current_example()
    if record is None:
        return None
    return {"image": s.path(record), "boxes": example_boxes(s, record)}


def gallery(s: Session, records: Sequence[ImageRecord],
            boxes: bool = False) -> list[tuple[str, str]]:
    """(path, caption) per image; with `boxes`, the caption counts the drawn boxes."""
    out = []
    for record in records:
        caption = record.name
        if boxes:
            n = len(record.prompts)
            caption += f" · {n} box{'es' if n != 1 else ''}"
        out.append((s.path(record), caption))
    return out


def class_updates(c: Any, s: Session, *, with_value: bool = False) -> dict:
    """Class dropdown, colour legend and both annotators' label lists (and the example
    annotator's value)."""
    out = label_list_updates(c, s)
    if with_value:
        out[c.annotator]["value"] = annotator_value(s)
    classes = s.core.classes
    out[c.class_pick] = gr.update(choices=classes, value=s.active_class or None)
    out[c.legend] = legend_html(classes)
    return out


def label_list_updates(c: Any, s: Session) -> dict:
    """Both annotators' label lists, the class picked in the page first: their label dialog
    opens a new box on the list's first entry (`ui.labels.label_choices`)."""
    classes, active = s.core.classes, s.active_class
    labels, colors = L.label_choices(classes, active)
    review_labels, review_colors = L.label_choices(classes, active, negatives=False)
    return {c.annotator: gr.update(label_list=labels, label_colors=colors),
            c.review_annotator: gr.update(label_list=review_labels, label_colors=review_colors)}


def examples_updates(c: Any, s: Session) -> dict:
    """The example gallery, with the current example selected."""
    examples = s.examples()
    current = s.current_example()
    index = next((i for i, r in enumerate(examples) if current is not None and r.id == current.id),
                 None)
    return {c.examples_gallery: gr.update(value=gallery(s, examples, boxes=True),
                                          selected_index=index)}


def status_text(s: Session, note: str = "") -> str:
    """One line about the images; empty while some wait for the embedding step (its
    progress bar then has the line to itself). A project that could not be saved says so."""
    examples, queries = s.examples(), s.queries()
    pending = sum(1 for r in examples + queries if s.embedded(r) is None)
    warning = f"⚠ not saved: {md_text(s.save_error)}" if s.save_error else ""
    if pending and not note:
        return warning
    parts = [f"{len(examples)} example image(s), {len(queries)} query image(s)"]
    parts.append(f"{pending} waiting to be embedded" if pending else "all embedded")
    if note:
        parts.append(note)
    if warning:
        parts.append(warning)
    return " · ".join(parts)


#: Projects listed in the project picker at most (most recently saved first).
MAX_LISTED_PROJECTS = 500


def project_choices(store: Any, owner: str | None = None,
                    s: Session | None = None) -> list[tuple[str, str]]:
    """(label, project id) of the saved projects (`owner`'s only, with logins), most recent
    first; the tab's own project as it is now (name and image count from memory: its last
    change may not be saved yet)."""
    out = []
    for info in store.list(owner)[:MAX_LISTED_PROJECTS]:
        name, images = info.name, info.images
        if s is not None and s.core is not None and info.id == s.project_id:
            name, images = s.core.name, len(s.core.images)
        out.append((f"{name} · {images} image{'s' if images != 1 else ''} · {info.id}",
                    info.id))
    return out


def project_updates(c: Any, s: Session, store: Any) -> dict:
    """Every component that shows the tab's project, after it opened another one: classes,
    examples and annotator, name, sliders, project picker, the id kept in the browser."""
    out = class_updates(c, s, with_value=True)
    out.update(examples_updates(c, s))
    out[c.project_name] = s.core.name
    params = s.settings
    out[c.confidence] = params.confidence
    out[c.iou] = params.iou_threshold
    out[c.max_detections] = params.max_detections
    out[c.match_threshold] = params.match_threshold
    out[c.score_mode] = params.score_mode
    out[c.imported_md] = imported_text(s)
    out[c.project_state] = s.project_id
    out[c.project_list] = gr.update(choices=project_choices(store, s.owner, s),
                                   value=s.project_id)
    out[c.status] = status_text(s)
    return out


def imported_text(s: Session) -> str:
    """What the imported `.pt` files contribute, per class (and which did not load)."""
    failed = ("\n\n⚠ Not loaded (still in the project; **Forget imported** drops them): "
              + md_text("; ".join(s.import_errors))) if s.import_errors else ""
    if s.core is None or not s.core.imported or s.predictor is None:
        return "No `.pt` imported." + failed
    ex = s.predictor.imported_exemplars
    if len(ex.class_names) == 0:
        return "No `.pt` imported." + failed
    ids, neg = ex.class_ids.cpu().numpy(), ex.negative.cpu().numpy()
    parts = []
    for cid, name in enumerate(ex.class_names):
        pos_n = int(((ids == cid) & ~neg).sum())
        neg_n = int(((ids == cid) & neg).sum())
        if pos_n or neg_n:
            parts.append(f"**{md_text(name)}**: {pos_n} positive, {neg_n} negative")
    names = md_text(", ".join(entry.name for entry in s.core.imported))
    return (f"Imported from {names}: " + "; ".join(parts)
            + ". These exemplars stay active next to the boxes you draw (saved with the "
            "project)." + failed)
