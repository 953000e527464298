"""The BatchNormalization layer (layers/batchnorm.py): running statistics,
train and eval modes, PyTorch's BatchNorm2d; the kernels are tested in
test_batchnorm.py."""

import numpy as np
import pytest

from numbanet.layers import BatchNormalization


def test_batchnorm_layer_running_stats_and_modes(K, R, rng):
    x = rng.standard_normal((10, 3, 4, 4)) + 2
    for backend in (K, R):
        layer = BatchNormalization(np.ones(3), np.zeros(3), momentum=0.8, backend=backend)
        layer.forward(x, train_flg=True)
        np.testing.assert_allclose(layer.running_mean, 0.2 * x.mean(axis=(0, 2, 3)), rtol=1e-12)
        y_eval = layer.forward(x, train_flg=False)
        want = (x - layer.running_mean[:, None, None]) / np.sqrt(layer.running_var[:, None, None] + 1e-5)
        np.testing.assert_allclose(y_eval, want, rtol=1e-12)
        rm = layer.running_mean.copy()
        layer.forward(x, train_flg=False)
        np.testing.assert_array_equal(layer.running_mean, rm)  # inference leaves them alone


def test_batchnorm_matches_torch(K, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((8, 4, 5, 5))
    dy = rng.standard_normal(x.shape)
    layer = BatchNormalization(rng.uniform(0.5, 1.5, 4), rng.standard_normal(4), momentum=0.9)
    bn = torch.nn.BatchNorm2d(4, momentum=0.1, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(layer.gamma))
        bn.bias.copy_(torch.from_numpy(layer.beta))
    xt = torch.from_numpy(x).requires_grad_()
    for _ in range(3):
        y = layer.forward(x, train_flg=True)
        yt = bn(xt)
    yt.backward(torch.from_numpy(dy))
    dx = layer.backward(dy)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(layer.dgamma, bn.weight.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(layer.running_mean, bn.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, bn.running_var.numpy(), rtol=1e-12)
    bn.eval()
    np.testing.assert_allclose(layer.forward(x, train_flg=False), bn(xt).detach().numpy(), rtol=1e-10, atol=1e-12)
