"""The book's activation and loss functions (``common/functions.py``), in NumPy.

Same names, arguments and results as the book's functions, for arrays of any
shape and numeric dtype; the layers in :mod:`numbanet.book.layers` compute the
same math on numbanet's kernels. Where a formula can overflow (``sigmoid``
of a large negative input) it is evaluated in a form that does not, which
changes results only by rounding.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "identity_function",
    "step_function",
    "sigmoid",
    "sigmoid_grad",
    "relu",
    "relu_grad",
    "softmax",
    "sum_squared_error",
    "mean_squared_error",
    "cross_entropy_error",
    "softmax_loss",
]

#: Added to the probability inside the log, as in the book: ``log(0)`` becomes
#: ``log(1e-7)`` instead of ``-inf``.
LOG_DELTA = 1e-7


def identity_function(x):
    """Return ``x`` unchanged (the output activation for regression)."""
    return x


def step_function(x):
    """Heaviside step: an integer array, 1 where ``x > 0`` and 0 elsewhere."""
    return (np.asarray(x) > 0).astype(int)


def sigmoid(x):
    """Logistic sigmoid ``1 / (1 + exp(-x))``, elementwise.

    Evaluated as ``exp(x) / (1 + exp(x))`` for negative ``x`` so that no
    ``exp`` overflows; integer input gives float64 output, floats keep their dtype.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_grad(x):
    """Derivative of :func:`sigmoid` at ``x``: ``s * (1 - s)`` with ``s = sigmoid(x)``."""
    s = sigmoid(x)
    return (1.0 - s) * s


def relu(x):
    """Rectified linear unit ``max(0, x)``, elementwise."""
    return np.maximum(0, x)


def relu_grad(x):
    """Derivative of :func:`relu` as the book defines it: 1 where ``x >= 0``
    (at 0 too), 0 elsewhere, in the dtype of ``x``."""
    x = np.asarray(x)
    return (x >= 0).astype(x.dtype)


def softmax(x):
    """Softmax over the last axis, ``exp(x - max) / sum(exp(x - max))``.

    Subtracting the row maximum keeps ``exp`` from overflowing; 1-D input is
    one row.
    """
    x = np.asarray(x)
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def sum_squared_error(y, t):
    """``0.5 * sum((y - t)^2)`` over all elements (not divided by the batch)."""
    d = np.asarray(y) - np.asarray(t)
    return 0.5 * np.sum(d * d)


#: The name the book's text gives :func:`sum_squared_error` (section 4.2.1);
#: the same formula, a sum, not a mean.
mean_squared_error = sum_squared_error


def cross_entropy_error(y, t):
    """Mean cross-entropy of probabilities ``y`` against labels ``t``.

    Parameters
    ----------
    y : ndarray, shape (N, K) or (K,)
        Probabilities (e.g. a softmax output); 1-D is a batch of one.
    t : ndarray
        Class indices, shape (N,) (or a scalar for 1-D ``y``), or one-hot
        targets of the shape of ``y``. One-hot rows are read through their
        argmax, as the book does.

    Returns
    -------
    float
        ``-(1/N) sum_n log(y[n, t_n] + 1e-7)``.
    """
    y = np.asarray(y)
    t = np.asarray(t)
    if y.ndim == 1:
        y = y.reshape(1, y.size)
        t = t.reshape(1, t.size)
    if t.size == y.size:
        t = t.argmax(axis=1)
    t = t.reshape(-1)
    n = y.shape[0]
    return -np.sum(np.log(y[np.arange(n), t] + LOG_DELTA)) / n


def softmax_loss(X, t):
    """:func:`cross_entropy_error` of ``softmax(X)`` against ``t``."""
    return cross_entropy_error(softmax(X), t)
