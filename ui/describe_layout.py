"""The "describe it" controls under the class row (laid out by `build_describe`, wired by
`wire_describe`; both called from `ui.layout`): the picked class's phrases, its "not this"
phrases, "Use the class names as phrases" and the combine mode. Behaviour:
`ui.handlers.describe`."""

from __future__ import annotations

from typing import Any

import gradio as gr

from owl_core.params import COMBINE_MODES

DESCRIBE_HELP = ("Words find objects before any box is drawn (OWLv2 reads text). Separate "
                 "phrases with ';'. Boxes refine them.")


def build_describe(c: Any) -> None:
    """The describe row (inside the examples column, under the class row)."""
    with gr.Group(elem_id="describe"):
        with gr.Row(equal_height=True):
            c.phrases = gr.Textbox(label="Describe it", lines=1, max_lines=1, scale=3,
                                   placeholder="e.g. a coin; a round metal coin",
                                   info=DESCRIBE_HELP, elem_id="describe-phrases")
            c.negative_phrases = gr.Textbox(label="Not this", lines=1, max_lines=1, scale=2,
                                            placeholder="e.g. a button",
                                            info="Look-alikes the class must not find.",
                                            elem_id="describe-negative")
        with gr.Row(equal_height=True):
            c.use_class_names = gr.Button("Use the class names as phrases", size="sm",
                                          scale=0, min_width=220, elem_id="use-class-names")
            c.combine = gr.Radio(list(COMBINE_MODES), value="max",
                                 label="Phrases + boxes", scale=1,
                                 info="max: best of phrases and boxes; fused: one blend "
                                      "per class", elem_id="combine")


def wire_describe(studio: Any, c: Any, refreshed: Any, refresh_out: list, quiet: dict) -> None:
    """Each edit answers with the preview itself (as a box edit does); `refreshed` chains the
    downloads and counts."""
    fields = [c.phrases, c.negative_phrases, c.combine]
    edit = {**quiet, "show_progress": "minimal", "show_progress_on": [c.preview]}
    gr.on([c.class_pick.change, c.project_state.change, c.project_name.change],
          studio.describe.on_show, None, fields, **quiet)
    for field, fn in ((c.phrases, studio.describe.on_phrases),
                      (c.negative_phrases, studio.describe.on_negative_phrases)):
        refreshed(gr.on([field.submit, field.blur], fn, field, fields + refresh_out,
                        trigger_mode="always_last", **edit))
    refreshed(c.use_class_names.click(studio.describe.on_use_class_names, None,
                                      fields + refresh_out, **edit))
    refreshed(c.combine.input(studio.describe.on_combine, c.combine, refresh_out, **edit))
