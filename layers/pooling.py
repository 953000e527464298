"""The pooling layer (max or average) with the book's API."""

from __future__ import annotations

import numpy as np

from ._base import Layer


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
