"""The "folder on the server" row of the studio page: add the images of a folder under the
server's ``--data-dir`` as query or example images (laid out by `build_data_dir_row`, wired by
`wire_data_dir`; both called from `ui.layout`, and both do nothing without ``--data-dir``).
The handlers are `ui.handlers.images.ImageHandlers.on_folder_queries` / ``on_folder_examples``;
what may be read is decided by `owl_core.project.data_dir`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr


def build_data_dir_row(c: Any, data_dirs: tuple[str, ...]) -> None:
    """The textbox and its two buttons, in one compact row (only with data folders)."""
    if not data_dirs:
        return
    roots = ", ".join(data_dirs)
    with gr.Row(equal_height=True, elem_id="data-dir-row"):
        c.data_dir_path = gr.Textbox(
            label="Folder on the server", show_label=False, container=False, scale=3,
            max_lines=1, elem_id="data-dir-path",
            placeholder=f"Folder on the server, inside {roots} (relative or absolute; "
                        "\".\" = all of it)")
        c.data_dir_queries = gr.Button("Add folder as query images", scale=0, min_width=190,
                                       size="sm", elem_id="data-dir-queries")
        c.data_dir_examples = gr.Button("Add folder as example images", scale=0,
                                        min_width=190, size="sm", elem_id="data-dir-examples")


def wire_data_dir(studio: Any, c: Any, refreshed: Callable[[Any], Any], refresh: dict,
                  embed: dict, examples_out: list, quiet: dict) -> None:
    """The two buttons chain the preview and the embedding step exactly as the upload buttons
    do (Enter in the textbox does nothing: it could mean either button)."""
    if not studio.config.data_dirs:
        return
    refreshed(c.data_dir_queries.click(studio.images.on_folder_queries, c.data_dir_path,
                                       [c.status], **quiet).then(**refresh).then(**embed))
    refreshed(c.data_dir_examples.click(studio.images.on_folder_examples, c.data_dir_path,
                                        examples_out, **quiet).then(**embed))
