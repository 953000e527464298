"""Convolution kernels against the reference, numerical gradients and PyTorch."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from numbanet.kernels import conv as kconv
from numbanet.kernels.conv import STRATEGIES
from numbanet.kernels.conv import forced_strategy as strategy
from numbanet.nets import numerical_gradient

# Every kernel strategy must be right on every shape, whatever the wrappers
# would pick by channel count: "direct" (the wide-grid loops, taken at stride 1;
# stride > 1 always goes to the GEMM) and "gemm" (the GEMM on the padded planes'
# stride phases).


@st.composite
def conv_configs(draw, max_n=9, max_c=17, max_hw=33, max_k=7):
    """(x shape, w shape, stride, pad, dilation, groups) with a non-empty output."""
    if draw(st.booleans()):  # depthwise, possibly with a channel multiplier
        groups = c = draw(st.integers(1, max_c))
        f = c * draw(st.integers(1, max(1, max_c // c)))
        cg = 1
    else:
        groups = draw(st.sampled_from([1, 1, 2, 3, 4]))
        cg = draw(st.integers(1, max(1, max_c // groups)))
        c = cg * groups
        f = groups * draw(st.integers(1, max(1, max_c // groups)))
    n = draw(st.integers(1, max_n))
    h, w = draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw))
    kh, kw = draw(st.integers(1, max_k)), draw(st.integers(1, max_k))
    # stride 1 half of the time: it is the only one the wide-grid path takes
    stride = (1, 1) if draw(st.booleans()) else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pad = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    dil = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    assume(h + 2 * pad[0] >= dil[0] * (kh - 1) + 1 and w + 2 * pad[1] >= dil[1] * (kw - 1) + 1)
    # ints where both entries agree, to exercise the scalar form too
    stride, pad, dil = (t[0] if t[0] == t[1] else t for t in (stride, pad, dil))
    return (n, c, h, w), (f, cg, kh, kw), stride, pad, dil, groups


def make(rng, xs, ws, dt, stride, pad, dil, groups, R):
    x = rng.standard_normal(xs).astype(dt)
    w = rng.standard_normal(ws).astype(dt)
    b = rng.standard_normal(ws[0]).astype(dt)
    y_shape = R.conv2d_forward(x[:1, :, :, :], w, b, stride, pad, dil, groups).shape
    dy = rng.standard_normal((xs[0],) + y_shape[1:]).astype(dt)
    return x, w, b, dy


@pytest.mark.parametrize("strat", sorted(STRATEGIES))
@given(cfg=conv_configs(), f32=st.booleans(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=30)
def test_conv_matches_reference(K, R, close, strat, cfg, f32, seed):
    xs, ws, stride, pad, dil, groups = cfg
    dt = np.float32 if f32 else np.float64
    x, w, b, dy = make(np.random.default_rng(seed), xs, ws, dt, stride, pad, dil, groups, R)
    hp = (stride, pad, dil, groups)
    with strategy(strat):
        y = K.conv2d_forward(x, w, b, *hp)
        grads = K.conv2d_backward(dy, x, w, *hp)
    close(y, R.conv2d_forward(x, w, b, *hp), what="y")
    for got, want, what in zip(grads, R.conv2d_backward(dy, x, w, *hp), ("dx", "dw", "db")):
        close(got, want, what=what)
    # A first layer skips dx; dw and db stay exactly the same.
    with strategy(strat):
        dx, dw, db = K.conv2d_backward(dy, x, w, *hp, need_dx=False)
    assert dx is None and np.array_equal(dw, grads[1]) and np.array_equal(db, grads[2])
    dx, dw, db = R.conv2d_backward(dy, x, w, *hp, need_dx=False)
    assert dx is None
    close(dw, grads[1], what="dw without dx")


@pytest.mark.parametrize("xs, ws, stride, pad", [
    ((2, 3, 9, 11), (300, 3, 3, 3), 2, 1),    # Fg > KC: dx sums over two blocks of filters
    ((1, 40, 7, 6), (5, 40, 3, 3), (2, 3), 1),  # Cg*KH*KW = 360 > KC: two blocks of taps
    ((1, 2, 40, 45), (9, 2, 2, 2), 1, 3),     # grid over NC columns: two column blocks
])
def test_conv_gemm_blocking_edges(K, R, close, rng, dtype, xs, ws, stride, pad):
    """Shapes past the GEMM's KC and NC blocks, every time (the hypothesis
    shapes reach past KC and NC only now and then)."""
    x, w, b, dy = make(rng, xs, ws, dtype, stride, pad, 1, 1, R)
    with strategy("gemm"):
        close(K.conv2d_forward(x, w, b, stride, pad), R.conv2d_forward(x, w, b, stride, pad))
        for got, want in zip(K.conv2d_backward(dy, x, w, stride, pad), R.conv2d_backward(dy, x, w, stride, pad)):
            close(got, want)


@pytest.mark.parametrize("min_cg", [1, 10**9])
@pytest.mark.parametrize("xs, ws, stride, pad, dil, groups", [
    ((3, 4, 9, 11), (6, 2, 3, 3), 1, 1, 1, 2),          # groups: each group's own taps and planes
    ((2, 3, 7, 6), (5, 3, 3, 2), 1, (3, 4), (2, 1), 1),  # pad wider than the kernel's reach: grid width OW
    ((2, 2, 5, 1), (3, 2, 2, 1), 1, (0, 2), 1, 1),       # one input column
    ((2, 13, 6, 7), (4, 13, 3, 3), (2, 1), 1, 1, 1),     # row stride only: col2im whatever is chosen
    ((1, 20, 12, 12), (300, 20, 3, 3), 1, 1, 1, 1),      # K = Fg*KK over several KC blocks
    # column strides above 1: dx one transposed convolution per stride phase
    ((2, 5, 9, 11), (6, 5, 3, 3), 2, 1, 1, 1),           # odd sizes: phases of unequal extent
    ((2, 4, 8, 10), (6, 4, 3, 3), 2, 0, 1, 1),           # no padding: each phase's first row and column
    ((2, 4, 9, 9), (3, 4, 5, 5), (1, 2), 2, 1, 1),       # column stride only, 5x5
    ((2, 3, 11, 13), (4, 3, 3, 3), 3, (2, 1), (1, 2), 1),  # stride 3, dilated columns
    ((2, 4, 9, 10), (5, 4, 2, 2), 4, 1, 1, 1),           # stride beyond the kernel: phases without taps
    ((2, 6, 8, 7), (4, 6, 1, 1), 2, 0, 1, 1),            # 1x1 stride 2: three phases of zeros
    ((3, 6, 10, 9), (8, 3, 3, 3), 2, 1, 1, 2),           # groups
    ((1, 13, 7, 8), (300, 13, 3, 3), 2, 1, 1, 1),        # K = Fg*taps over several KC blocks
])
def test_conv_gemm_dx_both_forms(K, R, close, rng, dtype, monkeypatch, min_cg, xs, ws, stride, pad, dil, groups):
    """The GEMM strategy's dx as the transposed convolution (min_cg 1: at
    stride 1 in one product, with a column stride per stride phase) and as
    col2im (min_cg huge) on the geometries each form's zero margins, shared
    row padding and phase extents must get right."""
    from numbanet.kernels import _tunables

    monkeypatch.setattr(_tunables, "DX_TRANSPOSED_MIN_CG", min_cg)
    x, w, b, dy = make(rng, xs, ws, dtype, stride, pad, dil, groups, R)
    hp = (stride, pad, dil, groups)
    with strategy("gemm"):
        close(K.conv2d_forward(x, w, b, *hp), R.conv2d_forward(x, w, b, *hp), what="y")
        got = K.conv2d_backward(dy, x, w, *hp)
    for g, want, what in zip(got, R.conv2d_backward(dy, x, w, *hp), ("dx", "dw", "db")):
        close(g, want, what=what)


@pytest.mark.parametrize("strat", sorted(STRATEGIES))
def test_conv_no_bias_and_noncontiguous(K, R, close, rng, strat):
    x = rng.standard_normal((3, 8, 9, 10))[:, ::2]  # (3, 4, 9, 10), strided
    w = np.asfortranarray(rng.standard_normal((6, 2, 3, 2)))
    with strategy(strat):
        y = K.conv2d_forward(x, w, None, 1, 1, 1, 2)
    close(y, R.conv2d_forward(x, w, None, 1, 1, 1, 2))
    assert y.flags.c_contiguous


@pytest.mark.parametrize("strat", sorted(STRATEGIES))
@pytest.mark.parametrize(
    "xs,ws,stride,pad,dil,groups",
    [
        ((2, 4, 6, 5), (4, 2, 3, 2), (2, 1), (1, 2), (1, 2), 2),
        ((3, 3, 5, 4), (3, 1, 2, 3), 1, 1, 1, 3),  # depthwise
        ((2, 2, 7, 6), (3, 2, 3, 3), 2, 0, (2, 1), 1),
    ],
)
def test_conv_gradient_check(K, rng, strat, xs, ws, stride, pad, dil, groups):
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    hp = (stride, pad, dil, groups)
    with strategy(strat):
        dy = rng.standard_normal(K.conv2d_forward(x, w, b, *hp).shape)

        def loss():
            return float((K.conv2d_forward(x, w, b, *hp) * dy).sum())

        dx, dw, db = K.conv2d_backward(dy, x, w, *hp)
        for analytic, var in ((dx, x), (dw, w), (db, b)):
            np.testing.assert_allclose(analytic, numerical_gradient(loss, var), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("strat", sorted(STRATEGIES))
def test_conv_backward_deterministic(K, rng, strat):
    x = rng.standard_normal((13, 8, 17, 15)).astype(np.float32)
    w = rng.standard_normal((12, 4, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((13, 12, 9, 15)).astype(np.float32)
    hp = ((2, 1), 1, 1, 2)
    with strategy(strat):
        first = K.conv2d_backward(dy, x, w, *hp)
        for _ in range(3):
            for a, b in zip(K.conv2d_backward(dy, x, w, *hp), first):
                assert np.array_equal(a, b)


@pytest.mark.parametrize("strat", sorted(STRATEGIES))
def test_conv_independent_of_thread_count(K, rng, strat):
    """Each strategy gives bitwise the same forward and backward results on
    all threads and on one."""
    import numba

    x = rng.standard_normal((11, 3, 20, 20)).astype(np.float32)
    w = rng.standard_normal((8, 3, 5, 5)).astype(np.float32)
    dy = rng.standard_normal((11, 8, 16, 16)).astype(np.float32)
    with strategy(strat):
        first = (K.conv2d_forward(x, w, None), *K.conv2d_backward(dy, x, w))
        old = numba.get_num_threads()
        try:
            numba.set_num_threads(1)
            again = (K.conv2d_forward(x, w, None), *K.conv2d_backward(dy, x, w))
        finally:
            numba.set_num_threads(old)
    for a, b in zip(again, first):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("cg, fg, stride, taps, positions, forward, backward", [
    (1, 1, 1, 9, 1024, True, True),       # depthwise: direct both ways
    (3, 32, 1, 27, 1024, False, False),   # CIFAR's stem: GEMM both ways
    (1, 30, 1, 25, 576, False, False),    # MNIST's 5x5: GEMM both ways
    (1, 30, 1, 9, 64, False, True),       # the 8x8 digits 3x3: backward direct (9 taps)
    (3, 16, 1, 27, 144, False, True),     # 27 taps on a small plane: backward direct
    (8, 16, 1, 72, 64, False, False),     # 72 taps: GEMM even on an 8x8 plane
    (3, 4, 2, 27, 1024, False, False),    # stride 2: always the GEMM
    (64, 64, 1, 576, 1024, False, False), # many channels: always the GEMM
])
def test_strategy_choice(cg, fg, stride, taps, positions, forward, backward):
    """The per-shape choice the measurements in kernels/conv.py settled on."""
    assert kconv._use_direct(cg, fg, stride, stride) is forward
    assert kconv._use_direct(cg, fg, stride, stride, taps, positions) is backward


@pytest.mark.parametrize("strat", sorted(STRATEGIES))
def test_conv_empty_batch(K, strat):
    x = np.zeros((0, 2, 5, 5), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    with strategy(strat):
        assert K.conv2d_forward(x, w, np.ones(3, np.float32)).shape == (0, 3, 3, 3)
        dx, dw, db = K.conv2d_backward(np.zeros((0, 3, 3, 3), np.float32), x, w)
        assert dx.shape == x.shape and not dw.any() and not db.any()
        assert K.conv2d_backward(np.zeros((0, 3, 3, 3), np.float32), x, w, need_dx=False)[0] is None


@pytest.mark.parametrize("strat", sorted(STRATEGIES))
@given(cfg=conv_configs(max_n=4, max_hw=20), f32=st.booleans(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=12)
def test_conv_matches_torch(K, close, strat, cfg, f32, seed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    xs, ws, stride, pad, dil, groups = cfg
    dt = np.float32 if f32 else np.float64
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dt)
    w = rng.standard_normal(ws).astype(dt)
    b = rng.standard_normal(ws[0]).astype(dt)
    xt, wt, bt = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, w, b))
    yt = F.conv2d(xt, wt, bt, stride=stride, padding=pad, dilation=dil, groups=groups)
    dy = rng.standard_normal(tuple(yt.shape)).astype(dt)
    yt.backward(torch.from_numpy(dy))
    with strategy(strat):
        y = K.conv2d_forward(x, w, b, stride, pad, dil, groups)
        dx, dw, db = K.conv2d_backward(dy, x, w, stride, pad, dil, groups)
    rtol = 1e-4 if f32 else 1e-10  # torch may pick other algorithms (Winograd, ...)
    close(y, yt.detach().numpy(), rtol=rtol, what="y")
    close(dx, xt.grad.numpy(), rtol=rtol, what="dx")
    close(dw, wt.grad.numpy(), rtol=rtol, what="dw")
    close(db, bt.grad.numpy(), rtol=rtol, what="db")


def _z(*shape, dtype=np.float64):
    return np.zeros(shape, dtype)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(x=_z(2, 3, 8, 8), w=_z(4, 2, 3, 3)), ValueError, r"w must have shape \(4, 3, \*, \*\)"),
        (dict(x=_z(2, 6, 8, 8), w=_z(4, 2, 3, 3), groups=4), ValueError, "groups=4 must divide the C=6"),
        (dict(x=_z(2, 6, 8, 8), w=_z(4, 3, 3, 3), groups=3), ValueError, "groups=3 must divide the F=4"),
        (dict(x=_z(2, 3, 4, 4), w=_z(4, 3, 5, 3)), ValueError, "larger than the padded input 4x4"),
        (dict(x=_z(2, 3, 4, 4), w=_z(4, 3, 3, 3), dilation=2), ValueError, "kernel spans 5x5"),
        (dict(x=_z(2, 3, 4, 4), w=_z(4, 3, 3, 3), stride=0), ValueError, "stride must be >= 1, got 0"),
        (dict(x=_z(2, 3, 4, 4), w=_z(4, 3, 3, 3), stride=(1, -1)), ValueError, r"stride\[1\] must be >= 1"),
        (dict(x=_z(2, 3, 4, 4), w=_z(4, 3, 3, 3), dilation=0), ValueError, "dilation must be >= 1"),
        (dict(x=_z(2, 3, 4, 4), w=_z(4, 3, 3, 3), pad=-1), ValueError, "pad must be >= 0"),
        (dict(x=_z(2, 3, 4, 4), w=_z(4, 3, 3, 3), groups=0), ValueError, "groups must be >= 1"),
        (dict(x=_z(2, 3, 4, 4), w=_z(4, 3, 3, 3), stride=1.5), TypeError, "stride must be an int"),
        (dict(x=_z(2, 3, 4, 4), w=_z(4, 3, 3, 3), pad=(1, 2, 3)), ValueError, r"pad must be an int or an \(h, w\) pair"),
        (dict(x=_z(3, 4, 4), w=_z(4, 3, 3, 3)), ValueError, "x must be 4-D"),
        (dict(x=_z(2, 3, 4, 4), w=_z(4, 3, 3)), ValueError, "w must be 4-D"),
        (dict(x=_z(2, 3, 4, 4, dtype=np.int32), w=_z(4, 3, 3, 3)), TypeError, "x must have dtype float32 or float64, got int32"),
        (dict(x=_z(2, 3, 4, 4), w=_z(4, 3, 3, 3, dtype=np.float32)), TypeError, "w has dtype float32 but"),
    ],
)
def test_conv_bad_input(K, kwargs, exc, match):
    kw = dict(kwargs)
    x, w = kw.pop("x"), kw.pop("w")
    b = np.zeros(w.shape[0], w.dtype) if w.ndim == 4 else None
    with pytest.raises(exc, match="^conv2d_forward: .*" + match):
        K.conv2d_forward(x, w, b, **kw)
    with pytest.raises(exc, match="^conv2d_backward: .*" + match):
        K.conv2d_backward(np.zeros((2, 4, 2, 2)), x, w, **kw)


def test_conv_bad_bias_and_dy(K):
    x, w = _z(2, 3, 6, 6), _z(4, 3, 3, 3)
    with pytest.raises(ValueError, match=r"conv2d_forward: b must have shape \(4,\)"):
        K.conv2d_forward(x, w, _z(3))
    with pytest.raises(TypeError, match="b has dtype float32"):
        K.conv2d_forward(x, w, _z(4, dtype=np.float32))
    with pytest.raises(ValueError, match=r"conv2d_backward: dy must have shape \(2, 4, 4, 4\)"):
        K.conv2d_backward(_z(2, 4, 6, 6), x, w)
    with pytest.raises(TypeError, match="conv2d_backward: need_dx must be True or False, got int 0"):
        K.conv2d_backward(_z(2, 4, 4, 4), x, w, need_dx=0)
    with pytest.raises(TypeError, match="dy must have dtype float32 or float64"):
        K.conv2d_backward(_z(2, 4, 4, 4, dtype=np.int64), x, w)


@pytest.mark.parametrize("strat", sorted(STRATEGIES))
@pytest.mark.parametrize("xs, ws, stride, pad", [
    ((3, 1, 10, 10), (10, 1, 3, 3), 1, 0),   # ch07/gradient_check's convolution, a batch of 3
    ((5, 4, 9, 7), (6, 2, 3, 2), (2, 1), 1),  # groups=2, strided, padded
])
def test_conv_calling_thread_branch_same_bits(K, rng, monkeypatch, dtype, strat, xs, ws, stride, pad):
    """Below CONV_PARALLEL_MIN_MACS (or with one task) the wrapper runs the
    kernel with one thread: bitwise the same forward and backward results as
    the parallel call, and the kernel really sees one thread then."""
    import numba

    from numbanet.kernels import _tunables

    groups = xs[1] // ws[1]
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    seen = []
    for name in ("_conv2d_forward_direct", "_conv2d_forward_gemm", "_conv2d_backward_direct", "_conv2d_backward_gemm"):
        real = getattr(kconv, name)

        def spy(*args, _real=real):
            seen.append(numba.get_num_threads())  # the threads the kernel is called with
            return _real(*args)

        monkeypatch.setattr(kconv, name, spy)

    def run(threshold):
        monkeypatch.setattr(_tunables, "CONV_PARALLEL_MIN_MACS", threshold)
        seen.clear()
        with strategy(strat):
            y = K.conv2d_forward(x, w, b, stride, pad, 1, groups)
            dy = np.cos(y)
            out = (y, *K.conv2d_backward(dy, x, w, stride, pad, 1, groups),
                   *K.conv2d_backward(dy, x, w, stride, pad, 1, groups, need_dx=False)[1:])
        return out, list(seen)

    threads = numba.get_num_threads()
    parallel, seen_parallel = run(0)
    serial, seen_serial = run(2**62)
    assert seen_serial == [1, 1, 1] and seen_parallel == [threads] * 3
    assert numba.get_num_threads() == threads  # restored
    for a, b_ in zip(serial, parallel):
        assert a.dtype == dtype and np.array_equal(a, b_)


def test_on_calling_thread_restores_the_count_after_an_error():
    import numba

    from numbanet.kernels._threads import on_calling_thread

    threads = numba.get_num_threads()

    def failing():
        assert numba.get_num_threads() == 1
        raise RuntimeError("kernel failed")

    with pytest.raises(RuntimeError, match="kernel failed"):
        on_calling_thread(failing)
    assert numba.get_num_threads() == threads


@pytest.mark.parametrize("w_", [7, 8, 9, 32])
@pytest.mark.parametrize("pw", [0, 1, 2, 3])
@pytest.mark.parametrize("sh, sw, ph", [(1, 2, 1), (2, 2, 0), (2, 2, 2), (3, 2, 1), (2, 3, 1)])
def test_phase_planes_are_the_padded_planes_split_by_stride(rng, w_, pw, sh, sw, ph):
    """``_pad_phases`` against the padded planes built and sliced by NumPy:
    every phase position holds ``x_pad[c, u*sh + a, v*sw + b]``, zero in the
    padding and past its edge. Column stride 2 with both column phases the
    same length (even padded width) takes the one-pass pair loop, an odd
    padded width the per-phase loops: both are here."""
    from numbanet.kernels import _conv_gemm as G

    c_, h_ = 3, 6
    xn = rng.standard_normal((c_, h_, w_)).astype(np.float32)
    hq = (h_ + 2 * ph + sh - 1) // sh
    wq = (w_ + 2 * pw + sw - 1) // sw
    out = np.zeros((c_ * sh * sw, hq * wq), np.float32)
    G._pad_phases(xn, ph, pw, sh, sw, hq, wq, out)
    xpad = np.zeros((c_, hq * sh, wq * sw), np.float32)  # padded, then zeros to whole phases
    xpad[:, ph : ph + h_, pw : pw + w_] = xn
    want = xpad.reshape(c_, hq, sh, wq, sw).transpose(0, 2, 4, 1, 3).reshape(c_ * sh * sw, hq * wq)
    np.testing.assert_array_equal(out, want)
