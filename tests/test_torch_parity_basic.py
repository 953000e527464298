"""Affine, activations and softmax cross-entropy against PyTorch autograd."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _t(a, grad=False):
    return torch.from_numpy(np.ascontiguousarray(a)).requires_grad_(grad)


@pytest.mark.parametrize("n,d,m", [(1, 1, 1), (17, 33, 9), (64, 784, 100)])
def test_affine_vs_torch(K, close, dtype, rng, n, d, m):
    x = rng.standard_normal((n, d)).astype(dtype)
    w = rng.standard_normal((d, m)).astype(dtype)
    b = rng.standard_normal(m).astype(dtype)
    dy = rng.standard_normal((n, m)).astype(dtype)
    tx, tw, tb = _t(x, True), _t(w, True), _t(b, True)
    ty = torch.addmm(tb, tx, tw)
    ty.backward(_t(dy))
    close(K.affine_forward(x, w, b), ty.detach().numpy(), rtol=1e-5 if dtype == np.float32 else None)
    for got, want in zip(K.affine_backward(dy, x, w), (tx.grad, tw.grad, tb.grad)):
        close(got, want.numpy(), rtol=1e-5 if dtype == np.float32 else None)


@pytest.mark.parametrize("name", ["relu", "sigmoid"])
def test_activation_vs_torch(K, close, dtype, rng, name):
    x = (rng.standard_normal((7, 3, 11, 5)) * 4).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    tx = _t(x, True)
    ty = getattr(torch, name)(tx)
    ty.backward(_t(dy))
    y = getattr(K, f"{name}_forward")(x)
    dx = getattr(K, f"{name}_backward")(dy, x if name == "relu" else y)
    close(y, ty.detach().numpy(), rtol=1e-6 if dtype == np.float32 else 1e-15)
    close(dx, tx.grad.numpy(), rtol=1e-6 if dtype == np.float32 else 1e-15)


@pytest.mark.parametrize("n,k", [(1, 2), (33, 10), (256, 1000)])
@pytest.mark.parametrize("one_hot", [False, True])
def test_softmax_ce_vs_torch(K, close, dtype, rng, n, k, one_hot):
    logits = (rng.standard_normal((n, k)) * 5).astype(dtype)
    idx = rng.integers(0, k, n)
    labels = np.eye(k, dtype=dtype)[idx] if one_hot else idx
    tl = _t(logits, True)
    tloss = F.cross_entropy(tl, _t(labels) if one_hot else torch.from_numpy(idx))
    tloss.backward()
    loss, probs = K.softmax_cross_entropy(logits, labels)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss, tloss.item(), rtol=tol)
    close(probs, F.softmax(tl, dim=1).detach().numpy(), rtol=tol)
    close(K.softmax_cross_entropy_backward(probs, labels), tl.grad.numpy(), rtol=tol)
