"""Convolutional networks built on :class:`Sequential`: the book's
SimpleConvNet and a deeper ConvNet with batch normalization and dropout."""

from __future__ import annotations

import numpy as np

from numbanet import layers as L
from numbanet.reference.geometry import out_size

from .sequential import Sequential


def _init_std(weight_init_std, fan_in):
    """A float is the standard deviation; ``"he"``/``"relu"`` means sqrt(2 / fan_in)."""
    if isinstance(weight_init_std, str):
        if weight_init_std.lower() in ("he", "relu"):
            return np.sqrt(2.0 / fan_in)
        if weight_init_std.lower() in ("xavier", "sigmoid"):
            return np.sqrt(1.0 / fan_in)
        raise ValueError(f"weight_init_std must be a float, 'he' or 'xavier', got {weight_init_std!r}")
    return float(weight_init_std)


def _conv_out(size, filter_size, pad, stride):
    try:
        return out_size(size, filter_size, stride, pad)
    except ValueError:
        raise ValueError(f"filter {filter_size} with pad {pad} does not fit input size {size}") from None


class SimpleConvNet(Sequential):
    """The book's network: conv - relu - 2x2 max pool - affine - relu - affine - softmax.

    Parameters
    ----------
    input_dim : (C, H, W)
    conv_param : dict
        ``filter_num``, ``filter_size``, ``pad``, ``stride`` of the convolution.
    hidden_size, output_size : int
    weight_init_std : float or "he"
        Standard deviation of the Gaussian initial weights (biases are zero);
        ``"he"`` uses ``sqrt(2 / fan_in)`` per layer.
    dtype : float32 (default) or float64
    backend : module, optional
        :mod:`numbanet.kernels` (default) or :mod:`numbanet.reference`.
    seed : int or None
        Seeds the weight initialisation.
    flat : bool
        Keep all parameters (and gradients) in one buffer
        (:meth:`Sequential.flatten_params`) so that an optimizer updates the
        network in one call.

    Layers: Convolution, Relu, Pooling, Flatten, Affine, Relu, Affine; the
    parameters are named ``0.W``, ``0.b`` (conv), ``4.W``, ``4.b``, ``6.W``,
    ``6.b`` (the affine layers), the book's W1..W3, b1..b3.
    """

    def __init__(
        self,
        input_dim=(1, 28, 28),
        conv_param=None,
        hidden_size=100,
        output_size=10,
        weight_init_std=0.01,
        dtype=np.float32,
        backend=None,
        seed=None,
        flat=True,
    ):
        cp = {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1}
        cp.update(conv_param or {})
        fn, fs, pad, stride = cp["filter_num"], cp["filter_size"], cp["pad"], cp["stride"]
        c, h, w = input_dim
        oh, ow = _conv_out(h, fs, pad, stride), _conv_out(w, fs, pad, stride)
        pool_out = fn * (oh // 2) * (ow // 2)
        rng = np.random.default_rng(seed)
        dt = np.dtype(dtype)

        def weight(shape, fan_in):
            return (_init_std(weight_init_std, fan_in) * rng.standard_normal(shape)).astype(dt)

        kw = {"backend": backend}
        super().__init__(
            L.Convolution(weight((fn, c, fs, fs), c * fs * fs), np.zeros(fn, dt), stride=stride, pad=pad, **kw),
            L.Relu(**kw),
            L.Pooling(2, 2, stride=2, **kw),
            L.Flatten(**kw),
            L.Affine(weight((pool_out, hidden_size), pool_out), np.zeros(hidden_size, dt), **kw),
            L.Relu(**kw),
            L.Affine(weight((hidden_size, output_size), hidden_size), np.zeros(output_size, dt), **kw),
            loss=L.SoftmaxWithLoss(**kw),
            flat=flat,
        )


class ConvNet(Sequential):
    """A deeper network: per stage conv(3x3, pad 1) - batch norm - relu - 2x2 max
    pool, then affine - batch norm - relu - dropout - affine - softmax.

    Parameters
    ----------
    input_dim : (C, H, W)
    channels : sequence of int
        Filters per stage; each stage halves H and W (floor).
    hidden_size, output_size : int
    filter_size : int
        Odd; padding ``filter_size // 2`` keeps the size before pooling.
    dropout_ratio : float
        0 removes the dropout layer.
    batchnorm : bool
        False removes the batch norm layers. With batch norm the convolutions
        have no bias (the normalisation would cancel it).
    weight_init_std : float or "he" (default)
    dtype, backend, seed, flat : as :class:`SimpleConvNet`.
    """

    def __init__(
        self,
        input_dim=(1, 28, 28),
        channels=(16, 32),
        hidden_size=100,
        output_size=10,
        filter_size=3,
        dropout_ratio=0.5,
        batchnorm=True,
        weight_init_std="he",
        dtype=np.float32,
        backend=None,
        seed=None,
        flat=True,
    ):
        if filter_size % 2 != 1:
            raise ValueError(f"ConvNet: filter_size must be odd, got {filter_size}")
        rng = np.random.default_rng(seed)
        dt = np.dtype(dtype)
        kw = {"backend": backend}

        def weight(shape, fan_in):
            return (_init_std(weight_init_std, fan_in) * rng.standard_normal(shape)).astype(dt)

        def bn(n):
            return L.BatchNormalization(np.ones(n, dt), np.zeros(n, dt), **kw)

        c, h, w = input_dim
        stack = []
        for f in channels:
            if min(h, w) < 2:
                raise ValueError(f"ConvNet: input {input_dim} is too small for {len(channels)} pooling stages")
            stack.append(
                L.Convolution(
                    weight((f, c, filter_size, filter_size), c * filter_size**2),
                    # batch norm subtracts the channel mean: a bias would be dead weight
                    None if batchnorm else np.zeros(f, dt),
                    stride=1, pad=filter_size // 2, **kw,
                )
            )
            if batchnorm:
                stack.append(bn(f))
            stack += [L.Relu(**kw), L.Pooling(2, 2, stride=2, **kw)]
            c, h, w = f, h // 2, w // 2
        d = c * h * w
        stack += [L.Flatten(**kw), L.Affine(weight((d, hidden_size), d), np.zeros(hidden_size, dt), **kw)]
        if batchnorm:
            stack.append(bn(hidden_size))
        stack.append(L.Relu(**kw))
        if dropout_ratio:
            stack.append(L.Dropout(dropout_ratio, seed=rng.integers(2**63), **kw))
        stack.append(
            L.Affine(weight((hidden_size, output_size), hidden_size), np.zeros(output_size, dt), **kw)
        )
        super().__init__(*stack, loss=L.SoftmaxWithLoss(**kw), flat=flat)
