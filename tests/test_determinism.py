"""Determinism: repeated calls, thread counts and concurrent Python threads.

Every registry case (the benchmark shapes, which take the parallel and
per-strategy paths the tiny examples don't) must give bitwise identical
results when called again with the same inputs, and with 1 thread and with
all: the Numba kernels give each output element to one task and reduce
per-chunk partial sums in a fixed order, and numbanet's own GEMM (convolution
and Affine) sums every output element in the same order however the work is
split. No kernel calls BLAS, whose float32 products change with its thread
count.
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


@pytest.fixture
def restore_threads():
    before = kernels.get_num_threads()
    yield
    kernels.set_num_threads(before)


@pytest.mark.parametrize("case,dtype", PAIRS, ids=IDS)
def test_repeatable_and_thread_count_independent(case, dtype, restore_threads):
    top = numba.config.NUMBA_NUM_THREADS
    kernels.set_num_threads(top)
    many = run(case, dtype)
    assert bitwise_equal(many, run(case, dtype)), f"{case.name} {dtype} differs between two calls"
    if top < 2:
        pytest.skip("NUMBA_NUM_THREADS is 1: repeatability checked, thread-count independence cannot be")
    kernels.set_num_threads(1)
    one = run(case, dtype)
    assert bitwise_equal(one, many), f"{case.name} {dtype}: 1 thread and {top} threads differ bitwise"


def _smallest_case_per_group():
    """One case per group (its smallest inputs): concurrency is about the
    kernels' code paths sharing the thread pool, not about size."""
    best = {}
    for c in cases():
        size = sum(np.asarray(a).nbytes for a in _inputs(c.name, c.dtypes[0]).values())
        if c.group not in best or size < best[c.group][0]:
            best[c.group] = (size, c)
    return [c for _, c in best.values()]


def test_concurrent_python_threads_get_serial_results():
    # Kernels release the GIL (nogil=True); several Python threads calling
    # them at once must each get exactly the serial result.
    pairs = [(c, dt) for c in _smallest_case_per_group() for dt in c.dtypes]
    serial = [run(c, dt) for c, dt in pairs]
    if not numba.config.DISABLE_JIT and numba.threading_layer() == "workqueue":
        pytest.skip("Numba's workqueue threading layer aborts on concurrent use; install tbb or libgomp")
    jobs = [i for i in range(len(pairs)) for _ in range(3)]
    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda i: (i, run(*pairs[i])), jobs))
    for i, got in results:
        c, dt = pairs[i]
        assert bitwise_equal(got, serial[i]), f"{c.name} {dt} differs when run concurrently"
