"""Compile kernels ahead of time (for servers and benchmarks)."""

from __future__ import annotations

import time

import numpy as np

from ._examples import available, examples

__all__ = ["warmup"]


def warmup(dtypes=("float32",), ops=None, progress=None) -> dict[str, float]:
    """Compile (or load from the on-disk cache) the kernels of ``ops``.

    Calls every chosen public function on tiny valid inputs
    (:data:`numbanet.kernels._examples.EXAMPLES`), which compiles each
    ``@njit`` kernel it reaches for that dtype, so the first real call pays no
    compilation. With a warm cache this only loads the compiled code.

    Parameters
    ----------
    dtypes : sequence of str or dtype
        ``"float32"`` and/or ``"float64"``.
    ops : sequence of str, optional
        Public function names (``"affine_forward"``, ...); all ops by default.
    progress : bool, optional
        Show a tqdm progress bar; ``None`` (default) shows it only on a
        terminal.

    Returns
    -------
    seconds : dict
        ``"op[dtype]"`` -> wall time spent compiling or loading it.
    """
    from tqdm import tqdm

    from numbanet import kernels

    from . import validate as v

    dts = [np.dtype(d) for d in ([dtypes] if isinstance(dtypes, (str, np.dtype, type)) else dtypes)]
    for d in dts:
        if d not in v.FLOAT_DTYPES:
            raise TypeError(f"warmup: dtypes must be float32 or float64, got {d}")
    table = available()
    names = list(table) if ops is None else [ops] if isinstance(ops, str) else list(ops)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"warmup: ops must be names of kernel functions {sorted(table)}, got {unknown}")
    jobs = [(n, d) for d in dts for n in names]
    seconds = {}
    bar = tqdm(jobs, desc="numbanet warmup", unit="op", disable=None if progress is None else not progress)
    for name, d in bar:
        bar.set_postfix_str(f"{name}[{d}]", refresh=False)
        fn = getattr(kernels, name)
        t0 = time.perf_counter()
        for kwargs in examples(name, d):
            fn(**kwargs)
        seconds[f"{name}[{d}]"] = time.perf_counter() - t0
    bar.close()
    return seconds


def dispatchers() -> dict[str, object]:
    """Every ``@njit`` dispatcher in the kernels package, ``"module.name"`` -> it.

    Imports nothing new beyond :mod:`numbanet.kernels`' own modules; used by
    the tests (nothing compiled at import, warm-up reaches every kernel) and
    by ``bench/startup.py``.
    """
    import sys

    from numba.core.registry import CPUDispatcher

    found = {}
    for modname, mod in sorted(sys.modules.items()):
        if not modname.startswith("numbanet.kernels.") or mod is None:
            continue
        for attr, obj in vars(mod).items():
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
