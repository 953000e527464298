"""Compile kernels ahead of time (for servers and benchmarks)."""

from __future__ import annotations

import os
import time

import numpy as np

from ._examples import available, examples

__all__ = ["warmup", "default_processes", "main"]


#: Ops whose kernels call the GEMM's external symbols (compiled once per dtype
#: first, so that parallel workers do not each compile it).
_GEMM_OPS = ("affine_forward", "affine_backward", "conv2d_forward", "conv2d_backward")


def _dtypes(dtypes):
    from . import validate as v

    dts = [np.dtype(d) for d in ([dtypes] if isinstance(dtypes, (str, np.dtype, type)) else dtypes)]
    for d in dts:
        if d not in v.FLOAT_DTYPES:
            raise TypeError(f"warmup: dtypes must be float32 or float64, got {d}")
    return dts


def _names(ops):
    table = available()
    names = list(table) if ops is None else [ops] if isinstance(ops, str) else list(ops)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"warmup: ops must be names of kernel functions {sorted(table)}, got {unknown}")
    return names


def _run_one(name: str, dtype: str) -> float:
    """Compile (or load) one op for one dtype in this process: its wall seconds.
    ``name`` ``"gemm"`` compiles the GEMM's external symbols only."""
    from numbanet import kernels

    t0 = time.perf_counter()
    if name == "gemm":
        from numba import from_dtype

        from ._gemm_ext import link

        link(from_dtype(np.dtype(dtype)))
    else:
        fn = getattr(kernels, name)
        for kwargs in examples(name, dtype):
            fn(**kwargs)
    return time.perf_counter() - t0


def default_processes() -> int:
    """Worker processes :func:`warmup` uses by default: the cores this process
    may run on (at most 8; one means compiling in this process)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def warmup(dtypes=("float32",), ops=None, progress=None, processes=1) -> dict[str, float]:
    """Compile (or load from the on-disk cache) the kernels of ``ops``.

    Calls every chosen public function on tiny valid inputs
    (:data:`numbanet.kernels._examples.EXAMPLES`), which compiles each
    ``@njit`` kernel it reaches for that dtype, so the first real call pays no
    compilation. With a warm cache this only loads the compiled code.

    With ``processes > 1`` the ops compile in that many fresh worker
    processes, which write Numba's on-disk cache (the GEMM's symbols first,
    one job per dtype, since the convolution and Affine kernels call them);
    this process then loads every kernel from that cache. Without a cache
    (``NUMBANET_DISABLE_CACHE=1``) workers could not hand anything back, so
    everything compiles here.

    Parameters
    ----------
    dtypes : sequence of str or dtype
        ``"float32"`` and/or ``"float64"``.
    ops : sequence of str, optional
        Public function names (``"affine_forward"``, ...); all ops by default.
    progress : bool, optional
        Show a tqdm progress bar; ``None`` (default) shows it only on a
        terminal.
    processes : int or None
        Worker processes; ``None`` for :func:`default_processes` (the cores
        available), 1 (default) to compile in this process only.

    Returns
    -------
    seconds : dict
        ``"op[dtype]"`` -> wall time spent compiling or loading it (in the
        worker that did it; plus ``"gemm[dtype]"`` for the GEMM's symbols when
        compiled by workers).
    """
    from tqdm import tqdm

    from ._config import CACHE

    dts = _dtypes(dtypes)
    names = _names(ops)
    nproc = default_processes() if processes is None else int(processes)
    if nproc < 1:
        raise ValueError(f"warmup: processes must be >= 1 or None, got {processes!r}")
    jobs = [(n, str(d)) for d in dts for n in names]
    disable = None if progress is None else not progress
    if nproc > 1 and CACHE and len(jobs) > 1:
        seconds = _warmup_in_workers(jobs, min(nproc, len(jobs)), disable)
        _load_here(jobs)
        return seconds
    seconds = {}
    bar = tqdm(jobs, desc="numbanet warmup", unit="op", disable=disable)
    for name, d in bar:
        bar.set_postfix_str(f"{name}[{d}]", refresh=False)
        seconds[f"{name}[{d}]"] = _run_one(name, d)
    bar.close()
    return seconds


def _warmup_in_workers(jobs, nproc, disable) -> dict[str, float]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm import tqdm

    # The GEMM's symbols first (one job per dtype that needs them), then the
    # ops without a GEMM while those compile, then the GEMM ops: workers pick
    # jobs in submission order.
    gemm = [("gemm", d) for d in dict.fromkeys(d for n, d in jobs if n in _GEMM_OPS)]
    ordered = gemm + [j for j in jobs if j[0] not in _GEMM_OPS] + [j for j in jobs if j[0] in _GEMM_OPS]
    # spawn, not fork: this process may already run Numba's thread pool.
    ctx = multiprocessing.get_context("spawn")
    seconds = {}
    with ProcessPoolExecutor(nproc, mp_context=ctx) as pool:
        futures = {pool.submit(_run_one, n, d): f"{n}[{d}]" for n, d in ordered}
        bar = tqdm(total=len(futures), desc=f"numbanet warmup ({nproc} processes)", unit="op", disable=disable)
        for fut in as_completed(futures):
            seconds[futures[fut]] = fut.result()
            bar.set_postfix_str(futures[fut], refresh=False)
            bar.update()
        bar.close()
    return {k: seconds[k] for k in (f"{n}[{d}]" for n, d in ordered)}


def _load_here(jobs) -> None:
    """Load what the workers compiled into this process."""
    for name, d in jobs:
        _run_one(name, d)


def dispatchers() -> dict[str, object]:
    """Every ``@njit`` dispatcher in the kernels package, ``"module.name"`` -> it.

    Imports every op module of :mod:`numbanet.kernels` (nothing else); used by
    the tests (nothing compiled at import, warm-up reaches every kernel) and
    by ``bench/startup.py``.
    """
    import sys

    from numba.core.registry import CPUDispatcher

    from numbanet import kernels

    for mod in kernels.OP_MODULES:  # the package imports them on first use only
        getattr(kernels, mod)
    found = {}
    for modname, mod in sorted(sys.modules.items()):
        if not modname.startswith("numbanet.kernels.") or mod is None:
            continue
        for attr, obj in vars(mod).items():
            obj = getattr(obj, "dispatcher", obj)  # a jit(external=True) helper's own dispatcher
            if isinstance(obj, CPUDispatcher) and obj.__module__ == modname:
                found[f"{modname.rsplit('.', 1)[1]}.{attr}"] = obj
    return found


def kernels_reached(op: str) -> dict[str, object]:
    """The dispatchers the public function ``op`` can call directly.

    Follows the names in the wrapper's code (and in the module's pure-Python
    helpers it calls), so a kernel chosen by a branch counts too.
    """
    import types

    from numba.core.registry import CPUDispatcher

    from numbanet import kernels

    found, seen = {}, set()

    def walk(code, glb):
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                walk(const, glb)
        for name in code.co_names:
            obj = glb.get(name)
            if isinstance(obj, CPUDispatcher):
                found[f"{obj.__module__.rsplit('.', 1)[1]}.{name}"] = obj
            elif (
                isinstance(obj, types.FunctionType)
                and obj.__module__.startswith("numbanet.kernels")
                and obj not in seen
            ):
                seen.add(obj)
                walk(obj.__code__, obj.__globals__)

    fn = getattr(kernels, op).__wrapped__  # the op under its @kernel_op
    walk(fn.__code__, fn.__globals__)
    return found


def main(argv=None) -> int:
    """``numbanet-warmup``: compile every kernel ahead of time (see ``--help``)."""
    import argparse

    import numba

    p = argparse.ArgumentParser(
        prog="numbanet-warmup",
        description="Compile numbanet's kernels into Numba's on-disk cache ahead of time. "
        "Point NUMBA_CACHE_DIR at a directory to build a cache to ship (Docker images, "
        "clusters): machines with the same CPU model then load it instead of compiling; "
        "a CPU with other features ignores it and compiles its own.",
    )
    p.add_argument("--dtypes", default="float32,float64", help="comma-separated (default: float32,float64)")
    p.add_argument("--ops", help="comma-separated op names (default: all)")
    p.add_argument("--processes", "-j", type=int, default=None,
                   help=f"worker processes (default: the cores available, here {default_processes()})")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no table")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    secs = warmup(dtypes=args.dtypes.split(","), ops=args.ops.split(",") if args.ops else None,
                  progress=not args.quiet, processes=args.processes)
    if not args.quiet:
        for name, s in sorted(secs.items(), key=lambda kv: -kv[1]):
            print(f"{s:8.2f} s  {name}")
        where = numba.config.CACHE_DIR or "__pycache__ folders next to numbanet's kernel files"
        print(f"{len(secs)} jobs in {time.perf_counter() - t0:.1f} s; cache: {where}")
    return 0
