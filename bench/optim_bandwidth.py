"""Optimizer steps side by side in one run: numbanet kernels, the NumPy
reference, PyTorch (``fused=True`` where it exists on CPU, thread count
matched) and a plain NumPy copy moving the same number of bytes.

Usage::

    python -m numbanet.bench.optim_bandwidth [pattern] [--repeat N] [--no-reference]

Effective bandwidth is (bytes read + bytes written per step) / time; the copy
reads and writes half of the step's bytes each (``np.copyto``), so "% copy"
compares the fused step with the best a simple streaming pass reaches here.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numba
import numpy as np

import numbanet.kernels as kernels
import numbanet.reference as reference
from numbanet.bench import cases


def _time(fn, repeat, warmup=2):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _copy_workload(nbytes):
    src = np.ones(int(nbytes) // 2 // 8, np.float64)
    dst = np.empty_like(src)
    return lambda: np.copyto(dst, src)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pattern", nargs="?", default="*_16m,adam_convnet*")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--no-reference", action="store_true")
    args = ap.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(numba.get_num_threads())
    except ImportError:
        torch = None
    print(f"threads: numba {numba.get_num_threads()}, torch {torch.get_num_threads() if torch else '-'}")
    hdr = (f"{'case':18} {'kernel ms':>9} {'ref ms':>8} {'torch ms':>8} {'copy ms':>8} "
           f"{'x ref':>6} {'x torch':>7} {'GB/s':>6} {'copy GB/s':>9} {'% copy':>6}")
    print(hdr)
    for case in cases(args.pattern):
        if case.group != "optim":
            continue
        dt = np.dtype("float32")
        inp = case.inputs(dt)
        tk = _time(case.bind(kernels, inp), args.repeat)
        tr = float("nan") if args.no_reference else _time(case.bind(reference, inp), max(3, args.repeat // 5), 1)
        tt = _time(case.torch_bind(inp), args.repeat) if torch and case.torch_bind else float("nan")
        nb = case.nbytes(dt)
        tc = _time(_copy_workload(nb), args.repeat)
        gbs, cgbs = nb / tk / 1e9, nb / tc / 1e9
        print(f"{case.name:18} {tk * 1e3:9.3f} {tr * 1e3:8.2f} {tt * 1e3:8.3f} {tc * 1e3:8.3f} "
              f"{tr / tk:6.1f} {tt / tk:7.2f} {gbs:6.1f} {cgbs:9.1f} {100 * gbs / cgbs:6.0f}")


if __name__ == "__main__":
    main()
