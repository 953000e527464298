"""Elementwise activations (pure NumPy)."""

import numpy as np


def relu_forward(x):
    """``max(x, 0)``, NaN propagating."""
    out = x.copy()
    out[x <= 0] = 0
    return out


def relu_backward(dy, x):
    """``dy * (x > 0)``."""
    dx = dy.copy()
    dx[~(x > 0)] = 0
    return dx


def sigmoid_forward(x):
    """``1 / (1 + exp(-x))`` without overflow in either tail."""
    e = np.exp(-np.abs(x))
    one = x.dtype.type(1)
    return np.where(x >= 0, one / (one + e), e / (one + e))


def sigmoid_backward(dy, y):
    """``dy * y * (1 - y)``."""
    return dy * y * (y.dtype.type(1) - y)
