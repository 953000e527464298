"""Determinism: repeated calls, thread counts and concurrent Python threads.

Every registry case (the benchmark shapes, which take the parallel paths the
tiny examples don't) must give bitwise identical results when called again
with the same inputs and thread count. Across thread counts (1 vs all), the
cases in ``BITWISE_ACROSS_THREADS`` must agree bitwise; the others (whose
matrix products run on OpenBLAS, whose float32 GEMM changes its summation
order with its thread count) within the case's tolerance.
"""

import functools
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pytest

import numbanet.kernels as kernels
from numbanet.bench import cases
from numbanet.bench.registry import flatten_outputs

PAIRS = [(c, dt) for c in cases() for dt in c.dtypes]
IDS = [f"{c.name}-{dt}" for c, dt in PAIRS]

#: Cases whose every output is bitwise independent of the thread count: the
#: Numba kernels give each output element to one task and reduce per-chunk
#: partial sums in a fixed order. Not listed: cases with OpenBLAS products
#: (``affine_*``: float64 agrees bitwise on this machine, float32 does not).
BITWISE_ACROSS_THREADS = {"softmax_ce", "relu_conv"}


@functools.lru_cache(maxsize=None)
def _inputs(name, dtype):
    # Built once per case: binds copy what they mutate, and the large
    # optimizer cases take longer to build than to run.
    return next(c for c in cases() if c.name == name).inputs(dtype)


def run(case, dtype):
    out = case.bind(kernels, _inputs(case.name, dtype))()
    return [np.array(o, copy=True) for o in flatten_outputs(out)]


def bitwise_equal(a, b):
    return len(a) == len(b) and all(
        x.shape == y.shape and x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(a, b)
    )


def max_rel(a, b):
    from numbanet.bench import compare_outputs

    return compare_outputs(a, b)[1]


@pytest.fixture
def restore_threads():
    before = kernels.get_num_threads()
    yield
    kernels.set_num_threads(before)


@pytest.mark.parametrize("case,dtype", PAIRS, ids=IDS)
def test_repeated_calls_are_bitwise_identical(case, dtype):
    first = run(case, dtype)
    assert bitwise_equal(first, run(case, dtype)), f"{case.name} {dtype} differs between two calls"


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs at least 2 Numba threads")
@pytest.mark.parametrize("case,dtype", PAIRS, ids=IDS)
def test_one_thread_agrees_with_all_threads(case, dtype, restore_threads):
    kernels.set_num_threads(1)
    one = run(case, dtype)
    kernels.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    many = run(case, dtype)
    if case.name in BITWISE_ACROSS_THREADS:
        assert bitwise_equal(one, many), f"{case.name} {dtype}: 1 thread and all threads differ bitwise"
    else:
        rel = max_rel(one, many)
        assert rel <= case.tol[dtype], f"{case.name} {dtype}: threads change results by {rel:.3g}"


def test_bitwise_list_names_registered_cases():
    assert BITWISE_ACROSS_THREADS <= {c.name for c in cases()}


def test_concurrent_python_threads_get_serial_results():
    # Kernels release the GIL (nogil=True); several Python threads calling
    # them at once must each get exactly the serial result.
    serial = {i: run(c, dt) for i, (c, dt) in enumerate(PAIRS)}
    if not numba.config.DISABLE_JIT and numba.threading_layer() == "workqueue":
        pytest.skip("Numba's workqueue threading layer aborts on concurrent use; install tbb or libgomp")
    jobs = [i for i in serial for _ in range(2)]
    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda i: (i, run(*PAIRS[i])), jobs))
    for i, got in results:
        assert bitwise_equal(got, serial[i]), f"{IDS[i]} differs when run concurrently"
