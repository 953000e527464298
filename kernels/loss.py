"""Softmax cross-entropy loss kernels.

Rows are independent, so the parallel loop runs over rows; the batch loss is
the per-row losses summed afterwards in row order, which keeps it bitwise
independent of the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from . import _validate as v
from ._config import jit

__all__ = ["softmax_cross_entropy", "softmax_cross_entropy_backward"]


@jit()
def _softmax_row(x, p):
    """Write softmax(x) into p; return (row max, log of the sum of exps).

    The sum of exponentials accumulates in float64 whatever the dtype, so a
    float32 row of thousands of classes keeps float32 accuracy.
    """
    m = x[0]
    for j in range(1, x.size):
        # `not (x <= m)` also catches NaN, so a NaN anywhere poisons the row.
        if not x[j] <= m:
            m = x[j]
    s = 0.0
    for j in range(x.size):
        e = np.exp(x[j] - m)
        p[j] = e
        s += e
    inv = 1.0 / s
    for j in range(x.size):
        p[j] = p[j] * inv
    return m, np.log(s)


@jit(parallel=True)
def _softmax_ce_index(logits, labels):
    n, k = logits.shape
    probs = np.empty_like(logits)
    row_loss = np.empty(n, np.float64)
    for i in prange(n):
        m, lse = _softmax_row(logits[i], probs[i])
        # -log p[label] = log(sum exp(x - m)) - (x[label] - m)
        row_loss[i] = lse - (logits[i, labels[i]] - m)
    total = 0.0
    for i in range(n):
        total += row_loss[i]
    return total / n if n else np.nan, probs


@jit(parallel=True)
def _softmax_ce_targets(logits, targets):
    n, k = logits.shape
    probs = np.empty_like(logits)
    row_loss = np.empty(n, np.float64)
    for i in prange(n):
        m, lse = _softmax_row(logits[i], probs[i])
        acc = 0.0
        for j in range(k):
            t = targets[i, j]
            # Zero targets are skipped so that a -inf logit with target 0
            # contributes 0, not 0 * inf = NaN.
            if t != 0:
                acc += t * (lse - (logits[i, j] - m))
        row_loss[i] = acc
    total = 0.0
    for i in range(n):
        total += row_loss[i]
    return total / n if n else np.nan, probs


@jit(parallel=True)
def _softmax_ce_backward_index(probs, labels):
    n, k = probs.shape
    dx = np.empty_like(probs)
    inv_n = probs.dtype.type(1.0 / max(n, 1))
    one = probs.dtype.type(1)
    for i in prange(n):
        for j in range(k):
            dx[i, j] = probs[i, j] * inv_n
        dx[i, labels[i]] = (probs[i, labels[i]] - one) * inv_n
    return dx


@jit(parallel=True)
def _softmax_ce_backward_targets(probs, targets):
    n, k = probs.shape
    dx = np.empty_like(probs)
    inv_n = probs.dtype.type(1.0 / max(n, 1))
    for i in prange(n):
        for j in range(k):
            dx[i, j] = (probs[i, j] - targets[i, j]) * inv_n
    return dx


def _logits_and_labels(fn, name, logits, labels):
    logits = v.float_array(fn, name, logits, 2)
    n, k = logits.shape
    if k == 0:
        raise ValueError(f"{fn}: {name} must have at least one class (K >= 1), got shape {logits.shape}")
    labels, is_index = v.class_labels(fn, labels, n, k, logits.dtype)
    return logits, labels, is_index


def softmax_cross_entropy(logits, labels):
    """Softmax followed by the mean cross-entropy loss.

    Parameters
    ----------
    logits : ndarray, shape (N, K)
        Unnormalised scores, float32 or float64.
    labels : ndarray, shape (N,) of integers, or shape (N, K)
        Class indices in ``[0, K)``, or one-hot (or probability) targets.

    Returns
    -------
    loss : scalar of the logits' dtype
        ``L = -(1/N) sum_n sum_k t[n, k] log p[n, k]``, computed as
        ``log(sum_k exp(x[n, k] - m_n)) - (x[n, k] - m_n)`` with ``m_n`` the row
        maximum, so logits of any magnitude neither overflow nor take log(0).
        NaN for an empty batch (N = 0), as PyTorch's mean reduction.
    probs : ndarray, shape (N, K)
        ``p[n, k] = exp(x[n, k]) / sum_j exp(x[n, j])``.
    """
    fn = "softmax_cross_entropy"
    logits, labels, is_index = _logits_and_labels(fn, "logits", logits, labels)
    kernel = _softmax_ce_index if is_index else _softmax_ce_targets
    loss, probs = kernel(logits, labels)
    return logits.dtype.type(loss), probs


def softmax_cross_entropy_backward(probs, labels):
    """Gradient of the mean softmax cross-entropy with respect to the logits.

    Parameters
    ----------
    probs : ndarray, shape (N, K)
        Softmax output from :func:`softmax_cross_entropy`.
    labels : ndarray, shape (N,) of integers, or shape (N, K)
        The same labels passed to the forward pass.

    Returns
    -------
    dlogits : ndarray, shape (N, K)
        ``(p - t) / N`` with ``t`` the one-hot (or given) targets.
    """
    fn = "softmax_cross_entropy_backward"
    probs, labels, is_index = _logits_and_labels(fn, "probs", probs, labels)
    kernel = _softmax_ce_backward_index if is_index else _softmax_ce_backward_targets
    return kernel(probs, labels)
