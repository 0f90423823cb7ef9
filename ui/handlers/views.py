"""Component values built from a session's state: legend, annotator value, galleries, the
status line. Pure functions of the project (plus the page's components to address), so
every handler shows the same state the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gradio as gr

from ui import labels as L
from ui.escape import html_text, md_text
from ui.session import ImageItem, Project, Session


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


def annotator_value(p: Project) -> dict | None:
    """The current example image with its boxes, each in the colour its label means."""
    item = p.current_example
    if item is None:
        return None
    boxes = []
    for box in item.boxes:
        color = L.normalise_color(box.get("color")) or L.hex_to_rgb(
            L.label_color(L.parse_label(box.get("label"), p.classes), p.classes))
        boxes.append({"xmin": box["xmin"], "ymin": box["ymin"], "xmax": box["xmax"],
                      "ymax": box["ymax"], "label": box.get("label", ""), "color": color})
    return {"image": item.path, "boxes": boxes}


def gallery(items: Sequence[ImageItem], boxes: bool = False) -> list[tuple[str, str]]:
    """(path, caption) per image; with `boxes`, the caption counts the drawn boxes."""
    out = []
    for item in items:
        caption = item.name
        if boxes:
            n = sum(1 for b in item.boxes if L.parse_box(b, []).kind != "suggestion")
            caption += f" · {n} box{'es' if n != 1 else ''}"
        out.append((item.path, caption))
    return out


def class_updates(c: Any, p: Project, *, with_value: bool = False) -> dict:
    """Class dropdown, colour legend and both annotators' label lists (and the example
    annotator's value)."""
    out = label_list_updates(c, p)
    if with_value:
        out[c.annotator]["value"] = annotator_value(p)
    out[c.class_pick] = gr.update(
        choices=p.classes, value=p.active_class if p.active_class in p.classes else None)
    out[c.legend] = legend_html(p.classes)
    return out


def label_list_updates(c: Any, p: Project) -> dict:
    """Both annotators' label lists, the class picked in the page first: their label dialog
    opens a new box on the list's first entry (`ui.labels.label_choices`)."""
    labels, colors = L.label_choices(p.classes, p.active_class)
    review_labels, review_colors = L.label_choices(p.classes, p.active_class, negatives=False)
    return {c.annotator: gr.update(label_list=labels, label_colors=colors),
            c.review_annotator: gr.update(label_list=review_labels, label_colors=review_colors)}


def examples_updates(c: Any, p: Project) -> dict:
    """The example gallery, with the current example selected."""
    return {c.examples_gallery: gr.update(value=gallery(p.examples, boxes=True),
                                          selected_index=p.current if p.current >= 0 else None)}


def recolor(p: Project) -> None:
    """Give every box the colour its label means (after classes changed)."""
    for item in p.examples:
        for box in item.boxes:
            parsed = L.parse_box(box, p.classes)
            if parsed.kind != "unlabeled":
                box["color"] = L.hex_to_rgb(L.label_color(parsed, p.classes))


def status_text(s: Session, note: str = "") -> str:
    """One line about the images; empty while some wait for the embedding step (its
    progress bar then has the line to itself). A project that could not be saved says so."""
    p = s.project
    pending = sum(1 for i in p.examples + p.queries if i.content_hash is None)
    warning = f"⚠ not saved: {md_text(s.save_error)}" if s.save_error else ""
    if pending and not note:
        return warning
    parts = [f"{len(p.examples)} example image(s), {len(p.queries)} query image(s)"]
    parts.append(f"{pending} waiting to be embedded" if pending else "all embedded")
    if note:
        parts.append(note)
    if warning:
        parts.append(warning)
    return " · ".join(parts)


#: Projects listed in the project picker at most (most recently saved first).
MAX_LISTED_PROJECTS = 500


def project_choices(store: Any) -> list[tuple[str, str]]:
    """(label, project id) of the saved projects, most recent first."""
    return [(f"{info.name} · {info.images} image{'s' if info.images != 1 else ''} · {info.id}",
             info.id) for info in store.list()[:MAX_LISTED_PROJECTS]]


def project_updates(c: Any, s: Session, store: Any) -> dict:
    """Every component that shows the tab's project, after it opened another one: classes,
    examples and annotator, name, sliders, project picker, the id kept in the browser."""
    p = s.project
    out = class_updates(c, p, with_value=True)
    out.update(examples_updates(c, p))
    out[c.project_name] = p.name
    out[c.confidence] = s.settings.confidence
    out[c.iou] = s.settings.iou_threshold
    out[c.max_detections] = s.settings.max_detections
    if s.settings.match_threshold is not None:
        out[c.match_threshold] = s.settings.match_threshold
    out[c.score_mode] = s.settings.score_mode
    out[c.imported_md] = imported_text(s)
    out[c.project_state] = s.project_id
    out[c.project_list] = gr.update(choices=project_choices(store), value=s.project_id)
    out[c.status] = status_text(s)
    return out


def imported_text(s: Session) -> str:
    """What the imported `.pt` files contribute, per class."""
    if not s.imported or s.predictor is None:
        return "No `.pt` imported."
    ex = s.predictor.imported_exemplars
    if len(ex.class_names) == 0:
        return "No `.pt` imported."
    ids, neg = ex.class_ids.cpu().numpy(), ex.negative.cpu().numpy()
    parts = []
    for cid, name in enumerate(ex.class_names):
        pos_n = int(((ids == cid) & ~neg).sum())
        neg_n = int(((ids == cid) & neg).sum())
        if pos_n or neg_n:
            parts.append(f"**{md_text(name)}**: {pos_n} positive, {neg_n} negative")
    return (f"Imported from {md_text(', '.join(s.imported))}: " + "; ".join(parts)
            + ". These exemplars stay active next to the boxes you draw.")
