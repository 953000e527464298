"""Side-by-side timing and peak memory of the conv/pool registry cases.

Times each case's forward+backward workload on :mod:`numbanet.kernels`,
:mod:`numbanet.reference` and PyTorch (threads matched to Numba's) in one
process, alternating blocks of kernel and torch runs so that load from other
processes hits both alike, and prints medians (or minima) and ratios::

    python -m numbanet.bench.conv_measure                 # all conv/pool cases
    python -m numbanet.bench.conv_measure conv_mid --memory

``--memory`` measures the peak extra resident memory of one workload call in
fresh subprocesses (one per implementation): after a warm-up call (JIT
compilation or cache load) the peak-RSS mark is reset through
``/proc/self/clear_refs`` and the growth of ``VmHWM`` over the settled
``VmRSS`` during the next call is reported. ``MALLOC_MMAP_THRESHOLD_`` is fixed
so that glibc returns large freed blocks to the OS (the baseline is not
inflated by the warm-up's freed buffers). This counts Numba's NRT allocations,
which ``tracemalloc`` does not see.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from .registry import cases
from .timing import call_time

_MEMORY_CHILD = r"""
import gc, sys
import numpy as np
import numbanet.kernels, numbanet.reference
from numbanet.bench.registry import get

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
case = get(sys.argv[1])
impl = getattr(numbanet, sys.argv[2])
run = case.bind(impl, case.inputs(sys.argv[3]))
out = run()
out_bytes = sum(np.asarray(o).nbytes for o in out)
del out
gc.collect()
base = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
out = run()
print(status("VmHWM") - base, out_bytes)
"""


def memory(name, impl, dtype="float32"):
    """Peak extra RSS (bytes) of one workload call, and the bytes of its outputs."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    res = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, name, impl, dtype],
        env=env, capture_output=True, text=True, check=True,
    )
    extra, out_bytes = map(int, res.stdout.split())
    return extra, out_bytes


def measure(case, dtype="float32", repeat=7, ref_repeat=3, stat="median", budget=0.0):
    """Seconds per call (median or min over the repeats) for kernels, reference
    and torch (None if absent)."""
    import numbanet.kernels as kernels
    import numbanet.reference as reference

    k_run = case.bind(kernels, case.inputs(dtype))
    k_run()  # compile / load cache
    t_run = None
    if case.torch_bind is not None:
        try:
            import torch

            torch.set_num_threads(kernels.get_num_threads())
            t_run = case.torch_bind(case.inputs(dtype))
            t_run()
        except ImportError:
            t_run = None
    # Three rounds of a block of kernel calls then a block of torch calls:
    # blocks, not strict alternation, because each runtime's idle OpenMP
    # threads keep spinning for a while after a parallel region and would
    # steal the cores from the other's next call. Each block has at least
    # repeat/3 calls and runs on until budget/6 seconds, so that fast cases
    # get enough samples on a shared machine.
    k_times, t_times = [], []
    per_block = max(1, -(-repeat // 3))
    for _ in range(3):
        for run, times in ((k_run, k_times), (t_run, t_times)):
            if run is None:
                continue
            start = time.perf_counter()
            count = 0
            while count < per_block or (time.perf_counter() - start < budget / 6 and count < 300):
                times.append(call_time(run))
                count += 1
    r_run = case.bind(reference, case.inputs(dtype))
    r_times = [call_time(r_run) for _ in range(ref_repeat)]
    agg = statistics.median if stat == "median" else min
    return agg(k_times), agg(r_times), (agg(t_times) if t_times else None)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pattern", nargs="?", default="conv*,pool*")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--stat", choices=("median", "min"), default="median",
                   help="min estimates the unloaded speed on a busy machine")
    p.add_argument("--budget", type=float, default=0.0, help="keep repeating up to this many seconds per case")
    p.add_argument("--memory", action="store_true", help="also measure peak extra RSS")
    args = p.parse_args(argv)
    from threadpoolctl import threadpool_info

    blas = {i["prefix"]: i.get("architecture") for i in threadpool_info() if i["user_api"] == "blas"}
    from numbanet.kernels import get_num_threads

    print(f"threads: numba {get_num_threads()}, dtype {args.dtype}, {args.stat} of {args.repeat}; BLAS {blas}")
    print(f"{'case':16s} {'kernel ms':>10s} {'ref ms':>10s} {'torch ms':>10s} {'ref/k':>7s} {'torch/k':>8s} {'GFLOP/s':>8s}")
    for case in cases(args.pattern):
        k, r, t = measure(case, args.dtype, args.repeat, stat=args.stat, budget=args.budget)
        gf = f"{case.flops / k / 1e9:8.1f}" if case.flops else f"{'':8s}"
        ts = f"{t * 1e3:10.2f}" if t else f"{'-':>10s}"
        tr = f"{t / k:8.2f}" if t else f"{'-':>8s}"
        print(f"{case.name:16s} {k * 1e3:10.2f} {r * 1e3:10.1f} {ts} {r / k:7.1f} {tr} {gf}", flush=True)
        if args.memory:
            for impl in ("kernels", "reference"):
                extra, out_bytes = memory(case.name, impl, args.dtype)
                print(f"    peak extra RSS {impl:9s}: {extra / 2**20:8.1f} MiB (outputs {out_bytes / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
