import numba
import numpy as np
import pytest

from numbanet.nets import numerical_gradient


@pytest.mark.parametrize("n,k", [(0, 3), (1, 1), (1, 10), (7, 3), (64, 100), (257, 11), (3, 1000)])
@pytest.mark.parametrize("one_hot", [False, True])
def test_softmax_cross_entropy_matches_reference(K, R, close, dtype, rng, n, k, one_hot):
    logits = (rng.standard_normal((n, k)) * 5).astype(dtype)
    labels = rng.integers(0, k, n)
    if one_hot:
        labels = np.eye(k, dtype=dtype)[labels]
    loss, probs = K.softmax_cross_entropy(logits, labels)
    rloss, rprobs = R.softmax_cross_entropy(logits, labels)
    assert type(loss) is type(rloss) and np.asarray(loss).dtype == dtype
    if n == 0:
        assert np.isnan(loss) and np.isnan(rloss)
    else:
        close(np.asarray(loss), np.asarray(rloss))
    close(probs, rprobs)
    close(K.softmax_cross_entropy_backward(probs, labels), R.softmax_cross_entropy_backward(rprobs, labels))


def test_softmax_cross_entropy_large_logits_are_stable(K, R, dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4 - 1, 1e4 - 2]], dtype)
    labels = np.array([1, 0, 2])
    loss, probs = K.softmax_cross_entropy(logits, labels)
    assert np.isfinite(loss) and np.isfinite(probs).all()
    # row 0: -log p1 = 2e4; row 1: log 3; row 2: 2 + log(1 + e^-1 + e^-2)
    expect = (2e4 + np.log(3) + 2 + np.log(1 + np.exp(-1) + np.exp(-2))) / 3
    np.testing.assert_allclose(loss, expect, rtol=1e-6)
    rloss, rprobs = R.softmax_cross_entropy(logits, labels)
    np.testing.assert_allclose(loss, rloss, rtol=1e-6)


def test_softmax_cross_entropy_nan_propagates(K):
    logits = np.array([[0.0, np.nan, 1.0], [0.0, 1.0, 2.0]])
    loss, probs = K.softmax_cross_entropy(logits, np.array([0, 1]))
    assert np.isnan(loss) and np.isnan(probs[0]).all() and np.isfinite(probs[1]).all()


def test_softmax_cross_entropy_gradient_check(K, rng):
    logits = rng.standard_normal((5, 4))
    for labels in (rng.integers(0, 4, 5), np.eye(4)[rng.integers(0, 4, 5)]):
        _, probs = K.softmax_cross_entropy(logits, labels)
        analytic = K.softmax_cross_entropy_backward(probs, labels)
        numeric = numerical_gradient(lambda: K.softmax_cross_entropy(logits, labels)[0], logits)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize(
    "labels,exc,match",
    [
        (np.array([0, 3]), ValueError, r"labels must lie in \[0, 3\) for 3 classes, got 3"),
        (np.array([-1, 0]), ValueError, r"got -1"),
        (np.array([0, 1, 2]), ValueError, r"labels must have shape \(2,\)"),
        (np.array([0.0, 1.0]), TypeError, "integer class indices, got dtype float64"),
        (np.zeros((2, 4)), ValueError, r"labels must have shape \(2, 3\)"),
        (np.zeros((2, 3, 1), int), ValueError, "labels must be class indices"),
        (None, TypeError, "labels must be"),
    ],
)
def test_softmax_cross_entropy_bad_labels(K, labels, exc, match):
    with pytest.raises(exc, match=match):
        K.softmax_cross_entropy(np.zeros((2, 3)), labels)
    with pytest.raises(exc, match=match):
        K.softmax_cross_entropy_backward(np.zeros((2, 3)), labels)


def test_softmax_cross_entropy_bad_logits(K):
    with pytest.raises(ValueError, match="logits must be 2-D"):
        K.softmax_cross_entropy(np.zeros(3), np.array([0]))
    with pytest.raises(TypeError, match="logits must have dtype"):
        K.softmax_cross_entropy(np.zeros((2, 3), np.float16), np.array([0, 1]))
    with pytest.raises(ValueError, match="at least one class"):
        K.softmax_cross_entropy(np.zeros((2, 0)), np.array([0, 0]))


def test_softmax_cross_entropy_infinities_match_reference(K, R, dtype):
    inf = np.inf
    logits = np.array(
        [[0.0, -inf, 1.0], [inf, 0.0, 1.0], [-inf, -inf, -inf], [2.0, 2.0, -inf]], dtype
    )
    labels = np.array([0, 1, 2, 1])
    with np.errstate(invalid="ignore"):
        want_loss, want = R.softmax_cross_entropy(logits, labels)
    loss, got = K.softmax_cross_entropy(logits, labels)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[0, 1] == 0 and got[3, 2] == 0
    assert np.isnan(loss) and np.isnan(want_loss)
    # finite rows alone give a finite loss
    loss, _ = K.softmax_cross_entropy(logits[[0, 3]], labels[[0, 3]])
    want_loss, _ = R.softmax_cross_entropy(logits[[0, 3]], labels[[0, 3]])
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)


@pytest.mark.skipif(
    numba.config.DISABLE_JIT,
    reason="tests the compiled float32 polynomial; with NUMBA_DISABLE_JIT=1 NumPy's exp stands in",
)
def test_float32_exp_accuracy(K):
    """The vectorised float32 exp over [-87.3, 0] on a million points: within
    1.02 ulp of the exact exp (measured 1.013 ulp; NumPy's float32 exp 2.31),
    and the softmax probabilities built on it within 3 ulp (measured 2.62)."""
    from numbanet.kernels import loss

    @numba.njit
    def exp_all(x, y):
        for i in range(x.size):
            y[i] = loss._exp_nonpositive(x[i])

    x = -np.linspace(0, 87.3, 1_000_001).astype(np.float32)
    e = np.exp(x.astype(np.float64))
    got = np.empty_like(x)
    exp_all(x, got)
    assert (np.abs(got - e) / np.spacing(e.astype(np.float32)).astype(np.float64)).max() <= 1.02
    logits = np.stack([np.zeros_like(x), x], axis=1)  # max 0, so p1 = exp(x) / (1 + exp(x))
    _, probs = K.softmax_cross_entropy(logits, np.zeros(x.size, np.int64))
    want = e / (1 + e)
    ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
    # exp, then the sum, the reciprocal and the product each round once
    assert (np.abs(probs[:, 1] - want) / ulp).max() <= 3.0


@pytest.mark.skipif(
    numba.config.DISABLE_JIT,
    reason="tests the compiled float64 polynomial; with NUMBA_DISABLE_JIT=1 NumPy's exp stands in",
)
def test_float64_exp_accuracy(K):
    """The vectorised float64 exp over [-708.39, 0] on three million points,
    dense near 0 where softmax lives: within 1 ulp of the exact exp (measured
    0.991 ulp; NumPy's 0.506), 0 below the normal range. The exact exp is
    np.longdouble's where that has more bits than float64 (x86's 80-bit);
    elsewhere NumPy's float64 exp, itself within 0.51 ulp, so the bound
    widens by that much."""
    from numbanet.kernels import loss

    @numba.njit
    def exp_all(x, y):
        for i in range(x.size):
            y[i] = loss._exp_nonpositive(x[i])

    rng = np.random.default_rng(0)
    x = np.concatenate([-np.linspace(0, 708.39, 1_000_001), -rng.random(1_000_000), -50 * rng.random(1_000_000)])
    got = np.empty_like(x)
    exp_all(x, got)
    if np.finfo(np.longdouble).nmant > 60:
        exact, bound = np.exp(x.astype(np.longdouble)), 1.0
    else:
        exact, bound = np.exp(x).astype(np.longdouble), 1.51
    ulps = np.abs(got.astype(np.longdouble) - exact) / np.spacing(got).astype(np.longdouble)
    assert float(ulps.max()) <= bound
    below = np.array([-708.4, -745.0, -1e300, -np.inf])
    out = np.empty_like(below)
    exp_all(below, out)
    assert (out == 0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_read_only_labels_compile_nothing_new(K, dtype):
    """Read-only labels (index or one-hot, e.g. loaded from a file) are copied
    like read-only float inputs: no read-only kernel specialisation, which
    warm-up cannot foresee."""
    import numba

    from numbanet.kernels import loss as kloss

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 3)).astype(dtype)
    for labels in (np.array([0, 2, 1, 2]), np.eye(3, dtype=dtype)[[0, 2, 1, 2]]):
        want = K.softmax_cross_entropy(logits, labels)
        labels.setflags(write=False)
        got = K.softmax_cross_entropy(logits, labels)
        assert got[0] == want[0] and np.array_equal(got[1], want[1])
        assert np.array_equal(K.softmax_cross_entropy_backward(got[1], labels),
                              K.softmax_cross_entropy_backward(want[1], labels.copy()))
    if not numba.config.DISABLE_JIT:
        for kern in (kloss._softmax_cross_entropy, kloss._softmax_cross_entropy_backward):
            assert not [s for s in kern.signatures
                        if any(isinstance(a, numba.types.Array) and not a.mutable for a in s)]
