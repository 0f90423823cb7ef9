"""The "describe it" controls under the class row (laid out by `build_describe`, wired by
`wire_describe`; both called from `ui.layout`): the picked class's phrases, its "not this"
phrases, "Use the class names as phrases" and the combine mode. Behaviour:
`ui.handlers.describe`."""

from __future__ import annotations

from typing import Any

import gradio as gr

from owl_core.params import COMBINE_MODES

#: The describe field's placeholder (its label is hidden: the row must stay one line high, so
#: the example canvas stays on the first screen at 1280x720).
DESCRIBE_PLACEHOLDER = "Describe it in words, e.g. a coin; a round coin"


def build_describe(c: Any) -> None:
    """The describe row (inside the examples column, under the class row): one line."""
    with gr.Row(equal_height=True, elem_id="describe"):
        c.phrases = gr.Textbox(label="Describe it", show_label=False, container=False,
                               lines=1, max_lines=1, scale=3, min_width=160,
                               placeholder=DESCRIBE_PLACEHOLDER, elem_id="describe-phrases")
        c.negative_phrases = gr.Textbox(label="Not this", show_label=False, container=False,
                                        lines=1, max_lines=1, scale=2, min_width=110,
                                        placeholder="Not this: e.g. a button",
                                        elem_id="describe-negative")
        c.use_class_names = gr.Button("Use the class names as phrases", size="sm", scale=0,
                                      min_width=120, elem_id="use-class-names")


def build_combine(c: Any) -> None:
    """How phrases and boxes combine (in the preview options)."""
    c.combine = gr.Radio(list(COMBINE_MODES), value="max", label="Phrases + boxes",
                         info="max: the best of a class's phrases and boxes; fused: one "
                              "blend per class (Kaul et al. 2023)", elem_id="combine")


def shown(studio: Any, c: Any, quiet: dict) -> dict:
    """The event that shows the picked class's phrases and the combine mode (chained after a
    project is opened, and on every change of the picked class)."""
    return dict(fn=studio.describe.on_show, inputs=None,
                outputs=[c.phrases, c.negative_phrases, c.combine], **quiet)


def wire_describe(studio: Any, c: Any, refreshed: Any, refresh_out: list, quiet: dict) -> None:
    """Each edit answers with the preview itself (as a box edit does); `refreshed` chains the
    downloads and counts."""
    fields = [c.phrases, c.negative_phrases, c.combine]
    edit = {**quiet, "show_progress": "minimal", "show_progress_on": [c.preview]}
    c.class_pick.change(**shown(studio, c, quiet))  # a project opened: `ui.layout.opened`
    for field, fn in ((c.phrases, studio.describe.on_phrases),
                      (c.negative_phrases, studio.describe.on_negative_phrases)):
        refreshed(gr.on([field.submit, field.blur], fn, field, fields + refresh_out,
                        trigger_mode="always_last", **edit))
    refreshed(c.use_class_names.click(studio.describe.on_use_class_names, None,
                                      fields + refresh_out, **edit))
    refreshed(c.combine.input(studio.describe.on_combine, c.combine, refresh_out, **edit))
