"""Flatten: (N, d1, d2, ...) to (N, d1 * d2 * ...) and back."""

from __future__ import annotations

import math

from ._base import Layer


class Flatten(Layer):
    """Reshape (N, d1, d2, ...) to (N, d1 * d2 * ...); backward restores the shape."""

    def __init__(self, backend=None):
        super().__init__(backend)
        self.x_shape = None

    def forward(self, x):
        from numbanet.kernels import validate as v  # lazy: keeps Numba out of the import

        x = v.float_array("Flatten.forward", "x", x, min_ndim=1)
        self.x_shape = x.shape
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))

    def backward(self, dout):
        from numbanet.kernels import validate as v  # lazy: keeps Numba out of the import

        dout = v.float_array("Flatten.backward", "dout", dout)
        n, d = self.x_shape[0], math.prod(self.x_shape[1:])
        v.shape("Flatten.backward", "dout", dout, (n, d), f"(N, D) from the forward input {self.x_shape}")
        return dout.reshape(self.x_shape)
