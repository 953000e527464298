"""Every registry case: kernels against the reference at the benchmark shapes."""

import numpy as np
import pytest

import numbanet.kernels as kernels
import numbanet.reference as reference
from numbanet.bench import cases, compare_outputs

PAIRS = [(c, dt) for c in cases() for dt in c.dtypes]


@pytest.mark.parametrize("case,dtype", PAIRS, ids=[f"{c.name}-{dt}" for c, dt in PAIRS])
def test_case_kernel_matches_reference(case, dtype):
    inputs = case.inputs(dtype)
    got = case.bind(kernels, inputs)()
    want = case.bind(reference, case.inputs(dtype))()
    max_abs, max_rel = compare_outputs(got, want)
    assert max_rel <= case.tol[dtype], f"{case.name} {dtype}: max rel error {max_rel:.3g} (abs {max_abs:.3g})"


def test_registry_has_standard_cases():
    names = {c.name for c in cases()}
    assert {"affine_mnist", "affine_wide", "softmax_ce"} <= names


def test_compare_outputs_detects_differences():
    a = np.array([1.0, 2.0, np.nan])
    assert compare_outputs([a], [a]) == (0.0, 0.0)
    assert compare_outputs([a + 1], [a])[0] == 1.0
    with pytest.raises(AssertionError, match="NaN"):
        compare_outputs([np.array([1.0, 2.0, 3.0])], [a])
    with pytest.raises(AssertionError, match="dtype"):
        compare_outputs([a.astype(np.float32)], [a])
    # equal infinities agree; the scale is the largest finite |want|
    b = np.array([np.inf, -4.0, 2.0])
    assert compare_outputs([b], [b]) == (0.0, 0.0)
    assert compare_outputs([b + [0.0, 0.0, 1.0]], [b]) == (1.0, 0.25)
    assert compare_outputs([b], [np.array([-np.inf, -4.0, 2.0])])[0] == np.inf
    # outputs that are not arrays of numbers: None (an in-place step's return)
    # agrees with None, integer arrays compare as numbers
    assert compare_outputs([None, np.array([3, 4])], [None, np.array([3, 5])]) == (1.0, 0.2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compare_outputs_all_finite_and_masked_paths_agree(dtype):
    # The same values compared all-finite (fast path) and with one NaN
    # appended to both sides (masked path): the same errors, several outputs.
    rng = np.random.default_rng(1)
    want = [rng.standard_normal(s).astype(dtype) for s in ((7, 5), (13,), ())]
    got = [w + (rng.standard_normal(w.shape) * 1e-3).astype(dtype) for w in want]
    fast = compare_outputs(got, want)
    nan = [np.append(x, np.nan) for x in got], [np.append(x, np.nan) for x in want]
    assert fast == compare_outputs(*nan)
    assert 0.0 < fast[1] < 1e-2
