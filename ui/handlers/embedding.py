"""The embedding step: every upload chains `on_embed`, which runs the vision tower on the new
images in the background, in batches, with a progress bar on the status line.

Why it is shaped like this:

* The session lock is held only to list the work and to record each batch's hashes, never
  while the vision tower runs, so the session's other events (box edits, slider moves, the
  preview refresh) answer meanwhile from the embeddings already there.
* Example images go first (the first drawn box needs them) and in batches of their own, keeping
  all patches (matching a drawn box needs every patch); query images follow. Keeping the two
  apart also means an image that is both an example and a query is computed once: the query
  finds the example's entry in the cache (in one batch, both would be computed, and the
  query's top-K-only entry would replace the example's).
* The preview only ever reads embeddings this step made (`ui.handlers.preview` leaves images
  without a hash out), so an edit never waits for the vision tower.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gradio as gr

from owl_core.project.model import ImageRecord
from ui.escape import warning
from ui.handlers.common import Area, AreaContext, engine_errors, log
from ui.handlers.views import project_choices, status_text
from ui.session import Session


class EmbeddingHandlers(Area):
    """`on_embed`, chained after every event that adds images (it also brings the project
    list's counts up to date: the closed menu shows the open project's label)."""

    def __init__(self, ctx: AreaContext, projects: Any = None) -> None:
        super().__init__(ctx)
        self.projects = projects

    def _done(self, s: Session, status: str) -> dict:
        out = {self.c.status: status}
        if self.projects is not None:
            out[self.c.project_list] = gr.update(choices=project_choices(self.projects, s.owner, s),
                                                 value=s.project_id)
        return out

    @engine_errors
    def on_embed(self, request: gr.Request, progress=gr.Progress()) -> dict:  # noqa: B008
        """Embed every image not embedded yet, examples first, in batches of
        `StudioConfig.embed_batch_size`, reporting progress after each batch."""
        s = self.session(request)
        with s.lock:
            predictor = s.predictor
            examples = [r for r in s.examples() if s.embedded(r) is None]
            queries = [r for r in s.queries() if s.embedded(r) is None]
        total = len(examples) + len(queries)
        if not total:
            with s.lock:
                return self._done(s, status_text(s))
        size = max(1, int(self.config.embed_batch_size))
        batches = [(examples[i:i + size], True) for i in range(0, len(examples), size)]
        batches += [(queries[i:i + size], False) for i in range(0, len(queries), size)]
        start, done, failed = time.perf_counter(), 0, []
        for items, keep_patches in batches:
            progress((done, total), desc=f"Embedding {', '.join(i.name for i in items)}",
                     unit="images")
            failed += self._embed_batch(s, predictor, items, keep_patches, size)
            done += len(items)
        progress((total, total), desc="Embeddings ready", unit="images")
        with s.lock:
            for record in failed:
                if s.record(record.id) is not None:
                    s.remove_image(record.id)
            note = (f"embedded {total - len(failed)} image(s) in "
                    f"{time.perf_counter() - start:.1f} s")
            return self._done(s, status_text(s, note))

    def _embed_batch(self, s: Session, predictor, items: Sequence[ImageRecord],
                     keep_patches: bool, batch_size: int) -> list[ImageRecord]:
        """Embed one batch and record its hashes (under the lock, briefly). Returns the images
        the engine could not read (reported; the rest of the batch is still embedded)."""
        try:
            with s.lock:
                if s.core is None:
                    return []
                paths = [s.path(r) for r in items]
            infos = predictor.embed_many(paths, batch_size=batch_size,
                                         keep_patches=keep_patches)
        except (ValueError, RuntimeError, OSError) as exc:
            if len(items) > 1:  # find the bad image, keep the others
                return [bad for item in items
                        for bad in self._embed_batch(s, predictor, [item], keep_patches, 1)]
            log.warning("embedding %s failed: %s", items[0].name, exc)
            warning(f"{items[0].name} could not be embedded and was removed: {exc}")
            return list(items)
        with s.lock:
            for record, info in zip(items, infos, strict=True):
                s.view.embedded[record.id] = info.content_hash
        return []
