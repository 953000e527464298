"""Affine (fully connected) layer kernels.

The three matrix products go to NumPy's BLAS (``np.matmul`` into a fresh
output): measured on this project's machine, NumPy's OpenBLAS runs these
shapes 10-25% faster than the older SciPy OpenBLAS that ``np.dot`` inside
``@njit`` binds to, and it threads itself. The work around the products, the
bias add and the bias-gradient reduction, runs in small ``@njit`` loops over
the data as it leaves BLAS, instead of NumPy's temporaries and extra passes.
"""

from __future__ import annotations

import math

import numpy as np

from . import _validate as v
from ._config import jit

__all__ = ["affine_forward", "affine_backward"]


@jit()
def _add_bias(y, b):
    # In place on the product while it is the freshest thing in cache; a
    # serial loop because it costs ~1% of the product it follows.
    n, m = y.shape
    for i in range(n):
        for j in range(m):
            y[i, j] += b[j]
    return y


@jit()
def _column_sums(dy):
    # Rows summed in order, column by column in a vectorised inner loop: the
    # result does not depend on threads or on how BLAS split anything.
    n, m = dy.shape
    db = np.zeros(m, dy.dtype)
    for i in range(n):
        for j in range(m):
            db[j] += dy[i, j]
    return db


def _flatten_x(fn, x):
    x = v.float_array(fn, "x", x, min_ndim=1)
    if x.ndim == 1:
        raise ValueError(f"{fn}: x must be (N, ...) with a batch axis, got 1-D shape {x.shape}")
    return x, x.reshape(x.shape[0], math.prod(x.shape[1:]))


def affine_forward(x, w, b):
    """Affine forward pass ``y = x2d @ w + b``.

    Parameters
    ----------
    x : ndarray, shape (N, ...)
        Input batch, flattened to ``x2d`` of shape (N, D) with D the product of
        the trailing dimensions.
    w : ndarray, shape (D, M)
        Weights.
    b : ndarray, shape (M,)
        Bias.

    Returns
    -------
    y : ndarray, shape (N, M)
        ``y[n, m] = sum_d x2d[n, d] * w[d, m] + b[m]``, in the inputs' dtype.
    """
    fn = "affine_forward"
    x, x2d = _flatten_x(fn, x)
    w = v.float_array(fn, "w", w, 2)
    b = v.float_array(fn, "b", b, 1)
    v.same_dtype(fn, x=x, w=w, b=b)
    d = x2d.shape[1]
    v.shape(fn, "w", w, (d, None), f"D={d} from x of shape {x.shape}")
    v.shape(fn, "b", b, (w.shape[1],), f"M={w.shape[1]} from w")
    y = np.empty((x2d.shape[0], w.shape[1]), x.dtype)
    return _add_bias(np.matmul(x2d, w, out=y), b)


def affine_backward(dy, x, w, *, need_dx=True):
    """Affine backward pass.

    Parameters
    ----------
    dy : ndarray, shape (N, M)
        Gradient of the loss with respect to ``y``.
    x : ndarray, shape (N, ...)
        The forward input (flattened to ``x2d`` of shape (N, D)).
    w : ndarray, shape (D, M)
        Weights.
    need_dx : bool, keyword-only
        ``False`` skips ``dx`` (returned as ``None``), for a first layer.

    Returns
    -------
    dx : ndarray, same shape as ``x``, or None when ``need_dx`` is False
        ``dx = dy @ w.T``, reshaped to ``x.shape``.
    dw : ndarray, shape (D, M)
        ``dw = x2d.T @ dy``.
    db : ndarray, shape (M,)
        ``db[m] = sum_n dy[n, m]``.
    """
    fn = "affine_backward"
    x, x2d = _flatten_x(fn, x)
    dy = v.float_array(fn, "dy", dy, 2)
    w = v.float_array(fn, "w", w, 2)
    v.same_dtype(fn, dy=dy, x=x, w=w)
    n, d = x2d.shape
    v.shape(fn, "w", w, (d, None), f"D={d} from x of shape {x.shape}")
    v.shape(fn, "dy", dy, (n, w.shape[1]), "(N, M) from x and w")
    dx = None
    if v.bool_param(fn, "need_dx", need_dx):
        dx = np.matmul(dy, w.T, out=np.empty(x.shape, x.dtype).reshape(x2d.shape)).reshape(x.shape)
    dw = np.matmul(x2d.T, dy, out=np.empty(w.shape, w.dtype))
    return dx, dw, _column_sums(dy)
