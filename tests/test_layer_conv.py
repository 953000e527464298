"""The Convolution layer (layers/conv.py) against the reference backend; the
kernels themselves are tested in test_conv.py."""

import pytest

from numbanet.layers import Convolution


@pytest.mark.parametrize("with_bias", [True, False])
def test_convolution_layer(rng, close, dtype, with_bias, R):
    W = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype) if with_bias else None
    x = rng.standard_normal((4, 4, 9, 8)).astype(dtype)
    layers = [Convolution(W, b, stride=(2, 1), pad=1, dilation=1, groups=2, backend=be) for be in (None, R)]
    assert layers[0].W is W and layers[0].params["W"] is W
    dW_id = id(layers[0].dW)
    outs = [layer.forward(x) for layer in layers]
    close(outs[0], outs[1])
    dout = rng.standard_normal(outs[0].shape).astype(dtype)
    dxs = [layer.backward(dout) for layer in layers]
    close(dxs[0], dxs[1])
    close(layers[0].dW, layers[1].dW)
    assert id(layers[0].dW) == dW_id and layers[0].grads["W"] is layers[0].dW
    if with_bias:
        close(layers[0].db, layers[1].db)
        assert set(layers[0].grads) == {"W", "b"}
    else:
        assert set(layers[0].grads) == {"W"}
