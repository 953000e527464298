import numpy as np
import pytest

from numbanet.nets import numerical_gradient

SHAPES = [(0,), (1,), (7,), (3, 5), (2, 3, 4, 5), (1000,), (300001,), (64, 3, 33, 31)]


@pytest.mark.parametrize("shape", SHAPES)
def test_relu_matches_reference(K, R, close, dtype, rng, shape):
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    close(K.relu_forward(x), R.relu_forward(x), rtol=0)
    close(K.relu_backward(dy, x), R.relu_backward(dy, x), rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_sigmoid_matches_reference(K, R, close, dtype, rng, shape):
    x = (rng.standard_normal(shape) * 10).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y = K.sigmoid_forward(x)
    close(y, R.sigmoid_forward(x))
    close(K.sigmoid_backward(dy, y), R.sigmoid_backward(dy, y))


def test_special_values(K, R):
    x = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, -1e4, 1e4, -800.0, 800.0])
    for dt in (np.float32, np.float64):
        xd = x.astype(dt)
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(K.relu_forward(xd), R.relu_forward(xd))
            np.testing.assert_array_equal(K.sigmoid_forward(xd), R.sigmoid_forward(xd))
        y = K.sigmoid_forward(xd)
        assert np.isnan(y[0]) and y[1] == 0 and y[2] == 1 and y[5] == 0 and y[6] == 1
        assert np.isnan(K.relu_forward(xd)[0])


def test_noncontiguous(K, R, rng):
    x = rng.standard_normal((6, 8))[::2, 1::3]
    np.testing.assert_array_equal(K.relu_forward(x), R.relu_forward(x))
    np.testing.assert_array_equal(K.relu_backward(x.T.copy().T, x), R.relu_backward(x, x))


def test_gradient_check(K, rng):
    x = rng.standard_normal((3, 4))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from ReLU's kink
    dy = rng.standard_normal((3, 4))
    for fwd, bwd, uses_output in (
        (K.relu_forward, K.relu_backward, False),
        (K.sigmoid_forward, K.sigmoid_backward, True),
    ):
        numeric = numerical_gradient(lambda: float((fwd(x) * dy).sum()), x)
        analytic = bwd(dy, fwd(x) if uses_output else x)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("fn", ["relu_backward", "sigmoid_backward"])
def test_bad_input(K, fn):
    f = getattr(K, fn)
    with pytest.raises(ValueError, match=r"dy must have shape \(3, 4\)"):
        f(np.ones((4, 3)), np.ones((3, 4)))
    with pytest.raises(TypeError, match="float64 but dy has dtype float32"):
        f(np.ones(3, np.float32), np.ones(3))
    with pytest.raises(TypeError, match="got bool"):
        f(np.ones(3, bool), np.ones(3))
    with pytest.raises(TypeError, match="x must have dtype|got int64"):
        K.relu_forward(np.arange(3))
