"""Max and average pooling, book style (im2col over each channel separately).

Unlike the book, padding is handled correctly: ``-inf`` for max pooling (a
padded tap never wins unless the whole window is padding) and zero for
average pooling, where padded taps count in the divisor (PyTorch's default
``count_include_pad=True``).

``argmax`` layout (shared with :mod:`numbanet.kernels`): int64 array of shape
(N, C, OH, OW) holding, for each output, the flat index ``i * pool_w + j`` of
the winning tap inside its window (ties go to the first maximum in row-major
order); the tap reads ``x_pad[n, c, oh*sh + i, ow*sw + j]``.
"""

from __future__ import annotations

import numpy as np

from .conv import _pair, col2im, im2col
from .geometry import out_size

__all__ = [
    "maxpool2d_forward",
    "maxpool2d_backward",
    "avgpool2d_forward",
    "avgpool2d_backward",
]


def _geometry(x_shape, pool_h, pool_w, stride, pad):
    stride = (pool_h, pool_w) if stride is None else _pair(stride)
    (sh, sw), (ph, pw) = stride, _pair(pad)
    n, c, h, w = x_shape
    return n, c, out_size(h, pool_h, sh, ph), out_size(w, pool_w, sw, pw), stride


def maxpool2d_forward(x, pool_h, pool_w, stride=None, pad=0):
    """``y[n, c, oh, ow] = max`` over the window; returns ``(y, argmax)``."""
    n, c, oh, ow, stride = _geometry(x.shape, pool_h, pool_w, stride, pad)
    col = im2col(x.reshape(n * c, 1, *x.shape[2:]), pool_h, pool_w, stride, pad, pad_value=-np.inf)
    arg = np.argmax(col, axis=1)
    y = col[np.arange(col.shape[0]), arg]
    return y.reshape(n, c, oh, ow), arg.astype(np.int64).reshape(n, c, oh, ow)


def maxpool2d_backward(dy, argmax, x_shape, pool_h, pool_w, stride=None, pad=0):
    """Route each ``dy`` to the input tap recorded in ``argmax`` (summing overlaps)."""
    n, c, oh, ow, stride = _geometry(x_shape, pool_h, pool_w, stride, pad)
    size = pool_h * pool_w
    dcol = np.zeros((dy.size, size), dtype=dy.dtype)
    dcol[np.arange(dy.size), argmax.reshape(-1)] = dy.reshape(-1)
    dx = col2im(dcol, (n * c, 1, *x_shape[2:]), pool_h, pool_w, stride, pad)
    return dx.reshape(x_shape)


def avgpool2d_forward(x, pool_h, pool_w, stride=None, pad=0):
    """Mean over each window, zero padding included in the divisor."""
    n, c, oh, ow, stride = _geometry(x.shape, pool_h, pool_w, stride, pad)
    col = im2col(x.reshape(n * c, 1, *x.shape[2:]), pool_h, pool_w, stride, pad)
    y = col.sum(axis=1) / x.dtype.type(pool_h * pool_w)
    return y.reshape(n, c, oh, ow)


def avgpool2d_backward(dy, x_shape, pool_h, pool_w, stride=None, pad=0):
    """Spread ``dy / (pool_h * pool_w)`` evenly over each window."""
    n, c, oh, ow, stride = _geometry(x_shape, pool_h, pool_w, stride, pad)
    size = pool_h * pool_w
    share = dy.reshape(-1, 1) / dy.dtype.type(size)
    dcol = np.broadcast_to(share, (dy.size, size))
    dx = col2im(np.ascontiguousarray(dcol), (n * c, 1, *x_shape[2:]), pool_h, pool_w, stride, pad)
    return dx.reshape(x_shape)
