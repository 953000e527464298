"""Timing helpers shared by the comparison command, its PyTorch worker and the
detail scripts (conv_measure, conv_strategies, optim_bandwidth)."""

from __future__ import annotations

import statistics
import time


def measure(fn, repeat: int = 5, budget: float = 1.0, min_time: float = 0.25, cpu_time: bool = False) -> dict:
    """Time ``fn()`` (already warmed up) and return statistics in seconds.

    Calls ``fn`` at least ``repeat`` times and for at least ``min_time``
    seconds, so that fast workloads are timed over many calls and settle into
    a steady state, but stops once ``budget`` seconds are spent (after at
    least one call), so slow workloads stay affordable. The median is the
    figure quoted. ``cpu_time`` times each call in the process's CPU time
    instead of wall time: with one thread, a figure that other processes
    sharing the cores barely move (the budget stays in wall time).
    """
    clock = time.process_time if cpu_time else time.perf_counter
    times = []
    start = time.perf_counter()
    while True:
        t0 = clock()
        fn()
        times.append(clock() - t0)
        elapsed = time.perf_counter() - start
        if elapsed >= budget or (len(times) >= repeat and elapsed >= min_time):
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


def call_time(fn) -> float:
    """Seconds one call of ``fn`` takes (for loops that interleave workloads
    themselves, where :func:`measure`'s own loop does not fit)."""
    return first_call(fn)[1]
