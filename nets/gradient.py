"""Central-difference numerical gradients, for checking backpropagation."""

from __future__ import annotations

import numpy as np


def numerical_gradient(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Numerical gradient of the scalar function ``f()`` with respect to ``x``.

    ``x`` is perturbed in place, one element at a time, and restored:
    ``g[i] = (f(x + eps e_i) - f(x - eps e_i)) / (2 eps)``. Use float64 arrays;
    the truncation error is O(eps^2) and the rounding error O(1e-16 / eps).

    Parameters
    ----------
    f : callable
        Takes no arguments and returns a scalar; it must read ``x`` afresh.
    x : ndarray
        The variable, modified during the call and restored before return.
    eps : float
        Step size.
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    flat = x.reshape(-1)
    if not np.shares_memory(flat, x):
        raise ValueError("numerical_gradient needs a contiguous x it can perturb in place")
    g = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = float(f())
        flat[i] = old - eps
        fm = float(f())
        flat[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return grad
