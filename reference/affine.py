"""Affine layer, book style (pure NumPy)."""

import math

from .activation import relu_backward, relu_forward


def affine_forward(x, w, b, *, relu=False):
    """``y = x.reshape(N, -1) @ w + b`` (through :func:`relu_forward` with ``relu``)."""
    x2d = x.reshape(x.shape[0], math.prod(x.shape[1:]))
    y = x2d @ w + b
    return relu_forward(y) if relu else y


def affine_backward(dy, x, w, *, need_dx=True, relu_out=None):
    """Return ``(dy @ w.T reshaped to x.shape, x2d.T @ dy, dy.sum(0))``;
    ``dx`` is ``None`` when ``need_dx`` is False. With ``relu_out`` (a
    ``relu=True`` forward's output), ``dy`` first goes through
    :func:`relu_backward` against it."""
    if relu_out is not None:
        dy = relu_backward(dy, relu_out)
    x2d = x.reshape(x.shape[0], math.prod(x.shape[1:]))
    dx = (dy @ w.T).reshape(x.shape) if need_dx else None
    dw = x2d.T @ dy
    db = dy.sum(axis=0)
    return dx, dw, db
