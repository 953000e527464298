"""Registry cases for whole training steps: ``gradient`` + Adam ``update``.

- ``train_step_digits``: the CLI's digits network (SimpleConvNet with 30 3x3
  filters, pad 1, on 8x8 input, hidden 100), batch 100;
- ``train_step_mnist``: the book's SimpleConvNet (30 5x5 filters on 28x28,
  hidden 100), batch 100.

Inputs are random data of the right shape plus the initial weights, so that
the numbanet network (on :mod:`numbanet.kernels` or :mod:`numbanet.reference`)
and the PyTorch network start from the same point. A workload call is one
step; it returns the loss and the updated parameters.
"""

from __future__ import annotations

import numpy as np

from numbanet.reference.geometry import out_size

from .registry import Case, register

LR = 1e-3


def _inputs(n, hw, fs, pad, filters=30, hidden=100, classes=10):
    def make(dtype, rng):
        oh = out_size(hw, fs, 1, pad) // 2
        d = filters * oh * oh
        he = lambda shape, fan_in: (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)  # noqa: E731
        return {
            "x": rng.random((n, 1, hw, hw)).astype(dtype),
            "t": rng.integers(0, classes, n),
            "0.W": he((filters, 1, fs, fs), fs * fs),
            "0.b": (rng.standard_normal(filters) * 0.1).astype(dtype),
            "4.W": he((d, hidden), d),
            "4.b": (rng.standard_normal(hidden) * 0.1).astype(dtype),
            "6.W": he((hidden, classes), hidden),
            "6.b": (rng.standard_normal(classes) * 0.1).astype(dtype),
            "conv": {"filter_num": filters, "filter_size": fs, "pad": pad, "stride": 1},
        }

    return make


def _param_names(inp):
    return [k for k in inp if "." in k]


def _bind(impl, inp):
    from numbanet.nets import SimpleConvNet
    from numbanet.optimizers import Adam

    x = inp["x"]
    net = SimpleConvNet(x.shape[1:], inp["conv"], hidden_size=inp["4.W"].shape[1],
                        output_size=inp["6.W"].shape[1], dtype=x.dtype, backend=impl)
    params = net.params
    for k in _param_names(inp):
        np.copyto(params[k], inp[k])  # copies: the inputs stay untouched
    # Adam on the same implementation as the network: the fused kernel for
    # numbanet.kernels, the multi-pass NumPy formula for the reference.
    opt = Adam(lr=LR, backend=impl)
    t = inp["t"]

    def run():
        grads = net.gradient(x, t)
        opt.update(params, grads)
        return net.last_loss, params

    return run


def _torch_bind(inp):
    import torch
    from torch import nn

    x = torch.from_numpy(inp["x"])
    t = torch.from_numpy(inp["t"])
    dt = x.dtype
    w1 = inp["0.W"]
    conv = nn.Conv2d(w1.shape[1], w1.shape[0], w1.shape[2], padding=inp["conv"]["pad"], dtype=dt)
    fc1 = nn.Linear(*inp["4.W"].shape, dtype=dt)
    fc2 = nn.Linear(*inp["6.W"].shape, dtype=dt)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w1))
        conv.bias.copy_(torch.from_numpy(inp["0.b"]))
        fc1.weight.copy_(torch.from_numpy(inp["4.W"].T))  # torch stores (out, in)
        fc1.bias.copy_(torch.from_numpy(inp["4.b"]))
        fc2.weight.copy_(torch.from_numpy(inp["6.W"].T))
        fc2.bias.copy_(torch.from_numpy(inp["6.b"]))
    model = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(), fc1, nn.ReLU(), fc2)
    opt = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
    loss_fn = nn.CrossEntropyLoss()

    def run():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), t)
        loss.backward()
        opt.step()
        return loss

    return run


for _name, (_hw, _fs, _pad, _desc) in {
    "train_step_digits": (8, 3, 1, "digits SimpleConvNet (30 3x3 pad 1, 8x8), batch 100: gradient + Adam update"),
    "train_step_mnist": (28, 5, 0, "book SimpleConvNet (30 5x5, 28x28), batch 100: gradient + Adam update"),
}.items():
    register(
        Case(
            name=_name,
            group="train",
            params={"N": 100, "input": (1, _hw, _hw), "filters": (30, _fs, _fs), "pad": _pad, "hidden": 100},
            make_inputs=_inputs(100, _hw, _fs, _pad),
            bind=_bind,
            torch_bind=_torch_bind,
            # Adam's first step moves each weight by about lr * sign(g), so a
            # tensor whose update were dropped would be off by 6.3e-4 (digits'
            # 0.W) to 1e-2 relative; kernel vs reference measured 8.4e-8
            # (digits) and 8.0e-5 (mnist; a few g near 0 round to another
            # sign) in float32 with the AVX-512 tile, 2.3e-4 (mnist) with the
            # AVX2 tile (another summation order; Zen 3, 2026-11-30). 4e-4
            # sits between the two.
            tol={"float32": 4e-4, "float64": 1e-10},
            description=_desc,
        )
    )
