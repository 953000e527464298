"""Central-difference numerical gradients with the book's calling convention.

``f`` is called with the array being differentiated, ``f(x)``; the book's
networks pass functions that ignore the argument and read their parameters
afresh (``lambda W: net.loss(x, t)``), which works because ``x`` is perturbed
in place, one element at a time, and restored. The step is the book's
``h = 1e-4``. (:func:`numbanet.nets.gradient.numerical_gradient` is the
package's own variant: ``f()`` without arguments and a configurable step.)
"""

from __future__ import annotations

import numpy as np

__all__ = ["numerical_gradient", "numerical_gradient_2d"]

#: The book's finite-difference step.
H = 1e-4


def _central_difference(f, x, idx, grad):
    # x[idx] +- h in x's own dtype (a float32 x stays float32), then restored
    # bit for bit from the saved value.
    saved = x[idx]
    x[idx] = saved + H
    f_plus = f(x)
    x[idx] = saved - H
    f_minus = f(x)
    grad[idx] = (f_plus - f_minus) / (2 * H)
    x[idx] = saved


def numerical_gradient(f, x):
    """Gradient of the scalar function ``f`` at ``x``, by central differences.

    Parameters
    ----------
    f : callable
        ``f(x) -> scalar``. It may ignore its argument, but must then read
        ``x`` (for example a network's parameter array) afresh on every call.
    x : ndarray, any shape
        Perturbed in place during the call and restored before it returns.

    Returns
    -------
    grad : ndarray, the shape and dtype of ``x``
        ``grad[i] = (f(x + h e_i) - f(x - h e_i)) / (2 h)`` with ``h = 1e-4``.
    """
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        _central_difference(f, x, idx, grad)
    return grad


def numerical_gradient_2d(f, X):
    """Row-wise gradients: for 2-D ``X`` the gradient of ``f`` at each row
    ``X[i]`` (``f`` receives the row), for 1-D ``X`` that of ``f`` at ``X``.

    This is the ch04 form used to draw gradient fields, where ``f`` maps one
    point (a 1-D array) to a scalar.
    """
    X = np.asarray(X)
    if X.ndim == 1:
        return _gradient_1d(f, X)
    grad = np.zeros_like(X)
    for i, row in enumerate(X):
        grad[i] = _gradient_1d(f, row)
    return grad


def _gradient_1d(f, x):
    grad = np.zeros_like(x)
    for i in range(x.size):
        _central_difference(f, x, i, grad)
    return grad
