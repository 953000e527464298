"""Batch normalization kernels, per feature (2-D input) or per channel (4-D).

Statistics are taken over every axis but the channel axis, as PyTorch's
``BatchNorm1d``/``BatchNorm2d`` do (not the book's flatten-everything form).
Both kernels view the input as ``(N, C, S)`` with ``S = H * W`` (``S = 1`` for
2-D input) and run a parallel loop over channels: each channel's sums are made
by one thread in a fixed order, so results are bitwise independent of the
thread count. The sums accumulate in float64 whatever the dtype (deliberate: a
float32 channel of 100 x 24 x 24 values keeps float32 accuracy); everything
written out is in the input dtype.

The running statistics are not touched in place: :func:`batchnorm_forward`
returns their updated values, and the caller (the layer) decides to store them.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from numba import prange

from . import validate as v
from ._threads import kernel_op
from ._config import jit
from ._tunables import BATCHNORM_PARALLEL_MIN

__all__ = ["batchnorm_forward", "batchnorm_backward"]


@jit(external=True)
def _batchnorm_forward_stats_channels(x, eps, mean, var, inv_std, lo, hi):
    n, c, s = x.shape
    m = n * s
    for ch in range(lo, hi):
        acc = 0.0
        for i in range(n):
            for k in range(s):
                acc += x[i, ch, k]
        mu = acc / m
        # Two passes (mean, then squared deviations): no cancellation when
        # the mean is large compared with the spread.
        acc2 = 0.0
        for i in range(n):
            for k in range(s):
                d = x[i, ch, k] - mu
                acc2 += d * d
        sigma2 = acc2 / m
        mean[ch] = mu
        var[ch] = sigma2
        inv_std[ch] = 1.0 / np.sqrt(sigma2 + eps)


@jit(parallel=True)
def _batchnorm_forward_stats(x, eps):
    """Per-channel mean, biased variance and 1/sqrt(var + eps) of x (N, C, S)."""
    c = x.shape[1]
    mean = np.empty(c, x.dtype)
    var = np.empty(c, x.dtype)
    inv_std = np.empty(c, x.dtype)
    if x.size < BATCHNORM_PARALLEL_MIN:
        # np.int64 bounds on both branches: one compiled helper (see _config.jit)
        _batchnorm_forward_stats_channels(x, eps, mean, var, inv_std, np.int64(0), c)
    else:
        for ch in prange(c):
            _batchnorm_forward_stats_channels(x, eps, mean, var, inv_std, np.int64(ch), np.int64(ch) + 1)
    return mean, var, inv_std


@jit(external=True)
def _batchnorm_forward_normalize_channels(x, mean, inv_std, gamma, beta, y, lo, hi):
    n, c, s = x.shape
    for ch in range(lo, hi):
        mu = mean[ch]
        inv = inv_std[ch]
        g = gamma[ch]
        b = beta[ch]
        for i in range(n):
            for k in range(s):
                y[i, ch, k] = (x[i, ch, k] - mu) * inv * g + b


@jit(parallel=True)
def _batchnorm_forward_normalize(x, mean, inv_std, gamma, beta):
    """y = (x - mean) * inv_std * gamma + beta, per channel, in x's dtype."""
    c = x.shape[1]
    y = np.empty_like(x)
    if x.size < BATCHNORM_PARALLEL_MIN:
        _batchnorm_forward_normalize_channels(x, mean, inv_std, gamma, beta, y, np.int64(0), c)
    else:
        for ch in prange(c):
            _batchnorm_forward_normalize_channels(x, mean, inv_std, gamma, beta, y, np.int64(ch), np.int64(ch) + 1)
    return y


@jit(external=True)
def _batchnorm_backward_channels(dy, x, gamma, mean, inv_std, train, dx, dgamma, dbeta, lo, hi):
    n, c, s = x.shape
    m = n * s
    for ch in range(lo, hi):
        mu = mean[ch]
        inv = inv_std[ch]
        sum_dy = 0.0
        sum_dy_xhat = 0.0
        for i in range(n):
            for k in range(s):
                sum_dy += dy[i, ch, k]
                sum_dy_xhat += dy[i, ch, k] * ((x[i, ch, k] - mu) * inv)
        dbeta[ch] = sum_dy
        dgamma[ch] = sum_dy_xhat
        scale = gamma[ch] * inv
        if train:
            # dx = gamma*inv/M * (M*dy - sum(dy) - xhat*sum(dy*xhat)), written
            # as dy*scale - (a + xhat*b) with the per-channel terms hoisted.
            a = dbeta[ch] * (scale / x.dtype.type(m))
            b = dgamma[ch] * (scale / x.dtype.type(m))
            for i in range(n):
                for k in range(s):
                    xhat = (x[i, ch, k] - mu) * inv
                    dx[i, ch, k] = dy[i, ch, k] * scale - (a + xhat * b)
        else:
            for i in range(n):
                for k in range(s):
                    dx[i, ch, k] = dy[i, ch, k] * scale


@jit(parallel=True)
def _batchnorm_backward(dy, x, gamma, mean, inv_std, train):
    c = x.shape[1]
    dx = np.empty_like(x)
    dgamma = np.empty(c, x.dtype)
    dbeta = np.empty(c, x.dtype)
    if x.size < BATCHNORM_PARALLEL_MIN:
        _batchnorm_backward_channels(dy, x, gamma, mean, inv_std, train, dx, dgamma, dbeta, np.int64(0), c)
    else:
        for ch in prange(c):
            lo = np.int64(ch)
            _batchnorm_backward_channels(dy, x, gamma, mean, inv_std, train, dx, dgamma, dbeta, lo, lo + 1)
    return dx, dgamma, dbeta


def _as_ncs(fn, name, x):
    x = v.float_array(fn, name, x, (2, 4))
    n, c = x.shape[:2]
    return x, x.reshape(n, c, math.prod(x.shape[2:]))


def _per_channel(fn, c, dtype, **arrays):
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
                      *, unbiased=True):
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

    Returns
    -------
    y : ndarray, same shape as ``x``
        ``y = (x - mean) * inv_std * gamma + beta`` per channel.
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
        fn, c, x.dtype, gamma=gamma, beta=beta, running_mean=running_mean, running_var=running_var
    )
    momentum = _float_param(fn, "momentum", momentum, 0.0, 1.0)
    eps = _float_param(fn, "eps", eps, 0.0, np.inf, lo_open=True)
    train = _bool_param(fn, "train", train)
    unbiased = _bool_param(fn, "unbiased", unbiased)
    dt = x.dtype.type
    if train:
        m = n * s
        if m < (2 if unbiased else 1):
            raise ValueError(
                f"{fn}: training needs {'more than 1 value' if unbiased else 'a value'} per channel "
                f"to estimate {'an unbiased' if unbiased else 'a'} variance, got x of shape {x.shape}"
            )
        mean, var, inv_std = _batchnorm_forward_stats(x3, dt(eps))
        keep, new = dt(momentum), dt(1.0 - momentum)
        new_rm = keep * running_mean + new * mean
        new_rv = keep * running_var + new * (var * dt(m / (m - 1)) if unbiased else var)
    else:
        mean = running_mean
        inv_std = dt(1) / np.sqrt(running_var + dt(eps))
        new_rm, new_rv = running_mean, running_var
    y = _batchnorm_forward_normalize(x3, mean, inv_std, gamma, beta)
    return y.reshape(x.shape), mean, inv_std, new_rm, new_rv


@kernel_op
def batchnorm_backward(dy, x, gamma, mean, inv_std, train=True):
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
    gamma, mean, inv_std = _per_channel(fn, c, x.dtype, gamma=gamma, mean=mean, inv_std=inv_std)
    train = _bool_param(fn, "train", train)
    dx, dgamma, dbeta = _batchnorm_backward(dy.reshape(x3.shape), x3, gamma, mean, inv_std, train)
    return dx.reshape(x.shape), dgamma, dbeta
