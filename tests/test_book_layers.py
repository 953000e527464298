"""numbanet.book's layers against the NumPy twins of the book's math.

Each layer's forward and backward on the kernels is compared with
:mod:`numbanet.reference` (``reference.book`` for the book-only math) in both
dtypes, then checked numerically in float64; Dropout must consume NumPy's
global random state exactly as the book's formula does.
"""

import numpy as np
import pytest

import numbanet.book.config as config
import numbanet.reference as reference
import numbanet.reference.book as rbook
from numbanet.book import layers as L
from numbanet.book.gradient import numerical_gradient
from numbanet.kernels import batchnorm_forward
from numbanet.kernels._examples import randn as _randn

INPUT_DTYPES = ["uint8", "int32", "int64", "bool", "float16", "float32", "float64"]


# --- layers with the same math as numbanet.reference --------------------------------


@pytest.mark.parametrize("shape, m", [((1, 3), 2), ((7, 2, 3), 5), ((64, 20), 33)])
def test_affine(close, dtype, rng, shape, m):
    d = int(np.prod(shape[1:]))
    W, b, x = _randn(rng, (d, m), dtype), _randn(rng, (m,), dtype), _randn(rng, shape, dtype)
    dout = _randn(rng, (shape[0], m), dtype)
    layer = L.Affine(W, b)
    close(layer.forward(x), reference.affine_forward(x, W, b))
    assert layer.x.shape == (shape[0], d) and layer.original_x_shape == shape
    dx = layer.backward(dout)
    rdx, rdW, rdb = reference.affine_backward(dout, x, W)
    close(dx, rdx), close(layer.dW, rdW), close(layer.db, rdb)
    assert layer.backward(dout, need_dx=False) is None  # a first layer's shortcut
    close(layer.dW, rdW), close(layer.db, rdb)


@pytest.mark.parametrize("shape", [(3,), (4, 5), (2, 3, 4, 5)])
def test_relu_sigmoid(close, dtype, rng, shape):
    x, dout = _randn(rng, shape, dtype), _randn(rng, shape, dtype)
    relu = L.Relu()
    assert relu.mask is None
    close(relu.forward(x), reference.relu_forward(x))
    np.testing.assert_array_equal(relu.mask, x <= 0)
    close(relu.backward(dout), reference.relu_backward(dout, x))
    sig = L.Sigmoid()
    y = sig.forward(x)
    close(y, reference.sigmoid_forward(x))
    close(sig.out, y)
    close(sig.backward(dout), reference.sigmoid_backward(dout, y))


@pytest.mark.parametrize("xs, ws, stride, pad", [((2, 3, 7, 7), (4, 3, 3, 3), 1, 0), ((1, 1, 8, 6), (2, 1, 5, 5), 1, 2),
                                                  ((3, 20, 6, 6), (5, 20, 2, 2), 2, 1)])
def test_convolution(close, dtype, rng, xs, ws, stride, pad):
    x, W, b = _randn(rng, xs, dtype), _randn(rng, ws, dtype), _randn(rng, ws[:1], dtype)
    layer = L.Convolution(W, b, stride, pad)
    y = layer.forward(x)
    close(y, reference.conv2d_forward(x, W, b, stride, pad), rtol=1e-4 if dtype == np.float32 else None)
    dout = _randn(rng, y.shape, dtype)
    dx = layer.backward(dout)
    for got, want in zip((dx, layer.dW, layer.db), reference.conv2d_backward(dout, x, W, stride, pad)):
        close(got, want, rtol=1e-4 if dtype == np.float32 else None)
    assert layer.backward(dout, need_dx=False) is None


# --- the book's own math: reference.book --------------------------------------------


@pytest.mark.parametrize("shape", [(1, 4), (2, 3), (7, 5), (4, 2, 3, 3)])
def test_batchnorm(close, dtype, rng, shape):
    d = int(np.prod(shape[1:]))
    gamma, beta = rng.uniform(0.5, 1.5, d).astype(dtype), _randn(rng, (d,), dtype)
    layer = L.BatchNormalization(gamma, beta, momentum=0.8)
    rm = rv = np.zeros(d, dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    for train in (True, True, False):
        x, dout = _randn(rng, shape, dtype) * 3 + 1, _randn(rng, shape, dtype)
        want, cache, rm, rv = rbook.batchnorm_flat_forward(x, gamma, beta, rm, rv, 0.8, train)
        close(layer.forward(x, train), want, rtol=tol)
        close(layer.running_mean, rm, rtol=tol), close(layer.running_var, rv, rtol=tol)
        dx = layer.backward(dout)
        for got, want in zip((dx, layer.dgamma, layer.dbeta), rbook.batchnorm_flat_backward(dout, cache)):
            close(got, want, rtol=tol)
    assert layer.batch_size == shape[0] and layer.input_shape == shape


def test_batchnorm_kernel_biased_running_var(close, dtype, rng):
    # The kernel option the book's layer relies on, against the reference.
    for shape in [(1, 3), (5, 4), (2, 3, 2, 2)]:
        c = shape[1]
        args = (_randn(rng, shape, dtype), np.ones(c, dtype), np.zeros(c, dtype), np.zeros(c, dtype),
                np.ones(c, dtype), 0.9, 1e-6, True)
        for got, want in zip(batchnorm_forward(*args, unbiased=False), reference.batchnorm_forward(*args, unbiased=False)):
            close(got, want)
    one = (np.ones((1, 3), dtype),) + args[1:]
    batchnorm_forward(*one, unbiased=False)  # a batch of one has a (biased) variance: 0
    with pytest.raises(ValueError, match="batchnorm_forward: training needs more than 1 value"):
        batchnorm_forward(*one)  # but no unbiased one


def test_batchnorm_batch_of_one_and_given_running_stats(rng):
    layer = L.BatchNormalization(np.ones(3), np.full(3, 0.5), 0.9, np.ones(3), np.full(3, 4.0))
    out = layer.forward(np.array([[1.0, -2.0, 3.0]]))
    np.testing.assert_array_equal(out, np.full((1, 3), 0.5))  # (x - mu) is exactly 0
    np.testing.assert_allclose(layer.running_mean, [1.0, 0.7, 1.2])
    np.testing.assert_allclose(layer.running_var, [3.6, 3.6, 3.6])  # the batch's variance is 0


@pytest.mark.parametrize("xs, args", [((2, 3, 6, 6), (2, 2)), ((2, 2, 7, 7), (3, 3)), ((1, 3, 5, 5), (3, 3, 1)),
                                      ((2, 2, 6, 5), (2, 3, 1, 1)), ((1, 1, 4, 4), (1, 1))])
def test_pooling(close, dtype, rng, xs, args):
    # Rounded inputs make ties, so the first-maximum rule is exercised.
    x = np.round(_randn(rng, xs, dtype) * 2) / 2
    layer = L.Pooling(*args)
    y = layer.forward(x)
    want, arg = rbook.maxpool_book_forward(x, *args)
    close(y, want)
    np.testing.assert_array_equal(layer.arg_max, arg)
    dout = _randn(rng, y.shape, dtype)
    close(layer.backward(dout), rbook.maxpool_book_backward(dout, arg, xs, *args))


@pytest.mark.parametrize("form", ["index", "index_n1", "uint8", "onehot", "onehot_int", "1d_index", "1d_scalar",
                                  "1d_onehot"])
def test_softmax_with_loss_label_forms(close, dtype, rng, form):
    n, k = (1, 6) if form.startswith("1d") else (5, 4)
    index = rng.integers(0, k, n)
    t = {"index": index, "index_n1": index[:, None], "uint8": index.astype(np.uint8),
         "onehot": np.eye(k, dtype=dtype)[index], "onehot_int": np.eye(k, dtype=int)[index],
         "1d_index": index, "1d_scalar": index[0], "1d_onehot": np.eye(k)[index[0]]}[form]
    x = _randn(rng, (k,) if form.startswith("1d") else (n, k), dtype) * 3
    layer = L.SoftmaxWithLoss()
    loss = layer.forward(x, t)
    want_loss, want_y = rbook.softmax_loss_forward(x, t)
    close(loss, want_loss), close(layer.y, want_y)
    assert layer.t is t
    close(layer.backward(), rbook.softmax_loss_backward(want_y, t))
    close(layer.backward(2.5), rbook.softmax_loss_backward(want_y, t, 2.5))


def test_softmax_loss_has_the_books_delta():
    layer = L.SoftmaxWithLoss()
    # A confident correct prediction: -log(1 + 1e-7) < 0, where an exact
    # cross-entropy is 0 to rounding.
    loss = layer.forward(np.array([[0.0, 800.0]]), np.array([1]))
    assert loss == pytest.approx(-np.log(1 + 1e-7), rel=1e-9)


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4, 4)])
def test_dropout_draws_like_the_book(close, dtype, shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    layer = L.Dropout(0.3)
    np.random.seed(7)
    y = layer.forward(x)
    after_layer = np.random.random_sample()
    np.random.seed(7)
    want, keep = rbook.dropout_forward(x, 0.3)
    assert np.random.random_sample() == after_layer  # the same draws consumed
    close(y, want)
    np.testing.assert_array_equal(layer.mask, keep)
    close(layer.backward(x), rbook.dropout_backward(x, keep))
    state = np.random.get_state()[1].copy()
    close(layer.forward(x, train_flg=False), rbook.dropout_forward(x, 0.3, False)[0])
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # inference draws nothing


# --- dtypes, gradient freshness, numerical gradients --------------------------------


def _layer_cases(dt, rng):
    """(layer, input shape, extra forward args) for every layer, parameters in ``dt``."""
    p = lambda *s: _randn(rng, s, dt)  # noqa: E731
    return [
        (L.Affine(p(12, 3), p(3)), (2, 3, 4), ()),
        (L.Relu(), (2, 5), ()),
        (L.Sigmoid(), (2, 5), ()),
        (L.Dropout(0.4), (2, 5), (True,)),
        (L.BatchNormalization(p(12), p(12)), (3, 3, 2, 2), (True,)),
        (L.Convolution(p(2, 1, 3, 3), p(2)), (2, 1, 5, 5), ()),
        (L.Pooling(2, 2), (2, 1, 4, 4), ()),
    ]


@pytest.mark.parametrize("param_dt", ["float32", "float64"])
def test_inputs_of_any_real_dtype_are_cast(close, rng, param_dt):
    pdt = np.dtype(param_dt)
    for layer, shape, extra in _layer_cases(pdt, rng):
        x64 = rng.integers(0, 3, shape).astype(np.float64)  # exact in every input dtype (bool: 0/1)
        for in_dt in INPUT_DTYPES:
            x = x64.astype(in_dt)
            free = not hasattr(layer, "W") and not hasattr(layer, "gamma")
            want_dt = x.dtype if free and x.dtype in (np.float32, np.float64) else (
                np.dtype(config.dtype) if free else pdt)
            np.random.seed(0)
            y = layer.forward(x, *extra)
            np.random.seed(0)
            y_ref = layer.forward(x.astype(want_dt), *extra)
            assert y.dtype == want_dt, (type(layer).__name__, in_dt)
            close(y, y_ref, what=f"{type(layer).__name__} {in_dt}")
            assert layer.backward(np.ones_like(y)).dtype == want_dt
    sm = L.SoftmaxWithLoss()
    for in_dt in INPUT_DTYPES:
        sm.forward(np.array([[0, 1, 2], [2, 1, 1]], dtype=in_dt), np.array([2, 0]))
        assert sm.backward().dtype in (np.float32, np.float64)


def test_config_dtype_for_layers_without_parameters(monkeypatch):
    monkeypatch.setattr(config, "dtype", "float32")
    assert L.Relu().forward(np.arange(3, dtype=np.uint8)[None]).dtype == np.float32
    assert L.Relu().forward(np.zeros((1, 2))).dtype == np.float64  # floats kept
    monkeypatch.setattr(config, "dtype", "float16")
    with pytest.raises(ValueError, match="config.dtype"):
        config.float_dtype()


def test_backward_returns_fresh_gradients(rng):
    for layer, shape, extra in _layer_cases(np.dtype(np.float64), rng):
        y = layer.forward(_randn(rng, shape, np.float64), *extra)
        first = layer.backward(np.ones_like(y))
        grads = {k: getattr(layer, k).copy() for k in ("dW", "db", "dgamma", "dbeta") if hasattr(layer, k)}
        kept = {k: getattr(layer, k) for k in grads}
        first_copy = first.copy()
        layer.forward(_randn(rng, shape, np.float64), *extra)
        layer.backward(np.full_like(y, 3.0))
        np.testing.assert_array_equal(first, first_copy)
        for k in grads:
            np.testing.assert_array_equal(kept[k], grads[k])
            assert getattr(layer, k) is not kept[k]


def _check_grad(forward, backward, arrays, rng, rtol=1e-6):
    """Numerical (book's numerical_gradient, f(x) convention) vs analytic
    gradients of ``sum(forward() * w)`` with respect to each named array."""
    w = rng.standard_normal(forward().shape)
    analytic = backward(w)
    for name, a in arrays.items():
        num = numerical_gradient(lambda _: float(np.sum(forward() * w)), a)
        np.testing.assert_allclose(analytic[name], num, rtol=rtol, atol=1e-7, err_msg=name)


def test_numerical_gradients_float64(rng):
    x = rng.standard_normal((3, 2, 3))
    aff = L.Affine(rng.standard_normal((6, 4)), rng.standard_normal(4))
    _check_grad(lambda: aff.forward(x), lambda w: {"x": aff.backward(w), "W": aff.dW, "b": aff.db},
                {"x": x, "W": aff.W, "b": aff.b}, rng)

    for shape in [(4, 3), (1, 5), (3, 2, 2, 2)]:
        xb = rng.standard_normal(shape)
        d = int(np.prod(shape[1:]))
        bn = L.BatchNormalization(rng.uniform(0.5, 1.5, d), rng.standard_normal(d))
        _check_grad(lambda: bn.forward(xb), lambda w: {"x": bn.backward(w), "g": bn.dgamma, "b": bn.dbeta},
                    {"x": xb, "g": bn.gamma, "b": bn.beta}, rng)

    xc = rng.standard_normal((2, 2, 5, 5))
    conv = L.Convolution(rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3), stride=2, pad=1)
    _check_grad(lambda: conv.forward(xc), lambda w: {"x": conv.backward(w), "W": conv.dW, "b": conv.db},
                {"x": xc, "W": conv.W, "b": conv.b}, rng)

    xp = rng.permutation(50).reshape(1, 2, 5, 5) / 7.0  # distinct values: max is differentiable
    pool = L.Pooling(3, 3, stride=1)
    _check_grad(lambda: pool.forward(xp), lambda w: {"x": pool.backward(w)}, {"x": xp}, rng)

    xs = rng.standard_normal((4, 5))
    for layer in (L.Sigmoid(), L.Relu()):
        _check_grad(lambda: layer.forward(xs), lambda w: {"x": layer.backward(w)}, {"x": xs}, rng)

    t = np.array([0, 3, 1, 1])
    sm = L.SoftmaxWithLoss()
    # The book's 1e-7 inside the log is not differentiated (as the book): a
    # loose tolerance covers it.
    num = numerical_gradient(lambda _: sm.forward(xs, t), xs)
    sm.forward(xs, t)
    np.testing.assert_allclose(sm.backward(), num, rtol=1e-5, atol=1e-7)


def test_scalar_bias_broadcasts_as_in_the_book(rng):
    """The book adds ``b`` with NumPy broadcasting; ch07/apply_filter passes ``b = 0``."""
    x = rng.standard_normal((2, 1, 6, 6))
    w = rng.standard_normal((3, 1, 3, 3))
    got = L.Convolution(w, 0.5).forward(x)
    want = L.Convolution(w, np.full(3, 0.5)).forward(x)
    np.testing.assert_array_equal(got, want)
    wa = rng.standard_normal((36, 4))
    np.testing.assert_array_equal(L.Affine(wa, 1.0).forward(x), L.Affine(wa, np.ones(4)).forward(x))


def test_star_import_hands_scripts_what_the_books_module_does():
    ns = {}
    exec("from numbanet.book.layers import *", ns)
    for name in ("np", "im2col", "col2im", "softmax", "cross_entropy_error", "Affine", "Pooling"):
        assert name in ns, name
