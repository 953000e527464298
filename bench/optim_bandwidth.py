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
import time

import numpy as np

import numbanet.kernels as kernels
import numbanet.reference as reference
from numbanet.bench import cases
from numbanet.bench.timing import call_time


def _bench(workloads, rounds, ref_rounds):
    """Best time of each workload over interleaved rounds.

    Rounds interleave the implementations so that they all see the same
    background load (this machine is shared); within a round each runs a few
    times after a short pause that lets the other implementation's OpenMP
    workers stop spinning (numba's and torch's pools each spin-wait after a
    parallel region, and on 2 cores a spinning pool delays the other's workers
    by a scheduler time slice).
    """
    best = {k: float("inf") for k in workloads}
    for fn in workloads.values():
        fn()  # compile / allocate / first-touch
    for r in range(rounds):
        for name, fn in workloads.items():
            if name == "ref" and r >= ref_rounds:
                continue
            time.sleep(0.02)
            for _ in range(1 if name == "ref" else 3):
                best[name] = min(best[name], call_time(fn))
    return best


def _copy_workload(nbytes):
    src = np.ones(int(nbytes) // 2 // 8, np.float64)
    dst = np.empty_like(src)
    return lambda: np.copyto(dst, src)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pattern", nargs="?", default="*_16m,adam_convnet*,adam_mlp100*")
    ap.add_argument("--repeat", type=int, default=10, help="interleaved rounds")
    ap.add_argument("--no-reference", action="store_true")
    args = ap.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(kernels.get_num_threads())
    except ImportError:
        torch = None
    print(f"threads: numba {kernels.get_num_threads()}, torch {torch.get_num_threads() if torch else '-'}")
    hdr = (f"{'case':18} {'kernel ms':>9} {'ref ms':>8} {'torch ms':>8} {'copy ms':>8} "
           f"{'x ref':>6} {'x torch':>7} {'GB/s':>6} {'copy GB/s':>9} {'% copy':>6}")
    print(hdr)
    dt = np.dtype("float32")
    for c in cases(args.pattern):
        if c.group != "optim":
            continue
        w = {"kernel": c.bind(kernels, c.inputs(dt)), "copy": _copy_workload(c.nbytes(dt))}
        if not args.no_reference:
            w["ref"] = c.bind(reference, c.inputs(dt))
        if torch is not None and c.torch_bind is not None:
            w["torch"] = c.torch_bind(c.inputs(dt))
        best = _bench(w, args.repeat, 3)
        tk, tc = best["kernel"], best["copy"]
        tr, tt = best.get("ref", float("nan")), best.get("torch", float("nan"))
        nb = c.nbytes(dt)
        gbs, cgbs = nb / tk / 1e9, nb / tc / 1e9
        print(f"{c.name:18} {tk * 1e3:9.3f} {tr * 1e3:8.2f} {tt * 1e3:8.3f} {tc * 1e3:8.3f} "
              f"{tr / tk:6.1f} {tt / tk:7.2f} {gbs:6.1f} {cgbs:9.1f} {100 * gbs / cgbs:6.0f}")


if __name__ == "__main__":
    main()
