"""Tiny valid arguments for every public kernel function.

:func:`numbanet.kernels.warmup` calls each function on these to compile it
ahead of time, and the robustness tests derive their bad inputs from them.
Every op in ``numbanet.kernels.__all__`` needs an entry (a test enforces it);
an op whose wrapper picks between several ``@njit`` kernels (index vs one-hot
labels, small vs large shapes, ...) lists one example per branch so that
warm-up compiles them all.

Each example is a function ``(dtype, rng) -> dict`` of keyword arguments.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EXAMPLES", "examples"]


def _randn(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _affine_forward(dt, rng):
    return {"x": _randn(rng, (2, 3, 2), dt), "w": _randn(rng, (6, 4), dt), "b": _randn(rng, (4,), dt)}


def _affine_backward(dt, rng):
    return {"dy": _randn(rng, (2, 4), dt), "x": _randn(rng, (2, 3, 2), dt), "w": _randn(rng, (6, 4), dt)}


def _unary(name):
    return lambda dt, rng: {name: _randn(rng, (2, 3, 4), dt)}


def _binary(a, b):
    return lambda dt, rng: {a: _randn(rng, (2, 3, 4), dt), b: _randn(rng, (2, 3, 4), dt)}


def _sigmoid_backward(dt, rng):
    return {"dy": _randn(rng, (2, 3, 4), dt), "y": rng.uniform(0.05, 0.95, (2, 3, 4)).astype(dt)}


def _logits_index(name):
    return lambda dt, rng: {name: _randn(rng, (3, 5), dt), "labels": np.array([0, 4, 2])}


def _probs(dt, rng):
    p = np.exp(_randn(rng, (3, 5), np.float64))
    return (p / p.sum(axis=1, keepdims=True)).astype(dt)


def _logits_onehot(name):
    def make(dt, rng):
        x = _probs(dt, rng) if name == "probs" else _randn(rng, (3, 5), dt)
        return {name: x, "labels": np.eye(5, dtype=dt)[[1, 3, 0]]}

    return make


def _probs_index(dt, rng):
    return {"probs": _probs(dt, rng), "labels": np.array([0, 4, 2])}


#: op name -> list of example builders ``(dtype, rng) -> kwargs``.
EXAMPLES = {
    "affine_forward": [_affine_forward],
    "affine_backward": [_affine_backward],
    "relu_forward": [_unary("x")],
    "relu_backward": [_binary("dy", "x")],
    "sigmoid_forward": [_unary("x")],
    "sigmoid_backward": [_sigmoid_backward],
    "softmax_cross_entropy": [_logits_index("logits"), _logits_onehot("logits")],
    "softmax_cross_entropy_backward": [_probs_index, _logits_onehot("probs")],
}


def examples(op: str, dtype="float32", seed: int = 0) -> list[dict]:
    """The example keyword arguments of ``op`` for ``dtype`` (fresh arrays)."""
    rng = np.random.default_rng(seed)
    return [make(np.dtype(dtype), rng) for make in EXAMPLES[op]]
