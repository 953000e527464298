import importlib
import os

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
    _require_optional()


#: Comma-separated optional modules that must import (CI installs them). The
#: tests that need one use ``pytest.importorskip``, which would turn a broken
#: install into skips and a green run; importing them here fails it instead.
REQUIRE_VAR = "NUMBANET_REQUIRE"


def _require_optional():
    for name in filter(None, (n.strip() for n in os.environ.get(REQUIRE_VAR, "").split(","))):
        try:
            importlib.import_module(name)
        except Exception as e:
            raise pytest.UsageError(
                f"{REQUIRE_VAR} lists {name!r} but it does not import ({type(e).__name__}: {e}); "
                f"the tests that need it would skip"
            ) from e

# The first example of each kernel pays for JIT compilation: no deadline.
settings.register_profile(
    "numbanet",
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
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
