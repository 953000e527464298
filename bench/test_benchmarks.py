"""pytest-benchmark suite over the case registry.

Not part of a plain ``pytest`` run (``testpaths`` is ``tests``); run it with::

    python -m pytest bench --benchmark-only
    python -m pytest bench --benchmark-only -k affine --benchmark-group-by=group

Each case is timed on :mod:`numbanet.kernels`, :mod:`numbanet.reference` and,
when installed, PyTorch (threads matched to Numba's), grouped per case so the
implementations sit side by side. The JIT compile is excluded: every workload
is called once before timing. ``extra_info`` holds the case parameters and
the GFLOP/s or GB/s achieved.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from numbanet.bench import cases
from numbanet.kernels import get_num_threads

DTYPE = "float32"
IMPLS = ["kernels", "reference", "torch"]


def _bind(case, impl_name):
    inputs = case.inputs(DTYPE)
    if impl_name == "torch":
        if case.torch_bind is None:
            pytest.skip(f"{case.name} has no PyTorch workload")
        torch = pytest.importorskip("torch")
        torch.set_num_threads(get_num_threads())
        return case.torch_bind(inputs)
    return case.bind(importlib.import_module(f"numbanet.{impl_name}"), inputs)


@pytest.mark.parametrize("impl_name", IMPLS)
@pytest.mark.parametrize("case", cases(), ids=lambda c: c.name)
def test_case(benchmark, case, impl_name):
    fn = _bind(case, impl_name)
    fn()  # warm-up: JIT compilation (or cache load) is not timed
    benchmark.group = case.name
    benchmark.name = f"{case.name}[{impl_name}]"
    benchmark.extra_info.update({k: str(v) for k, v in case.params.items()})
    benchmark.extra_info.update(dtype=DTYPE, impl=impl_name, threads=get_num_threads())
    benchmark(fn)
    median = benchmark.stats.stats.median if benchmark.stats else None
    if median:
        if case.flops:
            benchmark.extra_info["GFLOP/s"] = round(case.flops / median / 1e9, 2)
        if case.nbytes:
            benchmark.extra_info["GB/s"] = round(case.nbytes(np.dtype(DTYPE)) / median / 1e9, 2)
