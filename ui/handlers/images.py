"""Images in: uploads (examples and queries), the bundled samples, folders under the server's
``--data-dir``, and which example image the annotator shows. Adding an image only copies it
into the session; the embedding step that each of these events chains
(`ui.handlers.embedding`) does the slow part."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from owl_core import limits
from owl_core.errors import DataDirError, OwlError
from owl_core.images import resolve_image
from owl_core.project.data_dir import data_roots, folder_images
from ui.escape import error, info, warning
from ui.formats import bundled_images
from ui.handlers.common import (
    Area,
    engine_errors,
    file_path,
    image_size,
    uploaded,
    user_message,
)
from ui.handlers.views import annotator_value, examples_updates, status_text
from ui.session import Session


def add_images(s: Session, paths: Sequence[tuple[str, str]], as_example: bool, *,
               limit: str = "max_images_per_request", skip_known: bool = False) -> str | None:
    """Copy images (path, display name) into the project as examples or query images, warning
    about files that are refused (not an image, too large: checked from the header before
    anything is decoded); returns the id of the first image added (an example becomes the
    annotator's image). Raises `gr.Error` when every file was refused.

    ``limit`` names the `owl_core.limits` bound on the number of files; ``skip_known`` leaves
    out files whose content is already one of the project's images in that role (a folder
    added twice adds nothing new; uploads add what the person picked)."""
    first = None
    bad = []
    limits.current().check(limit, len(paths), "images in one upload")
    known = {r.content_hash for r in (s.examples() if as_example else s.queries())}
    skipped = 0
    for path, name in paths:
        try:
            image_size(path, name)  # the header only: nothing decoded before the size check
            if skip_known:
                content = resolve_image(Path(path)).content_hash  # the project's hash
                if content in known:
                    skipped += 1
                    continue
                known.add(content)
            record = s.add_image(path, name, as_example)  # copied into the project folder
            first = first or record.id
        except OwlError as exc:
            bad.append(user_message(exc))
    if skipped:
        info(f"{skipped} of {len(paths)} images are in the project already: not added again.")
    if bad and len(bad) == len(paths):  # nothing was added: say why as an error
        raise error(" ".join(bad))
    for message in bad:
        warning(message)
    if as_example and first is not None:
        s.view.current = first
    return first


class ImageHandlers(Area):
    """Uploads, samples, example selection and removal."""

    def _examples_changed(self, s: Session) -> dict:
        out = examples_updates(self.c, s)
        out[self.c.annotator] = gr.update(value=annotator_value(s))
        out[self.c.status] = status_text(s)
        return out

    @engine_errors
    def on_upload_examples(self, files: Any, request: gr.Request) -> dict:
        """New example images; the first one opens in the annotator."""
        s = self.session(request)
        with s.lock:
            add_images(s, uploaded(files), as_example=True)
            return self._examples_changed(s)

    @engine_errors
    def on_upload_queries(self, files: Any, request: gr.Request) -> dict:
        """New query images (the preview shows them once embedded)."""
        s = self.session(request)
        with s.lock:
            add_images(s, uploaded(files), as_example=False)
            return {self.c.status: status_text(s)}

    @engine_errors
    def on_folder_examples(self, folder: str, request: gr.Request) -> dict:
        """The images of a folder under ``--data-dir`` as example images."""
        s = self.session(request)
        files = _folder_files(self.config.data_dirs, folder)
        with s.lock:
            add_images(s, files, as_example=True, limit="max_folder_images", skip_known=True)
            return self._examples_changed(s)

    @engine_errors
    def on_folder_queries(self, folder: str, request: gr.Request) -> dict:
        """The images of a folder under ``--data-dir`` as query images."""
        s = self.session(request)
        files = _folder_files(self.config.data_dirs, folder)
        with s.lock:
            add_images(s, files, as_example=False, limit="max_folder_images", skip_known=True)
            return {self.c.status: status_text(s)}

    @engine_errors
    def on_annotator_upload(self, payload: dict | None, request: gr.Request) -> dict:
        """An image dropped straight onto the empty annotator becomes an example."""
        s = self.session(request)
        image = (payload or {}).get("image") or {}
        path = file_path(image)
        if not path:
            return {}
        name = image.get("orig_name") or Path(path).name
        with s.lock:
            add_images(s, [(path, name)], as_example=True)
            return self._examples_changed(s)

    def on_sample_select(self, evt: gr.SelectData, request: gr.Request) -> None:
        """Remember the clicked sample for the "Add as ..." buttons."""
        s = self.session(request)
        s.selected_sample = int(evt.index or 0)

    def _selected_sample(self, request: gr.Request) -> str:
        s = self.session(request)
        images = bundled_images()
        if not images:
            raise error("No bundled images found in assets/images.")
        return str(images[min(s.selected_sample, len(images) - 1)])

    @engine_errors
    def on_sample_to_examples(self, request: gr.Request) -> dict:
        return self.on_upload_examples([self._selected_sample(request)], request)

    @engine_errors
    def on_sample_to_queries(self, request: gr.Request) -> dict:
        return self.on_upload_queries([self._selected_sample(request)], request)

    @engine_errors
    def on_example_select(self, evt: gr.SelectData, request: gr.Request) -> dict:
        """Open the clicked example in the annotator."""
        s = self.session(request)
        with s.lock:
            examples = s.examples()
            if 0 <= int(evt.index or 0) < len(examples):
                s.view.current = examples[int(evt.index)].id
            return {self.c.annotator: gr.update(value=annotator_value(s))}

    @engine_errors
    def on_remove_example(self, request: gr.Request) -> dict:
        """Drop the annotator's example image and its boxes."""
        s = self.session(request)
        with s.lock:
            record = s.current_example()
            if record is None:
                raise error("No example image to remove.")
            ids = [r.id for r in s.examples()]
            at = ids.index(record.id)
            s.remove_image(record.id)
            rest = ids[:at] + ids[at + 1:]
            s.view.current = rest[min(at, len(rest) - 1)] if rest else None
            return self._examples_changed(s)


def _folder_files(data_dirs: Sequence[str], folder: str) -> list[tuple[str, str]]:
    """(path, name) of the images a typed folder names, all inside the data folders; the
    refusal's message is shown whole (it names the typed path and the data folders, which the
    page shows anyway, never where a link points)."""
    try:
        return [(str(path), name) for path, name in folder_images(folder, data_roots(data_dirs))]
    except DataDirError as exc:
        raise error(str(exc)) from exc
