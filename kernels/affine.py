"""Affine (fully connected) layer kernels.

Forward and backward use BLAS (``np.dot`` inside ``@njit`` on contiguous
arrays) for the matrix products and fuse the bias add and the bias-gradient
reduction into parallel loops over the output rows or column blocks.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from . import _validate as v
from ._blas import single_threaded_blas
from ._config import jit

__all__ = ["affine_forward", "affine_backward"]

# Columns of dy per task in the bias-gradient reduction: wide enough to be a
# SIMD-friendly inner loop, narrow enough to spread M=100 over 2 threads.
_DB_BLOCK = 64
# Fewest rows worth a BLAS call of their own when splitting a product.
_MIN_ROWS = 16


@jit()
def _num_blocks(rows, threads):
    """Row blocks to split a product into: one per thread, fewer when small."""
    return max(1, min(threads, rows // _MIN_ROWS))


@jit(parallel=True)
def _affine_forward(x, w, b, threads):
    n, m = x.shape[0], w.shape[1]
    y = np.empty((n, m), x.dtype)
    nb = _num_blocks(n, threads)
    step = (n + nb - 1) // nb
    # Each task owns a block of rows of y: a BLAS product, then the bias add
    # while the block is still in cache.
    for t in prange(nb):
        s, e = t * step, min(n, (t + 1) * step)
        if s < e:
            yb = y[s:e]
            np.dot(x[s:e], w, yb)
            for i in range(e - s):
                for j in range(m):
                    yb[i, j] += b[j]
    return y


@jit(parallel=True)
def _affine_backward(dy, x, w, threads):
    n, d = x.shape
    m = dy.shape[1]
    dx = np.empty((n, d), x.dtype)
    dw = np.empty((d, m), x.dtype)
    db = np.zeros(m, dy.dtype)
    # dx = dy @ w.T by row blocks of dy.
    nb = _num_blocks(n, threads)
    step = (n + nb - 1) // nb
    for t in prange(nb):
        s, e = t * step, min(n, (t + 1) * step)
        if s < e:
            np.dot(dy[s:e], w.T, dx[s:e])
    # dw = x.T @ dy by row blocks of dw, i.e. column blocks of x (copied to
    # make them contiguous for BLAS: N x D in all, one read of x).
    nb = _num_blocks(d, threads)
    step = (d + nb - 1) // nb
    for t in prange(nb):
        s, e = t * step, min(d, (t + 1) * step)
        if s < e:
            xs = np.ascontiguousarray(x[:, s:e])
            np.dot(xs.T, dy, dw[s:e])
    # Each task owns a block of columns and sums the rows in order, so db is
    # race-free and bitwise independent of the thread count.
    for blk in prange((m + _DB_BLOCK - 1) // _DB_BLOCK):
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
    single_threaded_blas()
    return _affine_forward(x2d, w, b, numba.get_num_threads())


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
    single_threaded_blas()
    dx, dw, db = _affine_backward(dy, x2d, w, numba.get_num_threads())
    return dx.reshape(x.shape), dw, db
