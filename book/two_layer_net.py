"""The book's chapter 5 network: ``TwoLayerNet`` (Affine - Relu - Affine - softmax)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from . import layers as _L
from ._net import BookNet, param_dtype, weights


class TwoLayerNet(BookNet):
    """Two fully connected layers with a ReLU between them and softmax loss.

    Parameters
    ----------
    input_size, hidden_size, output_size : int
    weight_init_std : float
        Standard deviation of the Gaussian weights (``W1`` drawn first, then
        ``W2``, from ``np.random``); biases start at zero.

    Attributes
    ----------
    params : dict
        ``W1`` (input, hidden), ``b1``, ``W2`` (hidden, output), ``b2`` in
        ``numbanet.book.config.dtype``.
    layers : OrderedDict
        ``Affine1``, ``Relu1``, ``Affine2``.
    lastLayer : SoftmaxWithLoss
    """

    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01, *, backend=None):
        dt = param_dtype()
        self.params = {}
        self.params["W1"] = weights(weight_init_std, (input_size, hidden_size), dt)
        self.params["b1"] = np.zeros(hidden_size, dtype=dt)
        self.params["W2"] = weights(weight_init_std, (hidden_size, output_size), dt)
        self.params["b2"] = np.zeros(output_size, dtype=dt)

        self.layers = OrderedDict()
        self.layers["Affine1"] = _L.Affine(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = _L.Relu()
        self.layers["Affine2"] = _L.Affine(self.params["W2"], self.params["b2"])
        self.lastLayer = _L.SoftmaxWithLoss()
        self._use_backend(backend)

    def _weight_layers(self):
        return ("Affine1", "Affine2")

    def _loss_layer(self):
        return self.lastLayer

    def accuracy(self, x, t):
        """Fraction of rows of ``x`` whose top score is the label (index or one-hot ``t``)."""
        return self._accuracy_full(self.predict(x), t, x.shape[0])

    def numerical_gradient(self, x, t):
        """Central differences of :meth:`loss` (the book's ``numerical_gradient``, h = 1e-4)."""
        return self._numerical(lambda: self.loss(x, t), ("W1", "b1", "W2", "b2"))
