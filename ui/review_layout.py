"""The review part of the studio page: the review annotator and its actions, the quality meter
and the dataset export (laid out by `build_review_panel`, wired by `wire_review`; called from
`ui.layout.build_demo`)."""

from __future__ import annotations

from typing import Any

import gradio as gr
from gradio_image_annotation import image_annotator

from owl_core.project.dataset_export import DATASET_FORMATS
from ui import image_list as IL
from ui.annotator_scripts import install_annotator_scripts
from ui.handlers.meter import METER_HEADERS

#: The meter's columns share its width (class, P, R, F1, AP@50, TP, FP, FN): at 1280 px each
#: gets what its numbers need and FN is not cut off.
METER_WIDTHS = ["20%", "12%", "12%", "12%", "14%", "10%", "10%", "10%"]

REVIEW_HELP = (
    "Grey boxes are the model's detections, not labels yet. Click a box to select it. "
    "**Accept** it: **E** (or double-click), then **Enter** (or OK) on the class shown; pick "
    "another class to **relabel** it. **Reject** it: **Del**. **Draw** a missed object with "
    "**C** (keys **1**-**9** pick a class in the dialog; **D** selects again). "
    "Coloured boxes are this image's labels (saved with the project). Keys: **[** / **]** "
    "previous / next image; **Ctrl+Z** / **Ctrl+Shift+Z** undo / redo."
)

#: Keyboard shortcuts of the review panel ("[" / "]": previous / next image), installed once
#: on page load; keys typed into a text field are left alone (a focused slider, checkbox, radio
#: or button is not one: Ctrl+Z must still undo after the confidence slider was moved).
REVIEW_KEYS_JS = """() => {
  if (window.__owlReviewKeys) return [];
  window.__owlReviewKeys = true;
  const TEXT = /^(text|search|email|url|tel|password|number|date|datetime-local|month|week|time)$/;
  // Ctrl+Z acts on the annotator used last
  document.addEventListener('pointerdown', (e) => {
    const t = e.target;
    if (t && t.closest) {
      if (t.closest('#review-annotator')) window.__owlSurface = 'review';
      else if (t.closest('#annotator')) window.__owlSurface = 'examples';
    }
  }, true);
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    if (t && ((t.tagName === 'INPUT' && TEXT.test(t.type)) || t.tagName === 'TEXTAREA' ||
              t.isContentEditable)) return;
    let id = null;
    if ((e.ctrlKey || e.metaKey) && !e.altKey && (e.key === 'z' || e.key === 'Z')) {
      id = (e.shiftKey ? 'redo-' : 'undo-') + (window.__owlSurface || 'examples');
    } else if (!e.ctrlKey && !e.metaKey && !e.altKey) {
      id = e.key === '[' ? 'review-prev' : e.key === ']' ? 'review-next' : null;
    }
    if (!id) return;
    const b = document.getElementById(id);
    if (b) { e.preventDefault(); e.stopPropagation(); b.click(); }
  }, true);
  return [];
}"""


def build_example_history(c: Any) -> None:
    """Undo / redo buttons of the example annotator (Ctrl+Z / Ctrl+Shift+Z)."""
    with gr.Row():
        c.undo_examples = gr.Button("↶ Undo", size="sm", min_width=70, scale=0,
                                    elem_id="undo-examples")
        c.redo_examples = gr.Button("↷ Redo", size="sm", min_width=70, scale=0,
                                    elem_id="redo-examples")


def build_review_panel(c: Any) -> None:
    """The "3 · Review" row, the quality meter and the dataset export (inside the Studio tab)."""
    gr.Markdown("### 3 · Review: detections become labels")
    with gr.Accordion("Images: counts and review status (filter, sort, click to review)",
                      open=True):
        with gr.Row(equal_height=True):
            c.list_filter = gr.Dropdown(IL.filter_choices([]), value="all", label="Show",
                                        scale=1, elem_id="list-filter")
            c.list_sort = gr.Dropdown([(w, v) for v, w in IL.SORTS.items()], value="list",
                                      label="Sort by", scale=1, elem_id="list-sort")
            c.list_note = gr.Markdown("", elem_id="list-note")
        c.image_list = gr.Dataframe(headers=IL.headers([]), interactive=False,
                                    max_height=260, elem_id="image-list")
    with gr.Row():
        with gr.Column(scale=3):
            c.review_annotator = image_annotator(
                None, label="Review: grey = detection, coloured = label",
                label_list=[], label_colors=[], boxes_alpha=0.12, box_min_size=6,
                handle_size=7, box_thickness=2, box_selected_thickness=3,
                image_type="pil", sources=[], show_clear_button=False,
                show_remove_button=False, show_download_button=False,
                elem_id="review-annotator")
            with gr.Row():
                c.undo_review = gr.Button("↶ Undo", size="sm", min_width=70, scale=0,
                                          elem_id="undo-review")
                c.redo_review = gr.Button("↷ Redo", size="sm", min_width=70, scale=0,
                                          elem_id="redo-review")
                gr.Markdown(REVIEW_HELP, elem_id="review-help")
        with gr.Column(scale=2):
            with gr.Row(equal_height=True):
                c.review_prev = gr.Button("◀ Previous", size="sm", min_width=80, scale=0,
                                          elem_id="review-prev")
                c.review_image = gr.Dropdown([], label="Image to review", scale=3,
                                             allow_custom_value=False, elem_id="review-image")
                c.review_next = gr.Button("Next ▶", size="sm", min_width=80, scale=0,
                                          elem_id="review-next")
            c.review_info = gr.Markdown("", elem_id="review-info")
            c.review_status = gr.Radio([("not reviewed", "not_reviewed"),
                                        ("in review", "in_review"), ("done", "done")],
                                       value="not_reviewed", label="Review status",
                                       elem_id="review-status")
            with gr.Row():
                c.review_accept = gr.Button("Accept all grey boxes on this image", size="sm",
                                            elem_id="review-accept")
                c.review_done = gr.Button("✓ Done, next image", size="sm", variant="primary",
                                          elem_id="review-done")
            with gr.Row():
                c.review_to_negatives = gr.Button("0 rejected → negative examples", size="sm",
                                                  elem_id="review-to-negatives")
                c.review_to_positives = gr.Button("0 labels → positive examples", size="sm",
                                                  elem_id="review-to-positives")
            c.review_accept_all = gr.Button(
                "Accept detections on every image not reviewed yet (marks them done)",
                size="sm", elem_id="review-accept-all")
            with gr.Accordion("Quality meter: the prompt on the reviewed images", open=True):
                c.meter_md = gr.Markdown("", elem_id="meter-info")
                c.meter_table = gr.Dataframe(headers=METER_HEADERS, interactive=False,
                                             column_widths=METER_WIDTHS,
                                             elem_id="meter-table")
                # static (never an output of the meter): a click must not land on a button
                # that a meter update (e.g. the slider's release when focus leaves its number
                # field, at that very mouse-down) is re-rendering
                c.apply_suggested = gr.Button("Apply suggested confidence", size="sm",
                                              elem_id="apply-suggested")
            with gr.Accordion("Export dataset (COCO / YOLO / Pascal VOC)", open=True):
                with gr.Row(equal_height=True):
                    c.dataset_format = gr.Radio(list(DATASET_FORMATS), value="coco",
                                                label="Format", elem_id="dataset-format")
                    c.dataset_unreviewed = gr.Checkbox(
                        False, label="Also images not reviewed yet, with their current "
                                     "detections", elem_id="dataset-unreviewed")
                c.export_dataset = gr.Button("Export dataset", size="md",
                                             elem_id="export-dataset")
                c.dataset_file = gr.File(label="Dataset (zip)", interactive=False,
                                         elem_id="dataset-file")


def wire_review(demo: gr.Blocks, studio: Any, c: Any, settings: list, refresh: dict,
                downloads: dict, embed: dict, counts: dict) -> None:
    """Events of the review panel. Review changes update the meter; the preview's changes
    (new detections, a new prompt) update the meter and, for an image nobody touched yet, the
    review annotator."""
    quiet = {"api_visibility": "private", "show_progress": "hidden"}
    r, m = studio.review, studio.meter
    # the "→ examples" buttons say how many boxes they add
    counted = [c.review_info, c.review_to_negatives, c.review_to_positives]
    review_out = [c.review_annotator, c.review_image, c.review_status, *counted]
    meter = dict(fn=m.on_meter, inputs=settings,
                 outputs=[c.meter_table, c.meter_md],
                 trigger_mode="always_last", **quiet)
    examples_out = [c.examples_gallery, c.annotator, c.status]
    listing = dict(fn=r.on_list, inputs=[c.list_filter, c.list_sort],
                   outputs=[c.image_list, c.list_filter, c.list_note],
                   trigger_mode="always_last", **quiet)

    def after_review(dep: Any) -> Any:
        """The meter and the image list follow every review change."""
        return dep.then(**meter).then(**listing)

    demo.load(None, None, None, js=REVIEW_KEYS_JS, **quiet)
    install_annotator_scripts(demo, c.annotator, c.review_annotator)  # keys 1-9, aspect
    after_review(c.review_image.input(r.on_pick, c.review_image, review_out, **quiet))
    c.review_prev.click(r.on_prev, c.review_image, review_out, **quiet)
    c.review_next.click(r.on_next, c.review_image, review_out, **quiet)
    c.preview.select(r.on_preview_pick, None, review_out, **quiet)
    c.image_list.select(r.on_list_select, None, review_out, **quiet)
    for dropdown in (c.list_filter, c.list_sort):
        dropdown.input(**listing)
    after_review(c.review_annotator.change(r.on_edited, c.review_annotator,
                                           [c.review_image, c.review_status, *counted],
                                           preprocess=False, trigger_mode="always_last",
                                           **quiet))
    after_review(c.review_status.input(r.on_status, c.review_status,
                                       [c.review_image, c.review_status, *counted],
                                       **quiet))
    after_review(c.review_done.click(r.on_done_next, None, review_out, **quiet))
    after_review(c.review_accept.click(r.on_accept_image, None, review_out, **quiet))
    after_review(c.review_accept_all.click(r.on_accept_all, None, review_out + [c.status],
                                           **quiet))
    for button, negatives in ((c.review_to_negatives, True), (c.review_to_positives, False)):
        fn = r.on_to_negatives if negatives else r.on_to_positives
        # the image joins the examples: embedded first, then everything that shows the prompt
        # (diagnostics, exemplar counts, downloads, the meter) follows the new exemplars
        button.click(fn, None, examples_out, **quiet).then(**refresh).then(**embed).then(
            **refresh).then(**downloads).then(**counts).then(**meter)
    # new detections (prompt, settings, images): keep the review, meter and list in step
    after_review(c.preview.change(r.on_sync, None, review_out, **quiet))
    c.confidence.release(**meter)
    c.apply_suggested.click(m.on_apply_suggested, None, c.confidence, **quiet).then(
        **refresh).then(**downloads).then(**counts).then(**meter)
    h = studio.history
    c.annotator.change(h.on_examples_changed, c.annotator, None, preprocess=False,
                       trigger_mode="always_last", **quiet)
    c.review_annotator.change(h.on_review_changed, c.review_annotator, None,
                              preprocess=False, trigger_mode="always_last", **quiet)
    # undo / redo read the annotator's value at the click (see ui.handlers.history)
    for button, fn, target in ((c.undo_examples, h.on_undo_examples, c.annotator),
                               (c.redo_examples, h.on_redo_examples, c.annotator),
                               (c.undo_review, h.on_undo_review, c.review_annotator),
                               (c.redo_review, h.on_redo_review, c.review_annotator)):
        button.click(fn, target, target, preprocess=False, **quiet)
    c.export_dataset.click(m.on_export_dataset, [c.dataset_format, c.dataset_unreviewed],
                           c.dataset_file, api_visibility="private")
