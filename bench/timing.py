"""The benchmarks' clock (one home for `bench/owl_bench.py` and `bench/gpu_check.py`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


class Clock:
    """perf_counter timing that waits for the accelerator before reading the clock (a CUDA
    call returns before the GPU has finished: without the wait, timings measure the queue)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        """(seconds, result) of one call."""
        self.sync()
        start = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - start, out

    def repeat(self, fn: Callable[[], Any], repeats: int) -> list[float]:
        """Seconds of `repeats` calls."""
        return [self.time(fn)[0] for _ in range(repeats)]

    def median_ms(self, fn: Callable[[], Any], warmup: int, repeats: int) -> float:
        """Median milliseconds of `repeats` calls after `warmup` untimed ones."""
        for _ in range(warmup):
            fn()
        return round(1000 * statistics.median(self.repeat(fn, repeats)), 3)
