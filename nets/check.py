"""Backpropagation against central differences, for a whole network."""

from __future__ import annotations

import numpy as np

from .gradient import numerical_gradient


def gradient_check(network, x, t, eps=1e-6, zero_tol=1e-8):
    """Max relative error of backprop against numerical gradients, per parameter.

    The loss is evaluated in training mode (batch statistics for batch norm)
    with every dropout mask frozen at the one drawn by the backprop pass, and
    batch norm running statistics are restored afterwards, so the check has
    no side effects on the network beyond its ``grads``.

    Parameters
    ----------
    network : Sequential
        With float64 parameters (float32 central differences are meaningless).
    x, t : ndarray
        A small batch and its labels.
    eps : float
        Central-difference step.
    zero_tol : float
        A gradient whose entries are all below ``zero_tol`` in magnitude on
        both sides is zero (e.g. the bias of a layer followed by batch norm,
        which the normalisation cancels): a relative error would only compare
        rounding noise, so its absolute error ``max|g_bp - g_num|`` is
        reported instead.

    Returns
    -------
    dict of str -> float
        For each parameter name, ``max|g_bp - g_num| / max(max|g_bp|,
        max|g_num|)`` (normwise over the tensor).
    """
    params = network.params
    bad = {k: p.dtype for k, p in params.items() if p.dtype != np.float64}
    if bad:
        raise TypeError(f"gradient_check: parameters must be float64, got {bad}")
    if np.asarray(x).dtype != np.float64:
        raise TypeError(f"gradient_check: x must be float64, got {np.asarray(x).dtype}")
    saved = {k: b.copy() for k, b in network.buffers.items()}
    noisy = [layer for layer in network.layers if hasattr(layer, "reuse_mask")]
    old_flags = [layer.reuse_mask for layer in noisy]
    try:
        analytic = {k: g.copy() for k, g in network.gradient(x, t).items()}
        for layer in noisy:
            layer.reuse_mask = True

        def f():
            return network.loss(x, t, train_flg=True)

        errors = {}
        for name, p in params.items():
            numeric = numerical_gradient(f, p, eps)
            a = analytic[name]
            scale = max(float(np.abs(a).max(initial=0.0)), float(np.abs(numeric).max(initial=0.0)))
            diff = float(np.abs(a - numeric).max(initial=0.0))
            errors[name] = diff / scale if scale >= zero_tol else diff
        return errors
    finally:
        for layer, flag in zip(noisy, old_flags):
            layer.reuse_mask = flag
        for k, b in network.buffers.items():
            np.copyto(b, saved[k])
