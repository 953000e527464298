"""Registry cases for Affine, activations and the softmax cross-entropy loss."""

from __future__ import annotations

import numpy as np

from .registry import Case, randn as _randn, register




# --- Affine: forward + backward -------------------------------------------------


def _affine_inputs(n, d, m):
    def make(dtype, rng):
        return {
            "x": _randn(rng, (n, d), dtype),
            "w": _randn(rng, (d, m), dtype, scale=1.0 / np.sqrt(d)),
            "b": _randn(rng, (m,), dtype),
            "dy": _randn(rng, (n, m), dtype),
        }

    return make


def _affine_bind(impl, inp):
    x, w, b, dy = inp["x"], inp["w"], inp["b"], inp["dy"]

    def run():
        y = impl.affine_forward(x, w, b)
        dx, dw, db = impl.affine_backward(dy, x, w)
        return y, dx, dw, db

    return run


def _affine_torch(inp):
    import torch

    x = torch.from_numpy(inp["x"]).requires_grad_()
    w = torch.from_numpy(inp["w"]).requires_grad_()
    b = torch.from_numpy(inp["b"]).requires_grad_()
    dy = torch.from_numpy(inp["dy"])

    def run():
        x.grad = w.grad = b.grad = None
        y = torch.addmm(b, x, w)
        y.backward(dy)
        return y, x.grad, w.grad, b.grad

    return run


for _name, (_n, _d, _m) in {
    "affine_mnist": (100, 784, 100),
    "affine_wide": (256, 4096, 4096),
}.items():
    register(
        Case(
            name=_name,
            group="affine",
            params={"N": _n, "D": _d, "M": _m},
            make_inputs=_affine_inputs(_n, _d, _m),
            bind=_affine_bind,
            torch_bind=_affine_torch,
            flops=3 * 2.0 * _n * _d * _m,
            description="affine_forward + affine_backward",
        )
    )


# --- Softmax cross-entropy: loss + gradient -------------------------------------


def _softmax_inputs(n, k):
    def make(dtype, rng):
        return {
            "logits": _randn(rng, (n, k), dtype, scale=3.0),
            "labels": rng.integers(0, k, n),
        }

    return make


def _softmax_bind(impl, inp):
    logits, labels = inp["logits"], inp["labels"]

    def run():
        loss, probs = impl.softmax_cross_entropy(logits, labels)
        return loss, probs, impl.softmax_cross_entropy_backward(probs, labels)

    return run


def _softmax_torch(inp):
    import torch

    logits = torch.from_numpy(inp["logits"]).requires_grad_()
    labels = torch.from_numpy(inp["labels"])

    def run():
        logits.grad = None
        loss = torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
        return loss, logits.grad

    return run


register(
    Case(
        name="softmax_ce",
        group="loss",
        params={"N": 256, "K": 1000},
        make_inputs=_softmax_inputs(256, 1000),
        bind=_softmax_bind,
        torch_bind=_softmax_torch,
        nbytes=lambda dt: 4 * 256 * 1000 * dt.itemsize,
        tol={"float32": 1e-5, "float64": 1e-12},
        description="softmax_cross_entropy + backward",
    )
)


# --- ReLU: forward + backward on a conv-sized activation ------------------------


def _relu_inputs(shape):
    def make(dtype, rng):
        return {"x": _randn(rng, shape, dtype), "dy": _randn(rng, shape, dtype)}

    return make


def _relu_bind(impl, inp):
    x, dy = inp["x"], inp["dy"]

    def run():
        return impl.relu_forward(x), impl.relu_backward(dy, x)

    return run


def _relu_torch(inp):
    import torch

    x = torch.from_numpy(inp["x"]).requires_grad_()
    dy = torch.from_numpy(inp["dy"])

    def run():
        x.grad = None
        y = torch.relu(x)
        y.backward(dy)
        return y, x.grad

    return run


_RELU_SHAPE = (100, 30, 24, 24)
register(
    Case(
        name="relu_conv",
        group="activation",
        params={"shape": _RELU_SHAPE},
        make_inputs=_relu_inputs(_RELU_SHAPE),
        bind=_relu_bind,
        torch_bind=_relu_torch,
        # forward reads x, writes y; backward reads dy and x, writes dx
        nbytes=lambda dt: 5 * int(np.prod(_RELU_SHAPE)) * dt.itemsize,
        tol={"float32": 0.0, "float64": 0.0},
        description="relu_forward + relu_backward",
    )
)
