"""numbanet's own matrix product (the convolution kernels' GEMM) against NumPy."""

import contextlib

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numbanet.kernels import _gemm
from numbanet.kernels._gemm import MR, gemm, nr

# sizes around the blocking edges: MR rows, NR columns, KC steps, NC columns
# (named, so that the small blocks below apply)
EDGES = [0, 1, 2, ("MR", -1), ("MR", 0), ("MR", 1), 31, 32, 33, ("KC", -1), ("KC", 0), ("KC", 1), ("NC", 3)]


def _size(edge):
    return edge if isinstance(edge, int) else getattr(_gemm, edge[0]) + edge[1]


@contextlib.contextmanager
def _blocks():
    """With NUMBA_DISABLE_JIT (coverage runs the kernels as plain Python) use
    small KC and NC blocks, so the same edges are reached in seconds."""
    if not numba.config.DISABLE_JIT:
        yield
        return
    old = _gemm.KC, _gemm.NC
    _gemm.KC, _gemm.NC = 16, 64
    try:
        yield
    finally:
        _gemm.KC, _gemm.NC = old


def _operand(rng, shape, dt, layout):
    """A matrix of ``shape`` stored C-contiguous, transposed, or strided."""
    if layout == "T":
        return np.ascontiguousarray(rng.standard_normal(shape[::-1]).astype(dt)).T
    if layout == "strided":
        return rng.standard_normal((shape[0], 2 * shape[1] + 1)).astype(dt)[:, 1::2]
    return rng.standard_normal(shape).astype(dt)


def _check(m, k, n, dt, la, lb, accumulate, seed, row_pad=3):
    rng = np.random.default_rng(seed)
    a = _operand(rng, (m, k), dt, la)
    b = _operand(rng, (k, n), dt, lb)
    # c: contiguous rows with a row stride of n + row_pad (a view into a wider array)
    wide = rng.standard_normal((m, n + row_pad)).astype(dt)
    c = wide[:, :n]
    before = c.copy()
    gemm(a, b, c, accumulate)
    want = a.astype(np.float64) @ b.astype(np.float64) + (before if accumulate else 0)
    tol = (2e-5 if dt == np.float32 else 1e-12) * max(1, k) ** 0.5
    np.testing.assert_allclose(c, want, rtol=tol, atol=tol)
    return a, b


@given(m=st.sampled_from(EDGES), k=st.sampled_from(EDGES), n=st.sampled_from(EDGES[:-1]),
       f32=st.booleans(), la=st.sampled_from(["C", "T", "strided"]), lb=st.sampled_from(["C", "T", "strided"]),
       accumulate=st.booleans(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=80, deadline=None)
def test_gemm_matches_numpy(m, k, n, f32, la, lb, accumulate, seed):
    with _blocks():
        _check(_size(m), _size(k), _size(n), np.float32 if f32 else np.float64, la, lb, accumulate, seed)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_gemm_wide_n_and_row_stride_leave_the_rest_alone(dt):
    rng = np.random.default_rng(1)
    with _blocks():
        m, k, n = 19, 70, _gemm.NC + 45  # two NC blocks, ragged tiles everywhere
        a, b = rng.standard_normal((m, k)).astype(dt), rng.standard_normal((k, n)).astype(dt)
        wide = np.full((m, n + 7), 5.0, dt)
        gemm(a, b, wide[:, :n], False)
    np.testing.assert_allclose(wide[:, :n], a @ b, rtol=1e-4 if dt == np.float32 else 1e-12, atol=1e-4)
    assert (wide[:, n:] == 5).all()  # the columns beyond c are not touched
    assert wide.dtype == dt


def test_gemm_is_deterministic_and_propagates_nan():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((40, 600)).astype(np.float32)
    b = rng.standard_normal((600, 70)).astype(np.float32)
    c1, c2 = np.empty((40, 70), np.float32), np.empty((40, 70), np.float32)
    gemm(a, b, c1, False)
    gemm(a, b, c2, False)
    assert np.array_equal(c1, c2)
    a[3, 17] = np.nan
    b[5, 9] = np.inf
    gemm(a, b, c1, False)
    assert np.isnan(c1[3]).all()
    assert np.isinf(np.delete(c1[:, 9], 3)).all()
    assert np.isfinite(np.delete(np.delete(c1, 3, 0), 9, 1)).all()


def test_tile_width():
    assert nr(4) == 32 and nr(8) == 16


_OTHER_WIDTH_PROBE = """
import json
import numpy as np
from numbanet.kernels import _gemm
rng = np.random.default_rng(0)
errs = []
for dt in (np.float32, np.float64):
    for m, k, n in [(1, 1, 1), (9, 300, 33), (17, 5, 70)]:
        a, b = rng.standard_normal((m, k)).astype(dt), rng.standard_normal((k, n)).astype(dt)
        c = np.empty((m, n), dt)
        _gemm.gemm(a, b, c, False)
        errs.append(float(np.abs(c - a.astype(np.float64) @ b).max()))
print(json.dumps({"width": _gemm.VECTOR_BYTES, "nr32": _gemm.nr(4), "err": max(errs)}))
"""


@pytest.mark.parametrize("width", [16, 32])
def test_gemm_is_right_at_narrower_vector_widths(tmp_path, width):
    """Machines without AVX-512 get 32-byte vectors (and 16 works too); a
    fresh cache directory, because cached kernels know only the CPU."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBANET_GEMM_VECTOR_BYTES": str(width), "NUMBA_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", _OTHER_WIDTH_PROBE], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["width"] == width and out["nr32"] == 2 * width // 4
    assert out["err"] < 1e-3
