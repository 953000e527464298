"""Batch normalization, which behaves differently in training and inference."""

from __future__ import annotations

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
