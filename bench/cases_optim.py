"""Registry cases for the fused optimizer steps.

``*_16m``: one step on one 16M-element float32 tensor (memory bound: the
figure of merit is the effective bandwidth, bytes read + written per step /
time). ``adam_convnet``: a whole ``Adam.update`` on the book's SimpleConvNet
parameter set (small tensors plus one large one); ``adam_mlp100`` on 100
small tensors; ``*_flat``: the same model kept in a :class:`FlatParams`
buffer.
"""

from __future__ import annotations

import numpy as np

from .registry import Case, register

N16M = 16 * 2**20

# The book's SimpleConvNet (ch. 7): conv 30 x (1, 5, 5), affine 4320 -> 100 -> 10.
CONVNET_SHAPES = {
    "W1": (30, 1, 5, 5),
    "b1": (30,),
    "W2": (4320, 100),
    "b2": (100,),
    "W3": (100, 10),
    "b3": (10,),
}

# name -> (kernel function, state buffers, hyperparameters, torch class, torch kwargs,
#          arrays read + written per element). torch has no fused RMSprop.
_STEPS = {
    "adam_16m": ("adam_step", ("exp_avg", "exp_avg_sq"), dict(lr=1e-3), "Adam", dict(lr=1e-3, fused=True), 7),
    "adamw_16m": ("adamw_step", ("exp_avg", "exp_avg_sq"), dict(lr=1e-3, weight_decay=0.01), "AdamW",
                  dict(lr=1e-3, weight_decay=0.01, fused=True), 7),
    "sgd_momentum_16m": ("sgd_step", ("momentum_buffer",), dict(lr=0.01, momentum=0.9), "SGD",
                         dict(lr=0.01, momentum=0.9, fused=True), 5),
    "adagrad_16m": ("adagrad_step", ("state_sum",), dict(lr=0.01), "Adagrad", dict(lr=0.01, fused=True), 5),
    "rmsprop_16m": ("rmsprop_step", ("square_avg",), dict(lr=0.01), "RMSprop", dict(lr=0.01, foreach=False), 5),
}


def _step_inputs(state_names, n):
    def make(dtype, rng):
        g = rng.standard_normal(n).astype(dtype)
        inp = {"param": rng.standard_normal(n).astype(dtype), "grad": g}
        for s in state_names:
            # a realistic mid-training state: positive second moments
            inp[s] = (g * g * 0.01).astype(dtype) if s in ("exp_avg_sq", "state_sum", "square_avg") else 0.1 * g
        return inp

    return make


def _step_bind(fn_name, state_names, hp):
    def bind(impl, inp):
        p = inp["param"].copy()
        g = inp["grad"]
        state = [inp[s].copy() for s in state_names]
        fn = getattr(impl, fn_name)
        counter = [0]
        kw = dict(hp)

        def run():
            counter[0] += 1
            if fn_name in ("adam_step", "adamw_step", "adagrad_step"):
                kw["step"] = counter[0]
            fn(p, g, *state, **kw)
            return (p, *state)

        return run

    return bind


def _step_torch(cls_name, torch_kw):
    def torch_bind(inp):
        import torch

        p = torch.nn.Parameter(torch.from_numpy(inp["param"].copy()))
        p.grad = torch.from_numpy(inp["grad"])
        opt = getattr(torch.optim, cls_name)([p], **torch_kw)

        def run():
            opt.step()
            return p

        return run

    return torch_bind


for _name, (_fn, _state, _hp, _tcls, _tkw, _arrays) in _STEPS.items():
    register(
        Case(
            name=_name,
            group="optim",
            params={"n": N16M, **_hp},
            make_inputs=_step_inputs(_state, N16M),
            bind=_step_bind(_fn, _state, _hp),
            torch_bind=_step_torch(_tcls, _tkw),
            nbytes=lambda dt, a=_arrays: a * N16M * dt.itemsize,
            tol={"float32": 1e-6},
            dtypes=("float32",),
            description=f"one {_fn} on a 16M-element tensor (torch {_tcls} {_tkw})",
        )
    )


# --- a whole Adam.update on a model's parameter set ------------------------------
# adam_convnet: the book's SimpleConvNet; adam_mlp100: 50 small Affine layers
# (100 tensors, 46k elements) where per-tensor dispatch dominates. The *_flat
# variants keep the model in one FlatParams buffer (one kernel call).

MLP100_SHAPES = {f"{p}{i}": (30, 30) if p == "W" else (30,) for i in range(50) for p in ("W", "b")}


def _model_inputs(shapes):
    def make(dtype, rng):
        return {
            "params": {k: (rng.standard_normal(s) * 0.1).astype(dtype) for k, s in shapes.items()},
            "grads": {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()},
        }

    return make


def _model_bind(flat):
    def bind(impl, inp):
        from numbanet.optimizers import Adam, FlatParams

        opt = Adam(lr=1e-3, backend=impl)
        if flat:
            fp = FlatParams(inp["params"])
            for k, g in inp["grads"].items():
                np.copyto(fp.grads[k], g)
            params, grads = fp.params, fp.grads
        else:
            params = {k: a.copy() for k, a in inp["params"].items()}
            grads = inp["grads"]

        def run():
            opt.update(params, grads)
            return dict(params)

        return run

    return bind


def _model_torch(inp):
    import torch

    ps = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in inp["params"].values()]
    for p, g in zip(ps, inp["grads"].values()):
        p.grad = torch.from_numpy(g)
    opt = torch.optim.Adam(ps, lr=1e-3, fused=True)

    def run():
        opt.step()
        return ps

    return run


for _model, _shapes in (("convnet", CONVNET_SHAPES), ("mlp100", MLP100_SHAPES)):
    _n = sum(int(np.prod(s)) for s in _shapes.values())
    for _flat in (False, True):
        register(
            Case(
                name=f"adam_{_model}" + ("_flat" if _flat else ""),
                group="optim",
                params={"tensors": len(_shapes), "n": _n, "flat": _flat},
                make_inputs=_model_inputs(_shapes),
                bind=_model_bind(_flat),
                torch_bind=_model_torch,
                nbytes=lambda dt, n=_n: 7 * n * dt.itemsize,
                tol={"float32": 1e-6, "float64": 1e-12},
                description=f"Adam.update on {len(_shapes)} tensors ({_model})"
                + (" in one FlatParams buffer" if _flat else ", dict of arrays"),
            )
        )
