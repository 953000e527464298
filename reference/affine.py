"""Affine layer, book style (pure NumPy)."""

import math


def affine_forward(x, w, b):
    """``y = x.reshape(N, -1) @ w + b``."""
    x2d = x.reshape(x.shape[0], math.prod(x.shape[1:]))
    return x2d @ w + b


def affine_backward(dy, x, w, *, need_dx=True):
    """Return ``(dy @ w.T reshaped to x.shape, x2d.T @ dy, dy.sum(0))``;
    ``dx`` is ``None`` when ``need_dx`` is False."""
    x2d = x.reshape(x.shape[0], math.prod(x.shape[1:]))
    dx = (dy @ w.T).reshape(x.shape) if need_dx else None
    dw = x2d.T @ dy
    db = dy.sum(axis=0)
    return dx, dw, db
