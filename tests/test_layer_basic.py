"""The Affine, Relu, Sigmoid and SoftmaxWithLoss layers (layers/basic.py) against
the reference backend."""

import numpy as np

import numbanet.reference as reference
from numbanet.layers import Affine, Relu, Sigmoid, SoftmaxWithLoss


def _net(backend, W, b):
    return [Affine(W.copy(), b.copy(), backend=backend), Relu(backend), Sigmoid(backend)], SoftmaxWithLoss(backend)


def test_layers_forward_backward_match_reference(rng, close, dtype):
    x = rng.standard_normal((8, 2, 3, 3)).astype(dtype)
    t = rng.integers(0, 5, 8)
    W = rng.standard_normal((18, 5)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    results = []
    for backend in (None, reference):
        layers, last = _net(backend, W, b)
        h = x
        for layer in layers:
            h = layer.forward(h)
        loss = last.forward(h, t)
        d = last.backward()
        for layer in reversed(layers):
            d = layer.backward(d)
        results.append((loss, d, layers[0].dW, layers[0].db))
    for got, want in zip(*results):
        close(np.asarray(got), np.asarray(want))
    assert results[0][1].shape == x.shape


def test_affine_grads_updated_in_place(rng):
    W, b = rng.standard_normal((4, 3)), rng.standard_normal(3)
    layer = Affine(W, b)
    assert layer.W is W and layer.params["W"] is W
    dW_id, db_id = id(layer.dW), id(layer.db)
    for _ in range(2):
        layer.forward(rng.standard_normal((5, 4)))
        layer.backward(rng.standard_normal((5, 3)))
    assert id(layer.dW) == dW_id and id(layer.db) == db_id
    assert layer.grads["W"] is layer.dW and layer.dW.any()


def test_softmax_with_loss_dout_scales(rng):
    x, t = rng.standard_normal((4, 3)), np.array([0, 1, 2, 0])
    layer = SoftmaxWithLoss()
    layer.forward(x, t)
    g1 = layer.backward()
    layer.forward(x, t)
    np.testing.assert_allclose(layer.backward(dout=2.0), 2 * g1)
