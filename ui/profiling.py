"""Where an edit's time goes: per-stage timings of the preview refresh (``OWL_PROFILE=1``).

The live preview must answer a box edit instantly, so its path is measured stage by stage
(matching the examples, detection, drawing, picture encoding, the `.pt` downloads). With
``OWL_PROFILE=1`` in the environment every refresh logs one line on the ``ui.profile`` logger,
e.g.::

    refresh 38.2 ms: set_examples 4.1 · detect 6.0 (3 images) · draw 9.3 (3) · encode 12.5 (3)
    · diagnostics 3.2 · downloads 2.9

and the last breakdowns are kept in `PROFILE_LOG` (newest last) for tools and tests. Gradio's
own share (queueing, pre/postprocessing) is measured by Gradio itself with
``GRADIO_PROFILING=1`` (``/gradio_api/profiling/traces``); the browser's, by the Playwright
timing in ``tests/ui``.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("ui.profile")
#: The last refresh breakdowns (dicts: stage -> ms, plus "total_ms" and "what").
PROFILE_LOG: deque[dict] = deque(maxlen=200)


def profiling_enabled() -> bool:
    """``OWL_PROFILE=1`` (read on every call, so tests and tools can switch it on)."""
    return os.environ.get("OWL_PROFILE", "").strip().lower() in ("1", "true", "yes")


class StageTimer:
    """Adds up wall time per named stage of one refresh; `report` logs and records it.

    Cheap enough to run always (a `perf_counter` pair per stage); only the logging is behind
    `profiling_enabled`.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.start = time.perf_counter()
        self.ms: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    @contextmanager
    def stage(self, name: str, count: int = 1) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1e3
            self.counts[name] = self.counts.get(name, 0) + count

    def report(self) -> dict:
        """The breakdown as a dict (also logged and kept in `PROFILE_LOG` when profiling)."""
        total = (time.perf_counter() - self.start) * 1e3
        record = {"what": self.what, "total_ms": round(total, 2),
                  **{f"{k}_ms": round(v, 2) for k, v in self.ms.items()},
                  **{f"{k}_n": n for k, n in self.counts.items() if n != 1}}
        if profiling_enabled():
            PROFILE_LOG.append(record)
            parts = [f"{k} {v:.1f}" + (f" ({self.counts[k]})" if self.counts[k] != 1 else "")
                     for k, v in self.ms.items()]
            other = total - sum(self.ms.values())
            log.info("%s %.1f ms: %s · other %.1f", self.what, total, " · ".join(parts), other)
        return record
