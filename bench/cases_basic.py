"""Registry cases for Affine, activations, the softmax cross-entropy loss and batch normalization."""

from __future__ import annotations

import numpy as np

from .registry import Case, randn as _randn, register, torch_inputs




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

    x, w, b, dy = torch_inputs(inp, "x", "w", "b", "dy", grad=("x", "w", "b"))

    def run():
        x.grad = w.grad = b.grad = None
        y = torch.addmm(b, x, w)
        y.backward(dy)
        return y, x.grad, w.grad, b.grad

    return run


for _name, (_n, _d, _m) in {
    "affine_mnist": (100, 784, 100),
    "affine_wide": (256, 4096, 4096),
    # The book's TwoLayerNet (784-50-10, batch 100) layer by layer, and one sample.
    "affine_book1": (100, 784, 50),
    "affine_book2": (100, 50, 10),
    "affine_book1_n1": (1, 784, 50),
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


def _gemm_bind(impl, inp):
    x, w, b = inp["x"], inp["w"], inp["b"]
    return lambda: impl.affine_forward(x, w, b)


def _gemm_torch(inp):
    import torch

    x, w, b = (torch.from_numpy(inp[k]) for k in ("x", "w", "b"))
    return lambda: torch.addmm(b, x, w)


# The square product on its own (Affine's forward pass: the bias add is 1/1024
# of the work): numbanet's GEMM against NumPy's BLAS (OpenBLAS). Run it with
# --threads 1 for the single-core comparison.
register(
    Case(
        name="gemm_1024",
        group="affine",
        params={"M": 1024, "K": 1024, "N": 1024},
        make_inputs=_affine_inputs(1024, 1024, 1024),
        bind=_gemm_bind,
        torch_bind=_gemm_torch,
        flops=2.0 * 1024**3,
        description="affine_forward, 1024 x 1024 by 1024 x 1024",
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


for _name, (_n, _k) in {"softmax_ce": (256, 1000), "softmax_ce_book": (100, 10)}.items():
    register(
        Case(
            name=_name,
            group="loss",
            params={"N": _n, "K": _k},
            make_inputs=_softmax_inputs(_n, _k),
            bind=_softmax_bind,
            torch_bind=_softmax_torch,
            nbytes=lambda dt, _n=_n, _k=_k: 4 * _n * _k * dt.itemsize,
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


# A conv-sized activation, and the book's MLP hidden layer (batch 100, 50 units).
for _name, _shape in {"relu_conv": (100, 30, 24, 24), "relu_book": (100, 50)}.items():
    register(
        Case(
            name=_name,
            group="activation",
            params={"shape": _shape},
            make_inputs=_relu_inputs(_shape),
            bind=_relu_bind,
            torch_bind=_relu_torch,
            # forward reads x, writes y; backward reads dy and x, writes dx
            nbytes=lambda dt, _shape=_shape: 5 * int(np.prod(_shape)) * dt.itemsize,
            tol={"float32": 0.0, "float64": 0.0},
            description="relu_forward + relu_backward",
        )
    )


# --- Batch normalization: training forward + backward ---------------------------


def _batchnorm_inputs(shape):
    def make(dtype, rng):
        c = shape[1]
        return {
            "x": _randn(rng, shape, dtype, scale=2.0),
            "gamma": rng.uniform(0.5, 1.5, c).astype(dtype),
            "beta": _randn(rng, (c,), dtype),
            "running_mean": np.zeros(c, dtype),
            "running_var": np.ones(c, dtype),
            "dy": _randn(rng, shape, dtype),
        }

    return make


def _batchnorm_bind(impl, inp):
    x, gamma, beta, dy = inp["x"], inp["gamma"], inp["beta"], inp["dy"]
    rm, rv = inp["running_mean"], inp["running_var"]

    def run():
        y, mean, inv_std, new_rm, new_rv = impl.batchnorm_forward(x, gamma, beta, rm, rv, 0.9, 1e-5, True)
        dx, dgamma, dbeta = impl.batchnorm_backward(dy, x, gamma, mean, inv_std, True)
        return y, new_rm, new_rv, dx, dgamma, dbeta

    return run


def _batchnorm_torch(inp):
    import torch

    x, gamma, beta, dy = torch_inputs(inp, "x", "gamma", "beta", "dy", grad=("x", "gamma", "beta"))

    def run():
        x.grad = gamma.grad = beta.grad = None
        rm = torch.from_numpy(inp["running_mean"].copy())
        rv = torch.from_numpy(inp["running_var"].copy())
        # torch's momentum is the weight of the batch: numbanet's 0.9 is its 0.1
        y = torch.nn.functional.batch_norm(x, rm, rv, gamma, beta, training=True, momentum=0.1, eps=1e-5)
        y.backward(dy)
        return y, rm, rv, x.grad, gamma.grad, beta.grad

    return run


# The book's MultiLayerNetExtend hidden layer (batch 100, 100 features: the
# per-feature 2-D path) and a conv activation (the per-channel path).
for _name, _shape in {"batchnorm_book": (100, 100), "batchnorm_conv": (32, 64, 16, 16)}.items():
    register(
        Case(
            name=_name,
            group="batchnorm",
            params={"shape": _shape},
            make_inputs=_batchnorm_inputs(_shape),
            bind=_batchnorm_bind,
            torch_bind=_batchnorm_torch,
            # forward reads x twice (mean, variance) and once more to write y;
            # backward reads dy and x twice (sums, dx) and writes dx
            nbytes=lambda dt, _shape=_shape: 8 * int(np.prod(_shape)) * dt.itemsize,
            # float32: the kernels sum in float64, NumPy in float32 (pairwise)
            tol={"float32": 1e-5, "float64": 1e-12},
            description="batchnorm_forward + batchnorm_backward, training",
        )
    )
