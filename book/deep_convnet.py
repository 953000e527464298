"""The book's chapter 8 network: ``DeepConvNet`` (six 3x3 convolutions, three
pools, two fully connected layers with dropout)."""

from __future__ import annotations

import numpy as np

from . import layers as _L
from ._net import BookNet, SavesParams, param_dtype, weights

_CONV = lambda n, pad: {"filter_num": n, "filter_size": 3, "pad": pad, "stride": 1}  # noqa: E731


class DeepConvNet(SavesParams, BookNet):
    """conv - relu - conv - relu - pool (three times), affine - relu - dropout -
    affine - dropout - softmax.

    Parameters
    ----------
    input_dim : (C, H, W)
        Only ``C`` is used; the first Affine expects 64 * 4 * 4 inputs, i.e.
        28x28 images (the book's sizes are fixed).
    conv_param_1 ... conv_param_6 : dict
        ``filter_num``, ``filter_size``, ``pad``, ``stride`` of each
        convolution (the book's defaults: 16, 16, 32, 32, 64, 64 filters of
        3x3, pad 1 except pad 2 for the fourth).
    hidden_size, output_size : int

    Weights are He-initialised with the book's fixed fan-ins
    ``(9, 144, 144, 288, 288, 576, 1024, hidden_size)`` and drawn from
    ``np.random`` in the order W1 ... W8. ``loss`` runs in training mode
    (dropout masks are drawn from ``np.random``); ``predict`` defaults to
    inference mode.

    Attributes
    ----------
    params : dict
        ``W1``, ``b1``, ..., ``W8``, ``b8``.
    layers : list
        Layers in order; the weights live at indices 0, 2, 5, 7, 10, 12, 15, 18.
    last_layer : SoftmaxWithLoss
    """

    _WEIGHT_LAYERS = (0, 2, 5, 7, 10, 12, 15, 18)

    def __init__(self, input_dim=(1, 28, 28),
                 conv_param_1=_CONV(16, 1), conv_param_2=_CONV(16, 1), conv_param_3=_CONV(32, 1),
                 conv_param_4=_CONV(32, 2), conv_param_5=_CONV(64, 1), conv_param_6=_CONV(64, 1),
                 hidden_size=50, output_size=10, *, backend=None):
        # fan-in per layer: the book's fixed numbers (3x3 filters assumed)
        pre_node_nums = np.array([1 * 3 * 3, 16 * 3 * 3, 16 * 3 * 3, 32 * 3 * 3, 32 * 3 * 3,
                                  64 * 3 * 3, 64 * 4 * 4, hidden_size])
        scales = np.sqrt(2.0 / pre_node_nums)
        convs = [conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5, conv_param_6]

        dt = param_dtype()
        self.params = {}
        channels = input_dim[0]
        for idx, cp in enumerate(convs):
            fs = cp["filter_size"]
            self.params["W" + str(idx + 1)] = weights(scales[idx], (cp["filter_num"], channels, fs, fs), dt)
            self.params["b" + str(idx + 1)] = np.zeros(cp["filter_num"], dtype=dt)
            channels = cp["filter_num"]
        self.params["W7"] = weights(scales[6], (64 * 4 * 4, hidden_size), dt)
        self.params["b7"] = np.zeros(hidden_size, dtype=dt)
        self.params["W8"] = weights(scales[7], (hidden_size, output_size), dt)
        self.params["b8"] = np.zeros(output_size, dtype=dt)

        p = self.params

        def conv(i):
            return _L.Convolution(p["W" + str(i)], p["b" + str(i)], convs[i - 1]["stride"], convs[i - 1]["pad"])

        def pool():
            return _L.Pooling(pool_h=2, pool_w=2, stride=2)

        self.layers = [
            conv(1), _L.Relu(), conv(2), _L.Relu(), pool(),
            conv(3), _L.Relu(), conv(4), _L.Relu(), pool(),
            conv(5), _L.Relu(), conv(6), _L.Relu(), pool(),
            _L.Affine(p["W7"], p["b7"]), _L.Relu(), _L.Dropout(0.5),
            _L.Affine(p["W8"], p["b8"]), _L.Dropout(0.5),
        ]
        self.last_layer = _L.SoftmaxWithLoss()
        self._use_backend(backend)

    def _weight_layers(self):
        return self._WEIGHT_LAYERS

    def predict(self, x, train_flg=False):
        """Scores before the softmax; ``train_flg`` switches the dropout layers to training mode."""
        for layer in self.layers:
            x = layer.forward(x, train_flg) if isinstance(layer, _L.Dropout) else layer.forward(x)
        return x

    def loss(self, x, t):
        """Cross-entropy of the softmax of ``predict(x, train_flg=True)`` (the book trains through ``loss``)."""
        return self.last_layer.forward(self.predict(x, train_flg=True), t)

    def accuracy(self, x, t, batch_size=100):
        """Fraction correct in inference mode, in whole batches of ``batch_size`` (the book's rule)."""
        return self._accuracy_batched(x, t, batch_size, train_flg=False)
