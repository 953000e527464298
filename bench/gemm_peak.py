"""The GEMM micro-kernel's single-core peak, measured.

The micro-kernel (:mod:`numbanet.kernels._gemm`) runs over packed panels that
stay in L1/L2 (``4 * MR`` rows of A, ``KC`` steps, ``8 * NR`` columns of B),
the same panels again and again, so that nothing but its FMAs limits it: what
the target's vector units give this code. ``numbanet-bench`` prints it and
each case's rate as a fraction of it times the thread count.
"""

from __future__ import annotations

import time

import numpy as np

from numbanet.kernels import _gemm
from numbanet.kernels._config import jit


@jit()
def _repeat_panels(ap, m_, kc, bp, nc, c, tile, reps):
    for _ in range(reps):
        _gemm.kernel_block(ap, 0, m_, kc, bp, nc, c, 0, True, tile)


def peak_gflops(dtype="float32", seconds: float = 0.3, rounds: int = 3) -> float:
    """The best of ``rounds`` timings of about ``seconds`` each, in GFLOP/s
    (2 flops per multiply-add) on the calling thread. Timed in the thread's
    CPU time, so that other processes sharing the core do not lower it."""
    dt = np.dtype(dtype)
    m_, kc, nc = 4 * _gemm.MR, _gemm.KC, 8 * _gemm.nr(dt.itemsize)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m_, kc)).astype(dt)
    b = rng.standard_normal((kc, nc)).astype(dt) * 1e-3  # sums stay finite
    ap = _gemm.pack_a(a)
    bp = _gemm.b_buffer(kc, nc, b)
    _gemm.pack_b(b, 0, kc, 0, nc, bp)
    c = np.zeros((m_, nc), dt)
    tile = np.empty((_gemm.MR, _gemm.nr(dt.itemsize)), dt)
    _repeat_panels(ap, m_, kc, bp, nc, c, tile, 1)  # compile
    reps = 1
    while True:  # calibrate to ~seconds / 4
        t0 = time.thread_time()
        _repeat_panels(ap, m_, kc, bp, nc, c, tile, reps)
        if time.thread_time() - t0 > seconds / 4:
            break
        reps *= 2
    reps *= 4
    best = float("inf")
    for _ in range(rounds):
        t0 = time.thread_time()
        _repeat_panels(ap, m_, kc, bp, nc, c, tile, reps)
        best = min(best, time.thread_time() - t0)
    return 2.0 * m_ * kc * nc * reps / best / 1e9
