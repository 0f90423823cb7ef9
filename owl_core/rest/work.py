"""Bounded work per request, and two lanes so cheap requests never wait behind expensive ones.

Each request is sized before it runs (images to embed, classes x images x candidates to score).
Over the work cap it is refused at once (`LimitError`). Otherwise it runs in the *light* lane
(small requests, several workers) or the *heavy* lane (few workers), each with a bounded
number of waiting requests (`BusyError` beyond it), and under a time budget that the work
checks between images (`LimitError` when spent). The model call itself is thread-safe and
every request has its own predictor, so the lanes share nothing but the model.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from owl_core.errors import LimitError

_T = TypeVar("_T")


class BusyError(LimitError):
    """Too many requests are waiting in this lane; retry later (HTTP 503)."""


@dataclass(frozen=True)
class WorkLimits:
    """Bounds of the work one request may ask for.

    Attributes:
        max_work_units: most classes x images x candidates (top-K) scored per request.
        time_budget_s: wall-clock seconds a request may run before it is stopped.
        heavy_images: requests with more images to embed than this go to the heavy lane.
        heavy_units: requests scoring more units than this go to the heavy lane.
        light_workers, heavy_workers: requests run at once per lane.
        max_waiting: requests queued per lane before new ones get 503.
        max_in_flight: REST requests being received or handled at once (bodies included,
            which are read before a request can be sized); beyond it 503.
    """

    max_work_units: int = 30_000_000
    time_budget_s: float = 120.0
    heavy_images: int = 4
    heavy_units: int = 1_000_000
    light_workers: int = 2
    heavy_workers: int = 1
    max_waiting: int = 16
    max_in_flight: int = 40


@dataclass(frozen=True)
class WorkSize:
    """What a request will do: images to embed, and classes x images x candidates to score."""

    images: int
    units: int

    def describe(self) -> str:
        return f"{self.images} image(s), {self.units:,} class x image x candidate scores"


class Deadline:
    """A request's time budget; `check` raises `LimitError` once it is spent."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = float(budget_s)
        self.start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def check(self, step: str = "") -> None:
        if self.elapsed > self.budget_s:
            where = f" ({step})" if step else ""
            raise LimitError(f"the request ran over its time budget of {self.budget_s:g} s"
                             f"{where}; send fewer images or classes per request.")


class _Lane:
    def __init__(self, name: str, workers: int, max_waiting: int) -> None:
        self.name = name
        # not named "owl-light*": the predictor's small tensor work (matching, scoring, NMS)
        # then runs on its one single-intra-op-thread worker, call by call, so a heavy request
        # delays a cheap one there by one detect call at most; run here with two OpenMP threads
        # on a loaded 2-core CPU it measured 5-10x slower (bench/rest_lanes.py)
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix=f"owl-rest-{name}")
        self.capacity = max(1, workers) + max(0, max_waiting)
        self.active = 0
        self.lock = threading.Lock()

    def enter(self) -> None:
        with self.lock:
            if self.active >= self.capacity:
                raise BusyError(f"the server is busy ({self.active} {self.name} requests in "
                                "progress or waiting); retry in a few seconds.")
            self.active += 1

    def leave(self) -> None:
        with self.lock:
            self.active -= 1


class WorkScheduler:
    """Sizes, admits and runs requests in the light or heavy lane."""

    def __init__(self, limits: WorkLimits | None = None) -> None:
        self.limits = limits or WorkLimits()
        self._light = _Lane("light", self.limits.light_workers, self.limits.max_waiting)
        self._heavy = _Lane("heavy", self.limits.heavy_workers, self.limits.max_waiting)

    def admit(self, size: WorkSize) -> None:
        """Raise `LimitError` when a request asks for more work than one request may."""
        if size.units > self.limits.max_work_units:
            raise LimitError(f"the request asks for {size.describe()}, over the limit of "
                             f"{self.limits.max_work_units:,} scores per request "
                             "(classes x images x candidates); split it into several requests.")

    def lane_for(self, size: WorkSize) -> str:
        heavy = size.images > self.limits.heavy_images or size.units > self.limits.heavy_units
        return "heavy" if heavy else "light"

    def deadline(self) -> Deadline:
        return Deadline(self.limits.time_budget_s)

    async def run(self, size: WorkSize, fn: Callable[..., _T], *args: Any) -> _T:
        """Run `fn(*args)` in the lane for `size` (after `admit`), off the event loop."""
        self.admit(size)
        lane = self._heavy if self.lane_for(size) == "heavy" else self._light
        lane.enter()
        try:
            future = lane.pool.submit(fn, *args)
        except BaseException:
            lane.leave()
            raise
        # the slot is freed when the work ends, even if the client gave up before that
        future.add_done_callback(lambda _: lane.leave())
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        for lane in (self._light, self._heavy):
            lane.pool.shutdown(wait=False, cancel_futures=True)
