"""The one registry of named cases that drives the tests, the pytest-benchmark
suite and the ``numbanet-bench`` comparison command.

A :class:`Case` says how to build its inputs and how to run its workload on an
*implementation module*: :mod:`numbanet.kernels` or :mod:`numbanet.reference`,
which share names and signatures. The same ``bind`` therefore serves both, and
the comparison of their outputs is the correctness check.

Area modules (``cases_basic``, ...) define their cases and call
:func:`register`; :func:`cases` imports them on first use.
"""

from __future__ import annotations

import fnmatch
import importlib
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import Any, Callable, Mapping

import numpy as np

# randn(rng, shape, dtype, scale=1.0), for the case modules: written once, in
# kernels/_examples.py (the warm-up and bad-input examples draw with it too)
from numbanet.kernels._examples import randn

# Modules that register cases, in table order. Each new area adds its module.
_CASE_MODULES = ("cases_basic", "cases_conv", "cases_optim", "cases_train", "cases_book")

_REGISTRY: dict[str, "Case"] = {}
_loaded = False

Inputs = dict[str, Any]

DEFAULT_TOL = MappingProxyType({"float32": 1e-4, "float64": 1e-10})


@dataclass(frozen=True)
class Case:
    """A named workload.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"affine_mnist"``.
    group : str
        Area, used to group benchmarks (``"affine"``, ``"conv"``, ...).
    params : Mapping
        Shapes and hyperparameters, reported in tables and ``extra_info``.
    make_inputs : callable ``(dtype, rng) -> dict``
        Builds the inputs (deterministic for a given ``rng`` seed).
    bind : callable ``(impl, inputs) -> (() -> outputs)``
        Returns a zero-argument workload that runs on ``impl`` (a module with
        numbanet's kernel API) and returns a tuple of arrays/scalars. ``bind``
        must copy anything the workload mutates, so each bind starts fresh.
    torch_bind : callable ``(inputs) -> (() -> object)``, optional
        The same workload in PyTorch (imported lazily), for timing and parity.
    flops : float, optional
        Floating point operations per workload call (for GFLOP/s).
    nbytes : callable ``(dtype) -> float``, optional
        Bytes read and written per call (for GB/s).
    tol : Mapping
        Relative tolerance per dtype for ``max|k - r| / max|r|``.
    """

    name: str
    group: str
    params: Mapping[str, Any]
    make_inputs: Callable[[np.dtype, np.random.Generator], Inputs]
    bind: Callable[[ModuleType, Inputs], Callable[[], Any]]
    torch_bind: Callable[[Inputs], Callable[[], Any]] | None = None
    flops: float | None = None
    nbytes: Callable[[np.dtype], float] | None = None
    tol: Mapping[str, float] = field(default_factory=lambda: DEFAULT_TOL)
    dtypes: tuple[str, ...] = ("float32", "float64")
    description: str = ""

    def inputs(self, dtype="float32", seed: int = 0) -> Inputs:
        """Build this case's inputs for ``dtype`` from a fixed seed."""
        return self.make_inputs(np.dtype(dtype), np.random.default_rng(seed))


def register(case: Case) -> Case:
    if case.name in _REGISTRY:
        raise ValueError(f"benchmark case {case.name!r} is registered twice")
    _REGISTRY[case.name] = case
    return case


def _load() -> None:
    global _loaded
    if not _loaded:
        for mod in _CASE_MODULES:
            importlib.import_module(f"{__package__}.{mod}")
        _loaded = True


def cases(pattern: str | None = None) -> list[Case]:
    """All registered cases, or those whose name matches a glob ``pattern``.

    ``pattern`` may hold several comma-separated globs (``"affine*,conv_mid"``);
    a bare word without glob characters matches as a substring.
    """
    _load()
    out = list(_REGISTRY.values())
    if pattern:
        globs = [p.strip() for p in pattern.split(",") if p.strip()]
        globs = [g if any(c in g for c in "*?[") else f"*{g}*" for g in globs]
        out = [c for c in out if any(fnmatch.fnmatchcase(c.name, g) for g in globs)]
    return out


def get(name: str) -> Case:
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no benchmark case {name!r}; known: {sorted(_REGISTRY)}") from None


def torch_inputs(inp, *names, grad=()):
    """PyTorch tensors sharing memory with the arrays ``inp[name]``, in the
    order of ``names``; those named in ``grad`` require gradients (the
    leaves a ``torch_bind``'s backward pass fills)."""
    import torch

    return [torch.from_numpy(inp[n]).requires_grad_(n in grad) for n in names]


def flatten_outputs(out) -> list[np.ndarray]:
    """Outputs of a workload as a flat list of arrays (scalars become 0-D)."""
    if isinstance(out, dict):
        out = [out[k] for k in sorted(out)]
    if not isinstance(out, (tuple, list)):
        out = [out]
    flat = []
    for o in out:
        if isinstance(o, (tuple, list, dict)):
            flat.extend(flatten_outputs(o))
        else:
            flat.append(np.asarray(o))
    return flat


def compare_outputs(got, want) -> tuple[float, float]:
    """Max absolute and max relative error of ``got`` against ``want``.

    The relative error of each output is ``max|got - want| / max|want|``
    (normwise, so that entries near zero don't blow it up); the worst output
    counts. Shapes must agree exactly. NaN in the same places is agreement.
    """
    g_list, w_list = flatten_outputs(got), flatten_outputs(want)
    if len(g_list) != len(w_list):
        raise AssertionError(f"{len(g_list)} outputs, expected {len(w_list)}")
    max_abs = max_rel = 0.0
    for i, (g, w) in enumerate(zip(g_list, w_list)):
        if g.shape != w.shape:
            raise AssertionError(f"output {i}: shape {g.shape}, expected {w.shape}")
        if g.dtype != w.dtype:
            raise AssertionError(f"output {i}: dtype {g.dtype}, expected {w.dtype}")
        if g.size == 0:
            continue
        g64, w64 = g.astype(np.float64, copy=False), w.astype(np.float64, copy=False)
        if g.dtype.kind in "fiu" and np.isfinite(g).all() and np.isfinite(w).all():
            # The common case, without the masked copies below: on the
            # 16M-element optimizer cases those took 9 of numbanet-bench's 70 s.
            a = float(np.abs(g64 - w64).max())
            scale = float(np.abs(w64).max())
            max_abs = max(max_abs, a)
            max_rel = max(max_rel, a / scale if scale > 0 else a)
            continue
        nan_g, nan_w = np.isnan(g64), np.isnan(w64)
        if not np.array_equal(nan_g, nan_w):
            raise AssertionError(f"output {i}: NaN in different places")
        ok = ~nan_w
        if not ok.any():
            continue
        with np.errstate(invalid="ignore"):  # inf - inf: set just below
            diff = np.abs(g64[ok] - w64[ok])
        diff[g64[ok] == w64[ok]] = 0.0  # equal infinities
        a = float(diff.max())
        scale = float(np.abs(w64[ok][np.isfinite(w64[ok])]).max(initial=0.0))
        max_abs = max(max_abs, a)
        max_rel = max(max_rel, a / scale if scale > 0 else a)
    return max_abs, max_rel
