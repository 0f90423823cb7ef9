"""Test doubles around the real engine: a predictor that records its embedding calls and can
hold query images "in the vision tower" until the test lets go."""

from __future__ import annotations

import threading

from owl_core import OwlPredictor


class SpyPredictor(OwlPredictor):
    """Records `embed_many` calls; query images (keep_patches=False) wait at `gate` when one
    is set, as if the vision tower were slow."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[int, int, bool]] = []
        self.gate: threading.Event | None = None
        self.waiting = threading.Event()

    def embed_many(self, images, *, batch_size=4, keep_patches=False, progress=None):
        self.calls.append((len(images), batch_size, keep_patches))
        if self.gate is not None and keep_patches is False:
            self.waiting.set()
            assert self.gate.wait(30), "the test never opened the gate"
        return super().embed_many(images, batch_size=batch_size, keep_patches=keep_patches,
                                  progress=progress)
