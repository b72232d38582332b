"""Timers that synchronize the device (a GPU runs asynchronously: without a sync a timer
measures the kernel launch, not the work), and the fastest or median of repeated calls."""
from __future__ import annotations

import time

from .hardware import synchronize


class Timer:
    """``with Timer(device) as t: ...``; then ``t.seconds``."""

    def __init__(self, device="cpu"):
        self.device = device
        self.seconds = float("nan")

    def __enter__(self):
        synchronize(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0


def timed_calls(fn, device="cpu", repeats: int = 3, warmup: int = 1) -> list[float]:
    """Seconds of each of ``repeats`` device-synchronized calls of ``fn``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        with Timer(device) as t:
            fn()
        times.append(t.seconds)
    return times


def best_of(fn, device="cpu", repeats: int = 3, warmup: int = 1) -> float:
    """The fastest of ``repeats`` timed calls after ``warmup`` untimed ones, in seconds."""
    return min(timed_calls(fn, device, repeats, warmup))


def median_of(fn, device="cpu", repeats: int = 5, warmup: int = 1) -> float:
    """The median of ``repeats`` timed calls after ``warmup`` untimed ones, in seconds: a figure
    that one slow call (another process, a page fault) does not move."""
    import statistics

    return statistics.median(timed_calls(fn, device, repeats, warmup))
