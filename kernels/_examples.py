"""Tiny valid arguments for every public kernel function.

:func:`numbanet.kernels.warmup` calls each function on these to compile it
ahead of time, and the robustness tests derive their bad inputs from them.
Every op in ``numbanet.kernels.__all__`` needs an entry (a test enforces it);
an op whose wrapper picks between several ``@njit`` kernels (index vs one-hot
labels, small vs large shapes, ...) lists one example per branch so that
warm-up compiles them all.

Each example is a function ``(dtype, rng) -> dict`` of keyword arguments.
Examples include the hyperparameters (stride, pad, lr, ...) so that the
bad-input table bends them too. :func:`available` filters the table down to
the ops this build exports.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EXAMPLES", "available", "examples"]


def randn(rng, shape, dtype, scale=1.0):
    """Standard normal values times ``scale``, drawn in float64 and cast to
    ``dtype`` (so float32 and float64 inputs hold the same numbers). The one
    definition: the benchmark cases (bench/registry.py) and the tests use it
    too (the kernels may not import bench or tests, the other way round is
    fine)."""
    return (rng.standard_normal(shape) * scale).astype(dtype)



def _affine_forward(dt, rng):
    return {"x": randn(rng, (2, 3, 2), dt), "w": randn(rng, (6, 4), dt), "b": randn(rng, (4,), dt)}


def _affine_backward(dt, rng):
    return {"dy": randn(rng, (2, 4), dt), "x": randn(rng, (2, 3, 2), dt), "w": randn(rng, (6, 4), dt)}


def _affine_forward_relu(dt, rng):
    return {**_affine_forward(dt, rng), "relu": True}


def _affine_backward_relu(dt, rng):
    # relu_out: a fused forward's output (zeros and positives)
    return {**_affine_backward(dt, rng), "relu_out": np.maximum(randn(rng, (2, 4), dt), 0)}


def _unary(name):
    return lambda dt, rng: {name: randn(rng, (2, 3, 4), dt)}


def _binary(a, b):
    return lambda dt, rng: {a: randn(rng, (2, 3, 4), dt), b: randn(rng, (2, 3, 4), dt)}


def _sigmoid_backward(dt, rng):
    return {"dy": randn(rng, (2, 3, 4), dt), "y": rng.uniform(0.05, 0.95, (2, 3, 4)).astype(dt)}


def _logits_index(name):
    return lambda dt, rng: {name: randn(rng, (3, 5), dt), "labels": np.array([0, 4, 2])}


def _probs(dt, rng):
    p = np.exp(randn(rng, (3, 5), np.float64))
    return (p / p.sum(axis=1, keepdims=True)).astype(dt)


def _logits_onehot(name):
    def make(dt, rng):
        x = _probs(dt, rng) if name == "probs" else randn(rng, (3, 5), dt)
        return {name: x, "labels": np.eye(5, dtype=dt)[[1, 3, 0]]}

    return make


def _probs_index(dt, rng):
    return {"probs": _probs(dt, rng), "labels": np.array([0, 4, 2])}


def _conv_direct(dt, rng):
    # C/groups <= 16: the direct loop kernels.
    return {"x": randn(rng, (2, 3, 6, 5), dt), "w": randn(rng, (4, 3, 3, 2), dt),
            "b": randn(rng, (4,), dt), "stride": 1, "pad": 1, "dilation": 1, "groups": 1}


def _conv_gemm(dt, rng):
    # C/groups > 16 with a stride > 1: the GEMM kernels on the phase planes.
    return {"x": randn(rng, (2, 17, 5, 4), dt), "w": randn(rng, (3, 17, 2, 2), dt),
            "b": randn(rng, (3,), dt), "stride": (2, 1), "pad": (1, 0), "dilation": 1, "groups": 1}


def _conv_wide_gemm(dt, rng):
    # C/groups > 16 at stride 1: the GEMM kernels on the padded planes.
    return {"x": randn(rng, (2, 17, 5, 4), dt), "w": randn(rng, (3, 17, 2, 2), dt),
            "b": randn(rng, (3,), dt), "stride": 1, "pad": 1, "dilation": 1, "groups": 1}


def _conv_grouped(dt, rng):
    return {"x": randn(rng, (1, 4, 7, 6), dt), "w": randn(rng, (6, 2, 3, 2), dt),
            "b": randn(rng, (6,), dt), "stride": 1, "pad": 0, "dilation": (2, 1), "groups": 2}


def _conv_backward(make):
    def backward(dt, rng):
        kw = make(dt, rng)
        from .conv import conv2d_forward

        y = conv2d_forward(**kw)
        del kw["b"]
        return {"dy": randn(rng, y.shape, dt), **kw}

    return backward


def _pool_plain(dt, rng):
    return {"x": randn(rng, (2, 3, 6, 5), dt), "pool_h": 2, "pool_w": 2, "stride": None, "pad": 0}


def _pool_padded(dt, rng):
    return {"x": randn(rng, (1, 2, 5, 7), dt), "pool_h": 3, "pool_w": 2, "stride": (2, 1), "pad": 1}


def _pool_backward(make, with_argmax):
    def backward(dt, rng):
        kw = make(dt, rng)
        x = kw.pop("x")
        if with_argmax:
            from .pool import maxpool2d_forward

            y, argmax = maxpool2d_forward(x, **kw)
            extra = {"argmax": argmax}
        else:
            from .pool import avgpool2d_forward

            y, extra = avgpool2d_forward(x, **kw), {}
        return {"dy": randn(rng, y.shape, dt), **extra, "x_shape": x.shape, **kw}

    return backward


def _opt_arrays(dt, rng, *names):
    shape = (3, 4)
    out = {"param": randn(rng, shape, dt), "grad": randn(rng, shape, dt)}
    for n in names:
        # Second-moment state is non-negative.
        out[n] = np.abs(randn(rng, shape, dt)) if "sq" in n or n in ("state_sum",) else randn(rng, shape, dt)
    return out


def _sgd_plain(dt, rng):
    return {**_opt_arrays(dt, rng), "lr": 0.1}


def _sgd_momentum(dt, rng):
    return {**_opt_arrays(dt, rng, "momentum_buffer"), "lr": 0.1, "momentum": 0.9, "dampening": 0.0,
            "nesterov": True, "weight_decay": 0.01}


def _sgd_foreach(momentum):
    """Three tensors of different shapes (a weight, a bias, a 3-D filter)."""

    def make(dt, rng):
        if not momentum:
            return {**_foreach_lists(dt, rng), "lr": 0.1}
        return {**_foreach_lists(dt, rng, momentum_buffers=False), "lr": 0.1, "momentum": 0.9, "dampening": 0.0,
                "nesterov": True, "weight_decay": 0.01}

    return make


def _adam_foreach(amsgrad):
    """Three tensors of different shapes, as :func:`_sgd_foreach`."""

    def make(dt, rng):
        states = {"exp_avgs": False, "exp_avg_sqs": True, **({"max_exp_avg_sqs": True} if amsgrad else {})}
        kw = {**_foreach_lists(dt, rng, **states), "step": 3, "lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
              "weight_decay": 0.01}
        if amsgrad:
            kw.update(amsgrad=True, decoupled_weight_decay=True)
        return kw

    return make


def _foreach_lists(dt, rng, shapes=((3, 4), (4,), (2, 3, 2)), **states):
    """``params`` and ``grads`` lists over ``shapes``, and a list per entry
    of ``states`` (name -> True for a non-negative state)."""
    kw = {"params": [randn(rng, s, dt) for s in shapes], "grads": [randn(rng, s, dt) for s in shapes]}
    for name, nonneg in states.items():
        kw[name] = [np.abs(randn(rng, s, dt)) if nonneg else randn(rng, s, dt) for s in shapes]
    return kw


def _adagrad_foreach(dt, rng):
    return {**_foreach_lists(dt, rng, state_sums=True), "step": 3, "lr": 0.1, "eps": 1e-10,
            "weight_decay": 0.01, "lr_decay": 0.01}


def _rmsprop_foreach(centered):
    def make(dt, rng):
        if not centered:
            return {**_foreach_lists(dt, rng, square_avgs=True), "lr": 0.01, "alpha": 0.99, "eps": 1e-8}
        kw = _foreach_lists(dt, rng, square_avgs=True, grad_avgs=False, momentum_buffers=False)
        # centered: v - gbar**2 must stay positive
        kw["square_avgs"] = [a + 1 for a in kw["square_avgs"]]
        kw["grad_avgs"] = [a * 0.1 for a in kw["grad_avgs"]]
        return {**kw, "lr": 0.01, "alpha": 0.9, "eps": 1e-8, "weight_decay": 0.01, "momentum": 0.5, "centered": True}

    return make


def _book_velocity_foreach(dt, rng):
    return {**_foreach_lists(dt, rng, velocities=False), "lr": 0.1, "momentum": 0.9}


def _book_adam_foreach(dt, rng):
    return {**_foreach_lists(dt, rng, exp_avgs=False, exp_avg_sqs=True), "step": 3, "lr": 0.001, "beta1": 0.9,
            "beta2": 0.999, "eps": 1e-7}


def _adagrad(dt, rng):
    return {**_opt_arrays(dt, rng, "state_sum"), "step": 3, "lr": 0.1, "eps": 1e-10,
            "weight_decay": 0.01, "lr_decay": 0.01}


def _rmsprop_plain(dt, rng):
    return {**_opt_arrays(dt, rng, "square_avg"), "lr": 0.01, "alpha": 0.99, "eps": 1e-8}


def _rmsprop_centered(dt, rng):
    return {**_opt_arrays(dt, rng, "square_avg", "grad_avg", "momentum_buffer"), "lr": 0.01, "alpha": 0.9,
            "eps": 1e-8, "weight_decay": 0.01, "momentum": 0.9, "centered": True}


def _adam(amsgrad):
    def make(dt, rng):
        names = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ())
        return {**_opt_arrays(dt, rng, *names), "step": 3, "lr": 0.001, "beta1": 0.9, "beta2": 0.999,
                "eps": 1e-8, "weight_decay": 0.01, "amsgrad": amsgrad}

    return make


def _book_momentum(dt, rng):
    return {**_opt_arrays(dt, rng, "velocity"), "lr": 0.1, "momentum": 0.9}


def _book_adam(dt, rng):
    return {**_opt_arrays(dt, rng, "exp_avg", "exp_avg_sq"), "step": 3, "lr": 0.001, "beta1": 0.9,
            "beta2": 0.999, "eps": 1e-7}


def _all_finite(dt, rng):
    return {"a": randn(rng, (3, 4), dt)}


def _bn_forward(shape, train, **extra):
    def make(dt, rng):
        c = shape[1]
        return {"x": randn(rng, shape, dt), "gamma": randn(rng, (c,), dt), "beta": randn(rng, (c,), dt),
                "running_mean": randn(rng, (c,), dt), "running_var": rng.uniform(0.5, 2, c).astype(dt),
                "momentum": 0.9, "eps": 1e-5, "train": train, **extra}

    return make


def _bn_backward(shape, train, relu=False):
    def make(dt, rng):
        kw = _bn_forward(shape, train, relu=relu)(dt, rng)
        from .batchnorm import batchnorm_forward

        y, mean, inv_std, _, _ = batchnorm_forward(**kw)
        extra = {"relu_out": y} if relu else {}
        return {"dy": randn(rng, shape, dt), "x": kw["x"], "gamma": kw["gamma"], "mean": mean,
                "inv_std": inv_std, "train": train, **extra}

    return make


#: op name -> list of example builders ``(dtype, rng) -> kwargs``.
EXAMPLES = {
    "affine_forward": [_affine_forward, _affine_forward_relu],
    "affine_backward": [_affine_backward, _affine_backward_relu],
    "relu_forward": [_unary("x")],
    "relu_backward": [_binary("dy", "x")],
    "sigmoid_forward": [_unary("x")],
    "sigmoid_backward": [_sigmoid_backward],
    "softmax_cross_entropy": [_logits_index("logits"), _logits_onehot("logits")],
    "softmax_cross_entropy_backward": [_probs_index, _logits_onehot("probs")],
    "conv2d_forward": [_conv_direct, _conv_gemm, _conv_wide_gemm, _conv_grouped],
    "conv2d_backward": [_conv_backward(_conv_direct), _conv_backward(_conv_gemm), _conv_backward(_conv_wide_gemm),
                        _conv_backward(_conv_grouped)],
    "maxpool2d_forward": [_pool_plain, _pool_padded],
    "maxpool2d_backward": [_pool_backward(_pool_plain, True), _pool_backward(_pool_padded, True)],
    "avgpool2d_forward": [_pool_plain, _pool_padded],
    "avgpool2d_backward": [_pool_backward(_pool_plain, False), _pool_backward(_pool_padded, False)],
    "sgd_step": [_sgd_plain, _sgd_momentum],
    "sgd_step_foreach": [_sgd_foreach(False), _sgd_foreach(True)],
    "adagrad_step": [_adagrad],
    "adagrad_step_foreach": [_adagrad_foreach],
    "rmsprop_step": [_rmsprop_plain, _rmsprop_centered],
    "rmsprop_step_foreach": [_rmsprop_foreach(False), _rmsprop_foreach(True)],
    "adam_step": [_adam(False), _adam(True)],
    "adam_step_foreach": [_adam_foreach(False), _adam_foreach(True)],
    "adamw_step": [_adam(False), _adam(True)],
    "all_finite": [_all_finite],
    "book_momentum_step": [_book_momentum],
    "book_momentum_step_foreach": [_book_velocity_foreach],
    "book_nesterov_step": [_book_momentum],
    "book_nesterov_step_foreach": [_book_velocity_foreach],
    "book_adam_step": [_book_adam],
    "book_adam_step_foreach": [_book_adam_foreach],
    "batchnorm_forward": [_bn_forward((4, 3), True), _bn_forward((2, 3, 2, 3), True), _bn_forward((2, 3, 2, 3), False),
                          # the book's running variance (biased), with its batch of one
                          _bn_forward((1, 3), True, unbiased=False),
                          # fused with the ReLU after it (numbanet.book's networks)
                          _bn_forward((4, 3), True, unbiased=False, relu=True)],
    "batchnorm_backward": [_bn_backward((4, 3), True), _bn_backward((2, 3, 2, 3), True),
                           _bn_backward((2, 3, 2, 3), False), _bn_backward((4, 3), True, relu=True)],
}


def available() -> dict:
    """All of :data:`EXAMPLES`, after checking that its ops are exactly the
    ops :mod:`numbanet.kernels` exports: an op missing on either side would
    otherwise drop out of the warm-up and the bad-input walk unnoticed."""
    from numbanet import kernels

    ops = set(kernels.__all__) - set(kernels.UTILITIES)
    if ops != set(EXAMPLES):
        raise RuntimeError(
            f"kernels/_examples.py and numbanet.kernels.__all__ disagree: no examples for "
            f"{sorted(ops - set(EXAMPLES))}, examples for unexported {sorted(set(EXAMPLES) - ops)}"
        )
    return dict(EXAMPLES)


def examples(op: str, dtype="float32", seed: int = 0) -> list[dict]:
    """The example keyword arguments of ``op`` for ``dtype`` (fresh arrays)."""
    rng = np.random.default_rng(seed)
    return [make(np.dtype(dtype), rng) for make in EXAMPLES[op]]
