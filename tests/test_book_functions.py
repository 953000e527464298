"""numbanet.book.functions and numbanet.book.gradient: the book's formulas and
calling conventions (pure NumPy, no kernels)."""

import warnings

import numpy as np
import pytest

from numbanet.book import functions as F
from numbanet.book.gradient import numerical_gradient, numerical_gradient_2d


def test_activations():
    x = np.array([-2.0, -0.5, 0.0, 0.5, 3.0])
    np.testing.assert_array_equal(F.step_function(x), [0, 0, 0, 1, 1])
    assert F.step_function(x).dtype == np.dtype(int)
    np.testing.assert_allclose(F.sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-15)
    s = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(F.sigmoid_grad(x), s * (1 - s), rtol=1e-14)
    np.testing.assert_array_equal(F.relu(x), [0, 0, 0, 0.5, 3])
    np.testing.assert_array_equal(F.relu_grad(x), [0, 0, 1, 1, 1])  # the book's: 1 at 0
    assert F.identity_function(x) is x
    assert F.sigmoid(np.float32(1)).dtype == np.float32 and F.sigmoid(np.arange(3)).dtype == np.float64
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in either tail
        np.testing.assert_array_equal(F.sigmoid(np.array([-1000.0, 1000.0])), [0.0, 1.0])


def test_softmax_and_losses():
    x = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, 0.0]])
    y = F.softmax(x)
    np.testing.assert_allclose(y[0], np.exp(x[0]) / np.exp(x[0]).sum(), rtol=1e-15)
    np.testing.assert_allclose(y[1], [0.5, 0.5, 0.0], atol=1e-300)
    np.testing.assert_allclose(F.softmax(x[0]), y[0], rtol=1e-15)  # 1-D is one row

    t = np.array([2, 0])
    want = -(np.log(y[0, 2] + 1e-7) + np.log(y[1, 0] + 1e-7)) / 2
    assert F.cross_entropy_error(y, t) == pytest.approx(want, rel=1e-15)
    assert F.cross_entropy_error(y, np.eye(3)[t]) == pytest.approx(want, rel=1e-15)
    assert F.softmax_loss(x, t) == pytest.approx(want, rel=1e-15)
    one = -np.log(y[0, 1] + 1e-7)
    for label in (1, np.array([1]), np.eye(3)[1]):  # 1-D y: a batch of one
        assert F.cross_entropy_error(y[0], label) == pytest.approx(one, rel=1e-15)
    assert F.cross_entropy_error(np.array([[0.0, 1.0]]), [0]) == pytest.approx(-np.log(1e-7))  # no log(0)

    a, b = np.array([[0.1, 0.9], [0.3, 0.7]]), np.array([[0, 1], [1, 0]])
    assert F.sum_squared_error(a, b) == pytest.approx(0.5 * ((a - b) ** 2).sum(), rel=1e-15)
    assert F.mean_squared_error is F.sum_squared_error


def test_numerical_gradient_calls_f_with_x_and_restores_it():
    x = np.array([[1.0, -2.0, 3.0], [0.5, 0.25, -1.0]])
    before = x.copy()
    seen = []

    def f(arg):
        seen.append(arg is x)
        return np.sum(arg ** 3)

    g = numerical_gradient(f, x)
    assert all(seen) and len(seen) == 2 * x.size
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(g, 3 * x ** 2, rtol=1e-7)
    assert g.shape == x.shape and g.dtype == x.dtype

    # The book's networks pass an f that ignores its argument and reads the
    # parameters it closes over, perturbed in place.
    W = np.array([0.3, -0.7])
    np.testing.assert_allclose(numerical_gradient(lambda _: float(np.sum(np.sin(W))), W), np.cos(W), rtol=1e-7)

    pts = np.array([[1.0, 2.0], [-3.0, 0.5]])
    np.testing.assert_allclose(numerical_gradient_2d(lambda p: np.sum(p ** 2), pts), 2 * pts, rtol=1e-9)
    np.testing.assert_allclose(numerical_gradient_2d(lambda p: np.sum(p ** 2), pts[0].copy()), 2 * pts[0], rtol=1e-9)
