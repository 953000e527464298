import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import numbanet.kernels as kernels
import numbanet.reference as reference


def pytest_configure(config):
    # Start Numba's threads the way numbanet does (idle OpenMP workers spin
    # briefly, then sleep), before any test calls numba.set_num_threads
    # directly and starts them with libgomp's long default spin.
    kernels.get_num_threads()

# The first example of each kernel pays for JIT compilation: no deadline.
settings.register_profile(
    "numbanet",
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("ci", parent=settings.get_profile("numbanet"), max_examples=60)
settings.load_profile("numbanet")

DTYPES = [np.float32, np.float64]

#: Relative tolerance (normwise: max|k - r| / max|r|) for kernel vs reference.
RTOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def assert_close(got, want, rtol=None, what=""):
    """Normwise comparison used everywhere: same shape and dtype, and
    max|got - want| <= rtol * max(max|want|, 1)."""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what} shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what} dtype {got.dtype} != {want.dtype}"
    if got.size == 0:
        return
    if rtol is None:
        rtol = RTOL[want.dtype]
    scale = max(float(np.abs(want).max()), 1.0)
    err = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
    assert err <= rtol * scale, f"{what} max abs error {err:.3g} > {rtol:.1g} * {scale:.3g}"


@pytest.fixture(scope="session")
def close():
    return assert_close


@pytest.fixture(scope="session")
def K():
    return kernels


@pytest.fixture(scope="session")
def R():
    return reference
