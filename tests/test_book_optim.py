"""numbanet.book.optimizer against the book's formulas, and the book's fused
kernels (kernels.book_*_step) against their NumPy twins (reference.book_*_step).

The book's update rules are written out below as plain NumPy on dicts (one
operator at a time, in the book's order); run on float64 arrays they give the
book's numbers. The fused kernels evaluate each element in the same order, so
float64 results must be equal bit for bit, and so must float32 results
except Adam's (the book's Adam computes a float32 update in float64, since
its NumPy-scalar ``lr_t`` is not a weak Python float; numbanet stays in
float32).
"""

from unittest import mock

import numpy as np
import pytest

import numbanet.kernels as K
import numbanet.reference as R
from numbanet.book import optimizer as bo

STEPS = 4
# Odd sizes, a 1-element and a 0-size entry, and one past the kernels'
# parallel threshold (_tunables.PARALLEL_MIN, 32768 elements) so the chunked path runs.
SHAPES = {"W1": (7, 5), "b1": (5,), "one": (1,), "empty": (0, 3), "W2": (3, 4, 2), "big": (371, 361)}


# --- the book's formulas, written out ----------------------------------------------


def book_sgd(p, g, st, lr=0.01):
    for k in p:
        p[k] -= lr * g[k]


def book_momentum(p, g, st, lr=0.01, momentum=0.9):
    v = st.setdefault("v", {k: np.zeros_like(a) for k, a in p.items()})
    for k in p:
        v[k] = momentum * v[k] - lr * g[k]
        p[k] += v[k]


def book_nesterov(p, g, st, lr=0.01, momentum=0.9):
    v = st.setdefault("v", {k: np.zeros_like(a) for k, a in p.items()})
    for k in p:
        p[k] += momentum * momentum * v[k]
        p[k] -= (1 + momentum) * lr * g[k]
        v[k] *= momentum
        v[k] -= lr * g[k]


def book_adagrad(p, g, st, lr=0.01):
    h = st.setdefault("h", {k: np.zeros_like(a) for k, a in p.items()})
    for k in p:
        h[k] += g[k] * g[k]
        p[k] -= lr * g[k] / (np.sqrt(h[k]) + 1e-7)


def book_rmsprop(p, g, st, lr=0.01, decay_rate=0.99):
    h = st.setdefault("h", {k: np.zeros_like(a) for k, a in p.items()})
    for k in p:
        h[k] *= decay_rate
        h[k] += (1 - decay_rate) * g[k] * g[k]
        p[k] -= lr * g[k] / (np.sqrt(h[k]) + 1e-7)


def book_adam(p, g, st, lr=0.001, beta1=0.9, beta2=0.999):
    m = st.setdefault("m", {k: np.zeros_like(a) for k, a in p.items()})
    v = st.setdefault("v", {k: np.zeros_like(a) for k, a in p.items()})
    st["iter"] = t = st.get("iter", 0) + 1
    lr_t = lr * np.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
    for k in p:
        m[k] += (1 - beta1) * (g[k] - m[k])
        v[k] += (1 - beta2) * (g[k] ** 2 - v[k])
        p[k] -= lr_t * m[k] / (np.sqrt(v[k]) + 1e-7)


# (id, class, hyperparameters, formula, state attributes)
CASES = [
    ("sgd", bo.SGD, {}, book_sgd, ()),
    ("sgd_lr", bo.SGD, dict(lr=0.3), book_sgd, ()),
    ("momentum", bo.Momentum, {}, book_momentum, ("v",)),
    ("momentum_hp", bo.Momentum, dict(lr=0.1, momentum=0.5), book_momentum, ("v",)),
    ("nesterov", bo.Nesterov, {}, book_nesterov, ("v",)),
    ("nesterov_hp", bo.Nesterov, dict(lr=0.05, momentum=0.7), book_nesterov, ("v",)),
    ("adagrad", bo.AdaGrad, {}, book_adagrad, ("h",)),
    ("adagrad_lr", bo.AdaGrad, dict(lr=1.5), book_adagrad, ("h",)),
    ("rmsprop", bo.RMSprop, {}, book_rmsprop, ("h",)),
    ("rmsprop_decay", bo.RMSprop, dict(lr=0.1, decay_rate=0.9), book_rmsprop, ("h",)),
    ("adam", bo.Adam, {}, book_adam, ("m", "v")),
    ("adam_hp", bo.Adam, dict(lr=0.01, beta1=0.5, beta2=0.8), book_adam, ("m", "v")),
]
IDS = [c[0] for c in CASES]


def make(dtype, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}


def grad_seq(dtype, steps=STEPS, seed=1, shapes=SHAPES):
    return [make(dtype, seed + i, shapes) for i in range(steps)]


def exact(got, want, what):
    assert type(got) is type(want), f"{what}: {type(got).__name__} vs {type(want).__name__}"
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, what
    np.testing.assert_array_equal(got, want, err_msg=what)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_book_formula(case, dtype, close):
    _, cls, hp, formula, attrs = case
    opt = cls(**hp)
    for a in attrs:
        assert getattr(opt, a) is None, f"{a} must be None before the first update"
    params, want, st = make(dtype), make(dtype), {}
    ids = {k: id(a) for k, a in params.items()}
    for g in grad_seq(dtype):
        assert opt.update(params, g) is None
        formula(want, g, st, **hp)
    float32_adam = dtype == np.float32 and cls is bo.Adam
    for k in SHAPES:
        assert id(params[k]) == ids[k], "updated in place"
        if float32_adam:
            close(params[k], want[k], 1e-5, what=k)
        else:
            exact(params[k], want[k], k)
    for a in attrs:
        state = getattr(opt, a)
        assert state.keys() == SHAPES.keys()
        for k in SHAPES:
            if float32_adam:
                close(state[k], st[a][k], 1e-5, what=f"{a}[{k}]")
            else:
                exact(state[k], st[a][k], f"{a}[{k}]")
    if cls is bo.Adam:
        assert opt.iter == STEPS
    for name, val in hp.items():
        assert getattr(opt, name) == val


def test_float32_adam_is_the_book_in_float64_to_float32_rounding(close):
    # The book's float32 Adam: float64 update rounded to float32 at the end.
    params, want, st = make(np.float32), make(np.float32), {}
    opt = bo.Adam(lr=0.01)
    for g in grad_seq(np.float32):
        opt.update(params, g)
        book_adam(want, g, st, lr=0.01)
    for k in SHAPES:
        assert params[k].dtype == np.float32
        close(params[k], want[k], 1e-6, what=k)


_FUSED = {bo.SGD: "sgd_step_foreach", bo.Momentum: "book_momentum_step_foreach",
          bo.Nesterov: "book_nesterov_step_foreach", bo.AdaGrad: "adagrad_step_foreach",
          bo.RMSprop: "rmsprop_step_foreach", bo.Adam: "book_adam_step_foreach"}


@pytest.mark.parametrize("cls", list(_FUSED), ids=[c.__name__ for c in _FUSED])
def test_arrays_take_the_fused_kernel(cls):
    params, grads = make(np.float64), make(np.float64, 1)
    name = _FUSED[cls]
    with mock.patch.object(K, name, wraps=getattr(K, name)) as kernel:
        cls().update(params, grads)
    assert kernel.call_count == 1  # every array in one call
    assert [id(p) for p in kernel.call_args.args[0]] == [id(p) for p in params.values()]


def test_sgd_keeps_dict_order_around_entries_numpy_updates():
    # A Python float between arrays: the arrays before it, the float, then
    # the arrays after it, each as the book updates them.
    params = {"W": np.ones((2, 3)), "x": 2.0, "b": np.ones(3)}
    grads = {"W": np.full((2, 3), 0.5), "x": 1.0, "b": np.arange(3.0)}
    with mock.patch.object(K, "sgd_step_foreach", wraps=K.sgd_step_foreach) as kernel:
        bo.SGD(lr=0.1).update(params, grads)
    assert [len(c.args[0]) for c in kernel.call_args_list] == [1, 1]
    exact(params["W"], np.full((2, 3), 1 - 0.1 * 0.5), "W")
    exact(params["x"], 2.0 - 0.1 * 1.0, "x")
    exact(params["b"], 1 - 0.1 * np.arange(3.0), "b")


# --- Python floats, 0-d and other dtypes: the book's NumPy semantics --------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_python_float_params(case):
    # ch06/optimizer_compare_naive.py: params and grads are plain floats.
    _, cls, hp, formula, attrs = case
    opt = cls(**hp)
    params, want, st = {"x": -7.0, "y": 2.0}, {"x": -7.0, "y": 2.0}, {}
    for _ in range(30):
        g = {"x": params["x"] / 10.0, "y": 2.0 * params["y"]}
        gw = {"x": want["x"] / 10.0, "y": 2.0 * want["y"]}
        opt.update(params, g)
        formula(want, gw, st, **hp)
        for k in params:
            exact(params[k], want[k], k)
    for a in attrs:
        for k in params:
            exact(getattr(opt, a)[k], st[a][k], f"{a}[{k}]")
    assert abs(params["x"] + 7.0) > 1e-6, "the parameters moved"


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("kind", ["0d_float64", "0d_float32", "float16"])
def test_other_entries_follow_numpy(case, kind):
    _, cls, hp, formula, attrs = case
    if kind == "float16":
        shapes, dt = {"W": (3, 2)}, np.float16
    else:
        shapes, dt = {"W": ()}, np.float64 if kind == "0d_float64" else np.float32
    opt, params, want, st = cls(**hp), make(dt, shapes=shapes), make(dt, shapes=shapes), {}
    for g in grad_seq(dt, shapes=shapes):
        opt.update(params, g)
        formula(want, g, st, **hp)
    exact(params["W"], want["W"], "W")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_mixed_dtypes_update_in_the_param_dtype(case, close):
    _, cls, hp, formula, _ = case
    p32, want, st = make(np.float32), make(np.float32), {}
    opt = cls(**hp)
    for g in grad_seq(np.float64):
        opt.update(p32, g)
        formula(want, {k: a.astype(np.float32) for k, a in g.items()}, st, **hp)
    for k in SHAPES:
        assert p32[k].dtype == np.float32
        close(p32[k], want[k], 1e-5, what=k)


@pytest.mark.parametrize("cls", list(_FUSED), ids=[c.__name__ for c in _FUSED])
def test_views_are_updated_in_place(cls):
    base = make(np.float64, shapes={"W": (6, 8)})["W"]
    view = base[::2, 1::3].T  # non-contiguous
    params, want = {"W": view}, {"W": view.copy()}
    g = {"W": make(np.float64, 3, {"W": view.shape})["W"]}
    opt, ref = cls(), cls()
    for _ in range(3):
        opt.update(params, g)
        ref.update(want, g)
    assert params["W"] is view
    np.testing.assert_array_equal(base[::2, 1::3].T, want["W"])


# --- kernels vs twins, and twins vs the book's formulas --------------------------------

TWIN_SHAPES = [(1,), (7,), (3, 5), (2, 3, 4), (0, 4), (131073,), (517, 300)]


def _twin_args(op, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    p, g = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    if op == "book_adam_step":
        return p, g, {"exp_avg": rng.standard_normal(shape).astype(dtype) * 0.1,
                      "exp_avg_sq": np.abs(rng.standard_normal(shape)).astype(dtype)}
    return p, g, {"velocity": rng.standard_normal(shape).astype(dtype)}


TWIN_OPS = {
    "book_momentum_step": [dict(lr=0.01, momentum=0.9), dict(lr=0.3, momentum=0.0)],
    "book_nesterov_step": [dict(lr=0.01, momentum=0.9), dict(lr=0.2, momentum=0.45)],
    "book_adam_step": [dict(lr=0.001), dict(lr=0.05, beta1=0.0, beta2=0.5, eps=1e-3)],
}


@pytest.mark.parametrize("op", sorted(TWIN_OPS))
@pytest.mark.parametrize("shape", TWIN_SHAPES, ids=str)
def test_kernel_matches_twin(op, shape, dtype):
    for i, hp in enumerate(TWIN_OPS[op]):
        pk, g, sk = _twin_args(op, shape, dtype, i)
        pr, sr = pk.copy(), {k: a.copy() for k, a in sk.items()}
        for step in range(1, 4):
            extra = {"step": step} if op == "book_adam_step" else {}
            getattr(K, op)(pk, g, **sk, **hp, **extra)
            getattr(R, op)(pr, g, **sr, **hp, **extra)
        exact(pk, pr, f"{op} param")
        for k in sk:
            assert sk[k].dtype == dtype
            exact(sk[k], sr[k], f"{op} {k}")


def test_twins_are_the_book_formulas():
    for op, formula, state in (("book_momentum_step", book_momentum, "v"),
                               ("book_nesterov_step", book_nesterov, "v")):
        p, g, s = _twin_args(op, (4, 6), np.float64, 0)
        want, st = {"W": p.copy()}, {state: {"W": s["velocity"].copy()}}
        for _ in range(3):
            getattr(R, op)(p, g, **s, lr=0.02, momentum=0.8)
            formula(want, {"W": g}, st, lr=0.02, momentum=0.8)
        exact(p, want["W"], op)
        exact(s["velocity"], st[state]["W"], op)
    p, g, s = _twin_args("book_adam_step", (4, 6), np.float64, 0)
    want, st = {"W": p.copy()}, {"m": {"W": s["exp_avg"].copy()}, "v": {"W": s["exp_avg_sq"].copy()}}
    for t in range(1, 4):
        R.book_adam_step(p, g, **s, step=t, lr=0.01)
        book_adam(want, {"W": g}, st, lr=0.01)
    exact(p, want["W"], "adam")
    exact(s["exp_avg"], st["m"]["W"], "adam m")


def test_book_eps_reaches_the_kernel():
    # AdaGrad and RMSprop run adagrad_step/rmsprop_step with the book's 1e-7:
    # with a zero first gradient entry the step is exactly 0/(0 + eps) = 0 and
    # for a tiny one it shows eps.
    g = {"W": np.array([0.0, 1e-7, 1.0])}
    for cls, h in ((bo.AdaGrad, lambda x: np.sqrt(x * x)), (bo.RMSprop, lambda x: np.sqrt(0.01 * x * x))):
        p = {"W": np.zeros(3)}
        cls(lr=1.0).update(p, g)
        want = -g["W"] / (h(g["W"]) + 1e-7)
        np.testing.assert_allclose(p["W"], want, rtol=1e-15)


@pytest.mark.parametrize("case", CASES[::2], ids=IDS[::2])
def test_bad_entries_raise_as_the_book_does(case):
    # The book's NumPy code raises ValueError for a gradient of another shape
    # and for a read-only parameter, KeyError for a missing gradient; so do
    # the fused paths (the kernels' own messages).
    _, cls, hp, formula, _ = case
    rng = np.random.default_rng(0)

    def attempt(update, params, grads):
        with pytest.raises(Exception) as info:
            update(params, grads)
        return info.type

    ro = rng.standard_normal((3, 4))
    ro.setflags(write=False)
    bad = [({"W": rng.standard_normal((3, 4))}, {"W": rng.standard_normal((4, 3))}),
           ({"W": ro}, {"W": rng.standard_normal((3, 4))}),
           ({"W": rng.standard_normal((3, 4))}, {"V": rng.standard_normal((3, 4))})]
    for params, grads in bad:
        book_type = attempt(lambda p, g: formula(p, g, {}, **hp), dict(params), grads)
        ours = attempt(cls(**hp).update, dict(params), grads)
        assert ours is book_type or issubclass(ours, book_type), (ours, book_type)
    g_nan = {"W": np.array([1.0, np.nan, 2.0])}
    p = {"W": np.zeros(3)}
    cls(**hp).update(p, g_nan)
    assert np.isnan(p["W"][1]) and np.isfinite(p["W"][[0, 2]]).all()
