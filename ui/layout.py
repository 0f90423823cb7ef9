"""The studio page: `build_demo` lays out the components and wires their events to `Studio`.

Event rules used below:
* The annotator has only ``.change`` (no ``.input``); its handler never writes the annotator's
  value back except when a new class was typed into the label dialog, so there is no loop.
  It runs with ``preprocess=False`` to get the image's file name (which example it is) without
  decoding the picture on every edit, and ``trigger_mode="always_last"`` so a burst of edits
  ends with one refresh of the latest boxes.
* Sliders use ``.input``/``.release`` (user actions only), never ``.change`` (which also fires
  when a handler sets the slider, e.g. on import).
* Slow work (embedding) runs in its own concurrency group (one at a time: the vision tower
  uses every core) with a progress bar on the status line only. The other events have their
  own groups and the embedding step holds the session lock only between batches, so the
  annotator and the preview answer while it runs; the preview shows images that are not
  embedded yet undecorated and fills them in when the embedding step finishes.
* Every refresh of the preview is followed by its own event that rewrites the `.pt`
  downloads, so the preview never waits for those file writes.
* Only the three documented endpoints (infer, infer_pt, export) are visible to API clients.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from gradio_image_annotation import image_annotator
from starlette.middleware import Middleware

from owl_core import limits
from owl_core.engine.scoring import SCORE_MODES
from owl_core.params import CONFIDENCE_STEP, DEFAULT_MATCH_THRESHOLD
from owl_core.rest.body_limit import BodyLimitMiddleware
from ui import connection
from ui import labels as L
from ui.data_dir import build_data_dir_row, wire_data_dir
from ui.describe_layout import build_combine, build_describe, shown, wire_describe
from ui.file_access import UserFilesMiddleware
from ui.formats import ASSETS_DIR, bundled_images, bundled_projects
from ui.handlers import DIAG_HEADERS, Studio, StudioConfig
from ui.handlers.preview import MATCH_THRESHOLD_RANGE
from ui.preview_view import preview_view
from ui.review_layout import build_example_history, build_review_panel, wire_review

CSS = """
#random-banner {background:#FFF3CD; border:2px solid #F0AD4E; border-radius:8px;
                padding:8px 14px; color:#663C00; font-weight:600}
#random-banner p {margin:0}
.legend {display:flex; flex-wrap:wrap; gap:4px; margin:2px 0 4px 0}
.legend .chip {color:#fff; border-radius:4px; padding:1px 7px; font-size:12px;
               font-weight:600; white-space:nowrap}
.legend .chip .key {background:rgba(255,255,255,.3); border-radius:3px; padding:0 4px;
                    margin-right:2px}
#status {min-height:40px}
/* the first screen (1280x720): title, first step, project bar and the step headings kept
   short, so the example canvas, the preview and the confidence slider fit above the fold */
#title h2 {margin:0}
#first-step-text p, #project-bar-label p {margin:0}
#project-bar-label {flex-grow:0 !important; min-width:max-content !important;
                    align-self:center}
.step-head h3 {margin:0}
.step-head {min-width:max-content !important}
#examples-column, #preview-column, #examples-column .row, #preview-column .row {gap:8px}
#first-step {align-items:center}
#annotator canvas {max-height:520px}
/* the meter and the box diagnostics fit their half-width column at 1280 px: compact cells,
   and a word is never split across lines (their widths leave room for each column's words) */
#meter-table [role=gridcell], #meter-table th, #diag-table [role=gridcell], #diag-table th
  {padding:4px 6px !important; font-size:13px !important}
#meter-table [role=gridcell] *, #meter-table th *, #diag-table [role=gridcell] *,
#diag-table th * {word-break:normal !important; overflow-wrap:normal !important;
                  font-size:13px !important}
#meter-table .cell-wrap, #diag-table .cell-wrap {padding-left:0 !important;
                                                 padding-right:0 !important}
/* the annotators' rotate buttons turned the view while boxes stayed in unrotated image
   pixels (every box landed on the wrong object): removed */
#annotator button[aria-label^='Rotate'], #review-annotator button[aria-label^='Rotate']
  {display:none !important}
"""

HELP = (
    "**Draw**: press **C** (or the box tool) and drag over an object, then pick its class in "
    "the dialog: it opens on the selected class, keys **1**-**9** pick another (the numbers "
    "on the class chips; **Enter** "
    "confirms; the lock keeps that class for the next boxes). "
    f"Pick **{L.NEGATIVE_PREFIX}class** for a negative (\"don't detect things like this\", red). "
    "**D** = move/resize, **Del** = delete the selected box, **E** or double-click = change "
    "its label, **Space** = fit the image. "
    "A box without a class yet counts as the selected class."
)


#: The first screen's one first step (next to the "Load example project" button).
FIRST_STEP = ("**Start here:** load an example project, or upload your own example images (step "
              "1) and draw boxes around what to find.")


def _private(**kwargs: Any) -> dict:
    return {"api_visibility": "private", **kwargs}


def build_demo(model: Any, config: StudioConfig | None = None, *,
               studio: Studio | None = None) -> gr.Blocks:
    """The Gradio app for one shared model.

    Args:
        model: the `OwlModel` every session's `OwlPredictor` uses.
        config: see `StudioConfig`.
        studio: an existing `Studio` (tests pass one with a custom predictor factory).

    Returns:
        The Blocks app (with ``demo.studio`` set); launch it with `launch_kwargs()`.
    """
    config = config or StudioConfig()
    studio = studio or Studio(model, config)
    c = studio.c
    projects = bundled_projects()
    samples = bundled_images()
    start_labels, start_colors = L.label_choices(["object"])

    with gr.Blocks(title="OWLv2 few-shot studio", fill_width=True) as demo:
        if config.random_preset:
            gr.Markdown(
                f"⚠ **Random weights ({config.random_preset})**: this model was never trained, "
                "so its detections are meaningless. Use it to try the interface; start with "
                "`--model <hub id or folder>` for real detections.",
                elem_id="random-banner")
        # the title and the one first step (the only primary button above the fold)
        with gr.Row(equal_height=False, elem_id="first-step"):
            gr.Markdown("## OWLv2 few-shot studio\n" + FIRST_STEP, elem_id="first-step-text")
            c.project_choice = gr.Dropdown(list(projects), label="Example project",
                                           value=next(iter(projects), None),
                                           show_label=False, container=False, scale=0,
                                           min_width=130, elem_id="project-choice")
            c.load_project = gr.Button("Load example project", variant="primary",
                                       scale=0, min_width=220, size="md",
                                       elem_id="load-example-project")
        c.project_state = gr.BrowserState(None, storage_key="owl-studio-project",
                                          secret=studio.browser_secret)
        with gr.Tabs():
            with gr.Tab("Studio", id="studio"):
                # one line: the tab's project, saved as the person works
                with gr.Row(equal_height=True, elem_id="project-bar"):
                    gr.Markdown("**Project** (saved as you work)", elem_id="project-bar-label")
                    c.project_list = gr.Dropdown([], label="Project", show_label=False,
                                                 container=False, scale=3,
                                                 elem_id="project-list",
                                                 allow_custom_value=False)
                    c.open_project = gr.Button("Open", scale=0, min_width=60, size="sm",
                                               elem_id="open-project")
                    c.new_project = gr.Button("New", scale=0, min_width=60, size="sm",
                                              elem_id="new-project")
                    c.duplicate_project = gr.Button("Duplicate", scale=0, min_width=80,
                                                    size="sm", elem_id="duplicate-project")
                    c.delete_project = gr.Button("Delete", scale=0, min_width=70, size="sm",
                                                 variant="stop", elem_id="delete-project")
                    c.project_name = gr.Textbox("my-project", label="Project name",
                                                show_label=False, container=False, scale=2,
                                                placeholder="project name",
                                                elem_id="project-name")
                    c.download_zip = gr.Button("⬇ .zip", scale=0, min_width=70, size="sm",
                                               elem_id="download-zip")
                    c.open_zip = gr.UploadButton("Open .zip", file_types=[".zip"], scale=0,
                                                 min_width=80, size="sm", elem_id="open-zip")
                c.project_zip = gr.File(label="Project (zip)", interactive=False, visible=False,
                                        elem_id="project-zip")
                # closed by default: they are not the first step
                with gr.Row(equal_height=False, elem_id="extras"):
                    with gr.Column(scale=1, min_width=300):
                        with gr.Accordion("Sample images: add one as an example or a query image",
                                          open=False, elem_id="samples-accordion"):
                            c.samples = gr.Gallery([(str(p), p.name) for p in samples],
                                                   label="Sample images: click one, then add it",
                                                   columns=3, height=270,
                                                   allow_preview=False, object_fit="contain",
                                                   fit_columns=False, interactive=False,
                                                   elem_id="samples")
                            with gr.Row():
                                c.sample_to_examples = gr.Button("Add as example image",
                                                                 size="sm",
                                                                 elem_id="sample-to-examples")
                                c.sample_to_queries = gr.Button("Add as query image", size="sm",
                                                                elem_id="sample-to-queries")
                    with gr.Column(scale=1, min_width=300):
                        with gr.Accordion("Prompt files (.pt): download, import",
                                          open=False, elem_id="pt-accordion"):
                            with gr.Row(equal_height=True):
                                c.download_full = gr.DownloadButton(
                                    "⬇ .pt (full)", interactive=False, size="sm",
                                    elem_id="download-full")
                                c.download_small = gr.DownloadButton(
                                    "⬇ .pt (small)", interactive=False, size="sm",
                                    elem_id="download-small")
                                c.import_pt = gr.UploadButton("Import .pt", file_types=[".pt"],
                                                              size="sm", elem_id="import-pt")
                                c.forget_imported = gr.Button("Forget imported .pt", size="sm",
                                                              elem_id="forget-imported")
                            c.imported_md = gr.Markdown("No `.pt` imported.", elem_id="imported")
                    # outside the accordion: a closed accordion's content is not in the page
                    # until opened, and this line tells that the downloads are ready
                    with gr.Column(scale=1, min_width=300):
                        c.export_info = gr.Markdown("", elem_id="export-info")
                # two columns side by side; below ~760 px they no longer fit their min_width
                # and stack (examples above the preview)
                with gr.Row(elem_id="studio-columns"):
                    with gr.Column(scale=1, min_width=360, elem_id="examples-column"):
                        with gr.Row(equal_height=True):
                            gr.Markdown("### 1 · Examples: what to find",
                                        elem_classes="step-head")
                            c.upload_examples = gr.UploadButton(
                                "Upload example images", file_types=["image"],
                                file_count="multiple", size="sm", elem_id="upload-examples")
                            c.remove_example = gr.Button("Remove this example",
                                                         size="sm", elem_id="remove-example")
                        with gr.Row(equal_height=True, elem_id="class-row"):
                            c.class_pick = gr.Dropdown(["object"], value="object", label="Class",
                                                       show_label=False, container=False,
                                                       scale=2, min_width=100,
                                                       elem_id="class-pick")
                            c.class_name = gr.Textbox(label="Class name", show_label=False,
                                                      container=False, scale=2, min_width=100,
                                                      placeholder="new class name, e.g. coin",
                                                      elem_id="class-name")
                            c.add_class = gr.Button("Add", scale=0, min_width=56,
                                                    size="sm", elem_id="add-class")
                            c.rename_class = gr.Button("Rename", scale=0, min_width=70,
                                                       size="sm", elem_id="rename-class")
                            c.remove_class = gr.Button("Remove", scale=0, min_width=70,
                                                       variant="stop",
                                                       size="sm", elem_id="remove-class")
                        build_describe(c)  # "describe it": phrases of the picked class
                        c.legend = gr.HTML(Studio.legend_html(["object"]), elem_id="legend")
                        c.annotator = image_annotator(
                            None, label="Example image: draw boxes here",
                            label_list=start_labels, label_colors=start_colors,
                            boxes_alpha=0.15, box_min_size=6, handle_size=7,
                            box_thickness=2, box_selected_thickness=3,
                            image_type="pil", sources=["upload"], show_clear_button=False,
                            show_remove_button=True, show_download_button=False,
                            elem_id="annotator")
                        build_example_history(c)
                        c.examples_gallery = gr.Gallery(
                            label="Example images (click one to draw on it)", columns=6, rows=1,
                            height=120, allow_preview=False, object_fit="contain",
                            fit_columns=False,
                            interactive=False, elem_id="examples-gallery")
                        gr.Markdown(HELP, elem_id="draw-help")
                        with gr.Accordion("Box diagnostics: what each box snapped to",
                                          open=True):
                            c.diag_warning = gr.Markdown("No boxes yet.", elem_id="diag-warning")
                            c.diag_table = gr.Dataframe(
                                headers=DIAG_HEADERS,
                                column_widths=["16%", "5%", "11%", "13%", "8%", "22%", "17%",
                                               "8%"],
                                interactive=False, wrap=True, elem_id="diag-table")
                            c.diag_image = gr.Image(
                                label="This example: drawn boxes (white) and the predicted "
                                      "boxes they snapped to", interactive=False, height=300,
                                elem_id="diag-image", format="jpeg")
                    with gr.Column(scale=1, min_width=360, elem_id="preview-column"):
                        with gr.Row(equal_height=True):
                            gr.Markdown("### 2 · Preview: what is found",
                                        elem_classes="step-head")
                            c.upload_queries = gr.UploadButton(
                                "Upload query images", file_types=["image"],
                                file_count="multiple", size="sm", elem_id="upload-queries")
                            c.remove_query = gr.Button("Remove selected query",
                                                       size="sm", elem_id="remove-query")
                        build_data_dir_row(c, config.data_dirs)  # only with --data-dir
                        with gr.Row(equal_height=True, elem_id="preview-settings"):
                            c.status = gr.Markdown("", elem_id="status")
                            c.confidence = gr.Slider(0.0, 1.0, value=config.default_confidence,
                                                     step=CONFIDENCE_STEP, label="Confidence",
                                                     min_width=240, elem_id="confidence")
                        # drawn in the browser from detections sent as numbers: the
                        # confidence slider and the labels toggle never ask the server
                        c.preview = preview_view(label="Detections on query images (click a "
                                                       "thumbnail to pick an image)",
                                                 elem_id="preview")
                        with gr.Row(equal_height=True, elem_id="preview-pager"):
                            c.prev_page = gr.Button("◀ Previous page", size="sm", scale=0,
                                                    min_width=120, elem_id="prev-page")
                            c.preview_page = gr.Markdown("", elem_id="preview-page")
                            c.next_page = gr.Button("Next page ▶", size="sm", scale=0,
                                                    min_width=120, elem_id="next-page")
                        with gr.Accordion("Preview options: labels, NMS, max detections, "
                                          "score mode, match threshold", open=False,
                                          elem_id="preview-options"):
                            with gr.Row(equal_height=True):
                                c.show_labels = gr.Checkbox(True, label="Show labels and scores",
                                                            interactive=True,
                                                            elem_id="show-labels")
                                c.show_examples = gr.Checkbox(
                                    False, label="Preview example images too",
                                    elem_id="show-examples")
                            with gr.Row(equal_height=True):
                                c.iou = gr.Slider(0.05, 1.0, value=0.3, step=0.05,
                                                  label="NMS IoU", elem_id="nms-iou")
                                c.max_detections = gr.Slider(1, 300, value=300, step=1,
                                                             label="Max detections",
                                                             elem_id="max-detections")
                            with gr.Row(equal_height=True):
                                c.score_mode = gr.Radio(list(SCORE_MODES), value="reference",
                                                        label="Score mode", elem_id="score-mode")
                                c.match_threshold = gr.Slider(
                                    *MATCH_THRESHOLD_RANGE, step=0.05, label="Match threshold",
                                    value=config.predictor_kwargs.get("match_threshold",
                                                                      DEFAULT_MATCH_THRESHOLD),
                                    info="IoU a drawn box needs with a predicted box",
                                    elem_id="match-threshold")
                            build_combine(c)  # phrases + boxes: max / fused
                        c.counts = gr.Dataframe(headers=["image", "object", "total"],
                                                label="Detections per class",
                                                interactive=False, elem_id="counts")
                build_review_panel(c)
            with gr.Tab("API & batch", id="api"):
                gr.Markdown(API_HELP)
                with gr.Row():
                    with gr.Column():
                        c.api_training = gr.Textbox(label="training_data (JSON)", lines=8,
                                                    value=API_EXAMPLE_JSON,
                                                    elem_id="api-training")
                        c.api_examples = gr.File(label="example_images", file_count="multiple",
                                                 file_types=["image"], elem_id="api-examples")
                        c.api_pt = gr.File(label="pt_file (.pt)", file_types=[".pt"],
                                           elem_id="api-pt")
                    with gr.Column():
                        c.api_queries = gr.File(label="query_images", file_count="multiple",
                                                file_types=["image"], elem_id="api-queries")
                        with gr.Row():
                            c.api_confidence = gr.Number(config.default_confidence,
                                                         label="confidence", minimum=0,
                                                         maximum=1)
                            c.api_iou = gr.Number(0.3, label="iou_threshold", minimum=0,
                                                  maximum=1)
                            c.api_max = gr.Number(300, label="max_detections", precision=0,
                                                  minimum=1)
                            c.api_mode = gr.Dropdown(list(SCORE_MODES), value="reference",
                                                     label="score_mode")
                        with gr.Row():
                            c.api_name = gr.Textbox("owl-project", label="name")
                            c.api_small = gr.Checkbox(False, label="small")
                        with gr.Row():
                            c.api_infer = gr.Button("infer", variant="primary")
                            c.api_infer_pt = gr.Button("infer_pt")
                            c.api_export = gr.Button("export")
                        c.api_json = gr.JSON(label="result")
                        c.api_file = gr.File(label="exported .pt")

        _wire(demo, studio, c)
    demo.studio = studio  # type: ignore[attr-defined]
    return demo


def _wire(demo: gr.Blocks, studio: Studio, c: Any) -> None:
    settings = [c.confidence, c.iou, c.max_detections, c.score_mode, c.show_examples]
    refresh_out = [c.preview, c.preview_page, c.diag_warning, c.diag_table, c.diag_image]
    class_out = [c.class_pick, c.legend, c.annotator, c.review_annotator]  # + label lists
    quiet = _private(show_progress="hidden")
    refresh = dict(fn=studio.preview.on_settings, inputs=settings, outputs=refresh_out,
                   show_progress="minimal", show_progress_on=[c.preview],
                   trigger_mode="always_last", **_private())
    downloads = dict(fn=studio.project.on_downloads, inputs=settings,
                     outputs=[c.download_full, c.download_small, c.export_info],
                     trigger_mode="always_last", **quiet)
    # the per-class counts of every query image, after the preview page is on screen
    counts = dict(fn=studio.preview.on_counts, inputs=None, outputs=[c.counts],
                  trigger_mode="always_last", **quiet)
    embed = dict(fn=studio.embedding.on_embed, inputs=None, outputs=[c.status, c.project_list],
                 show_progress="full", concurrency_id="embed", concurrency_limit=1,
                 **_private())

    def refreshed(dep: Any) -> Any:
        """Chain the preview refresh, then the `.pt` downloads (after the preview is shown)."""
        return dep.then(**refresh).then(**downloads).then(**counts)

    # a project shown in the tab: everything that shows it, then the URL, preview, embeddings
    project_out = class_out + [c.examples_gallery, c.project_name, c.confidence, c.iou,
                               c.max_detections, c.match_threshold, c.score_mode,
                               c.imported_md, c.project_state, c.project_list, c.status]

    def opened(dep: Any) -> Any:
        """URL, then the preview of what is embedded already, then the embedding step and
        the preview again."""
        url = dep.then(None, c.project_state, None, js=SET_URL_JS, **quiet)
        url.then(**shown(studio, c, quiet))  # the project's phrases (ui.describe_layout)
        return refreshed(url.then(**refresh).then(**embed))

    demo.load(None, None, None, js=KEEP_SCROLL_JS, **quiet)
    connection.install(demo, **quiet)  # "Opening" / "Reconnecting" instead of a wrong page
    opened(demo.load(studio.on_load, c.project_state, project_out, **quiet))
    demo.unload(studio.on_unload)
    opened(c.open_project.click(studio.library.on_open, c.project_list, project_out, **quiet))
    opened(c.new_project.click(studio.library.on_new, None, project_out, **quiet))
    opened(c.duplicate_project.click(studio.library.on_duplicate, None, project_out, **quiet))
    opened(c.delete_project.click(studio.library.on_delete, c.project_list, project_out,
                                  js=CONFIRM_DELETE_JS, **quiet))
    c.project_list.focus(studio.library.on_refresh_list, None, c.project_list, **quiet)
    c.download_zip.click(studio.library.on_download_zip, None, c.project_zip, **_private())
    opened(c.open_zip.upload(studio.library.on_open_zip, c.open_zip, project_out, **quiet))
    opened(c.load_project.click(studio.library.on_load_example, c.project_choice, project_out,
                                **quiet))

    # the annotator: every edit updates the preview
    c.annotator.change(studio.boxes.on_boxes_edited, [c.annotator] + settings,
                       class_out + refresh_out, preprocess=False,
                       trigger_mode="always_last", show_progress="minimal",
                       show_progress_on=[c.preview], **_private()).then(**downloads).then(
        **counts)
    refreshed(c.annotator.upload(studio.images.on_annotator_upload, c.annotator,
                                 [c.examples_gallery, c.annotator, c.status],
                                 preprocess=False, **quiet).then(**embed))

    # images in
    examples_out = [c.examples_gallery, c.annotator, c.status]
    refreshed(c.upload_examples.upload(studio.images.on_upload_examples, c.upload_examples,
                                       examples_out, **quiet).then(**embed))
    refreshed(c.upload_queries.upload(studio.images.on_upload_queries, c.upload_queries,
                                      [c.status], **quiet).then(**refresh).then(**embed))
    wire_data_dir(studio, c, refreshed, refresh, embed, examples_out, quiet)  # --data-dir
    c.samples.select(studio.images.on_sample_select, None, None, **quiet)
    refreshed(c.sample_to_examples.click(studio.images.on_sample_to_examples, None,
                                         examples_out, **quiet).then(**embed))
    refreshed(c.sample_to_queries.click(studio.images.on_sample_to_queries, None, [c.status],
                                        **quiet).then(**refresh).then(**embed))
    refreshed(c.examples_gallery.select(studio.images.on_example_select, None, [c.annotator],
                                        **quiet))
    refreshed(c.remove_example.click(studio.images.on_remove_example, None, examples_out,
                                     **quiet))

    # classes
    c.class_pick.input(studio.classes.on_class_pick, c.class_pick,  # the label lists' order
                       [c.annotator, c.review_annotator, c.remove_class], **quiet)
    for trigger in (c.add_class.click, c.class_name.submit):
        refreshed(trigger(studio.classes.on_add_class, c.class_name, class_out + [c.class_name],
                          **quiet))
    refreshed(c.rename_class.click(studio.classes.on_rename_class, [c.class_pick, c.class_name],
                                   class_out + [c.class_name], **quiet))
    refreshed(c.remove_class.click(studio.classes.on_remove_class, c.class_pick,
                                   class_out + [c.remove_class], **quiet))

    # settings and preview actions
    # the confidence slider redraws the preview in the browser while it moves (no request);
    # its release saves it and brings the counts, downloads and meter up to date
    c.confidence.release(**refresh).then(**downloads).then(**counts)
    for slider in (c.iou, c.max_detections):
        slider.input(**refresh).then(**downloads).then(**counts)
        slider.release(**refresh).then(**downloads).then(**counts)
    c.score_mode.input(**refresh).then(**downloads).then(**counts)
    c.show_examples.input(**refresh).then(**downloads).then(**counts)
    c.match_threshold.release(studio.preview.on_match_threshold, [c.match_threshold] + settings,
                              refresh_out, **_private()).then(**downloads).then(**counts)
    # "Show labels and scores" is applied by the preview in the browser (ui.preview_view)
    c.preview.select(studio.preview.on_preview_select, None, None, **quiet)
    c.remove_query.click(studio.preview.on_remove_query, settings, refresh_out + [c.status],
                         **_private()).then(**downloads).then(**counts)
    for button, fn in ((c.prev_page, studio.preview.on_prev_page),
                       (c.next_page, studio.preview.on_next_page)):
        button.click(fn, settings, refresh_out, **_private())

    # project, import/export
    for trigger in (c.project_name.blur, c.project_name.submit):  # the downloads' file names
        trigger(studio.project.on_project_name, c.project_name, None, **quiet).then(**downloads)
    refreshed(c.import_pt.upload(studio.project.on_import_pt, c.import_pt,
                                 class_out + [c.project_name, c.confidence, c.iou,
                                              c.max_detections, c.score_mode, c.imported_md],
                                 **quiet))
    refreshed(c.forget_imported.click(studio.project.on_forget_imported, None, [c.imported_md],
                                      **quiet))
    wire_review(demo, studio, c, settings, refresh, downloads, embed, counts)
    wire_describe(studio, c, refreshed, refresh_out, quiet)  # phrases, combine

    # the named API (also usable from the "API & batch" tab)
    score = [c.api_confidence, c.api_iou, c.api_max, c.api_mode]
    c.api_infer.click(studio.api.api_infer,
                      [c.api_training, c.api_examples, c.api_queries] + score,
                      c.api_json, api_name="infer", concurrency_id="embed")
    c.api_infer_pt.click(studio.api.api_infer_pt, [c.api_pt, c.api_queries] + score,
                         c.api_json, api_name="infer_pt", concurrency_id="embed")
    c.api_export.click(studio.api.api_export, [c.api_training, c.api_examples, c.api_name,
                                               c.api_small], c.api_file, api_name="export",
                       concurrency_id="embed")


#: The preview gallery focuses its selected thumbnail whenever it opens or the selection moves
#: (a new project, a new page of images), and the browser scrolled that thumbnail, at the
#: gallery's bottom, to the middle of the window: the page jumped half a screen down, away from
#: the canvas and the sliders. Installed once on page load: that focus no longer scrolls.
KEEP_SCROLL_JS = """() => {
  if (window.__owlKeepScroll) return [];
  window.__owlKeepScroll = true;
  const focus = HTMLElement.prototype.focus;
  HTMLElement.prototype.focus = function (options) {
    if (this.classList && this.classList.contains('thumbnail-item') && this.closest('#preview'))
      return focus.call(this, Object.assign({}, options || {}, {preventScroll: true}));
    return focus.call(this, options);
  };
  return [];
}"""
#: Puts the tab's project id into the address bar (so a reload or a bookmark opens it), and
#: marks the project as on screen (`ui.connection` then uncovers the page).
SET_URL_JS = """(id) => {
  if (id) { const u = new URL(window.location.href); u.searchParams.set('project', id);
            window.history.replaceState(null, '', u.toString());
            document.body.dataset.owlProject = id; }
  return [];
}"""
#: Asks before deleting; a cancelled click sends no project id (the handler does nothing).
CONFIRM_DELETE_JS = """(id) =>
  (id && window.confirm('Delete this project and its images for good?')) ? id : null"""

API_EXAMPLE_JSON = """[
  {"image": 0,
   "boxes": [{"x": 155.5, "y": 51.0, "w": 49, "h": 46, "cls": "coin", "negative": false}]}
]"""

API_HELP = """
Run the few-shot detector without drawing, here or from `gradio_client` (see the README).
**infer**: training data (JSON, reference schema; each `image` is the index or file name of an
uploaded example image, or base64 data) + example images + query images → detections (JSON).
**infer_pt**: a `.pt` exported by this studio (or Roboflow's OwlV2) + query images → detections.
**export**: training data + example images → a `.pt` (small = without image embeddings).
"""


def launch_kwargs(**overrides: Any) -> dict:
    """Arguments for `demo.launch` or `gr.mount_gradio_app` (theme/CSS moved from Blocks to
    launch in Gradio 6). Uploads over `owl_core.limits` ``max_upload_bytes``
    (``OWL_MAX_UPLOAD_BYTES``) are refused by Gradio before they are stored; a request body
    (an upload) that stalls or takes longer than ``max_body_seconds`` in total is cut off with
    408 (`BodyLimitMiddleware` on the studio's own app), so a slow client can't hold it open.
    With logins, a user is served only the files the studio handed to them
    (`ui.file_access.UserFilesMiddleware`)."""
    studio_bodies = Middleware(BodyLimitMiddleware, paths=("/",), max_bytes=None,
                               max_in_flight=None)
    user_files = Middleware(UserFilesMiddleware)
    kwargs: dict[str, Any] = {"css": CSS, "footer_links": ["api"], "show_error": True,
                              "allowed_paths": [str(ASSETS_DIR / "images")],
                              "max_file_size": limits.current().max_upload_bytes,
                              "app_kwargs": {"middleware": [studio_bodies, user_files]}}
    kwargs.update(overrides)
    return kwargs
