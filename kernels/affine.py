"""Affine (fully connected) layer kernels.

The three matrix products run on numbanet's own register-blocked GEMM
(:mod:`numbanet.kernels._gemm`), split into row or column blocks over Numba's
threads (:func:`_matmul`). Against NumPy's OpenBLAS, which is pinned to its
AVX2 kernels here, this is faster per core, keeps everything on one thread
pool (no OpenBLAS workers competing with Numba's between layers of a training
step), and is bitwise reproducible whatever the thread count: every output
element is summed in the same order however the blocks are cut. The bias add
and the bias-gradient reduction are small ``@njit`` loops over the data as it
leaves the product.
"""

from __future__ import annotations

import math

import numpy as np

from numba import prange

from . import validate as v
from ._threads import call_threads, kernel_op
from ._config import jit
from .activation import _relu_grad_chunk, _relu_of
from ._gemm import MR, tile_cols
from ._gemm_ext import gemm_block, links_gemm
from ._tunables import AFFINE_PARALLEL_MIN_MACS  # read inside _matmul (see _tunables)

__all__ = ["affine_forward", "affine_backward"]


@links_gemm("gemm_block")
@jit()
def _matmul_block(a, ta, b, tb, c, t, nb):
    """Block ``t`` of ``nb`` of ``c = op(a) @ op(b)`` (``op(a) = a.T if ta
    else a``, likewise b; C-contiguous ``a``, ``b`` and ``c``): row blocks
    (taller than wide) or column blocks, cut at multiples of the
    micro-kernel's tile. Each element's sum runs in the same order in any
    block, so the result does not depend on ``nb``.

    The transposes are flags, not views, so that the forward product and both
    backward products are one compiled function: Numba compiles (and LLVM
    optimises the GEMM inside) once per array type, and each operand layout
    would be another type. Callers pass the flags as ``np.bool_(...)`` and
    the block numbers as ``np.int64``: a bare ``True``/``False`` or ``0`` is
    a literal type to Numba, and each combination compiled a product of its
    own (three, about a second each; prange's index is another type again)."""
    av = a.T if ta else a
    bv = b.T if tb else b
    m_, k_ = av.shape
    n_ = bv.shape[1]
    if nb == 1:
        gemm_block(av, bv, c, 0, m_, 0, n_, False)
        return
    by_rows = m_ >= n_
    unit = MR if by_rows else tile_cols(c)
    size = m_ if by_rows else n_
    step = ((size + nb - 1) // nb + unit - 1) // unit * unit
    # Blocks as index ranges, not slices: one compiled product for all of them.
    lo = min(size, t * step)
    hi = min(size, lo + step)
    if lo < hi:
        if by_rows:
            gemm_block(av, bv, c, lo, hi, 0, n_, False)
        else:
            gemm_block(av, bv, c, 0, m_, lo, hi, False)


@links_gemm("gemm_block")
@jit(parallel=True)
def _matmul(a, ta, b, tb, c, threads):
    """``c = op(a) @ op(b)`` in one block per thread (:func:`_matmul_block`),
    or on the calling thread below ``AFFINE_PARALLEL_MIN_MACS``."""
    m_ = a.shape[1] if ta else a.shape[0]
    n_ = b.shape[0] if tb else b.shape[1]
    k_ = a.shape[0] if ta else a.shape[1]
    nb = threads if m_ * k_ * n_ >= AFFINE_PARALLEL_MIN_MACS else 1
    if nb == 1:
        _matmul_block(a, ta, b, tb, c, np.int64(0), np.int64(1))
        return c
    for t in prange(nb):
        _matmul_block(a, ta, b, tb, c, np.int64(t), np.int64(nb))
    return c


@links_gemm("gemm_block")
@jit(parallel=True)
def _matmul_pair(a1, ta1, b1, tb1, c1, a2, ta2, b2, tb2, c2, threads):
    """Two products of one size at once: each in ``threads // 2`` blocks, all
    the blocks of both in one parallel region. The backward pass's ``dx``
    and ``dw`` take the same ``N * D * M`` multiply-adds, so at two threads
    each thread computes one whole product: one start of the pool instead of
    two, and no operand packed by both threads (split, each product's
    blocks packed the shared operand twice). Same blocks, same bits as
    :func:`_matmul`."""
    nb = max(1, threads // 2)
    for t in prange(2 * nb):
        if t < nb:
            _matmul_block(a1, ta1, b1, tb1, c1, np.int64(t), np.int64(nb))
        else:
            _matmul_block(a2, ta2, b2, tb2, c2, np.int64(t) - nb, np.int64(nb))


@jit()
def _add_bias(y, b, relu):
    # In place on the product while it is the freshest thing in cache; a
    # serial loop because it costs ~1% of the product it follows. relu: the
    # ReLU after the layer, relu_forward's expression on each value.
    n, m = y.shape
    zero = y.dtype.type(0)
    for i in range(n):
        for j in range(m):
            v = y[i, j] + b[j]
            y[i, j] = _relu_of(v, zero) if relu else v
    return y


@jit()
def _column_sums(dy):
    # Rows summed in order, column by column in a vectorised inner loop: the
    # result does not depend on threads.
    n, m = dy.shape
    db = np.zeros(m, dy.dtype)
    for i in range(n):
        for j in range(m):
            db[j] += dy[i, j]
    return db


@links_gemm("gemm_block")  # _matmul's code, and so its GEMM calls, are compiled in
@jit()
def _affine_forward(x2d, w, b, threads, relu):
    # One dispatch from Python for the product and the bias: at the sizes of
    # the book's small MLPs the call overhead is a large share of the layer.
    y = np.empty((x2d.shape[0], w.shape[1]), x2d.dtype)
    return _add_bias(_matmul(x2d, np.bool_(False), w, np.bool_(False), y, threads), b, relu)


@links_gemm("gemm_block")
@jit()
def _affine_backward(dy, x2d, w, need_dx, threads, r, relu):
    # dx, dw and db in one dispatch (dx is (0, 0) when not needed); relu: dy
    # is the gradient of relu(y), masked first by r (unread otherwise).
    if relu:  # relu_backward(dy, r): the gradient of the pre-ReLU output
        masked = np.empty_like(dy)
        _relu_grad_chunk(dy.ravel(), r.ravel(), masked.ravel())
        dy = masked
    dx = np.empty((x2d.shape[0], x2d.shape[1]) if need_dx else (0, 0), x2d.dtype)
    dw = np.empty(w.shape, w.dtype)
    if need_dx and threads >= 2 and dy.size * w.shape[0] >= AFFINE_PARALLEL_MIN_MACS:
        _matmul_pair(dy, np.bool_(False), w, np.bool_(True), dx, x2d, np.bool_(True), dy, np.bool_(False), dw, threads)
    else:
        if need_dx:
            _matmul(dy, np.bool_(False), w, np.bool_(True), dx, threads)
        _matmul(x2d, np.bool_(True), dy, np.bool_(False), dw, threads)
    return dx, dw, _column_sums(dy)


def _flatten_x(fn, x):
    x = v.float_array(fn, "x", x, min_ndim=1)
    if x.ndim == 2:
        return x, x
    if x.ndim == 1:
        raise ValueError(f"{fn}: x must be (N, ...) with a batch axis, got 1-D shape {x.shape}")
    return x, x.reshape(x.shape[0], math.prod(x.shape[1:]))


@kernel_op
def affine_forward(x, w, b, *, relu=False):
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
    relu : bool, keyword-only
        Return ``relu(y)``: a ReLU layer after this one fused into the bias
        pass, bitwise :func:`relu_forward` of ``y``. Give that output to
        :func:`affine_backward` as ``relu_out``.

    Returns
    -------
    y : ndarray, shape (N, M)
        ``y[n, m] = sum_d x2d[n, d] * w[d, m] + b[m]``, in the inputs' dtype
        (``relu``: ``0`` where that is ``<= 0``).
    """
    fn = "affine_forward"
    x, x2d = _flatten_x(fn, x)
    w = v.float_array(fn, "w", w, 2)
    b = v.float_array(fn, "b", b, 1)
    if not (w.dtype is x.dtype and b.dtype is x.dtype):  # identity first: cheap
        v.same_dtype(fn, x=x, w=w, b=b)
    d = x2d.shape[1]
    # Shapes compared before any message is formatted: this wrapper's cost
    # counts in small networks.
    if w.shape[0] != d:
        v.shape(fn, "w", w, (d, None), f"D={d} from x of shape {x.shape}")
    if b.shape[0] != w.shape[1]:
        v.shape(fn, "b", b, (w.shape[1],), f"M={w.shape[1]} from w")
    return _affine_forward(x2d, w, b, call_threads(), relu if relu is False else v.bool_param(fn, "relu", relu))


@kernel_op
def affine_backward(dy, x, w, *, need_dx=True, relu_out=None):
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
    relu_out : ndarray like ``dy``, or None, keyword-only
        The output of a forward pass with ``relu=True``: ``dy`` is then the
        gradient of that output, and is first masked as
        :func:`relu_backward` does (``dy`` where ``relu_out > 0``, else 0).

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
    if not (x.dtype is dy.dtype and w.dtype is dy.dtype):
        v.same_dtype(fn, dy=dy, x=x, w=w)
    n, d = x2d.shape
    if w.shape[0] != d:
        v.shape(fn, "w", w, (d, None), f"D={d} from x of shape {x.shape}")
    if dy.shape != (n, w.shape[1]):
        v.shape(fn, "dy", dy, (n, w.shape[1]), "(N, M) from x and w")
    need_dx = v.bool_param(fn, "need_dx", need_dx)
    r = dy
    if relu_out is not None:
        r = v.float_array(fn, "relu_out", relu_out, 2)
        if r.dtype != dy.dtype:
            v.same_dtype(fn, dy=dy, relu_out=r)
        if r.shape != dy.shape:
            v.shape(fn, "relu_out", r, dy.shape, "the shape of dy")
    dx, dw, db = _affine_backward(dy, x2d, w, need_dx, call_threads(), r, relu_out is not None)
    return (dx.reshape(x.shape) if need_dx else None), dw, db
