"""Pooling kernels against the reference, numerical gradients and PyTorch."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from numbanet.nets import numerical_gradient


@st.composite
def pool_configs(draw, max_n=9, max_c=17, max_hw=33, max_k=7, torch_pad=False):
    """(x shape, pool_h, pool_w, stride, pad) with a non-empty output."""
    xs = (draw(st.integers(1, max_n)), draw(st.integers(1, max_c)), draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw)))
    kh, kw = draw(st.integers(1, max_k)), draw(st.integers(1, max_k))
    stride = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    if torch_pad:  # PyTorch wants pad <= half the window
        pad = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    else:
        pad = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    assume(xs[2] + 2 * pad[0] >= kh and xs[3] + 2 * pad[1] >= kw)
    return xs, kh, kw, stride, pad


def _data(seed, xs, dt, ties):
    rng = np.random.default_rng(seed)
    if ties:  # few distinct values: many tied maxima, all-negative inputs too
        return (rng.integers(-3, 1, xs)).astype(dt), rng
    return rng.standard_normal(xs).astype(dt), rng


@given(cfg=pool_configs(), f32=st.booleans(), ties=st.booleans(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=60)
def test_pool_matches_reference(K, R, close, cfg, f32, ties, seed):
    xs, kh, kw, stride, pad = cfg
    dt = np.float32 if f32 else np.float64
    x, rng = _data(seed, xs, dt, ties)
    y, arg = K.maxpool2d_forward(x, kh, kw, stride, pad)
    yr, argr = R.maxpool2d_forward(x, kh, kw, stride, pad)
    assert y.dtype == dt and arg.dtype == np.int64
    np.testing.assert_array_equal(y, yr)
    np.testing.assert_array_equal(arg, argr)
    dy = rng.standard_normal(y.shape).astype(dt)
    close(K.maxpool2d_backward(dy, arg, xs, kh, kw, stride, pad), R.maxpool2d_backward(dy, argr, xs, kh, kw, stride, pad))
    close(K.avgpool2d_forward(x, kh, kw, stride, pad), R.avgpool2d_forward(x, kh, kw, stride, pad))
    close(K.avgpool2d_backward(dy, xs, kh, kw, stride, pad), R.avgpool2d_backward(dy, xs, kh, kw, stride, pad))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("pad", [0, 1, (0, 1), (1, 0)])
@pytest.mark.parametrize("hw", [(2, 2), (3, 5), (8, 8), (9, 33), (24, 24), (2, 41)])
def test_maxpool_2x2_stride2_matches_reference(K, R, hw, pad, dt):
    """The vectorised 2x2, stride-2 path (and its edge windows): ties, NaN
    and -inf included, results and argmax identical to the reference."""
    rng = np.random.default_rng(hash(hw) % 2**32)
    x = rng.integers(-2, 2, (3, 4) + hw).astype(dt)
    x.flat[rng.choice(x.size, max(1, x.size // 17), replace=False)] = np.nan
    x.flat[rng.choice(x.size, max(1, x.size // 13), replace=False)] = -np.inf
    y, arg = K.maxpool2d_forward(x, 2, 2, 2, pad)
    yr, argr = R.maxpool2d_forward(x, 2, 2, 2, pad)
    np.testing.assert_array_equal(y, yr)
    np.testing.assert_array_equal(arg, argr)
    dy = rng.standard_normal(y.shape).astype(dt)
    np.testing.assert_array_equal(K.maxpool2d_backward(dy, arg, x.shape, 2, 2, 2, pad),
                                  R.maxpool2d_backward(dy, argr, x.shape, 2, 2, 2, pad))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_maxpool_2x2_stride2_signed_zeros_and_nan_payloads_bitwise(K, R, dt):
    """The 2x2 path finds the tap by its bits: tied zeros of either sign keep
    the first tap and its sign, of two NaNs the first is returned (its own
    payload), and dx is +0.0 off the argmax taps, bit for bit as the
    reference."""
    itype = np.int32 if dt == np.float32 else np.int64
    nan2 = (np.array(np.nan, dt).view(itype) | 1).view(dt)  # another NaN payload
    windows = [
        [-0.0, 0.0, 0.0, -0.0], [0.0, -0.0, -0.0, 0.0], [-0.0, -0.0, 0.0, 0.0], [-1.0, -0.0, -2.0, 0.0],
        [1.0, np.nan, nan2, 1.0], [1.0, nan2, np.nan, 2.0], [-np.inf, -np.inf, -np.inf, -np.inf],
        [2.0, 3.0, 3.0, -0.0],
    ]
    x = np.zeros((1, 1, 2, 2 * len(windows)), dt)
    for i, (a, b, c, d) in enumerate(windows):
        x[0, 0, 0, 2 * i:2 * i + 2] = a, b
        x[0, 0, 1, 2 * i:2 * i + 2] = c, d
    y, arg = K.maxpool2d_forward(x, 2, 2, 2, 0)
    yr, argr = R.maxpool2d_forward(x, 2, 2, 2, 0)
    np.testing.assert_array_equal(y.view(itype), yr.view(itype))
    np.testing.assert_array_equal(arg, argr)
    dy = -np.arange(1.0, len(windows) + 1, dtype=dt).reshape(y.shape)
    dx = K.maxpool2d_backward(dy, arg, x.shape, 2, 2, 2, 0)
    np.testing.assert_array_equal(dx.view(itype), R.maxpool2d_backward(dy, argr, x.shape, 2, 2, 2, 0).view(itype))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("kh, kw, stride, pad", [
    (3, 3, 2, 1), (3, 3, 1, 1), (3, 3, 2, 0), (2, 3, (1, 2), 0), (3, 2, 3, (1, 0)), (5, 5, 2, 2), (1, 4, (2, 1), 0),
])
def test_maxpool_window_rows_match_reference_bitwise(K, R, kh, kw, stride, pad, dt):
    """The tap-by-tap rows of windows of any size (strides 1, 2 and other):
    ties, signed zeros, NaN of two payloads and -inf included, the maximum's
    bits and the argmax identical to the reference's first-NaN, else
    first-of-the-largest rule, on rows long enough to vectorise."""
    itype = np.int32 if dt == np.float32 else np.int64
    rng = np.random.default_rng(kh * 100 + kw)
    x = rng.integers(-2, 2, (2, 3, 13, 70)).astype(dt)
    x[x == 0] = np.where(rng.random((x == 0).sum()) < 0.5, -0.0, 0.0)
    nan2 = (np.array(np.nan, dt).view(itype) | 1).view(dt)
    x.flat[rng.choice(x.size, x.size // 29, replace=False)] = np.nan
    x.flat[rng.choice(x.size, x.size // 31, replace=False)] = nan2
    x.flat[rng.choice(x.size, x.size // 13, replace=False)] = -np.inf
    y, arg = K.maxpool2d_forward(x, kh, kw, stride, pad)
    yr, argr = R.maxpool2d_forward(x, kh, kw, stride, pad)
    np.testing.assert_array_equal(y.view(itype), yr.view(itype))
    np.testing.assert_array_equal(arg, argr)


def test_maxpool_argmax_layout_and_padding(K):
    x = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # all negative: zero padding would win
    y, arg = K.maxpool2d_forward(x, 2, 2, 2, 1)
    # windows: rows {-1, 0}, {1, 2} by cols {-1, 0}, {1, 2}; padding never wins
    np.testing.assert_array_equal(y[0, 0], [[-1.0, -2.0], [-4.0, -5.0]])
    np.testing.assert_array_equal(arg[0, 0], [[3, 2], [1, 0]])  # i * pool_w + j
    dx = K.maxpool2d_backward(np.ones_like(y), arg, x.shape, 2, 2, 2, 1)
    np.testing.assert_array_equal(dx[0, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])


def test_maxpool_backward_read_only_argmax_compiles_nothing_new(K, R, dtype):
    """A read-only argmax (e.g. loaded from a file) is copied like read-only
    float inputs: no read-only specialisation of the kernel to compile, which
    warm-up cannot foresee."""
    import numba

    from numbanet.kernels import pool as kpool

    x = np.random.default_rng(0).standard_normal((2, 3, 6, 5)).astype(dtype)
    y, argmax = K.maxpool2d_forward(x, 2, 2)
    dy = np.ones_like(y)
    want = K.maxpool2d_backward(dy, argmax, x.shape, 2, 2)
    argmax.setflags(write=False)
    got = K.maxpool2d_backward(dy, argmax, x.shape, 2, 2)
    assert np.array_equal(got, want) and np.array_equal(got, R.maxpool2d_backward(dy, argmax, x.shape, 2, 2))
    if not numba.config.DISABLE_JIT:
        sigs = kpool._maxpool2d_backward.signatures
        assert sigs and not [s for s in sigs if any(isinstance(a, numba.types.Array) and not a.mutable for a in s)]


def test_maxpool_ties_and_nan(K):
    x = np.array([[[[2.0, 2.0], [1.0, 2.0]]]])
    assert K.maxpool2d_forward(x, 2, 2)[1].item() == 0  # first maximum
    x = np.array([[[[1.0, np.nan], [5.0, np.nan]]]])
    y, arg = K.maxpool2d_forward(x, 2, 2)
    assert np.isnan(y.item()) and arg.item() == 1  # first NaN, as np.argmax


def test_all_padding_window(K, R):
    x = np.ones((1, 1, 1, 1))
    y, arg = K.maxpool2d_forward(x, 1, 1, 1, 1)  # 3x3 output, only the centre sees x
    assert y[0, 0, 1, 1] == 1 and np.isneginf(y[0, 0, 0, 0])
    np.testing.assert_array_equal(y, R.maxpool2d_forward(x, 1, 1, 1, 1)[0])
    assert K.maxpool2d_backward(np.ones_like(y), arg, x.shape, 1, 1, 1, 1).item() == 1
    assert K.avgpool2d_forward(x, 1, 1, 1, 1).sum() == 1


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pool_gradient_check(K, rng, mode):
    x = rng.standard_normal((2, 3, 7, 6))
    args = (3, 2, (2, 1), 1)
    if mode == "max":
        y, arg = K.maxpool2d_forward(x, *args)
        dy = rng.standard_normal(y.shape)
        dx = K.maxpool2d_backward(dy, arg, x.shape, *args)

        def loss():
            return float((K.maxpool2d_forward(x, *args)[0] * dy).sum())

    else:
        dy = rng.standard_normal(K.avgpool2d_forward(x, *args).shape)
        dx = K.avgpool2d_backward(dy, x.shape, *args)

        def loss():
            return float((K.avgpool2d_forward(x, *args) * dy).sum())

    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-7)


@given(cfg=pool_configs(max_n=4, max_hw=20, torch_pad=True), f32=st.booleans(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=25)
def test_pool_matches_torch(K, close, cfg, f32, seed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    xs, kh, kw, stride, pad = cfg
    dt = np.float32 if f32 else np.float64
    x, rng = _data(seed, xs, dt, False)
    tstride = (kh, kw) if stride is None else stride
    for mode in ("max", "avg"):
        xt = torch.from_numpy(x.copy()).requires_grad_()
        op = F.max_pool2d if mode == "max" else F.avg_pool2d
        yt = op(xt, (kh, kw), tstride, pad)
        dy = rng.standard_normal(tuple(yt.shape)).astype(dt)
        yt.backward(torch.from_numpy(dy))
        if mode == "max":
            y, arg = K.maxpool2d_forward(x, kh, kw, stride, pad)
            dx = K.maxpool2d_backward(dy, arg, xs, kh, kw, stride, pad)
        else:
            y = K.avgpool2d_forward(x, kh, kw, stride, pad)
            dx = K.avgpool2d_backward(dy, xs, kh, kw, stride, pad)
        close(y, yt.detach().numpy(), rtol=1e-6 if f32 else 1e-14, what=f"{mode} y")
        close(dx, xt.grad.numpy(), rtol=1e-6 if f32 else 1e-14, what=f"{mode} dx")


def test_pool_deterministic_with_overlap(K, rng):
    x = rng.standard_normal((5, 7, 19, 23)).astype(np.float32)
    y, arg = K.maxpool2d_forward(x, 3, 3, 1, 1)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    first = (K.maxpool2d_backward(dy, arg, x.shape, 3, 3, 1, 1), K.avgpool2d_backward(dy, x.shape, 3, 3, 1, 1))
    for _ in range(3):
        again = (K.maxpool2d_backward(dy, arg, x.shape, 3, 3, 1, 1), K.avgpool2d_backward(dy, x.shape, 3, 3, 1, 1))
        for a, b in zip(again, first):
            assert np.array_equal(a, b)


def _z(*shape, dtype=np.float64):
    return np.zeros(shape, dtype)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda K: K.maxpool2d_forward(_z(2, 3, 4, 4), 5, 2), ValueError, "maxpool2d_forward: the 5x2 pool is larger than the padded input 4x4"),
        (lambda K: K.avgpool2d_forward(_z(2, 3, 4, 4), 2, 7, None, (0, 1)), ValueError, "avgpool2d_forward: the 2x7 pool is larger than the padded input 4x6"),
        (lambda K: K.maxpool2d_forward(_z(2, 3, 4, 4), 2, 2, 0), ValueError, "stride must be >= 1, got 0"),
        (lambda K: K.avgpool2d_forward(_z(2, 3, 4, 4), 2, 2, 1, -1), ValueError, "pad must be >= 0"),
        (lambda K: K.maxpool2d_forward(_z(2, 3, 4, 4), 0, 2), ValueError, "pool_h must be >= 1"),
        (lambda K: K.maxpool2d_forward(_z(2, 3, 4, 4), 2.0, 2), TypeError, "pool_h must be an int"),
        (lambda K: K.maxpool2d_forward(_z(3, 4, 4), 2, 2), ValueError, "x must be 4-D"),
        (lambda K: K.avgpool2d_forward(_z(2, 3, 4, 4, dtype=np.int64), 2, 2), TypeError, "x must have dtype float32 or float64, got int64"),
        (lambda K: K.maxpool2d_backward(_z(2, 3, 2, 2), np.zeros((2, 3, 2, 1), np.int64), (2, 3, 4, 4), 2, 2), ValueError, r"argmax must have shape \(2, 3, 2, 2\)"),
        (lambda K: K.maxpool2d_backward(_z(2, 3, 2, 2), _z(2, 3, 2, 2), (2, 3, 4, 4), 2, 2), TypeError, "argmax must be an integer array"),
        (lambda K: K.maxpool2d_backward(_z(2, 3, 2, 2), np.full((2, 3, 2, 2), 4), (2, 3, 4, 4), 2, 2), ValueError, r"argmax must hold window indices in \[0, 4\)"),
        (lambda K: K.maxpool2d_backward(_z(2, 3, 3, 2), np.zeros((2, 3, 3, 2), np.int64), (2, 3, 4, 4), 2, 2), ValueError, r"dy must have shape \(2, 3, 2, 2\)"),
        (lambda K: K.avgpool2d_backward(_z(2, 3, 2, 2), (2, 3, 4), 2, 2), ValueError, "x_shape must be"),
        (lambda K: K.avgpool2d_backward(_z(2, 3, 2, 2).astype(np.float16), (2, 3, 4, 4), 2, 2), TypeError, "dy must have dtype float32 or float64, got float16"),
    ],
)
def test_pool_bad_input(K, call, exc, match):
    with pytest.raises(exc, match=match):
        call(K)


@pytest.mark.parametrize("xs, kh, kw, stride, pad", [
    ((3, 10, 8, 8), 2, 2, 2, 0),          # ch07/gradient_check's pool (the vectorised 2x2 path), batch of 3
    ((2, 3, 9, 7), 3, 2, (2, 1), (1, 0)),  # overlapping, padded, odd edges
])
def test_pool_calling_thread_branch_same_bits(K, monkeypatch, dtype, xs, kh, kw, stride, pad):
    """Below POOL_PARALLEL_MIN input elements the kernels loop over all the
    planes on the calling thread; above it each task takes the planes of
    POOL_TASK_ELEMENTS elements. Bitwise the same results either way (one
    loop, one plane a task, four planes a task with a shorter last task),
    and the wrappers pass the planes per task the tunables ask for."""
    from numbanet.kernels import _tunables
    from numbanet.kernels import pool as kpool

    x, rng = _data(7, xs, dtype, ties=True)
    n_planes, plane = xs[0] * xs[1], xs[2] * xs[3]
    planes = []
    for name in ("_maxpool2d_forward", "_maxpool2d_backward", "_avgpool2d_forward", "_avgpool2d_backward"):
        real = getattr(kpool, name)

        def spy(*args, _real=real):
            planes.append(args[-1])  # the kernel's `planes` argument
            return _real(*args)

        monkeypatch.setattr(kpool, name, spy)

    def run(threshold, task_elements):
        monkeypatch.setattr(_tunables, "POOL_PARALLEL_MIN", threshold)
        monkeypatch.setattr(_tunables, "POOL_TASK_ELEMENTS", task_elements)
        planes.clear()
        y, arg = K.maxpool2d_forward(x, kh, kw, stride, pad)
        dy = np.cos(y) + 2
        out = (y, arg, K.maxpool2d_backward(dy, arg, xs, kh, kw, stride, pad),
               K.avgpool2d_forward(x, kh, kw, stride, pad), K.avgpool2d_backward(dy, xs, kh, kw, stride, pad))
        return out, list(planes)

    serial, planes_serial = run(2**62, 1)
    assert planes_serial == [n_planes] * 4
    for task_elements, per_task in ((1, 1), (4 * plane, 4)):
        assert n_planes % per_task or per_task == 1  # the 4-plane run has a shorter last task
        parallel, planes_parallel = run(0, task_elements)
        assert planes_parallel == [per_task] * 4
        for a, b in zip(serial, parallel):
            assert np.array_equal(a, b)
