"""Convolution and pooling layers with the book's API."""

from __future__ import annotations

import numpy as np

from ._base import Layer


class Convolution(Layer):
    """2-D convolution (cross-correlation) layer.

    Parameters
    ----------
    W : ndarray, shape (F, C/groups, KH, KW)
    b : ndarray, shape (F,), or None for no bias
    stride, pad, dilation : int or (int, int)
    groups : int
        Divides C and F (``groups == C == F`` is depthwise).
    backend : module, optional
        :mod:`numbanet.kernels` (default) or :mod:`numbanet.reference`.

    ``forward(x)`` maps (N, C, H, W) to (N, F, OH, OW); ``backward(dout)``
    returns ``dx`` and overwrites ``dW`` (and ``db``) in place.
    """

    def __init__(self, W, b, stride=1, pad=0, dilation=1, groups=1, backend=None):
        super().__init__(backend)
        self.W = W
        self.b = b
        self.param_names = ("W",) if b is None else ("W", "b")
        self.stride = stride
        self.pad = pad
        self.dilation = dilation
        self.groups = groups
        self.x = None
        self._init_grads()

    def _geometry(self):
        return dict(stride=self.stride, pad=self.pad, dilation=self.dilation, groups=self.groups)

    def forward(self, x):
        # State changes only once the kernel accepted the input, so a bad call
        # leaves the layer as it was.
        y = self.ops.conv2d_forward(x, self.W, self.b, **self._geometry())
        self.x = x
        return y

    skips_dx = True

    def backward(self, dout, need_dx=True):
        """Store ``dW`` (and ``db``); return ``dx`` (``None`` when ``need_dx`` is False)."""
        dx, dW, db = self.ops.conv2d_backward(dout, self.x, self.W, **self._geometry(), need_dx=need_dx)
        if self.b is None:
            self._store_grads(W=dW)
        else:
            self._store_grads(W=dW, b=db)
        return dx


class Pooling(Layer):
    """Max or average pooling layer.

    Parameters
    ----------
    pool_h, pool_w : int
        Window size.
    stride : int or (int, int), optional
        Defaults to the window size.
    pad : int or (int, int)
        Padding on each side: ``-inf`` for ``mode="max"`` (padding never wins),
        zero for ``mode="avg"`` (counted in the divisor). The book's version
        pads max pooling with zeros, which is wrong for negative inputs.
    mode : {"max", "avg"}
    backend : module, optional
    """

    def __init__(self, pool_h, pool_w, stride=None, pad=0, mode="max", backend=None):
        super().__init__(backend)
        if mode not in ("max", "avg"):
            raise ValueError(f"Pooling: mode must be 'max' or 'avg', got {mode!r}")
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.mode = mode
        self.x_shape = None
        self.arg_max = None

    def forward(self, x):
        # State changes only once the kernel accepted the input.
        if self.mode == "max":
            out, self.arg_max = self.ops.maxpool2d_forward(x, self.pool_h, self.pool_w, self.stride, self.pad)
        else:
            out = self.ops.avgpool2d_forward(x, self.pool_h, self.pool_w, self.stride, self.pad)
        self.x_shape = np.shape(x)
        return out

    def backward(self, dout):
        if self.mode == "max":
            return self.ops.maxpool2d_backward(
                dout, self.arg_max, self.x_shape, self.pool_h, self.pool_w, self.stride, self.pad
            )
        return self.ops.avgpool2d_backward(dout, self.x_shape, self.pool_h, self.pool_w, self.stride, self.pad)
