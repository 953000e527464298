"""The book's extended fully connected network: ``MultiLayerNetExtend``
(weight decay, dropout and batch normalization)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from . import layers as _L
from ._net import BookNet, init_mlp_weights, param_dtype


class MultiLayerNetExtend(BookNet):
    """(Affine [- BatchNorm] - activation [- Dropout]) per hidden layer, then
    Affine and softmax loss.

    Parameters
    ----------
    input_size, hidden_size_list, output_size, activation, weight_init_std, weight_decay_lambda
        As :class:`numbanet.book.multi_layer_net.MultiLayerNet`.
    use_dropout : bool
        Add a book :class:`~numbanet.book.layers.Dropout` after each activation
        (its mask is drawn from ``np.random`` on every training forward pass).
    dropout_ration : float
        The dropout ratio (the book's spelling of the argument).
    use_batchnorm : bool
        Add a :class:`~numbanet.book.layers.BatchNormalization` after each
        hidden Affine, with ``gamma<i>`` = 1 and ``beta<i>`` = 0 in ``params``.

    ``predict(x, train_flg=False)`` and ``loss(x, t, train_flg=False)`` pass
    ``train_flg`` to the dropout and batch-norm layers; :meth:`gradient` and
    :meth:`numerical_gradient` run in training mode, as the book.
    """

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, use_dropout=False,
                 dropout_ration=0.5, use_batchnorm=False, *, backend=None):
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size_list = hidden_size_list
        self.hidden_layer_num = len(hidden_size_list)
        self.use_dropout = use_dropout
        self.weight_decay_lambda = weight_decay_lambda
        self.use_batchnorm = use_batchnorm
        self.params = {}
        dt = param_dtype()
        init_mlp_weights(self.params, [input_size] + list(hidden_size_list) + [output_size], weight_init_std, dt)

        activation_layer = {"sigmoid": _L.Sigmoid, "relu": _L.Relu}[activation]
        self.layers = OrderedDict()
        for idx in range(1, self.hidden_layer_num + 1):
            i = str(idx)
            self.layers["Affine" + i] = _L.Affine(self.params["W" + i], self.params["b" + i])
            if use_batchnorm:
                self.params["gamma" + i] = np.ones(hidden_size_list[idx - 1], dtype=dt)
                self.params["beta" + i] = np.zeros(hidden_size_list[idx - 1], dtype=dt)
                self.layers["BatchNorm" + i] = _L.BatchNormalization(self.params["gamma" + i], self.params["beta" + i])
            self.layers["Activation_function" + i] = activation_layer()
            if use_dropout:
                self.layers["Dropout" + i] = _L.Dropout(dropout_ration)
        idx = str(self.hidden_layer_num + 1)
        self.layers["Affine" + idx] = _L.Affine(self.params["W" + idx], self.params["b" + idx])
        self.last_layer = _L.SoftmaxWithLoss()
        self._use_backend(backend)

    def _weight_layers(self):
        return ["Affine" + str(i) for i in range(1, self.hidden_layer_num + 2)]

    def predict(self, x, train_flg=False):
        """Scores before the softmax; ``train_flg`` switches dropout and batch norm to training mode.

        Layers named Dropout* or BatchNorm* get ``train_flg`` (the book's
        rule); see :meth:`BookNet._forward_layers` for the fused pairs."""
        return self._forward_layers(x, train_flg)

    def loss(self, x, t, train_flg=False):
        """Softmax cross-entropy plus ``0.5 * lambda * sum(W ** 2)`` over the weights."""
        y = self.predict(x, train_flg)
        return self.last_layer.forward(y, t) + self._decay_term()

    def accuracy(self, x, t):
        """Fraction of rows of ``x`` whose top score (inference mode) is the label."""
        return self._accuracy_full(self.predict(x, train_flg=False), t, x.shape[0])

    def _param_names(self):
        names = []
        for idx in range(1, self.hidden_layer_num + 2):
            names += ["W" + str(idx), "b" + str(idx)]
            if self.use_batchnorm and idx != self.hidden_layer_num + 1:
                names += ["gamma" + str(idx), "beta" + str(idx)]
        return names

    def numerical_gradient(self, x, t):
        """Central differences of ``loss(x, t, train_flg=True)`` for every parameter.

        With dropout each evaluation draws a new mask, as in the book.
        """
        return self._numerical(lambda: self.loss(x, t, train_flg=True), self._param_names())

    def gradient(self, x, t):
        """Backpropagated gradients of ``loss(x, t, train_flg=True)``, keyed as ``params``."""
        self.loss(x, t, train_flg=True)
        self._backprop(self.last_layer)
        grads = {}
        for idx in range(1, self.hidden_layer_num + 2):
            i = str(idx)
            self._weight_grads(grads, idx, self.layers["Affine" + i], self.weight_decay_lambda, self.params["W" + i])
            if self.use_batchnorm and idx != self.hidden_layer_num + 1:
                bn = self.layers["BatchNorm" + i]
                grads["gamma" + i] = self._grad(bn, "dgamma")
                grads["beta" + i] = self._grad(bn, "dbeta")
        return grads
