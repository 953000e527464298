"""Batch normalization kernels, per feature (2-D input) or per channel (4-D).

Statistics are taken over every axis but the channel axis, as PyTorch's
``BatchNorm1d``/``BatchNorm2d`` do (not the book's flatten-everything form).
Both kernels view the input as ``(N, C, S)`` with ``S = H * W`` (``S = 1`` for
2-D input); each channel's sums are made by one thread in a fixed order, so
results are bitwise the same for every thread count:

* planes (``S > 1``): a parallel loop over channels; per channel, one
  accumulator per plane position summed over the samples, then the positions
  summed in order. That vectorises across positions, where one running sum
  is a chain of dependent adds (Numba may not reorder them);
* 2-D input (``S = 1``, a batch of feature rows): a parallel loop over blocks
  of columns, each column summed over the rows in order, each row's block
  read as one contiguous run so the sums vectorise across columns. Column by
  column, the loop strode ``C`` elements per value and ran several times
  slower than NumPy.

The sums accumulate in float64 whatever the dtype (deliberate: a float32
channel of 100 x 24 x 24 values keeps float32 accuracy); everything written
out is in the input dtype.

The running statistics are not touched in place: :func:`batchnorm_forward`
returns their updated values, and the caller (the layer) decides to store them.
"""

from __future__ import annotations

import numbers

import numpy as np
from numba import prange

from . import validate as v
from ._threads import kernel_op
from ._config import jit
from .activation import _relu_grad_of, _relu_of
from ._tunables import BATCHNORM_COLUMNS, BATCHNORM_PARALLEL_MIN

__all__ = ["batchnorm_forward", "batchnorm_backward"]


@jit()
def _ordered_sum(a):
    total = 0.0
    for k in range(a.size):
        total += a[k]
    return total


@jit(external=True)
def _batchnorm_forward_stats_channels(x, eps, mean, var, inv_std, lo, hi):
    # Per channel, one float64 accumulator per plane position, each summed
    # over the samples in order, then the positions summed in order: a fixed
    # order that vectorises across positions (a single running sum is a
    # chain of dependent adds, which Numba may not reorder).
    n, c, s = x.shape
    m = n * s
    acc = np.empty(s)
    for ch in range(lo, hi):
        acc[:] = 0.0
        for i in range(n):
            xr = x[i, ch]
            for k in range(s):
                acc[k] += xr[k]
        mu = _ordered_sum(acc) / m
        # Two passes (mean, then squared deviations): no cancellation when
        # the mean is large compared with the spread.
        acc[:] = 0.0
        for i in range(n):
            xr = x[i, ch]
            for k in range(s):
                d = xr[k] - mu
                acc[k] += d * d
        sigma2 = _ordered_sum(acc) / m
        mean[ch] = mu
        var[ch] = sigma2
        inv_std[ch] = 1.0 / np.sqrt(sigma2 + eps)


@jit(external=True)
def _batchnorm_forward_stats_columns(x, eps, mean, var, inv_std, lo, hi):
    # x is (N, C): the sums of _batchnorm_forward_stats_channels, each column
    # in row order, columns lo:hi side by side. Every index runs from 0 over
    # 1-D slices: Numba wraps negative indices, and an offset of unknown
    # sign (lo) would keep that check in the loop and stop it vectorising.
    n = x.shape[0]
    w = hi - lo
    mu = np.zeros(w)
    acc2 = np.zeros(w)
    for i in range(n):
        xr = x[i][lo:hi]
        for j in range(w):
            mu[j] += xr[j]
    for j in range(w):
        mu[j] /= n
    for i in range(n):
        xr = x[i][lo:hi]
        for j in range(w):
            d = xr[j] - mu[j]
            acc2[j] += d * d
    mean_, var_, inv_ = mean[lo:hi], var[lo:hi], inv_std[lo:hi]
    for j in range(w):
        sigma2 = acc2[j] / n
        mean_[j] = mu[j]
        var_[j] = sigma2
        inv_[j] = 1.0 / np.sqrt(sigma2 + eps)


@jit(inline=True)
def _column_blocks(c):
    """How many blocks of ``BATCHNORM_COLUMNS`` columns cover ``c``."""
    return (c + BATCHNORM_COLUMNS - 1) // BATCHNORM_COLUMNS


@jit(inline=True)
def _column_block(blk, c):
    """The columns ``[lo, hi)`` of block ``blk`` (int64 bounds: one signature
    of the per-block helpers, see ``_config.jit``)."""
    lo = np.int64(blk) * BATCHNORM_COLUMNS
    return lo, min(c, lo + BATCHNORM_COLUMNS)


@jit(external=True)
def _batchnorm_forward_normalize_channels(x, mean, inv_std, gamma, beta, y, lo, hi, relu):
    # relu: y = relu(normalised), relu_forward's expression (_relu_of) on each value
    n, c, s = x.shape
    zero = x.dtype.type(0)
    for ch in range(lo, hi):
        mu = mean[ch]
        inv = inv_std[ch]
        g = gamma[ch]
        b = beta[ch]
        for i in range(n):
            xr, yr = x[i, ch], y[i, ch]
            for k in range(s):
                v = (xr[k] - mu) * inv * g + b
                yr[k] = _relu_of(v, zero) if relu else v


@jit(external=True)
def _batchnorm_forward_normalize_columns(x, mean, inv_std, gamma, beta, y, lo, hi, relu):
    mean_, inv_, g_, b_ = mean[lo:hi], inv_std[lo:hi], gamma[lo:hi], beta[lo:hi]
    zero = x.dtype.type(0)
    for i in range(x.shape[0]):
        xr, yr = x[i][lo:hi], y[i][lo:hi]
        for j in range(hi - lo):
            v = (xr[j] - mean_[j]) * inv_[j] * g_[j] + b_[j]
            yr[j] = _relu_of(v, zero) if relu else v


@jit(parallel=True)
def _batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum, eps, train, unbiased, relu):
    """The whole forward pass on x (N, C, S), one call: statistics (training)
    or ``1/sqrt(running_var + eps)`` (inference), the running statistics'
    update, and ``y = (x - mean) * inv_std * gamma + beta`` in x's dtype.
    Returns ``y, mean, inv_std, new_running_mean, new_running_var`` (the last
    two only meaningful in training). ``relu``: ``y`` is ReLU'd as it is
    written."""
    n, c, s = x.shape
    dt = x.dtype.type
    mean = np.empty(c, x.dtype)
    var = np.empty(c, x.dtype)
    inv_std = np.empty(c, x.dtype)
    new_rm = np.empty(c, x.dtype)
    new_rv = np.empty(c, x.dtype)
    serial = x.size < BATCHNORM_PARALLEL_MIN
    if train:
        if s == 1:
            x2 = x.reshape(n, c)
            if serial:
                _batchnorm_forward_stats_columns(x2, eps, mean, var, inv_std, np.int64(0), c)
            else:
                for blk in prange(_column_blocks(c)):
                    lo, hi = _column_block(blk, c)
                    _batchnorm_forward_stats_columns(x2, eps, mean, var, inv_std, lo, hi)
        elif serial:
            _batchnorm_forward_stats_channels(x, eps, mean, var, inv_std, np.int64(0), c)
        else:
            for ch in prange(c):
                _batchnorm_forward_stats_channels(x, eps, mean, var, inv_std, np.int64(ch), np.int64(ch) + 1)
        # In x's dtype, in this order: the bits of the NumPy expressions
        # keep * running + new * batch.
        keep, new = dt(momentum), dt(1.0 - momentum)
        m = n * s
        for j in range(c):
            new_rm[j] = keep * running_mean[j] + new * mean[j]
            batch_var = var[j] * dt(m / (m - 1)) if unbiased else var[j]
            new_rv[j] = keep * running_var[j] + new * batch_var
    else:
        for j in range(c):
            mean[j] = running_mean[j]
            inv_std[j] = dt(1) / np.sqrt(running_var[j] + dt(eps))
    y = np.empty_like(x)
    if s == 1:
        x2, y2 = x.reshape(n, c), y.reshape(n, c)
        if serial:
            _batchnorm_forward_normalize_columns(x2, mean, inv_std, gamma, beta, y2, np.int64(0), c, relu)
        else:
            for blk in prange(_column_blocks(c)):
                lo, hi = _column_block(blk, c)
                _batchnorm_forward_normalize_columns(x2, mean, inv_std, gamma, beta, y2, lo, hi, relu)
    elif serial:
        _batchnorm_forward_normalize_channels(x, mean, inv_std, gamma, beta, y, np.int64(0), c, relu)
    else:
        for ch in prange(c):
            _batchnorm_forward_normalize_channels(x, mean, inv_std, gamma, beta, y, np.int64(ch), np.int64(ch) + 1, relu)
    return y, mean, inv_std, new_rm, new_rv


@jit(external=True)
def _batchnorm_backward_channels(dy, x, gamma, mean, inv_std, train, dx, dgamma, dbeta, lo, hi, r, relu):
    # relu: dy is first masked by the fused forward's output r, relu_backward's
    # expression on each value (r is not read otherwise)
    n, c, s = x.shape
    m = n * s
    zero = x.dtype.type(0)
    acc_dy = np.empty(s)
    acc_dy_xhat = np.empty(s)
    for ch in range(lo, hi):
        mu = mean[ch]
        inv = inv_std[ch]
        # the forward's summation order: per position over samples, then positions
        acc_dy[:] = 0.0
        acc_dy_xhat[:] = 0.0
        for i in range(n):
            xr, dyr = x[i, ch], dy[i, ch]
            rr = r[i, ch] if relu else xr
            for k in range(s):
                d = _relu_grad_of(dyr[k], rr[k], zero) if relu else dyr[k]
                acc_dy[k] += d
                acc_dy_xhat[k] += d * ((xr[k] - mu) * inv)
        dbeta[ch] = _ordered_sum(acc_dy)
        dgamma[ch] = _ordered_sum(acc_dy_xhat)
        scale = gamma[ch] * inv
        if train:
            # dx = gamma*inv/M * (M*dy - sum(dy) - xhat*sum(dy*xhat)), written
            # as dy*scale - (a + xhat*b) with the per-channel terms hoisted.
            a = dbeta[ch] * (scale / x.dtype.type(m))
            b = dgamma[ch] * (scale / x.dtype.type(m))
            for i in range(n):
                xr, dyr, dxr = x[i, ch], dy[i, ch], dx[i, ch]
                rr = r[i, ch] if relu else xr
                for k in range(s):
                    xhat = (xr[k] - mu) * inv
                    d = _relu_grad_of(dyr[k], rr[k], zero) if relu else dyr[k]
                    dxr[k] = d * scale - (a + xhat * b)
        else:
            for i in range(n):
                dyr, dxr = dy[i, ch], dx[i, ch]
                rr = r[i, ch] if relu else dyr
                for k in range(s):
                    d = _relu_grad_of(dyr[k], rr[k], zero) if relu else dyr[k]
                    dxr[k] = d * scale


@jit(external=True)
def _batchnorm_backward_columns(dy, x, gamma, mean, inv_std, train, dx, dgamma, dbeta, lo, hi, r, relu):
    # x, dy, dx are (N, C): the arithmetic of _batchnorm_backward_channels,
    # columns lo:hi side by side (indices from 0, as the forward's).
    n = x.shape[0]
    dt = x.dtype.type
    zero = dt(0)
    w = hi - lo
    mean_, inv_ = mean[lo:hi], inv_std[lo:hi]
    sum_dy = np.zeros(w)
    sum_dy_xhat = np.zeros(w)
    for i in range(n):
        xr, dyr = x[i][lo:hi], dy[i][lo:hi]
        rr = r[i][lo:hi] if relu else xr
        for j in range(w):
            d = _relu_grad_of(dyr[j], rr[j], zero) if relu else dyr[j]
            sum_dy[j] += d
            sum_dy_xhat[j] += d * ((xr[j] - mean_[j]) * inv_[j])
    dgamma_, dbeta_, gamma_ = dgamma[lo:hi], dbeta[lo:hi], gamma[lo:hi]
    scale = np.empty(w, x.dtype)
    a = np.empty(w, x.dtype)
    b = np.empty(w, x.dtype)
    for j in range(w):
        dbeta_[j] = sum_dy[j]
        dgamma_[j] = sum_dy_xhat[j]
        scale[j] = gamma_[j] * inv_[j]
        a[j] = dbeta_[j] * (scale[j] / dt(n))
        b[j] = dgamma_[j] * (scale[j] / dt(n))
    for i in range(n):
        xr, dyr, dxr = x[i][lo:hi], dy[i][lo:hi], dx[i][lo:hi]
        rr = r[i][lo:hi] if relu else xr
        if train:
            for j in range(w):
                xhat = (xr[j] - mean_[j]) * inv_[j]
                d = _relu_grad_of(dyr[j], rr[j], zero) if relu else dyr[j]
                dxr[j] = d * scale[j] - (a[j] + xhat * b[j])
        else:
            for j in range(w):
                d = _relu_grad_of(dyr[j], rr[j], zero) if relu else dyr[j]
                dxr[j] = d * scale[j]


@jit(parallel=True)
def _batchnorm_backward(dy, x, gamma, mean, inv_std, train, r, relu):
    n, c, s = x.shape
    dx = np.empty_like(x)
    dgamma = np.empty(c, x.dtype)
    dbeta = np.empty(c, x.dtype)
    if s == 1:
        x2, dy2, dx2, r2 = x.reshape(n, c), dy.reshape(n, c), dx.reshape(n, c), r.reshape(n, c)
        if x.size < BATCHNORM_PARALLEL_MIN:
            _batchnorm_backward_columns(dy2, x2, gamma, mean, inv_std, train, dx2, dgamma, dbeta, np.int64(0), c, r2, relu)
        else:
            for blk in prange(_column_blocks(c)):
                lo, hi = _column_block(blk, c)
                _batchnorm_backward_columns(
                    dy2, x2, gamma, mean, inv_std, train, dx2, dgamma, dbeta, lo, hi, r2, relu
                )
    elif x.size < BATCHNORM_PARALLEL_MIN:
        _batchnorm_backward_channels(dy, x, gamma, mean, inv_std, train, dx, dgamma, dbeta, np.int64(0), c, r, relu)
    else:
        for ch in prange(c):
            lo = np.int64(ch)
            _batchnorm_backward_channels(dy, x, gamma, mean, inv_std, train, dx, dgamma, dbeta, lo, lo + 1, r, relu)
    return dx, dgamma, dbeta


def _as_ncs(fn, name, x):
    x = v.float_array(fn, name, x, (2, 4))
    if x.ndim == 2:
        return x, x.reshape(x.shape[0], x.shape[1], 1)
    n, c, h, w = x.shape
    return x, x.reshape(n, c, h * w)


_FORWARD_VECTORS = ("gamma", "beta", "running_mean", "running_var")
_BACKWARD_VECTORS = ("gamma", "mean", "inv_std")


def _per_channel(fn, c, dtype, names, *arrays):
    """``arrays`` (named ``names``) as C-contiguous writable vectors of
    ``dtype`` and length ``c``, or raise."""
    # The common call (writable C-contiguous vectors of x's dtype and length,
    # what float_array would return as they are) returns at once; anything
    # else takes the checks, which copy, convert or raise. Names and arrays
    # come apart, not as keyword arguments: building that dict was a fifth of
    # this check (Xeon).
    shape = (c,)
    for a in arrays:
        if not (type(a) is np.ndarray and a.dtype == dtype and a.shape == shape):
            break
        flags = a.flags
        if not (flags.c_contiguous and flags.writeable):
            break
    else:
        return arrays
    arrays = dict(zip(names, arrays))
    out = []
    for name, a in arrays.items():
        a = v.float_array(fn, name, a, 1)
        if a.shape[0] != c:  # the message is formatted only on failure: this runs per call
            v.shape(fn, name, a, (c,), f"one value per channel, C={c}")
        out.append(a)
    if any(a.dtype != dtype for a in out):
        v.same_dtype(fn, x=np.empty(0, dtype), **dict(zip(arrays, out)))
    return out


def _float_param(fn, name, value, lo, hi, *, lo_open=False):
    if type(value) is float and (lo < value if lo_open else lo <= value) and value <= hi:
        return value  # the common case, without the numbers.Real check (an ABC: slow)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    ok = (lo < value if lo_open else lo <= value) and value <= hi
    if not ok:
        left = "(" if lo_open else "["
        raise ValueError(f"{fn}: {name} must lie in {left}{lo}, {hi}], got {value}")
    return value


def _bool_param(fn, name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


@kernel_op
def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum=0.9, eps=1e-5, train=True,
                      *, unbiased=True, relu=False):
    """Batch normalization forward pass.

    Parameters
    ----------
    x : ndarray, shape (N, C) or (N, C, H, W)
        Input; statistics are per column ``c`` over the other axes
        (``M = N`` or ``M = N * H * W`` values per channel).
    gamma, beta : ndarray, shape (C,)
        Scale and shift.
    running_mean, running_var : ndarray, shape (C,)
        Running statistics; read, never modified.
    momentum : float in [0, 1]
        The book's convention: ``running = momentum * running + (1 - momentum)
        * batch``. PyTorch's ``momentum`` is ``1 - momentum`` here (torch 0.1
        is our 0.9).
    eps : float > 0
        Added to the variance.
    train : bool
        True: normalise with the batch statistics and return updated running
        statistics. False: normalise with the running statistics.
    unbiased : bool, keyword-only
        Which batch variance the running variance moves towards: the unbiased
        ``var * M / (M - 1)`` (True, as PyTorch; needs ``M >= 2`` in training)
        or the biased ``var`` itself (False, as the book; ``M = 1`` allowed,
        its variance is 0).
    relu : bool, keyword-only
        Return ``relu(y)`` instead of ``y``: a ReLU layer after the batch
        norm fused into the same pass, bitwise :func:`relu_forward` of ``y``.
        Give that output to :func:`batchnorm_backward` as ``relu_out``.

    Returns
    -------
    y : ndarray, same shape as ``x``
        ``y = (x - mean) * inv_std * gamma + beta`` per channel (``relu``:
        ``0`` where that is ``<= 0``).
    mean : ndarray, shape (C,)
        The mean used: ``mu = sum(x) / M`` (train) or ``running_mean``.
    inv_std : ndarray, shape (C,)
        ``1 / sqrt(var + eps)`` with ``var = sum((x - mu)^2) / M`` (biased,
        train) or ``running_var``. Pass ``mean`` and ``inv_std`` to
        :func:`batchnorm_backward`.
    new_running_mean, new_running_var : ndarray, shape (C,)
        Train: ``momentum * running_mean + (1 - momentum) * mu`` and
        ``momentum * running_var + (1 - momentum) * var * M / (M - 1)`` (the
        unbiased variance, as PyTorch; ``var`` itself with ``unbiased=False``).
        Inference: the given running arrays.
    """
    fn = "batchnorm_forward"
    x, x3 = _as_ncs(fn, "x", x)
    n, c, s = x3.shape
    gamma, beta, running_mean, running_var = _per_channel(
        fn, c, x.dtype, _FORWARD_VECTORS, gamma, beta, running_mean, running_var
    )
    momentum = _float_param(fn, "momentum", momentum, 0.0, 1.0)
    eps = _float_param(fn, "eps", eps, 0.0, np.inf, lo_open=True)
    train = _bool_param(fn, "train", train)
    unbiased = _bool_param(fn, "unbiased", unbiased)
    relu = _bool_param(fn, "relu", relu)
    if train and n * s < (2 if unbiased else 1):
        raise ValueError(
            f"{fn}: training needs {'more than 1 value' if unbiased else 'a value'} per channel "
            f"to estimate {'an unbiased' if unbiased else 'a'} variance, got x of shape {x.shape}"
        )
    eps = x.dtype.type(eps)  # added in x's dtype, as NumPy's running_var + eps
    y, mean, inv_std, new_rm, new_rv = _batchnorm_forward(
        x3, gamma, beta, running_mean, running_var, momentum, eps, train, unbiased, relu
    )
    if not train:
        mean, new_rm, new_rv = running_mean, running_mean, running_var
    return y.reshape(x.shape), mean, inv_std, new_rm, new_rv


@kernel_op
def batchnorm_backward(dy, x, gamma, mean, inv_std, train=True, *, relu_out=None):
    """Batch normalization backward pass.

    Parameters
    ----------
    dy : ndarray, same shape as ``x``
        Gradient with respect to ``y``.
    x : ndarray, shape (N, C) or (N, C, H, W)
        The forward input.
    gamma : ndarray, shape (C,)
    mean, inv_std : ndarray, shape (C,)
        As returned by :func:`batchnorm_forward`.
    train : bool
        Whether the forward pass used batch statistics (then ``mean`` and
        ``inv_std`` depend on ``x``) or running statistics (constants).
    relu_out : ndarray like ``x``, or None, keyword-only
        The output of a forward pass with ``relu=True``: ``dy`` is then the
        gradient of that output, and is first masked as
        :func:`relu_backward` does (``dy`` where ``relu_out > 0``, else 0).

    Returns
    -------
    dx : ndarray, same shape as ``x``
        Train: ``gamma * inv_std / M * (M * dy - dbeta - xhat * dgamma)``;
        inference: ``gamma * inv_std * dy``, where
        ``xhat = (x - mean) * inv_std``.
    dgamma : ndarray, shape (C,)
        ``sum(dy * xhat)`` over all axes but the channel.
    dbeta : ndarray, shape (C,)
        ``sum(dy)`` over all axes but the channel.
    """
    fn = "batchnorm_backward"
    x, x3 = _as_ncs(fn, "x", x)
    dy = v.float_array(fn, "dy", dy)
    if dy.dtype != x.dtype:
        v.same_dtype(fn, x=x, dy=dy)
    if dy.shape != x.shape:
        v.shape(fn, "dy", dy, x.shape, "the shape of x")
    c = x3.shape[1]
    gamma, mean, inv_std = _per_channel(fn, c, x.dtype, _BACKWARD_VECTORS, gamma, mean, inv_std)
    train = _bool_param(fn, "train", train)
    r3 = x3
    if relu_out is not None:
        relu_out, r3 = _as_ncs(fn, "relu_out", relu_out)
        if relu_out.dtype != x.dtype:
            v.same_dtype(fn, x=x, relu_out=relu_out)
        if relu_out.shape != x.shape:
            v.shape(fn, "relu_out", relu_out, x.shape, "the shape of x")
    dx, dgamma, dbeta = _batchnorm_backward(dy.reshape(x3.shape), x3, gamma, mean, inv_std, train, r3,
                                            relu_out is not None)
    return dx.reshape(x.shape), dgamma, dbeta
