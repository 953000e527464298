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
    processes, which write Numba's on-disk cache; this process then loads
    every kernel from that cache. A worker job is the GEMM's symbols of one
    dtype (first: the convolution and Affine kernels call them) or the ops of
    one kernels module and dtype (they share helpers), and a free worker
    takes the costliest job that may start. Without a cache
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


#: Relative compile cost of each kernel module's ops together (CPU seconds,
#: float32, one process, empty cache, 2-core Zen 5, `python -m
#: numbanet.bench.startup`; the GEMM's symbols and Affine, which compiles
#: after them, from `numbanet-warmup`'s table). Only the order matters: the
#: longest job that can start goes first (longest-processing-time
#: scheduling), so no long job is left for the end while the other workers
#: idle. A module missing here counts as 1.
_COST = {"gemm": 7.0, "conv": 14.8, "pool": 5.6, "optim": 5.1, "batchnorm": 4.7, "loss": 3.6,
         "activation": 2.4, "affine": 2.0}


def _module(name: str) -> str:
    """The kernels module of op ``name`` (``"conv"`` for ``conv2d_forward``)."""
    from numbanet import kernels

    return getattr(kernels, name).__module__.rsplit(".", 1)[-1]


def _run_group(names, dtype: str) -> dict[str, float]:
    """:func:`_run_one` for each op of ``names`` in turn (``("gemm",)``: the
    GEMM's symbols), in this process: ``"op[dtype]"`` -> its wall seconds."""
    return {f"{n}[{dtype}]": _run_one(n, dtype) for n in names}


def _worker_jobs(jobs):
    """``jobs`` (op, dtype) as worker jobs ``(module, dtype, ops)``: the ops
    of one kernels module and dtype together, because they share helpers
    (each worker process compiles, or loads, what it calls itself: the conv
    backward pass compiled in 13.3 s in a worker of its own against 7.7 s
    after the forward pass in the same process, float32, Zen 5). One job
    ``("gemm", dtype, ("gemm",))`` per dtype whose ops call the GEMM."""
    groups = {}
    for n, d in jobs:
        groups.setdefault((_module(n), d), []).append(n)
    gemm = [("gemm", d, ("gemm",)) for d in dict.fromkeys(d for n, d in jobs if n in _GEMM_OPS)]
    return gemm + [(m, d, tuple(ns)) for (m, d), ns in groups.items()]


def _by_cost(worker_jobs):
    """Worker jobs in the order they are tried: the GEMM's, then the rest
    costliest first (:data:`_COST`)."""
    return sorted(worker_jobs, key=lambda j: (j[0] != "gemm", -_COST.get(j[0], 1.0)))


def _pick(pending, free, gemm_done):
    """The jobs to start now: the first ``free`` of ``pending`` (in
    :func:`_by_cost` order) that may start. A job holding a GEMM op may start
    once its dtype is in ``gemm_done`` (its GEMM symbols are in the cache;
    before, its worker would compile them again)."""
    def ready(job):
        return job[0] == "gemm" or job[1] in gemm_done or not any(n in _GEMM_OPS for n in job[2])

    return [j for j in pending if ready(j)][:max(0, free)]


def _warmup_in_workers(jobs, nproc, disable, executor=None) -> dict[str, float]:
    """Run ``jobs`` in ``nproc`` workers of ``executor`` (a
    ``concurrent.futures`` executor class taking the worker count; default
    spawned processes)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from tqdm import tqdm

    # Jobs are handed out one per free worker, not queued up front, so the
    # order is this process's choice (_pick).
    worker_jobs = _worker_jobs(jobs)
    pending = _by_cost(worker_jobs)
    gemm_done = set()
    if executor is None:
        # spawn, not fork: this process may already run Numba's thread pool.
        pool = ProcessPoolExecutor(nproc, mp_context=multiprocessing.get_context("spawn"))
    else:
        pool = executor(nproc)
    seconds = {}
    running = {}
    bar = tqdm(total=sum(len(j[2]) for j in pending), desc=f"numbanet warmup ({nproc} processes)", unit="op",
               disable=disable)
    with pool:
        while pending or running:
            for job in _pick(pending, nproc - len(running), gemm_done):
                pending.remove(job)
                running[pool.submit(_run_group, job[2], job[1])] = job
            if not running:  # cannot happen: each dtype's GEMM job is pending or done
                raise RuntimeError(f"warmup: no job can start of {pending}")
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                m, d, names = running.pop(fut)
                seconds.update(fut.result())
                if m == "gemm":
                    gemm_done.add(d)
                bar.set_postfix_str(f"{m}[{d}]", refresh=False)
                bar.update(len(names))
    bar.close()
    order = [f"gemm[{d}]" for m, d, _ in worker_jobs if m == "gemm"] + [f"{n}[{d}]" for n, d in jobs]
    return {k: seconds[k] for k in order}


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
