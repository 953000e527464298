"""Timing helpers shared by the comparison command and its PyTorch worker."""

from __future__ import annotations

import statistics
import time


def measure(fn, repeat: int = 5, budget: float = 1.0) -> dict:
    """Time ``fn()`` (already warmed up) and return statistics in seconds.

    Calls ``fn`` until it has run ``repeat`` times or spent ``budget`` seconds,
    whichever comes first, and at least once. The median is the figure quoted.
    """
    times = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= repeat or time.perf_counter() - start >= budget:
            break
    return {
        "median": statistics.median(times),
        "min": min(times),
        "runs": len(times),
    }


def first_call(fn):
    """Run ``fn`` once (the warm-up that pays for JIT compilation); return
    ``(result, seconds)``."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0
