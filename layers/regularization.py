"""Layers that behave differently in training and inference, and Flatten:
BatchNormalization, Dropout, Flatten."""

from __future__ import annotations

import math

import numpy as np

from ._base import Layer


class BatchNormalization(Layer):
    """Batch normalization per feature (2-D input) or per channel (4-D input).

    As PyTorch's ``BatchNorm1d``/``BatchNorm2d`` (statistics over all axes but
    axis 1), not the book's form that flattens 4-D input to 2-D.

    Parameters
    ----------
    gamma, beta : ndarray, shape (C,)
        Scale and shift (kept, not copied); gradients in ``dgamma``, ``dbeta``.
    momentum : float
        The book's convention: ``running = momentum * running + (1 - momentum)
        * batch``; PyTorch's ``momentum=0.1`` is ``momentum=0.9`` here.
    eps : float
        Added to the variance.
    running_mean, running_var : ndarray, shape (C,), optional
        Initial running statistics (default zeros and ones, as PyTorch). The
        running variance is updated with the unbiased batch variance.
    backend : module, optional
        :mod:`numbanet.kernels` (default) or :mod:`numbanet.reference`.

    ``forward(x, train_flg=True)`` uses the batch statistics and updates
    ``running_mean``/``running_var`` in place when ``train_flg`` is true, and
    the running statistics otherwise.
    """

    param_names = ("gamma", "beta")
    buffer_names = ("running_mean", "running_var")
    uses_train_flg = True

    def __init__(self, gamma, beta, momentum=0.9, eps=1e-5, running_mean=None, running_var=None, backend=None):
        super().__init__(backend)
        self.gamma = gamma
        self.beta = beta
        self.momentum = momentum
        self.eps = eps
        self.running_mean = np.zeros_like(gamma) if running_mean is None else running_mean
        self.running_var = np.ones_like(gamma) if running_var is None else running_var
        self.x = self.mean = self.inv_std = None
        self.train_flg = True
        self._init_grads()

    def forward(self, x, train_flg=True):
        y, self.mean, self.inv_std, rm, rv = self.ops.batchnorm_forward(
            x, self.gamma, self.beta, self.running_mean, self.running_var,
            self.momentum, self.eps, bool(train_flg),
        )
        if train_flg:
            np.copyto(self.running_mean, rm)
            np.copyto(self.running_var, rv)
        self.x = x
        self.train_flg = bool(train_flg)
        return y

    def backward(self, dout):
        dx, dgamma, dbeta = self.ops.batchnorm_backward(
            dout, self.x, self.gamma, self.mean, self.inv_std, self.train_flg
        )
        self._store_grads(gamma=dgamma, beta=dbeta)
        return dx


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
