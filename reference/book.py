"""The book's layer math where it differs from the rest of this package.

Pure NumPy twins of :mod:`numbanet.book.layers` for the tests (and for
benchmarks of the book's algorithm): the book's non-inverted dropout drawing
its mask from NumPy's global random state, its softmax loss with ``1e-7``
inside the log and its label forms, its batch normalization per feature of
the flattened input (``eps = 1e-6``, biased running variance) written out as
the computational graph, and its max pooling with the argmax in the book's
layout. Affine, ReLU, sigmoid and convolution are the same math as the other
:mod:`numbanet.reference` functions.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "dropout_forward",
    "dropout_backward",
    "softmax_loss_forward",
    "softmax_loss_backward",
    "batchnorm_flat_forward",
    "batchnorm_flat_backward",
    "maxpool_book_forward",
    "maxpool_book_backward",
]

BN_EPS = 1e-6
LOG_DELTA = 1e-7


def dropout_forward(x, dropout_ratio=0.5, train_flg=True):
    """Return ``(out, keep)``.

    Training: one uniform draw per element from ``np.random`` (the legacy
    global state, ``random_sample(x.shape)``, the stream ``np.random.rand``
    reads), ``keep = u > dropout_ratio``, ``out = x * keep``. Inference:
    ``out = x * (1 - dropout_ratio)`` and ``keep`` is None; nothing is drawn.
    """
    if not train_flg:
        return x * x.dtype.type(1.0 - dropout_ratio), None
    keep = np.random.random_sample(x.shape) > dropout_ratio
    return np.where(keep, x, x.dtype.type(0)), keep


def dropout_backward(dout, keep):
    """``dout`` where the element was kept, 0 where it was dropped."""
    return np.where(keep, dout, dout.dtype.type(0))


def _rows(x, t):
    """Logits as rows (N, K) and the labels as (index per row, one-hot (N, K))."""
    x2 = np.atleast_2d(x)
    n, k = x2.shape
    t = np.asarray(t)
    if t.size == n * k and t.size != n:
        onehot = t.reshape(n, k).astype(x2.dtype)
        index = onehot.argmax(axis=1)
    else:
        index = t.reshape(n).astype(np.int64)
        onehot = np.zeros((n, k), x2.dtype)
        onehot[np.arange(n), index] = 1
    return x2, index, onehot


def softmax_loss_forward(x, t):
    """Return ``(loss, y)``: ``y = softmax(x)`` over the last axis and
    ``loss = -(1/N) sum_n log(y[n, t_n] + 1e-7)``, ``t_n`` the index label or
    the argmax of a one-hot row. ``x`` is (N, K) or (K,); ``t`` (N,), (N, 1)
    or one-hot."""
    x2, index, _ = _rows(x, t)
    z = np.exp(x2 - x2.max(axis=1, keepdims=True))
    y = z / z.sum(axis=1, keepdims=True)
    picked = np.take_along_axis(y, index[:, None], axis=1)[:, 0]
    loss = -np.log(picked + y.dtype.type(LOG_DELTA)).mean()
    return loss, y.reshape(np.shape(x))


def softmax_loss_backward(y, t, dout=1):
    """``dout * (y - onehot(t)) / N``, in the shape of ``y``."""
    y2, _, onehot = _rows(y, t)
    return (dout * (y2 - onehot) / y2.dtype.type(y2.shape[0])).reshape(y.shape)


def batchnorm_flat_forward(x, gamma, beta, running_mean, running_var, momentum=0.9, train_flg=True):
    """Return ``(out, cache, new_running_mean, new_running_var)`` for the book's
    batch normalization: ``x`` flattened to (N, D), statistics per column.

    Training: ``mu = mean(x)``, ``var = mean((x - mu)^2)`` (biased),
    ``xhat = (x - mu) / sqrt(var + 1e-6)``; the running statistics move to
    ``momentum * running + (1 - momentum) * (mu, var)``. Inference: the
    running statistics normalise. ``out = gamma * xhat + beta``, shape of ``x``.
    """
    x2 = x.reshape(x.shape[0], -1)
    if train_flg:
        mu = x2.sum(axis=0) / x2.shape[0]
        centred = x2 - mu
        var = (centred * centred).sum(axis=0) / x2.shape[0]
        running_mean = momentum * running_mean + (1 - momentum) * mu
        running_var = momentum * running_var + (1 - momentum) * var
    else:
        centred = x2 - running_mean
        var = running_var
    sd = np.sqrt(var + BN_EPS)
    xhat = centred / sd
    out = gamma * xhat + beta
    cache = (centred, sd, gamma, bool(train_flg), x.shape)
    return out.reshape(x.shape), cache, running_mean, running_var


def batchnorm_flat_backward(dout, cache):
    """Return ``(dx, dgamma, dbeta)`` by walking the forward graph backwards.

    ``xhat = c / s`` with ``c = x - mu``, ``s = sqrt(var + eps)``,
    ``var = mean(c^2)``: the gradient reaches ``c`` directly, through ``s``
    (``ds = -sum(dxhat c) / s^2``, ``dvar = ds / (2 s)``, ``dc += 2 c dvar / N``)
    and through ``mu`` (``dx = dc - mean(dc)``). In inference only the direct
    path exists: ``dx = dxhat / s``.
    """
    centred, sd, gamma, train, shape = cache
    d2 = dout.reshape(centred.shape)
    n = centred.shape[0]
    dbeta = d2.sum(axis=0)
    dgamma = (d2 * centred / sd).sum(axis=0)
    dxhat = d2 * gamma
    dc = dxhat / sd
    if train:
        dsd = -(dxhat * centred).sum(axis=0) / (sd * sd)
        dvar = dsd / (2 * sd)
        dc = dc + centred * (2 * dvar / n)
        dc = dc - dc.sum(axis=0) / n
    return dc.reshape(shape), dgamma, dbeta


def _windows(x, pool_h, pool_w, stride, pad):
    """All pooling windows as (N, C, OH, OW, pool_h * pool_w), -inf padding."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    oh = (h + 2 * pad - pool_h) // stride + 1
    ow = (w + 2 * pad - pool_w) // stride + 1
    win = np.empty((n, c, oh, ow, pool_h * pool_w), x.dtype)
    for i in range(pool_h):
        for j in range(pool_w):
            win[..., i * pool_w + j] = xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
    return win


def maxpool_book_forward(x, pool_h, pool_w, stride=2, pad=0):
    """Return ``(out, arg_max)``: the window maxima (N, C, OH, OW) and, in the
    book's layout (flat, (n, oh, ow, c) order), the row-major index of each
    window's first maximum. The stride defaults to 2, as the book's Pooling."""
    win = _windows(x, pool_h, pool_w, stride, pad)
    arg = win.argmax(axis=-1)
    out = np.take_along_axis(win, arg[..., None], axis=-1)[..., 0]
    return out, arg.transpose(0, 2, 3, 1).reshape(-1)


def maxpool_book_backward(dout, arg_max, x_shape, pool_h, pool_w, stride=2, pad=0):
    """Send each ``dout`` to its window's maximum (overlaps add up)."""
    n, c, h, w = x_shape
    oh, ow = dout.shape[2:]
    arg = arg_max.reshape(n, oh, ow, c).transpose(0, 3, 1, 2)
    dxp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dout.dtype)
    for i in range(pool_h):
        for j in range(pool_w):
            hit = np.where(arg == i * pool_w + j, dout, dout.dtype.type(0))
            dxp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += hit
    return dxp[:, :, pad:pad + h, pad:pad + w]
