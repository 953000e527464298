"""Fused optimizer kernels and the optimizer classes.

Tolerances (normwise, ``max|got - want| <= rtol * max(max|want|, 1)``) after
10 steps: float64 1e-12, float32 1e-5 against the reference and against
PyTorch (whose vectorised CPU loops use FMA, so float32 results differ from an
unfused evaluation in the last bits).
"""

import numpy as np
import pytest

import numbanet.kernels as K
import numbanet.reference as R
from numbanet.optimizers import SGD, AdaGrad, Adam, AdamW, FlatParams, Momentum, Nesterov, RMSprop

TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
STEPS = 10

# (id, class, hyperparameters): one entry per optimizer and combination.
CASES = [
    ("sgd", SGD, dict(lr=0.1)),
    ("sgd_wd", SGD, dict(lr=0.1, weight_decay=0.01)),
    ("sgd_momentum", SGD, dict(lr=0.05, momentum=0.9)),
    ("sgd_momentum_dampening_wd", SGD, dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("sgd_nesterov_wd", SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("momentum", Momentum, dict()),
    ("nesterov", Nesterov, dict(lr=0.02)),
    ("adagrad", AdaGrad, dict(lr=0.1)),
    ("adagrad_wd_init_decay", AdaGrad, dict(lr=0.1, weight_decay=0.01, initial_accumulator_value=0.1, lr_decay=0.01)),
    ("rmsprop", RMSprop, dict()),
    ("rmsprop_wd_momentum", RMSprop, dict(lr=0.01, weight_decay=0.01, momentum=0.5)),
    ("rmsprop_centered", RMSprop, dict(centered=True)),
    ("rmsprop_centered_momentum_alpha", RMSprop, dict(alpha=0.3, centered=True, momentum=0.9)),
    ("adam", Adam, dict(lr=0.01)),
    ("adam_wd", Adam, dict(lr=0.01, weight_decay=0.1)),
    ("adam_amsgrad", Adam, dict(lr=0.01, amsgrad=True)),
    ("adam_beta1_small_eps", Adam, dict(lr=0.01, beta1=0.3, beta2=0.5, eps=1e-3)),
    ("adamw", AdamW, dict(lr=0.01)),
    ("adamw_amsgrad_wd", AdamW, dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
]
IDS = [c[0] for c in CASES]

# Several tensors: a 0-size and a 1-element one, odd shapes, and one large
# enough for the parallel chunked path.
SHAPES = {"W1": (7, 5), "empty": (0, 3), "one": (1,), "W2": (3, 4, 2), "big": (300, 500)}


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def grad_sequence(dtype, steps=STEPS, seed=1):
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()} for _ in range(steps)]


def run(opt, params, grads_seq):
    for g in grads_seq:
        assert opt.update(params, g) is True
    return params


def assert_same_state(close, got, want, rtol):
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].keys() == want[name].keys(), name
        assert got[name]["step"] == want[name]["step"]
        for k in want[name]:
            if k != "step":
                close(got[name][k], want[name][k], rtol, what=f"{name}.{k}")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_reference(case, dtype, close):
    _, cls, hp = case
    grads = grad_sequence(dtype)
    ko, ro = cls(**hp), cls(**hp, backend=R)
    kp, rp = run(ko, make_params(dtype), grads), run(ro, make_params(dtype), grads)
    for k in SHAPES:
        close(kp[k], rp[k], TOL[dtype], what=k)
        assert kp[k].dtype == dtype
    assert_same_state(close, ko.state, ro.state, TOL[dtype])
    for st in ko.state.values():
        assert all(a.dtype == dtype for key, a in st.items() if key != "step")


# --- PyTorch parity ------------------------------------------------------------------


def torch_optimizer(torch, cls, hp, tparams, impl):
    hp = dict(hp)
    if cls in (Momentum, Nesterov):
        hp.setdefault("momentum", 0.9)
        hp["nesterov"] = cls is Nesterov
    if "beta1" in hp or "beta2" in hp or cls in (Adam, AdamW):
        hp["betas"] = (hp.pop("beta1", 0.9), hp.pop("beta2", 0.999))
    tcls = {SGD: torch.optim.SGD, Momentum: torch.optim.SGD, Nesterov: torch.optim.SGD, AdaGrad: torch.optim.Adagrad,
            RMSprop: torch.optim.RMSprop, Adam: torch.optim.Adam, AdamW: torch.optim.AdamW}[cls]
    if cls is AdamW:
        hp.setdefault("weight_decay", 0.01)
    if cls in (SGD, Momentum, Nesterov):
        hp.setdefault("lr", 0.01)
    flag = {"forloop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}[impl]
    return tcls(tparams, **hp, **flag)


# torch has no fused RMSprop
TORCH_CASES = [(c, impl) for c in CASES for impl in ("forloop", "foreach", "fused")
               if not (impl == "fused" and c[1] is RMSprop)]


@pytest.mark.parametrize("case,impl", TORCH_CASES, ids=[f"{c[0]}-{impl}" for c, impl in TORCH_CASES])
def test_matches_torch(case, impl, dtype, close):
    torch = pytest.importorskip("torch")
    _, cls, hp = case
    params = make_params(dtype)
    tparams = {k: torch.nn.Parameter(torch.from_numpy(a.copy())) for k, a in params.items()}
    topt = torch_optimizer(torch, cls, hp, list(tparams.values()), impl)
    opt = cls(**hp)
    for g in grad_sequence(dtype):
        opt.update(params, g)
        for k, t in tparams.items():
            t.grad = torch.from_numpy(g[k].copy())
        topt.step()
    for k, t in tparams.items():
        close(params[k], t.detach().numpy(), TOL[dtype], what=k)
        tstate = topt.state[t]
        for key, a in opt.state[k].items():
            if key == "step":
                if "step" in tstate:
                    assert a == int(tstate["step"])
            else:
                close(a, tstate[key].numpy(), TOL[dtype], what=f"{k}.{key}")


def test_lr_schedule_matches_torch(close):
    torch = pytest.importorskip("torch")
    params = make_params(np.float64)
    tparams = {k: torch.nn.Parameter(torch.from_numpy(a.copy())) for k, a in params.items()}
    topt = torch.optim.Adam(list(tparams.values()), lr=0.01, foreach=False)
    opt = Adam(lr=0.01)
    for i, g in enumerate(grad_sequence(np.float64)):
        opt.lr = topt.param_groups[0]["lr"] = 0.01 * 0.5**i
        opt.beta1 = 0.9 if i < 5 else 0.8
        topt.param_groups[0]["betas"] = (opt.beta1, 0.999)
        opt.update(params, g)
        for k, t in tparams.items():
            t.grad = torch.from_numpy(g[k].copy())
        topt.step()
    for k, t in tparams.items():
        close(params[k], t.detach().numpy(), TOL[np.dtype(np.float64)], what=k)


# --- the book's formulas ---------------------------------------------------------------


def book_trajectory(update, dtype=np.float64):
    """Run the book-style ``update(params, grads, state)`` for 10 steps."""
    params, state = make_params(dtype), {}
    for g in grad_sequence(dtype):
        update(params, g, state)
    return params


def test_book_momentum_same_trajectory(close):
    lr, mu = 0.01, 0.9

    def book(params, grads, v):  # v <- mu v - lr g;  W <- W + v
        for k in params:
            v.setdefault(k, np.zeros_like(params[k]))
            v[k] = mu * v[k] - lr * grads[k]
            params[k] += v[k]

    ours = run(Momentum(lr, mu), make_params(np.float64), grad_sequence(np.float64))
    for k, want in book_trajectory(book).items():
        close(ours[k], want, 1e-12, what=k)


def test_book_nesterov_same_trajectory(close):
    lr, mu = 0.01, 0.9

    def book(params, grads, v):  # W <- W + mu^2 v - (1 + mu) lr g;  v <- mu v - lr g
        for k in params:
            v.setdefault(k, np.zeros_like(params[k]))
            params[k] += mu * mu * v[k]
            params[k] -= (1 + mu) * lr * grads[k]
            v[k] = mu * v[k] - lr * grads[k]

    ours = run(Nesterov(lr, mu), make_params(np.float64), grad_sequence(np.float64))
    for k, want in book_trajectory(book).items():
        close(ours[k], want, 1e-12, what=k)


def test_book_adagrad_rmsprop_with_eps_1e7(close):
    def adagrad(params, grads, h):
        for k in params:
            h.setdefault(k, np.zeros_like(params[k]))
            h[k] += grads[k] * grads[k]
            params[k] -= 0.01 * grads[k] / (np.sqrt(h[k]) + 1e-7)

    def rmsprop(params, grads, h):
        for k in params:
            h.setdefault(k, np.zeros_like(params[k]))
            h[k] *= 0.99
            h[k] += (1 - 0.99) * grads[k] * grads[k]
            params[k] -= 0.01 * grads[k] / (np.sqrt(h[k]) + 1e-7)

    for cls, book in ((AdaGrad, adagrad), (RMSprop, rmsprop)):
        ours = run(cls(lr=0.01, eps=1e-7), make_params(np.float64), grad_sequence(np.float64))
        for k, want in book_trajectory(book).items():
            close(ours[k], want, 1e-12, what=f"{cls.__name__} {k}")


def test_book_adam_differs_only_in_eps(close):
    def book(eps):
        def update(params, grads, s):
            s["t"] = s.get("t", 0) + 1
            lr_t = 0.001 * np.sqrt(1.0 - 0.999 ** s["t"]) / (1.0 - 0.9 ** s["t"])
            for k in params:
                m = s.setdefault("m" + k, np.zeros_like(params[k]))
                v = s.setdefault("v" + k, np.zeros_like(params[k]))
                m += (1 - 0.9) * (grads[k] - m)
                v += (1 - 0.999) * (grads[k] ** 2 - v)
                params[k] -= lr_t * m / (np.sqrt(v) + eps)
        return update

    ours = run(Adam(eps=0.0), make_params(np.float64), grad_sequence(np.float64))
    for k, want in book_trajectory(book(0.0)).items():
        close(ours[k], want, 1e-12, what=k)
    # With the book's eps = 1e-7 on the uncorrected root the result differs.
    ours = run(Adam(eps=1e-7), make_params(np.float64), grad_sequence(np.float64))
    book_p = book_trajectory(book(1e-7))
    assert max(np.abs(ours[k] - book_p[k]).max(initial=0) for k in SHAPES) > 1e-9


# --- state, identity, flat buffers ------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_dict_resumes_bit_for_bit(case):
    _, cls, hp = case
    grads = grad_sequence(np.float32)
    opt, params = cls(**hp), make_params(np.float32)
    run(opt, params, grads[:5])
    saved_params = {k: a.copy() for k, a in params.items()}
    sd = opt.state_dict()
    run(opt, params, grads[5:])
    # the state dict is a copy, not a view of live state
    for name, st in sd["state"].items():
        for key, a in st.items():
            if key != "step":
                assert not np.shares_memory(a, opt.state[name][key])
    resumed = cls(lr=0.5)  # different hyperparameters: the state dict restores them
    resumed.load_state_dict(sd)
    assert all(getattr(resumed, k) == getattr(opt, k) for k in cls.hyperparameters)
    run(resumed, saved_params, grads[5:])
    for k in SHAPES:
        np.testing.assert_array_equal(saved_params[k], params[k])
        assert resumed.state[k]["step"] == opt.state[k]["step"] == STEPS
        for key in opt.state[k]:
            np.testing.assert_array_equal(resumed.state[k][key], opt.state[k][key])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_flat_buffer_same_as_dicts(case):
    _, cls, hp = case
    grads = grad_sequence(np.float32)
    opt, params = cls(**hp), make_params(np.float32)
    flat = FlatParams(make_params(np.float32))
    fopt = cls(**hp)
    views = dict(flat.params)
    for g in grads:
        opt.update(params, g)
        for k in g:
            np.copyto(flat.grads[k], g[k])
        fopt.update(flat.params, flat.grads)
    assert fopt._flat is not None and fopt._flat.flat is flat  # the one-call path ran
    for k in SHAPES:
        assert flat.params[k] is views[k]
        np.testing.assert_array_equal(flat.params[k], params[k])
        assert fopt.state[k].keys() == opt.state[k].keys()
        for key in opt.state[k]:
            np.testing.assert_array_equal(fopt.state[k][key], opt.state[k][key])


def test_flat_switch_and_fallback():
    grads = grad_sequence(np.float64)
    opt, params = Adam(lr=0.01, amsgrad=True), make_params(np.float64)
    run(opt, params, grads)
    # per-tensor for 4 steps, then flat (state moves into flat buffers), then
    # an entry replaced (falls back to per-tensor), then flat again
    fopt = Adam(lr=0.01, amsgrad=True)
    flat = FlatParams(make_params(np.float64))
    plain = dict(flat.params)
    run(fopt, plain, grads[:4])
    assert fopt._flat is None
    for g in grads[4:7]:
        for k in g:
            np.copyto(flat.grads[k], g[k])
        fopt.update(flat.params, flat.grads)
    assert fopt._flat is not None
    w1 = flat.params["W1"]
    flat.params["W1"] = w1.copy()
    assert not flat.intact(flat.params, flat.grads)
    fopt.update(flat.params, grads[7])
    np.copyto(w1, flat.params["W1"])
    flat.params["W1"] = w1
    for g in grads[8:]:
        for k in g:
            np.copyto(flat.grads[k], g[k])
        fopt.update(flat.params, flat.grads)
        assert fopt._flat_current(flat)  # back on the one-call path
    for k in SHAPES:
        np.testing.assert_array_equal(flat.params[k], params[k])


def test_flat_params_validation():
    with pytest.raises(TypeError, match="one dtype"):
        FlatParams({"a": np.zeros(2), "b": np.zeros(2, np.float32)})
    with pytest.raises(TypeError, match=r"params\['a'\]"):
        FlatParams({"a": np.zeros(2, np.int64)})
    with pytest.raises(ValueError, match="empty"):
        FlatParams({})
    flat = FlatParams({"a": np.arange(6.0).reshape(2, 3), "b": np.ones(1)})
    np.testing.assert_array_equal(flat.data, [0, 1, 2, 3, 4, 5, 1])
    assert np.shares_memory(flat.params["a"], flat.data) and np.shares_memory(flat.grads["b"], flat.grad)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_in_place_identity(case):
    _, cls, hp = case
    opt, params = cls(**hp), make_params(np.float32)
    ids = {k: id(a) for k, a in params.items()}
    grads = grad_sequence(np.float32, 3)
    before = {k: a.copy() for k, a in params.items()}
    opt.update(params, grads[0])
    state_ids = {(n, k): id(a) for n, st in opt.state.items() for k, a in st.items() if k != "step"}
    run(opt, params, grads[1:])
    assert {k: id(a) for k, a in params.items()} == ids
    assert {(n, k): id(a) for n, st in opt.state.items() for k, a in st.items() if k != "step"} == state_ids
    assert any(not np.array_equal(before[k], params[k]) for k in SHAPES)


def test_noncontiguous_params_updated_in_place(close):
    rng = np.random.default_rng(3)
    base = rng.standard_normal((40, 30))
    p = base[:, ::3]  # strided view
    ref = p.copy()
    g = rng.standard_normal(p.shape)
    m, v = np.zeros((30, 40)).T[:, ::3], np.zeros_like(p)  # non-contiguous state too
    rm, rv = np.zeros_like(p), np.zeros_like(p)
    K.adam_step(p, g, m, v, step=1, lr=0.1)
    R.adam_step(ref, g, rm, rv, step=1, lr=0.1)
    close(base[:, ::3], ref)
    close(m, rm)
    close(v, rv)


# --- non-finite gradients ---------------------------------------------------------------


@pytest.mark.parametrize("flat", [False, True], ids=["dict", "flat"])
@pytest.mark.parametrize("cls", [SGD, Momentum, AdaGrad, RMSprop, Adam, AdamW])
def test_nonfinite_skip_and_propagate(cls, flat):
    grads = grad_sequence(np.float64, 3)
    bad = {k: g.copy() for k, g in grads[1].items()}
    bad["W2"][1, 2, 0] = np.inf
    bad["big"][-1, -1] = np.nan

    def setup(policy):
        opt = cls(nonfinite=policy)
        if flat:
            fp = FlatParams(make_params(np.float64))
            params, gd = fp.params, fp.grads

            def step(g):
                for k in g:
                    np.copyto(gd[k], g[k])
                return opt.update(params, gd)
        else:
            params = make_params(np.float64)

            def step(g):
                return opt.update(params, g)
        return opt, params, step

    opt, params, step = setup("skip")
    assert step(grads[0]) is True
    snap = ({k: a.copy() for k, a in params.items()}, opt.state_dict())
    assert step(bad) is False
    assert opt.last_step_skipped and opt.skipped_steps == 1
    for k in SHAPES:
        np.testing.assert_array_equal(params[k], snap[0][k])
        st = opt.state[k]
        assert st["step"] == snap[1]["state"][k]["step"]
        for key in st:
            np.testing.assert_array_equal(st[key], snap[1]["state"][k][key])
    assert step(grads[2]) is True and not opt.last_step_skipped
    assert all(np.isfinite(a).all() for a in params.values())

    opt, params, step = setup("propagate")
    step(grads[0])
    assert step(bad) is True
    assert not np.isfinite(params["W2"][1, 2, 0]) and np.isnan(params["big"][-1, -1])
    assert np.isfinite(params["W1"]).all()


def test_all_finite(K, R):
    for a in (np.zeros(0), np.ones(5), np.ones(300_000, np.float32)):
        assert K.all_finite(a) and R.all_finite(a)
        for bad in (np.nan, np.inf, -np.inf):
            b = a.copy()
            if b.size:
                b[-1] = bad
                assert not K.all_finite(b) and not R.all_finite(b)


# --- bad input leaves everything untouched ------------------------------------------------


def _bad_inputs():
    def drop(params, grads, opt):
        del grads["W2"]

    def shape(params, grads, opt):
        grads["W2"] = grads["W2"][:, :, :1]

    def dtype(params, grads, opt):
        grads["W2"] = grads["W2"].astype(np.float32)

    def int_param(params, grads, opt):
        params["W2"] = params["W2"].astype(np.int64)
        grads["W2"] = grads["W2"].astype(np.int64)

    def list_param(params, grads, opt):
        params["W2"] = params["W2"].tolist()

    def readonly(params, grads, opt):
        params["W2"].flags.writeable = False

    def neg_lr(params, grads, opt):
        opt.lr = -0.1

    def nan_lr(params, grads, opt):
        opt.lr = float("nan")

    def beta1_one(params, grads, opt):
        opt.beta1 = 1.0

    def beta2_neg(params, grads, opt):
        opt.beta2 = -0.1

    def policy(params, grads, opt):
        opt.nonfinite = "ignore"

    def new_shape(params, grads, opt):
        params["W1"] = np.zeros((5, 7))
        grads["W1"] = np.zeros((5, 7))

    return [
        (drop, ValueError, "no gradient for params\\['W2'\\]"),
        (shape, ValueError, "grads\\['W2'\\] has shape"),
        (dtype, TypeError, "grads\\['W2'\\] has dtype float32"),
        (int_param, TypeError, "params\\['W2'\\] must have dtype float32 or float64, got int64"),
        (list_param, TypeError, "params\\['W2'\\] must be a numpy array"),
        (readonly, ValueError, "params\\['W2'\\] is read-only"),
        (neg_lr, ValueError, "lr must be >= 0"),
        (nan_lr, ValueError, "lr must be finite"),
        (beta1_one, ValueError, "beta1 must lie in \\[0.0, 1.0\\)"),
        (beta2_neg, ValueError, "beta2 must be >= 0"),
        (policy, ValueError, "nonfinite must be one of"),
        (new_shape, ValueError, "state 'exp_avg' of 'W1'"),
    ]


# A FlatParams model is written through its buffer, whose views' writeable
# flags are not consulted: the read-only case is for plain dicts only.
BAD = [(*b, flat) for b in _bad_inputs() for flat in (False, True) if not (flat and b[0].__name__ == "readonly")]


@pytest.mark.parametrize("mutate,exc,match,flat", BAD,
                         ids=[f"{b[0].__name__}-{'flat' if b[3] else 'dict'}" for b in BAD])
def test_bad_input_changes_nothing(mutate, exc, match, flat):
    # W2 comes after W1 in dict order: a step that validated entry by entry
    # would already have updated W1.
    grads = grad_sequence(np.float64, 2)
    opt = Adam(lr=0.01)
    if flat:
        fp = FlatParams(make_params(np.float64))
        params, g = fp.params, fp.grads
        for k in grads[1]:
            np.copyto(g[k], grads[1][k])
        opt.update(params, g)
    else:
        params, g = make_params(np.float64), dict(grads[1])
        opt.update(params, grads[0])
    orig = dict(params)
    snap = {k: a.copy() for k, a in orig.items()}
    sd = opt.state_dict()
    mutate(params, g, opt)
    with pytest.raises(exc, match=match):
        opt.update(params, g)
    for k, a in orig.items():
        np.testing.assert_array_equal(a, snap[k])
    for name, st in opt.state.items():
        assert st["step"] == sd["state"][name]["step"] == 1
        for key in st:
            np.testing.assert_array_equal(st[key], sd["state"][name][key])


def test_hyperparameter_checks_at_construction():
    with pytest.raises(ValueError, match="nesterov needs momentum > 0 and dampening == 0"):
        SGD(momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(nesterov=True)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        AdaGrad(eps=-1)
    with pytest.raises(TypeError, match="lr must be a real number"):
        RMSprop(lr="0.1")
    with pytest.raises(ValueError, match="beta2 must lie in"):
        AdamW(beta2=1.0)


def test_load_state_dict_rejects_bad_and_changes_nothing():
    opt, params = Adam(lr=0.01), make_params(np.float64)
    run(opt, params, grad_sequence(np.float64, 2))
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="for SGD"):
        opt.load_state_dict(SGD().state_dict())
    bad = opt.state_dict()
    bad["hyperparameters"]["beta1"] = 2.0
    bad["state"]["W1"]["exp_avg"] = np.zeros(3)
    with pytest.raises(ValueError, match="differ in shape"):
        opt.load_state_dict(bad)
    bad["state"]["W1"]["exp_avg"] = sd["state"]["W1"]["exp_avg"]
    with pytest.raises(ValueError, match="beta1"):
        opt.load_state_dict(bad)
    assert opt.beta1 == 0.9
    for name, st in opt.state.items():
        for key in st:
            np.testing.assert_array_equal(st[key], sd["state"][name][key])


# --- kernel wrappers --------------------------------------------------------------------


_FOREACH_SHAPES = [(7, 5), (5,), (1,), (0, 3), (3, 2, 4), (300, 700)]  # the last runs the parallel split


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hyper", [dict(lr=0.1), dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01),
                                   dict(lr=0.05, momentum=0.9, nesterov=True, first_step=True)],
                         ids=["plain", "momentum_dampening_wd", "nesterov_first"])
def test_sgd_step_foreach_is_sgd_step_on_each_entry(dtype, hyper):
    rng = np.random.default_rng(3)
    mk = lambda: [rng.standard_normal(s).astype(dtype) for s in _FOREACH_SHAPES]  # noqa: E731
    params, grads, bufs = mk(), mk(), mk()
    want_p, want_b = [p.copy() for p in params], [b.copy() for b in bufs]
    momentum = hyper.get("momentum", 0.0)
    for p, g, b in zip(want_p, grads, want_b):
        K.sgd_step(p, g, b if momentum else None, **hyper)
    K.sgd_step_foreach(params, tuple(grads), bufs if momentum else None, **hyper)
    for i in range(len(params)):
        np.testing.assert_array_equal(params[i], want_p[i], err_msg=f"params[{i}]")
        np.testing.assert_array_equal(bufs[i], want_b[i], err_msg=f"momentum_buffers[{i}]")


def test_sgd_step_foreach_checks_every_entry_before_updating_any():
    params = [np.ones((2, 3)), np.ones(3), np.ones(4)]
    before = [p.copy() for p in params]
    bad_last = [np.ones((2, 3)), np.ones(3), np.ones(5)]
    with pytest.raises(ValueError, match=r"sgd_step_foreach: grads\[2\] must have shape \(4,\)"):
        K.sgd_step_foreach(params, bad_last, lr=0.1)
    with pytest.raises(ValueError, match=r"sgd_step_foreach: momentum_buffers\[1\] is required"):
        K.sgd_step_foreach(params, [np.ones_like(p) for p in params], [np.zeros_like(p) for p in params[:1]] + [None, None],
                           lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="sgd_step_foreach: grads must have one array per entry of params"):
        K.sgd_step_foreach(params, bad_last[:2], lr=0.1)
    with pytest.raises(TypeError, match="sgd_step_foreach: params must be a list or tuple of arrays"):
        K.sgd_step_foreach(params[0], bad_last, lr=0.1)
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)


def test_sgd_step_foreach_updates_a_repeated_array_once_per_entry():
    # The same array twice in params: updated twice, in order, as two
    # sgd_step calls would (the entries are not independent tensors then).
    p, want = np.ones(4), np.ones(4)
    g1, g2 = np.full(4, 2.0), np.arange(4.0)
    K.sgd_step_foreach([p, p], [g1, g2], lr=0.1)
    K.sgd_step(want, g1, lr=0.1)
    K.sgd_step(want, g2, lr=0.1)
    np.testing.assert_array_equal(p, want)
    with pytest.raises(ValueError, match=r"grads\[1\] shares memory with params\[1\]"):
        K.sgd_step_foreach([g1, p], [g2, p], lr=0.1)


def test_sgd_step_foreach_matches_the_reference():
    rng = np.random.default_rng(4)
    shapes = [(4, 3), (3,)]
    params = [rng.standard_normal(s) for s in shapes]
    grads = [rng.standard_normal(s) for s in shapes]
    bufs = [rng.standard_normal(s) for s in shapes]
    ref_p, ref_b = [p.copy() for p in params], [b.copy() for b in bufs]
    hyper = dict(lr=0.05, momentum=0.9, weight_decay=0.01)
    K.sgd_step_foreach(params, grads, bufs, **hyper)
    R.sgd_step_foreach(ref_p, grads, ref_b, **hyper)
    for got, want in zip(params + bufs, ref_p + ref_b):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cls, kernel, foreach", [(Adam, "adam_step", "adam_step_foreach"),
                                                   (AdamW, "adamw_step", "adam_step_foreach"),
                                                   (Nesterov, "sgd_step", "sgd_step_foreach"),
                                                   (AdaGrad, "adagrad_step", "adagrad_step_foreach"),
                                                   (RMSprop, "rmsprop_step", "rmsprop_step_foreach")])
def test_optimizers_pass_entries_at_one_step_in_one_foreach_call(cls, kernel, foreach):
    # One entry ahead of the others (its state restored from step 5): the
    # entries run as [a] at step 6, then [b, c] at step 1, in dict order,
    # with the same bits as one kernel call per tensor.
    from unittest import mock

    rng = np.random.default_rng(7)
    shapes = {"a": (3, 2), "b": (4,), "c": (2, 2, 2)}
    p0 = {k: rng.standard_normal(s) for k, s in shapes.items()}
    g = {k: rng.standard_normal(s) for k, s in shapes.items()}
    ahead = cls(lr=0.01)
    pa = {"a": p0["a"].copy()}
    for _ in range(5):
        ahead.update(pa, {"a": g["a"]})
    sd = ahead.state_dict()

    opt, params = cls(lr=0.01), {k: a.copy() for k, a in p0.items()}
    params["a"] = pa["a"].copy()
    opt.load_state_dict(sd)
    with mock.patch.object(K, foreach, wraps=getattr(K, foreach)) as many, \
            mock.patch.object(K, kernel, wraps=getattr(K, kernel)) as one:
        opt.update(params, g)
    assert one.call_count == 1 and many.call_count == 1  # [a] alone, then [b, c]
    assert [id(a) for a in many.call_args.args[0]] == [id(params["b"]), id(params["c"])]

    want_opt, want = cls(lr=0.01), {k: a.copy() for k, a in p0.items()}
    want["a"] = pa["a"].copy()
    want_opt.load_state_dict(sd)
    for k in shapes:  # one entry per update: the per-tensor kernel
        want_opt.update({k: want[k]}, {k: g[k]})
    for k in shapes:
        np.testing.assert_array_equal(params[k], want[k], err_msg=k)
        for key in opt.state[k]:
            np.testing.assert_array_equal(opt.state[k][key], want_opt.state[k][key], err_msg=f"{k}.{key}")


def test_a_backend_without_foreach_ops_gets_one_call_per_tensor():
    import types

    ops = types.SimpleNamespace(adam_step=R.adam_step, adamw_step=R.adamw_step, all_finite=R.all_finite)
    params = {"a": np.ones((2, 3)), "b": np.ones(3)}
    grads = {"a": np.full((2, 3), 0.5), "b": np.arange(3.0)}
    want = {k: a.copy() for k, a in params.items()}
    Adam(lr=0.1, backend=ops).update(params, grads)
    Adam(lr=0.1, backend=R).update(want, grads)
    for k in params:
        np.testing.assert_array_equal(params[k], want[k])


def test_kernel_argument_errors():
    p, g = np.zeros(4), np.zeros(4)
    with pytest.raises(ValueError, match="sgd_step: momentum_buffer is required"):
        K.sgd_step(p, g, None, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="adam_step: max_exp_avg_sq is required"):
        K.adam_step(p, g, np.zeros(4), np.zeros(4), step=1, amsgrad=True)
    with pytest.raises(ValueError, match="adam_step: step must be >= 1"):
        K.adam_step(p, g, np.zeros(4), np.zeros(4), step=0)
    with pytest.raises(TypeError, match="rmsprop_step: square_avg has dtype float32"):
        K.rmsprop_step(p, g, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="adagrad_step: state_sum must have the shape of param"):
        K.adagrad_step(p, g, np.zeros(5), step=1)
    with pytest.raises(TypeError, match="adamw_step: param must be a float32 or float64 ndarray"):
        K.adamw_step([0.0], [0.0], np.zeros(1), np.zeros(1), step=1)
    with pytest.raises(ValueError, match="adamw_step: grad must have shape"):
        K.adamw_step(p, np.zeros(3), np.zeros(4), np.zeros(4), step=1)


@pytest.mark.parametrize("cls,hp", [(Adam, dict(lr=0.01, amsgrad=True)), (SGD, dict(momentum=0.9)),
                                    (RMSprop, dict(centered=True, momentum=0.5))], ids=["adam", "sgd", "rmsprop"])
def test_flat_state_dict_round_trip(cls, hp):
    grads = grad_sequence(np.float32)
    want_opt, want = cls(**hp), make_params(np.float32)
    run(want_opt, want, grads)

    def flat_run(opt, flat, seq):
        for g in seq:
            for k in g:
                np.copyto(flat.grads[k], g[k])
            opt.update(flat.params, flat.grads)

    # flat for 5 steps -> state dict -> a fresh optimizer continues on plain dicts
    opt, flat = cls(**hp), FlatParams(make_params(np.float32))
    flat_run(opt, flat, grads[:5])
    sd, at5 = opt.state_dict(), {k: a.copy() for k, a in flat.params.items()}
    resumed, mid = cls(**hp), {k: a.copy() for k, a in at5.items()}
    resumed.load_state_dict(sd)
    run(resumed, mid, grads[5:])
    # ... and the flat optimizer reloads it in place and continues on the flat path
    flat_run(opt, flat, grads[5:7])
    opt.load_state_dict(sd)
    for k in SHAPES:
        flat.params[k][...] = at5[k]
    flat_run(opt, flat, grads[5:])
    assert opt._flat_current(flat)
    for got_opt, got in ((resumed, mid), (opt, flat.params)):
        assert got_opt.state.keys() == want_opt.state.keys()
        for k in SHAPES:
            np.testing.assert_array_equal(got[k], want[k])
            assert got_opt.state[k].keys() == want_opt.state[k].keys()
            for key in want_opt.state[k]:
                np.testing.assert_array_equal(got_opt.state[k][key], want_opt.state[k][key])


def test_flat_params_with_layers():
    """How a network uses FlatParams: point the layers' parameters and
    gradients at the views; backward then fills the flat gradient buffer."""
    from numbanet.layers import Affine, Relu, SoftmaxWithLoss

    rng = np.random.default_rng(7)
    init = {"W1": rng.standard_normal((20, 16)) * 0.3, "b1": np.zeros(16),
            "W2": rng.standard_normal((16, 4)) * 0.3, "b2": np.zeros(4)}
    x, t = rng.standard_normal((32, 20)), rng.integers(0, 4, 32)

    def train(flat):
        layers = [Affine(init["W1"].copy(), init["b1"].copy()), Relu(), Affine(init["W2"].copy(), init["b2"].copy())]
        owners = {"W1": (layers[0], "W"), "b1": (layers[0], "b"), "W2": (layers[2], "W"), "b2": (layers[2], "b")}
        if flat:
            fp = FlatParams({n: getattr(layer, a) for n, (layer, a) in owners.items()})
            for n, (layer, a) in owners.items():
                setattr(layer, a, fp.params[n])
                setattr(layer, "d" + a, fp.grads[n])
            params, grads = fp.params, fp.grads
        else:
            params = {n: getattr(layer, a) for n, (layer, a) in owners.items()}
            grads = {n: getattr(layer, "d" + a) for n, (layer, a) in owners.items()}
        loss_layer, opt = SoftmaxWithLoss(), Adam(lr=0.01)
        losses = []
        for _ in range(10):
            h = x
            for layer in layers:
                h = layer.forward(h)
            losses.append(loss_layer.forward(h, t))
            d = loss_layer.backward()
            for layer in reversed(layers):
                d = layer.backward(d)
            opt.update(params, grads)
        if flat:
            assert opt._flat_current(fp)
        return losses, params

    (l_dict, p_dict), (l_flat, p_flat) = train(False), train(True)
    assert l_flat == l_dict and l_dict[-1] < l_dict[0]
    for n in p_dict:
        np.testing.assert_array_equal(p_flat[n], p_dict[n])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_parallel_path_matches_reference_and_is_thread_independent(case, dtype, close):
    """A tensor above the kernels' parallel threshold (not a whole number of
    chunks): same result as the reference, bitwise the same on 1 and 2 threads."""
    import numba

    from numbanet.kernels._tunables import CHUNK as _CHUNK, PARALLEL_MIN as _PARALLEL_MIN

    _, cls, hp = case
    n = _PARALLEL_MIN + _CHUNK // 2 + 3
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal(n).astype(dtype)
    grads = [{"p": rng.standard_normal(n).astype(dtype)} for _ in range(3)]
    results = []
    threads = numba.get_num_threads()
    try:
        for t in sorted({1, threads}):
            numba.set_num_threads(t)
            results.append(run(cls(**hp), {"p": p0.copy()}, grads)["p"])
    finally:
        numba.set_num_threads(threads)
    want = run(cls(**hp, backend=R), {"p": p0.copy()}, grads)["p"]
    close(results[-1], want, TOL[dtype])
    for r in results[:-1]:
        np.testing.assert_array_equal(r, results[-1])


def test_a_read_only_grad_is_copied_not_compiled_for():
    """A read-only grad takes the general path, which copies it (as
    validate.float_array copies every read-only input): passed through, it
    would compile a read-only specialisation of each step kernel, one more
    compile per optimizer and dtype that warmup does not foresee."""
    import numba

    from numbanet.kernels import optim

    p, g = np.ones(5), np.full(5, 0.5)
    g.flags.writeable = False
    K.sgd_step(p, g, lr=0.1)
    np.testing.assert_allclose(p, 0.95)
    if numba.config.DISABLE_JIT:
        return
    args = [a for sig in optim._sgd_step.signatures for a in sig if isinstance(a, numba.types.Array)]
    assert args and all(a.mutable for a in args)


def test_kernel_allocated_arrays_are_told_apart_from_views():
    # A gradient a kernel returned (base: Numba's MemInfo of its own buffer)
    # takes the steps' fast path; two views of one such buffer, or a Numba
    # view of the caller's array, are still caught as shared memory.
    from numba import njit

    from numbanet.kernels import validate as v

    x, w, dy = np.ones((4, 3)), np.ones((3, 2)), np.ones((4, 2))
    _, dw, _ = K.affine_backward(dy, x, w)
    p = np.ones((3, 2))
    assert v.owner_key(p) == id(p) and v.owner_key(p[:1]) is None
    assert dw.base is not None and v.owner_key(dw) is not None

    @njit
    def two_views(n):
        b = np.zeros(n)
        return b, b[::-1]

    @njit
    def tail(a):
        return a[1:]

    a, b = two_views(6)
    assert v.owner_key(a) == v.owner_key(b)  # one buffer: one key
    assert v.owner_key(tail(p)) is None  # memory the caller owns

    want = p - 0.1 * dw
    K.sgd_step(p, dw, lr=0.1)
    np.testing.assert_array_equal(p, want)
    with pytest.raises(ValueError, match="shares memory"):
        K.sgd_step(a.reshape(3, 2), b.reshape(3, 2), lr=0.1)
    with pytest.raises(ValueError, match="shares memory"):
        K.sgd_step(p[:2], tail(p), lr=0.1)
    with pytest.raises(ValueError, match="shares memory"):
        SGD(lr=0.1).update({"w": a}, {"w": b})
