"""The book's chapter 7 network: ``SimpleConvNet``
(conv - relu - pool - affine - relu - affine - softmax)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from . import layers as _L
from ._net import BookNet, SavesParams, param_dtype, weights


class SimpleConvNet(SavesParams, BookNet):
    """One convolution, a 2x2 max pool and two fully connected layers.

    Parameters
    ----------
    input_dim : (C, H, W)
        Only ``C`` and ``H`` are used (the book assumes square input).
    conv_param : dict
        ``filter_num``, ``filter_size``, ``pad``, ``stride``.
    hidden_size, output_size : int
    weight_init_std : float
        Standard deviation of the Gaussian weights ``W1`` (conv), ``W2``,
        ``W3``, drawn in that order from ``np.random``; biases start at zero.

    The width of ``W2`` is the book's ``int(filter_num * (out / 2) ** 2)``
    with ``out = (H - filter_size + 2 pad) / stride + 1``: right for even
    ``out``, as in the book's configurations.

    Attributes
    ----------
    params : dict
        ``W1``, ``b1``, ``W2``, ``b2``, ``W3``, ``b3``.
    layers : OrderedDict
        ``Conv1``, ``Relu1``, ``Pool1``, ``Affine1``, ``Relu2``, ``Affine2``.
    last_layer : SoftmaxWithLoss
    """

    def __init__(self, input_dim=(1, 28, 28),
                 conv_param={"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1},  # noqa: B006 (the book's default, never mutated)
                 hidden_size=100, output_size=10, weight_init_std=0.01, *, backend=None):
        filter_num = conv_param["filter_num"]
        filter_size = conv_param["filter_size"]
        filter_pad = conv_param["pad"]
        filter_stride = conv_param["stride"]
        conv_out = (input_dim[1] - filter_size + 2 * filter_pad) / filter_stride + 1
        pool_out = int(filter_num * (conv_out / 2) * (conv_out / 2))

        dt = param_dtype()
        self.params = {}
        self.params["W1"] = weights(weight_init_std, (filter_num, input_dim[0], filter_size, filter_size), dt)
        self.params["b1"] = np.zeros(filter_num, dtype=dt)
        self.params["W2"] = weights(weight_init_std, (pool_out, hidden_size), dt)
        self.params["b2"] = np.zeros(hidden_size, dtype=dt)
        self.params["W3"] = weights(weight_init_std, (hidden_size, output_size), dt)
        self.params["b3"] = np.zeros(output_size, dtype=dt)

        self.layers = OrderedDict()
        self.layers["Conv1"] = _L.Convolution(self.params["W1"], self.params["b1"], filter_stride, filter_pad)
        self.layers["Relu1"] = _L.Relu()
        self.layers["Pool1"] = _L.Pooling(pool_h=2, pool_w=2, stride=2)
        self.layers["Affine1"] = _L.Affine(self.params["W2"], self.params["b2"])
        self.layers["Relu2"] = _L.Relu()
        self.layers["Affine2"] = _L.Affine(self.params["W3"], self.params["b3"])
        self.last_layer = _L.SoftmaxWithLoss()
        self._use_backend(backend)

    def _weight_layers(self):
        return ("Conv1", "Affine1", "Affine2")

    def accuracy(self, x, t, batch_size=100):
        """Fraction correct, predicted in whole batches of ``batch_size`` (the book's rule:
        a remainder is not predicted but counts in the denominator)."""
        return self._accuracy_batched(x, t, batch_size)

    def numerical_gradient(self, x, t):
        """Central differences of :meth:`loss` for ``W1``, ``b1``, ..., ``b3``."""
        return self._numerical(lambda: self.loss(x, t), ("W1", "b1", "W2", "b2", "W3", "b3"))
