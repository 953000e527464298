import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from numbanet.nets import numerical_gradient

SHAPES = [(2, 1), (5, 3), (64, 100), (257, 7), (2, 3, 1, 1), (4, 5, 6, 7), (1, 16, 8, 8), (3, 2, 5, 1)]


def _inputs(rng, shape, dt, offset=0.0):
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + offset).astype(dt)
    gamma = rng.uniform(0.5, 1.5, c).astype(dt)
    beta = rng.standard_normal(c).astype(dt)
    rm = rng.standard_normal(c).astype(dt)
    rv = rng.uniform(0.5, 2.0, c).astype(dt)
    dy = rng.standard_normal(shape).astype(dt)
    return x, gamma, beta, rm, rv, dy


def _compare(K, R, close, x, gamma, beta, rm, rv, dy, train, momentum=0.9, rtol=None):
    kf = K.batchnorm_forward(x, gamma, beta, rm, rv, momentum, 1e-5, train)
    rf = R.batchnorm_forward(x, gamma, beta, rm, rv, momentum, 1e-5, train)
    for got, want, what in zip(kf, rf, ["y", "mean", "inv_std", "running_mean", "running_var"]):
        close(got, want, rtol=rtol, what=what)
    kb = K.batchnorm_backward(dy, x, gamma, kf[1], kf[2], train)
    rb = R.batchnorm_backward(dy, x, gamma, rf[1], rf[2], train)
    for got, want, what in zip(kb, rb, ["dx", "dgamma", "dbeta"]):
        close(got, want, rtol=rtol, what=what)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", SHAPES)
def test_batchnorm_matches_reference(K, R, close, dtype, rng, shape, train):
    _compare(K, R, close, *_inputs(rng, shape, dtype), train)


@given(
    n=st.integers(2, 40),
    c=st.integers(1, 20),
    hw=st.one_of(st.none(), st.tuples(st.integers(1, 9), st.integers(1, 9))),
    f32=st.booleans(),
    train=st.booleans(),
    momentum=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_batchnorm_hypothesis(K, R, close, n, c, hw, f32, train, momentum, seed):
    dt = np.float32 if f32 else np.float64
    shape = (n, c) if hw is None else (n, c, *hw)
    rng = np.random.default_rng(seed)
    # float32 sums of up to 3240 values: the reference's pairwise float32 sums
    # and the kernel's float64 sums differ by a few ulps of the sum.
    _compare(K, R, close, *_inputs(rng, shape, dt), train, momentum, rtol=1e-4 if f32 else None)


def test_batchnorm_statistics_are_per_channel(K, rng):
    x = rng.standard_normal((8, 3, 4, 5)) * 3 + 7
    c = 3
    y, mean, inv_std, rm, rv = K.batchnorm_forward(x, np.ones(c), np.zeros(c), np.zeros(c), np.ones(c), 0.9, 1e-5)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(inv_std, 1 / np.sqrt(x.var(axis=(0, 2, 3)) + 1e-5), rtol=1e-12)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-5)
    # running statistics: book's momentum, unbiased variance (as PyTorch)
    np.testing.assert_allclose(rm, 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * x.var(axis=(0, 2, 3), ddof=1), rtol=1e-12)


def test_batchnorm_large_mean_float32(K, R, close, rng):
    # A large offset: the two-pass variance must not cancel.
    x, gamma, beta, rm, rv, dy = _inputs(rng, (50, 4, 6, 6), np.float32, offset=1000.0)
    y = K.batchnorm_forward(x, gamma, beta, rm, rv)[0]
    want = R.batchnorm_forward(x.astype(np.float64), gamma.astype(np.float64), beta.astype(np.float64),
                               rm.astype(np.float64), rv.astype(np.float64))[0]
    close(y.astype(np.float64), want, rtol=1e-3)


def test_batchnorm_does_not_modify_inputs(K, rng):
    x, gamma, beta, rm, rv, dy = _inputs(rng, (6, 3, 2, 2), np.float64)
    copies = [a.copy() for a in (x, gamma, beta, rm, rv)]
    K.batchnorm_forward(x, gamma, beta, rm, rv, 0.5, 1e-5, True)
    for a, b in zip((x, gamma, beta, rm, rv), copies):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("shape", [(5, 4), (3, 2, 3, 4)])
def test_batchnorm_gradient_check(K, rng, shape, train):
    x, gamma, beta, rm, rv, dy = _inputs(rng, shape, np.float64)

    def loss():
        return float((K.batchnorm_forward(x, gamma, beta, rm, rv, 0.9, 1e-5, train)[0] * dy).sum())

    _, mean, inv_std, _, _ = K.batchnorm_forward(x, gamma, beta, rm, rv, 0.9, 1e-5, train)
    grads = K.batchnorm_backward(dy, x, gamma, mean, inv_std, train)
    for analytic, var in zip(grads, (x, gamma, beta)):
        np.testing.assert_allclose(analytic, numerical_gradient(loss, var), rtol=1e-6, atol=1e-8)


def test_batchnorm_noncontiguous(K, R, close, rng):
    x = rng.standard_normal((6, 8, 5, 5))[:, ::2]
    g = rng.standard_normal(8)[::2]
    b, rm, rv = np.zeros(4), np.zeros(4), np.ones(4)
    dy = rng.standard_normal((6, 4, 5, 5))
    _compare(K, R, close, x, g, b, rm, rv, dy, True)


def test_batchnorm_deterministic(K, rng):
    x, gamma, beta, rm, rv, dy = _inputs(rng, (100, 30, 12, 12), np.float32)
    a = K.batchnorm_forward(x, gamma, beta, rm, rv)
    b = K.batchnorm_forward(x, gamma, beta, rm, rv)
    for u, w in zip(a, b):
        np.testing.assert_array_equal(u, w)
    da = K.batchnorm_backward(dy, x, gamma, a[1], a[2])
    db = K.batchnorm_backward(dy, x, gamma, a[1], a[2])
    for u, w in zip(da, db):
        np.testing.assert_array_equal(u, w)


def test_batchnorm_bad_input(K, rng):
    x = rng.standard_normal((4, 3))
    ok = dict(gamma=np.ones(3), beta=np.zeros(3), running_mean=np.zeros(3), running_var=np.ones(3))
    with pytest.raises(ValueError, match="batchnorm_forward: x must be 2-D or 4-D"):
        K.batchnorm_forward(x[0], **ok)
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\)"):
        K.batchnorm_forward(x, **{**ok, "gamma": np.ones(4)})
    with pytest.raises(TypeError, match="running_var has dtype float32"):
        K.batchnorm_forward(x, **{**ok, "running_var": np.ones(3, np.float32)})
    with pytest.raises(TypeError, match="dtype float32 or float64"):
        K.batchnorm_forward(x.astype(int), **ok)
    with pytest.raises(ValueError, match="momentum must lie in"):
        K.batchnorm_forward(x, **ok, momentum=1.5)
    with pytest.raises(ValueError, match="eps must lie in"):
        K.batchnorm_forward(x, **ok, eps=0.0)
    with pytest.raises(TypeError, match="train must be a bool"):
        K.batchnorm_forward(x, **ok, train="yes")
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        K.batchnorm_forward(x[:1], **ok)
    K.batchnorm_forward(x[:1], **ok, train=False)  # inference on one sample is fine
    with pytest.raises(ValueError, match="dy must have shape"):
        K.batchnorm_backward(np.ones((4, 2)), x, np.ones(3), np.zeros(3), np.ones(3))


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", SHAPES + [(300, 100), (8, 16, 32, 32)])  # the last two: the parallel paths
def test_batchnorm_relu_fused_is_bitwise_the_two_ops(K, R, close, dtype, rng, shape, train):
    """``relu=True`` forward is ``relu_forward`` of the plain output, and the
    backward with ``relu_out`` is the plain backward of ``relu_backward``'s
    gradient: the same bits, NaN included (a NaN column stays NaN forward and
    gets no gradient back, as through the two ops). The NumPy twin agrees."""
    x, gamma, beta, rm, rv, dy = _inputs(rng, shape, dtype)
    if shape[1] > 1:
        x.reshape(shape[0], shape[1], -1)[:, -1, 0] = np.nan
    plain = K.batchnorm_forward(x, gamma, beta, rm, rv, 0.9, 1e-5, train, unbiased=False)
    fused = K.batchnorm_forward(x, gamma, beta, rm, rv, 0.9, 1e-5, train, unbiased=False, relu=True)
    r = K.relu_forward(plain[0])
    assert np.isnan(r).any() == (shape[1] > 1) and ((r == 0).any() or x.size < 8)
    np.testing.assert_array_equal(fused[0], r)
    for got, want in zip(fused[1:], plain[1:]):
        np.testing.assert_array_equal(got, want)
    want = K.batchnorm_backward(K.relu_backward(dy, r), x, gamma, plain[1], plain[2], train)
    got = K.batchnorm_backward(dy, x, gamma, fused[1], fused[2], train, relu_out=fused[0])
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    ok = ~np.isnan(r)
    rf = R.batchnorm_forward(x, gamma, beta, rm, rv, 0.9, 1e-5, train, unbiased=False, relu=True)
    close(fused[0][ok], rf[0][ok], what="y")
    rb = R.batchnorm_backward(dy, x, gamma, rf[1], rf[2], train, relu_out=rf[0])
    keep = ~np.isnan(rb[0]) & ~np.isnan(got[0])
    close(got[0][keep], rb[0][keep], what="dx")


def test_batchnorm_relu_out_is_checked(K, rng):
    x, gamma, beta, rm, rv, dy = _inputs(rng, (4, 3), np.float64)
    y, mean, inv_std, _, _ = K.batchnorm_forward(x, gamma, beta, rm, rv, relu=True)
    with pytest.raises(ValueError, match="relu_out"):
        K.batchnorm_backward(dy, x, gamma, mean, inv_std, relu_out=y[:3])
    with pytest.raises(TypeError, match="relu_out"):
        K.batchnorm_backward(dy, x, gamma, mean, inv_std, relu_out=y.astype(np.float32))
    with pytest.raises(TypeError, match="relu"):
        K.batchnorm_forward(x, gamma, beta, rm, rv, relu="yes")
