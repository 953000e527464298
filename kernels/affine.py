"""Affine (fully connected) layer kernels.

Forward and backward use BLAS (``np.dot`` inside ``@njit`` on contiguous
arrays) for the matrix products and fuse the bias add and the bias-gradient
reduction into parallel loops over the output rows or column blocks.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from . import _validate as v
from ._config import jit

__all__ = ["affine_forward", "affine_backward"]

# Columns of dy per task in the bias-gradient reduction: wide enough to be a
# SIMD-friendly inner loop, narrow enough to spread M=100 over 2 threads.
_DB_BLOCK = 64


@jit(parallel=True)
def _affine_forward(x, w, b):
    y = np.dot(x, w)
    n, m = y.shape
    for i in prange(n):
        for j in range(m):
            y[i, j] += b[j]
    return y


@jit(parallel=True)
def _affine_backward(dy, x, w):
    dx = np.dot(dy, w.T)
    dw = np.dot(x.T, dy)
    n, m = dy.shape
    db = np.zeros(m, dy.dtype)
    nblocks = (m + _DB_BLOCK - 1) // _DB_BLOCK
    # Each task owns a block of columns and sums the rows in order, so db is
    # race-free and bitwise independent of the thread count.
    for blk in prange(nblocks):
        j0 = blk * _DB_BLOCK
        j1 = min(j0 + _DB_BLOCK, m)
        for i in range(n):
            for j in range(j0, j1):
                db[j] += dy[i, j]
    return dx, dw, db


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
    return _affine_forward(x2d, w, b)


def affine_backward(dy, x, w):
    """Affine backward pass.

    Parameters
    ----------
    dy : ndarray, shape (N, M)
        Gradient of the loss with respect to ``y``.
    x : ndarray, shape (N, ...)
        The forward input (flattened to ``x2d`` of shape (N, D)).
    w : ndarray, shape (D, M)
        Weights.

    Returns
    -------
    dx : ndarray, same shape as ``x``
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
    dx, dw, db = _affine_backward(dy, x2d, w)
    return dx.reshape(x.shape), dw, db
