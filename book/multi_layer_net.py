"""The book's fully connected network with weight decay: ``MultiLayerNet``."""

from __future__ import annotations

from collections import OrderedDict

from . import layers as _L
from ._net import BookNet, init_mlp_weights, param_dtype


class MultiLayerNet(BookNet):
    """(Affine - activation) x len(hidden_size_list), then Affine and softmax loss.

    Parameters
    ----------
    input_size : int
        784 for MNIST.
    hidden_size_list : list of int
        Widths of the hidden layers, e.g. ``[100, 100, 100]``.
    output_size : int
    activation : "relu" or "sigmoid"
    weight_init_std : float, "relu"/"he" or "sigmoid"/"xavier"
        Standard deviation of the Gaussian weights, or He's ``sqrt(2 / fan_in)``
        or Xavier's ``sqrt(1 / fan_in)`` per layer. Drawn from ``np.random``
        in the order ``W1, W2, ...``; biases start at zero.
    weight_decay_lambda : float
        L2 strength: the loss gains ``0.5 * lambda * sum(W ** 2)`` per weight
        matrix and each ``W`` gradient ``lambda * W``.

    Attributes
    ----------
    params : dict
        ``W1``, ``b1``, ..., ``W<L+1>``, ``b<L+1>`` (L hidden layers).
    layers : OrderedDict
        ``Affine1``, ``Activation_function1``, ..., ``Affine<L+1>``.
    last_layer : SoftmaxWithLoss
    """

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, *, backend=None):
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size_list = hidden_size_list
        self.hidden_layer_num = len(hidden_size_list)
        self.weight_decay_lambda = weight_decay_lambda
        self.params = {}
        init_mlp_weights(self.params, [input_size] + list(hidden_size_list) + [output_size],
                         weight_init_std, param_dtype())

        activation_layer = {"sigmoid": _L.Sigmoid, "relu": _L.Relu}[activation]
        self.layers = OrderedDict()
        for idx in range(1, self.hidden_layer_num + 1):
            self.layers["Affine" + str(idx)] = _L.Affine(self.params["W" + str(idx)], self.params["b" + str(idx)])
            self.layers["Activation_function" + str(idx)] = activation_layer()
        idx = self.hidden_layer_num + 1
        self.layers["Affine" + str(idx)] = _L.Affine(self.params["W" + str(idx)], self.params["b" + str(idx)])
        self.last_layer = _L.SoftmaxWithLoss()
        self._use_backend(backend)

    def _weight_layers(self):
        return ["Affine" + str(i) for i in range(1, self.hidden_layer_num + 2)]

    def accuracy(self, x, t):
        """Fraction of rows of ``x`` whose top score is the label (index or one-hot ``t``)."""
        return self._accuracy_full(self.predict(x), t, x.shape[0])

    def numerical_gradient(self, x, t):
        """Central differences of :meth:`loss` for ``W1``, ``b1``, ``W2``, ..."""
        names = [p + str(i) for i in range(1, self.hidden_layer_num + 2) for p in ("W", "b")]
        return self._numerical(lambda: self.loss(x, t), names)
