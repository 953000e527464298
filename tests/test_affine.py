import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from numbanet.nets import numerical_gradient

SHAPES = [
    # (x shape, M)
    ((0, 5), 3),
    ((1, 1), 1),
    ((2, 7), 3),
    ((13, 29), 17),
    ((64, 100), 65),
    ((257, 33), 10),
    ((5, 3, 4, 4), 11),  # 4-D input, as after a convolution
    ((3, 0), 4),  # D = 0
]


@pytest.mark.parametrize("xshape,m", SHAPES)
def test_affine_matches_reference(K, R, close, dtype, rng, xshape, m):
    d = int(np.prod(xshape[1:]))
    x = rng.standard_normal(xshape).astype(dtype)
    w = rng.standard_normal((d, m)).astype(dtype)
    b = rng.standard_normal(m).astype(dtype)
    dy = rng.standard_normal((xshape[0], m)).astype(dtype)
    close(K.affine_forward(x, w, b), R.affine_forward(x, w, b), what="y")
    for got, want, what in zip(K.affine_backward(dy, x, w), R.affine_backward(dy, x, w), "dx dw db".split()):
        close(got, want, what=what)
    full = K.affine_backward(dy, x, w)
    for impl in (K, R):  # a first layer skips dx; dw and db do not change
        dx, dw, db = impl.affine_backward(dy, x, w, need_dx=False)
        assert dx is None
        close(dw, full[1], what="dw without dx")
        close(db, full[2], what="db without dx")


@given(
    n=st.integers(0, 257),
    d=st.integers(1, 70),
    m=st.integers(1, 70),
    f32=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_affine_hypothesis(K, R, close, n, d, m, f32, seed):
    dt = np.float32 if f32 else np.float64
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(dt)
    w = rng.standard_normal((d, m)).astype(dt)
    b = rng.standard_normal(m).astype(dt)
    dy = rng.standard_normal((n, m)).astype(dt)
    close(K.affine_forward(x, w, b), R.affine_forward(x, w, b))
    for got, want in zip(K.affine_backward(dy, x, w), R.affine_backward(dy, x, w)):
        close(got, want)


def test_affine_noncontiguous_inputs(K, R, close, rng):
    x = rng.standard_normal((9, 14))[:, ::2]  # (9, 7), strided
    w = np.asfortranarray(rng.standard_normal((7, 5)))
    b = rng.standard_normal(10)[::2]
    dy = rng.standard_normal((5, 9)).T
    close(K.affine_forward(x, w, b), R.affine_forward(x, w, b))
    for got, want in zip(K.affine_backward(dy, x, w), R.affine_backward(dy, x, w)):
        close(got, want)


def test_affine_gradient_check(K, rng):
    x = rng.standard_normal((4, 2, 3))
    w = rng.standard_normal((6, 5))
    b = rng.standard_normal(5)
    dy = rng.standard_normal((4, 5))

    def loss():
        return float((K.affine_forward(x, w, b) * dy).sum())

    dx, dw, db = K.affine_backward(dy, x, w)
    for analytic, var in ((dx, x), (dw, w), (db, b)):
        numeric = numerical_gradient(loss, var)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-8)


def test_affine_deterministic(K, rng):
    x = rng.standard_normal((100, 300)).astype(np.float32)
    w = rng.standard_normal((300, 130)).astype(np.float32)
    dy = rng.standard_normal((100, 130)).astype(np.float32)
    first = K.affine_backward(dy, x, w)
    for _ in range(3):
        for a, b in zip(K.affine_backward(dy, x, w), first):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("shape", [(300, 200, 90), (40, 700, 333), (129, 257, 65)])
def test_affine_products_do_not_depend_on_how_they_are_split(shape):
    """Affine's products are cut into row or column blocks, one per thread;
    every element is summed in the same order whatever the cut."""
    from numbanet.kernels.affine import _matmul

    m, k, n = shape
    rng = np.random.default_rng(m)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    one = _matmul(a, False, b, False, np.empty((m, n), np.float32), 1)
    at, bt = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)  # stored transposed
    for blocks in (2, 3, 5):
        for a_, ta, b_, tb in ((a, False, b, False), (at, True, b, False), (a, False, bt, True), (at, True, bt, True)):
            assert np.array_equal(_matmul(a_, ta, b_, tb, np.empty((m, n), np.float32), blocks), one)
    np.testing.assert_allclose(one, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("threads", [2, 3, 4, 6])
def test_affine_backward_pair_matches_the_products_one_by_one(threads):
    """The backward pass's dx and dw computed at once (each product in
    ``threads // 2`` blocks, one parallel region) are bitwise the products
    computed one at a time on one thread."""
    from numbanet.kernels.affine import _matmul, _matmul_pair

    n, d, m = 129, 257, 65
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, d))
    w = rng.standard_normal((d, m))
    dy = rng.standard_normal((n, m))
    dx, dw = np.empty((n, d)), np.empty((d, m))
    _matmul_pair(dy, False, w, True, dx, x, True, dy, False, dw, threads)
    assert np.array_equal(dx, _matmul(dy, False, w, True, np.empty((n, d)), 1))
    assert np.array_equal(dw, _matmul(x, True, dy, False, np.empty((d, m)), 1))


@pytest.mark.parametrize(
    "args,exc,match",
    [
        (lambda z: (z((4,)), z((4, 3)), z((3,))), ValueError, "x must be .N, ...."),
        (lambda z: (z((2, 4)), z((5, 3)), z((3,))), ValueError, r"w must have shape \(4, \*\)"),
        (lambda z: (z((2, 4)), z((4, 3)), z((2,))), ValueError, r"b must have shape \(3,\)"),
        (lambda z: (z((2, 4)), z((4,)), z((3,))), ValueError, "w must be 2-D"),
        (lambda z: (z((2, 4)).astype(np.int64), z((4, 3)), z((3,))), TypeError, "x must have dtype float32 or float64, got int64"),
        (lambda z: (z((2, 4)), z((4, 3)).astype(np.float32), z((3,))), TypeError, "w has dtype float32 but x has dtype float64"),
        (lambda z: (z((2, 4)), z((4, 3)), None), TypeError, "b must be a float32 or float64 array, got None"),
        (lambda z: (z((2, 4)).astype(np.complex128), z((4, 3)), z((3,))), TypeError, "complex128"),
    ],
)
def test_affine_forward_bad_input(K, args, exc, match):
    x, w, b = args(np.ones)
    with pytest.raises(exc, match=match):
        K.affine_forward(x, w, b)


@pytest.mark.parametrize(
    "shapes,match",
    [
        (((4, 2), (4, 5), (6, 2)), r"w must have shape \(5, \*\)"),
        (((3, 2), (4, 5), (5, 3)), r"dy must have shape \(4, 3\)"),
        (((4, 3), (4, 5), (5,)), "w must be 2-D"),
    ],
)
def test_affine_backward_bad_input(K, shapes, match):
    dy, x, w = (np.ones(s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        K.affine_backward(dy, x, w)
    with pytest.raises(TypeError, match="dy must have dtype"):
        K.affine_backward(np.ones((4, 3), np.int32), np.ones((4, 5)), np.ones((5, 3)))
    with pytest.raises(TypeError, match="affine_backward: need_dx must be True or False, got str 'no'"):
        K.affine_backward(np.ones((4, 3)), np.ones((4, 5)), np.ones((5, 3)), need_dx="no")


@pytest.mark.parametrize("xshape, m", SHAPES + [((100, 784), 100), ((300, 64), 128)])  # the last two split over threads
def test_affine_relu_fused_is_bitwise_the_two_ops(K, R, close, dtype, rng, xshape, m):
    """``relu=True`` forward is ``relu_forward`` of the plain output, and the
    backward with ``relu_out`` is the plain backward of ``relu_backward``'s
    gradient, with and without dx: the same bits, NaN included. The NumPy
    twin agrees."""
    d = int(np.prod(xshape[1:]))
    x = rng.standard_normal(xshape).astype(dtype)
    w = rng.standard_normal((d, m)).astype(dtype)
    b = rng.standard_normal(m).astype(dtype)
    b[-1] = np.nan
    plain = K.affine_forward(x, w, b)
    fused = K.affine_forward(x, w, b, relu=True)
    r = K.relu_forward(plain)
    np.testing.assert_array_equal(fused, r)
    dy = rng.standard_normal(plain.shape).astype(dtype)
    for need_dx in (True, False):
        want = K.affine_backward(K.relu_backward(dy, r), x, w, need_dx=need_dx)
        got = K.affine_backward(dy, x, w, need_dx=need_dx, relu_out=fused)
        for g, wnt in zip(got, want):
            assert (g is None and wnt is None) or np.array_equal(g, wnt, equal_nan=True)
    ok = ~np.isnan(r)
    close(fused[ok], R.affine_forward(x, w, b, relu=True)[ok], what="y")
    rb = R.affine_backward(dy, x, w, relu_out=R.affine_forward(x, w, b, relu=True))
    for g, wnt, what in zip(got[1:], rb[1:], ["dw", "db"]):
        close(g, wnt, what=what)


def test_affine_relu_out_is_checked(K, rng):
    x, w, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 2)), rng.standard_normal(2)
    y = K.affine_forward(x, w, b, relu=True)
    dy = rng.standard_normal(y.shape)
    with pytest.raises(ValueError, match="relu_out"):
        K.affine_backward(dy, x, w, relu_out=y[:3])
    with pytest.raises(TypeError, match="relu_out"):
        K.affine_backward(dy, x, w, relu_out=y.astype(np.float32))
    with pytest.raises(TypeError, match="relu"):
        K.affine_forward(x, w, b, relu="yes")
