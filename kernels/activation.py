"""Elementwise activation kernels: ReLU and sigmoid, forward and backward.

Each kernel works on the flattened contiguous data and runs a parallel loop
over fixed-size chunks; below ``PARALLEL_MIN`` elements it stays on one
thread, where starting the pool would cost more than the loop.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from . import validate as v
from ._threads import kernel_op
from ._config import jit
from ._tunables import CHUNK, PARALLEL_MIN  # read inside the kernels (see _tunables)

__all__ = ["relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward"]


# Each elementwise op is a loop over one contiguous chunk (which LLVM
# vectorises) driven by a kernel that runs small arrays on one thread and
# splits large ones into CHUNK-element tasks; threads never share an output.


@jit(inline=True)
def _relu_of(v, zero):
    """ReLU of one value (``zero`` of its type): the one expression every
    kernel uses, so fused forms (Affine, batch norm) give relu_forward's bits.
    ``<=`` rather than ``>`` so that NaN propagates, as torch.relu does."""
    return zero if v <= zero else v


@jit(inline=True)
def _relu_grad_of(d, x, zero):
    """The gradient ``d`` of a ReLU's output at input (or output) ``x``:
    relu_backward's expression (NaN ``x``: 0)."""
    return d if x > zero else zero


@jit()
def _relu_chunk(x, y):
    zero = x.dtype.type(0)
    for i in range(x.size):
        y[i] = _relu_of(x[i], zero)


@jit()
def _relu_grad_chunk(dy, x, dx):
    zero = x.dtype.type(0)
    for i in range(x.size):
        dx[i] = _relu_grad_of(dy[i], x[i], zero)


@jit()
def _sigmoid_chunk(x, y):
    one = x.dtype.type(1)
    zero = x.dtype.type(0)
    for i in range(x.size):
        # Stable in both tails: exp only ever sees a non-positive argument.
        if x[i] >= zero:
            y[i] = one / (one + np.exp(-x[i]))
        else:
            e = np.exp(x[i])
            y[i] = e / (one + e)


@jit()
def _sigmoid_grad_chunk(dy, y, dx):
    one = y.dtype.type(1)
    for i in range(y.size):
        dx[i] = dy[i] * y[i] * (one - y[i])


@jit(parallel=True)
def _relu_forward(x):
    y = np.empty_like(x)
    n = x.size
    if n < PARALLEL_MIN:
        _relu_chunk(x, y)
        return y
    for c in prange((n + CHUNK - 1) // CHUNK):
        s, e = c * CHUNK, min(n, (c + 1) * CHUNK)
        _relu_chunk(x[s:e], y[s:e])
    return y


@jit(parallel=True)
def _relu_backward(dy, x):
    dx = np.empty_like(dy)
    n = x.size
    if n < PARALLEL_MIN:
        _relu_grad_chunk(dy, x, dx)
        return dx
    for c in prange((n + CHUNK - 1) // CHUNK):
        s, e = c * CHUNK, min(n, (c + 1) * CHUNK)
        _relu_grad_chunk(dy[s:e], x[s:e], dx[s:e])
    return dx


@jit(parallel=True)
def _sigmoid_forward(x):
    y = np.empty_like(x)
    n = x.size
    if n < PARALLEL_MIN:
        _sigmoid_chunk(x, y)
        return y
    for c in prange((n + CHUNK - 1) // CHUNK):
        s, e = c * CHUNK, min(n, (c + 1) * CHUNK)
        _sigmoid_chunk(x[s:e], y[s:e])
    return y


@jit(parallel=True)
def _sigmoid_backward(dy, y):
    dx = np.empty_like(dy)
    n = y.size
    if n < PARALLEL_MIN:
        _sigmoid_grad_chunk(dy, y, dx)
        return dx
    for c in prange((n + CHUNK - 1) // CHUNK):
        s, e = c * CHUNK, min(n, (c + 1) * CHUNK)
        _sigmoid_grad_chunk(dy[s:e], y[s:e], dx[s:e])
    return dx


def _same_shape_pair(fn, a_name, a, b_name, b):
    a = v.float_array(fn, a_name, a)
    b = v.float_array(fn, b_name, b)
    if not (a.dtype is b.dtype and a.shape == b.shape):
        # the checks that raise, only when one could (they cost 1.2 us of
        # relu_backward's 3.3 us on 4 x 5 float64, Xeon)
        v.same_dtype(fn, **{a_name: a, b_name: b})
        v.shape(fn, a_name, a, b.shape, f"the shape of {b_name}")
    return a, b


@kernel_op
def relu_forward(x):
    """ReLU, ``y = max(x, 0)`` elementwise (NaN stays NaN).

    Parameters
    ----------
    x : ndarray, any shape, float32 or float64

    Returns
    -------
    y : ndarray, same shape and dtype as ``x``
    """
    x = v.float_array("relu_forward", "x", x)
    return _relu_forward(x.reshape(-1)).reshape(x.shape)


@kernel_op
def relu_backward(dy, x):
    """ReLU gradient, ``dx = dy * (x > 0)``.

    Parameters
    ----------
    dy : ndarray
        Gradient with respect to the ReLU output.
    x : ndarray, same shape as ``dy``
        The forward input.

    Returns
    -------
    dx : ndarray, same shape and dtype as ``dy``
    """
    dy, x = _same_shape_pair("relu_backward", "dy", dy, "x", x)
    return _relu_backward(dy.reshape(-1), x.reshape(-1)).reshape(x.shape)


@kernel_op
def sigmoid_forward(x):
    """Logistic sigmoid, ``y = 1 / (1 + exp(-x))``, evaluated without overflow.

    Parameters
    ----------
    x : ndarray, any shape, float32 or float64

    Returns
    -------
    y : ndarray, same shape and dtype as ``x``
    """
    x = v.float_array("sigmoid_forward", "x", x)
    return _sigmoid_forward(x.reshape(-1)).reshape(x.shape)


@kernel_op
def sigmoid_backward(dy, y):
    """Sigmoid gradient from its output, ``dx = dy * y * (1 - y)``.

    Parameters
    ----------
    dy : ndarray
        Gradient with respect to the sigmoid output.
    y : ndarray, same shape as ``dy``
        The forward output.

    Returns
    -------
    dx : ndarray, same shape and dtype as ``dy``
    """
    dy, y = _same_shape_pair("sigmoid_backward", "dy", dy, "y", y)
    return _sigmoid_backward(dy.reshape(-1), y.reshape(-1)).reshape(y.shape)
