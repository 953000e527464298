"""Registry cases for convolution and pooling: forward + backward workloads.

Each conv case runs ``conv2d_forward`` then ``conv2d_backward`` with a fixed
random ``dy``; the pooling case runs max pooling forward then backward.
"""

from __future__ import annotations

import numpy as np

from numbanet.reference.geometry import out_size

from .registry import Case, randn as _randn, register, torch_inputs






# --- convolution ------------------------------------------------------------------


def _conv_inputs(xs, ws, stride, pad, groups):
    n, c, h, w = xs
    f, cg, kh, kw = ws

    def make(dtype, rng):
        return {
            "x": _randn(rng, xs, dtype),
            "w": _randn(rng, ws, dtype, scale=1.0 / np.sqrt(cg * kh * kw)),
            "b": _randn(rng, (f,), dtype),
            "dy": _randn(rng, (n, f, out_size(h, kh, stride, pad), out_size(w, kw, stride, pad)), dtype),
            "stride": stride,
            "pad": pad,
            "groups": groups,
        }

    return make


def _conv_bind(impl, inp):
    x, w, b, dy = inp["x"], inp["w"], inp["b"], inp["dy"]
    hp = dict(stride=inp["stride"], pad=inp["pad"], groups=inp["groups"])

    def run():
        y = impl.conv2d_forward(x, w, b, **hp)
        dx, dw, db = impl.conv2d_backward(dy, x, w, **hp)
        return y, dx, dw, db

    return run


def _conv_torch(inp):
    import torch
    import torch.nn.functional as F

    x, w, b, dy = torch_inputs(inp, "x", "w", "b", "dy", grad=("x", "w", "b"))
    hp = dict(stride=inp["stride"], padding=inp["pad"], groups=inp["groups"])

    def run():
        x.grad = w.grad = b.grad = None
        y = F.conv2d(x, w, b, **hp)
        y.backward(dy)
        return y, x.grad, w.grad, b.grad

    return run


_CONV_CASES = {
    # name: (x shape, w shape, stride, pad, groups)
    "conv_mnist": ((100, 1, 28, 28), (30, 1, 5, 5), 1, 0, 1),
    "conv_cifar_stem": ((64, 3, 32, 32), (32, 3, 3, 3), 1, 1, 1),
    "conv_mid": ((64, 64, 32, 32), (64, 64, 3, 3), 1, 1, 1),
    "conv_deep": ((32, 128, 16, 16), (128, 128, 3, 3), 1, 1, 1),
    "conv_strided": ((32, 64, 32, 32), (128, 64, 3, 3), 2, 1, 1),
    "conv_depthwise": ((32, 64, 32, 32), (64, 1, 3, 3), 1, 1, 64),
}

for _name, (_xs, _ws, _s, _p, _g) in _CONV_CASES.items():
    _oh = out_size(_xs[2], _ws[2], _s, _p)
    _ow = out_size(_xs[3], _ws[3], _s, _p)
    # forward, dx and dw are one multiply-add per (n, f, oh, ow, c, i, j) each
    _macs = _xs[0] * _ws[0] * _oh * _ow * _ws[1] * _ws[2] * _ws[3]
    register(
        Case(
            name=_name,
            group="conv",
            params={"x": _xs, "w": _ws, "stride": _s, "pad": _p, "groups": _g},
            make_inputs=_conv_inputs(_xs, _ws, _s, _p, _g),
            bind=_conv_bind,
            torch_bind=_conv_torch,
            flops=3 * 2.0 * _macs,
            description="conv2d_forward + conv2d_backward",
        )
    )


# --- pooling ----------------------------------------------------------------------


def _pool_inputs(xs, k, s, pad=0):
    n, c, h, w = xs

    def make(dtype, rng):
        return {
            "x": _randn(rng, xs, dtype),
            "dy": _randn(rng, (n, c, out_size(h, k, s, pad), out_size(w, k, s, pad)), dtype),
            "k": k,
            "stride": s,
            "pad": pad,
        }

    return make


def _pool_bind(impl, inp):
    x, dy, k, s, p = inp["x"], inp["dy"], inp["k"], inp["stride"], inp["pad"]

    def run():
        y, arg = impl.maxpool2d_forward(x, k, k, s, p)
        dx = impl.maxpool2d_backward(dy, arg, x.shape, k, k, s, p)
        return y, dx

    return run


def _pool_torch(inp):
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(inp["x"]).requires_grad_()
    dy = torch.from_numpy(inp["dy"])
    k, s, p = inp["k"], inp["stride"], inp["pad"]

    def run():
        x.grad = None
        y = F.max_pool2d(x, k, s, p)
        y.backward(dy)
        return y, x.grad

    return run


def _pool_nbytes(xs, k, s, pad):
    """Forward reads x, writes y and argmax (int64); backward reads dy and
    argmax, writes dx."""
    n, c, h, w = xs
    x_size = n * c * h * w
    y_size = n * c * out_size(h, k, s, pad) * out_size(w, k, s, pad)
    return lambda dt: (2 * x_size + 2 * y_size) * dt.itemsize + 2 * y_size * 8


for _name, (_xs, _k, _s, _pad, _desc) in {
    "pool_mnist": ((100, 30, 24, 24), 2, 2, 0, "the book's SimpleConvNet pooling"),
    # the ResNet stem's pooling (3x3, stride 2, pad 1), on CIFAR-sized planes
    "pool_3x3": ((32, 64, 32, 32), 3, 2, 1, "3x3 windows, stride 2, pad 1"),
}.items():
    register(
        Case(
            name=_name,
            group="pool",
            params={"x": _xs, "pool": (_k, _k), "stride": _s, "pad": _pad},
            make_inputs=_pool_inputs(_xs, _k, _s, _pad),
            bind=_pool_bind,
            torch_bind=_pool_torch,
            nbytes=_pool_nbytes(_xs, _k, _s, _pad),
            # overlapping windows (stride below the window) add dy in another
            # order than the reference: one rounding per add apart
            tol={"float32": 0.0, "float64": 0.0} if _s >= _k else {"float32": 1e-6, "float64": 1e-15},
            description=f"maxpool2d_forward + maxpool2d_backward: {_desc}",
        )
    )
