"""Batch normalization per feature (2-D) or per channel (4-D), pure NumPy."""

import numpy as np

from .activation import relu_backward, relu_forward


def _axes(x):
    """Reduction axes and the shape that broadcasts a (C,) vector against x."""
    if x.ndim == 2:
        return (0,), (1, -1)
    return (0, 2, 3), (1, -1, 1, 1)


def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum=0.9, eps=1e-5, train=True,
                      *, unbiased=True, relu=False):
    """Return ``(y, mean, inv_std, new_running_mean, new_running_var)``.

    Train: batch mean and biased variance over all axes but the channel; the
    running statistics move towards the batch mean and the *unbiased*
    variance (the biased one with ``unbiased=False``) with the book's
    ``momentum``. Inference: running statistics. ``relu``: ``y`` goes
    through :func:`relu_forward`.
    """
    axes, bshape = _axes(x)
    dt = x.dtype.type
    if train:
        m = x.size // x.shape[1]
        mean = x.mean(axis=axes)
        xc = x - mean.reshape(bshape)
        var = (xc * xc).mean(axis=axes)
        inv_std = dt(1) / np.sqrt(var + dt(eps))
        new_rm = dt(momentum) * running_mean + dt(1 - momentum) * mean
        batch_var = var * dt(m / (m - 1)) if unbiased else var
        new_rv = dt(momentum) * running_var + dt(1 - momentum) * batch_var
    else:
        mean = running_mean
        inv_std = dt(1) / np.sqrt(running_var + dt(eps))
        new_rm, new_rv = running_mean, running_var
    xhat = (x - mean.reshape(bshape)) * inv_std.reshape(bshape)
    y = xhat * gamma.reshape(bshape) + beta.reshape(bshape)
    return relu_forward(y) if relu else y, mean, inv_std, new_rm, new_rv


def batchnorm_backward(dy, x, gamma, mean, inv_std, train=True, *, relu_out=None):
    """Return ``(dx, dgamma, dbeta)``; see :func:`batchnorm_forward`. With
    ``relu_out`` (a ``relu=True`` forward's output), ``dy`` first goes
    through :func:`relu_backward` against it."""
    if relu_out is not None:
        dy = relu_backward(dy, relu_out)
    axes, bshape = _axes(x)
    m = x.size // x.shape[1] if x.size else 0
    xhat = (x - mean.reshape(bshape)) * inv_std.reshape(bshape)
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * xhat).sum(axis=axes)
    scale = (gamma * inv_std).reshape(bshape)
    if not train:
        return dy * scale, dgamma, dbeta
    dx = scale / x.dtype.type(m) * (x.dtype.type(m) * dy - dbeta.reshape(bshape) - xhat * dgamma.reshape(bshape))
    return dx, dgamma, dbeta
