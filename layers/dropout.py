"""Dropout, which behaves differently in training and inference."""

from __future__ import annotations

import numpy as np

from ._base import Layer


class Dropout(Layer):
    """Inverted dropout: in training, ``y = x * mask / (1 - p)`` with ``mask``
    Bernoulli(1 - p); in inference, ``y = x``.

    Parameters
    ----------
    dropout_ratio : float in [0, 1)
        Probability ``p`` of zeroing an element.
    seed : int, numpy Generator or None
        Seeds the layer's own ``numpy.random.Generator`` (``rng`` attribute).

    Setting ``reuse_mask = True`` makes training-mode forwards reuse the last
    mask (same shape required); gradient checks use it to freeze the noise.
    """

    uses_train_flg = True

    def __init__(self, dropout_ratio=0.5, seed=None, backend=None):
        super().__init__(backend)
        p = float(dropout_ratio)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: dropout_ratio must lie in [0, 1), got {dropout_ratio!r}")
        self.dropout_ratio = p
        self.rng = np.random.default_rng(seed)
        self.mask = None  # the scaled mask: 0 or 1 / (1 - p), in x's dtype
        self.reuse_mask = False

    def forward(self, x, train_flg=True):
        from numbanet.kernels import validate as v  # lazy: keeps Numba out of the import

        # Validated before the generator draws, so a bad call changes nothing.
        x = v.float_array("Dropout.forward", "x", x)
        if not train_flg:
            self.mask = None
            return x
        reuse = self.reuse_mask and self.mask is not None and self.mask.shape == x.shape
        if not reuse:
            keep = self.rng.random(x.shape) >= self.dropout_ratio
            self.mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.dropout_ratio))
        return x * self.mask

    def backward(self, dout):
        from numbanet.kernels import validate as v  # lazy: keeps Numba out of the import

        dout = v.float_array("Dropout.backward", "dout", dout)
        if self.mask is None:
            return dout
        v.shape("Dropout.backward", "dout", dout, self.mask.shape, "the shape of the forward input")
        return dout * self.mask
