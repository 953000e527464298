"""Sequential, gradient checks of every layer type, save/load, Trainer, data loaders."""

import gzip

import numpy as np
import pytest

from numbanet.layers import Affine, BatchNormalization, Dropout, Flatten, Relu, Sigmoid, SoftmaxWithLoss
from numbanet.nets import Sequential, Trainer, gradient_check, load_mnist, read_idx


def _affine(rng, d, m, dt=np.float64, backend=None):
    w = rng.standard_normal((d, m)) * np.sqrt(2.0 / d)
    return Affine(w.astype(dt), (rng.standard_normal(m) * 0.1).astype(dt), backend=backend)


def _bn(rng, c, dt=np.float64, backend=None):
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.standard_normal(c) * 0.1
    return BatchNormalization(gamma.astype(dt), beta.astype(dt), backend=backend)


def _mlp(rng, dt=np.float64, backend=None, dropout=0.3):
    """Flatten - Affine - BN - Relu - Dropout - Affine - Sigmoid - Affine, 12 -> 4."""
    kw = {"backend": backend}
    return Sequential(
        Flatten(**kw), _affine(rng, 12, 9, dt, backend), _bn(rng, 9, dt, backend), Relu(**kw),
        Dropout(dropout, seed=3, **kw), _affine(rng, 9, 7, dt, backend), Sigmoid(**kw),
        _affine(rng, 7, 4, dt, backend),
    )


# -- Sequential -------------------------------------------------------------------


def test_sequential_names_are_the_layers_arrays(rng):
    net = _mlp(rng)
    assert list(net.params) == ["1.W", "1.b", "2.gamma", "2.beta", "5.W", "5.b", "7.W", "7.b"]
    assert net.params["1.W"] is net.layers[1].W
    assert net.grads["2.gamma"] is net.layers[2].dgamma
    assert list(net.buffers) == ["2.running_mean", "2.running_var"]
    x = rng.standard_normal((6, 3, 2, 2))
    t = rng.integers(0, 4, 6)
    grads = net.gradient(x, t)
    assert grads["1.W"] is net.layers[1].dW  # written in place
    assert np.isfinite(net.last_loss)


def test_gradient_stops_at_the_first_parameter_layer(rng):
    """No gradient flows into the data: layers before the first one with
    parameters are not run backwards, and that one skips its dx; the
    gradients equal those of a full backward pass, bit for bit."""
    net = _mlp(rng, dropout=0.0)
    x = rng.standard_normal((6, 3, 2, 2))
    t = rng.integers(0, 4, 6)
    calls = []
    flatten, first = net.layers[0], net.layers[1]
    flatten.backward = lambda dout: calls.append("flatten")
    first_backward = first.backward
    first.backward = lambda dout, **kw: calls.append(kw) or first_backward(dout, **kw)
    grads = {k: g.copy() for k, g in net.gradient(x, t).items()}
    assert calls == [{"need_dx": False}]
    # the full pass, by hand
    net.loss(x, t, train_flg=True)
    dout = net.last_layer.backward(1)
    for layer in reversed(net.layers[1:]):
        dout = first_backward(dout) if layer is first else layer.backward(dout)
    assert dout.shape == (6, 12)
    for k, g in net.grads.items():
        assert np.array_equal(g, grads[k]), k


def test_sequential_one_hot_labels_and_accuracy(rng):
    net = _mlp(rng, dropout=0.0)
    x = rng.standard_normal((23, 12))
    t = rng.integers(0, 4, 23)
    onehot = np.eye(4)[t]
    assert net.loss(x, t) == pytest.approx(net.loss(x, onehot), rel=1e-12)
    want = float(np.mean(np.argmax(net.predict(x), axis=1) == t))
    for bs in (1, 5, 100):
        assert net.accuracy(x, t, batch_size=bs) == want
        assert net.accuracy(x, onehot, batch_size=bs) == want
    with pytest.raises(ValueError, match="x has 23 samples but t has 22"):
        net.accuracy(x, t[:-1])


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda rng: [_affine(rng, 12, 5)], id="affine"),
        pytest.param(lambda rng: [_affine(rng, 12, 6), Relu(), _affine(rng, 6, 5)], id="relu"),
        pytest.param(lambda rng: [_affine(rng, 12, 6), Sigmoid(), _affine(rng, 6, 5)], id="sigmoid"),
        pytest.param(lambda rng: [_affine(rng, 12, 6), _bn(rng, 6), _affine(rng, 6, 5)], id="batchnorm1d"),
        pytest.param(lambda rng: [_affine(rng, 12, 6), Dropout(0.5, seed=0), _affine(rng, 6, 5)], id="dropout"),
        pytest.param(lambda rng: [Flatten(), _affine(rng, 12, 5)], id="flatten"),
    ],
)
def test_gradient_check_each_layer(rng, make):
    net = Sequential(*make(rng))
    x = rng.standard_normal((5, 3, 2, 2))
    t = rng.integers(0, 5, 5)
    errors = gradient_check(net, x, t)
    assert set(errors) == set(net.params)
    assert max(errors.values()) < 1e-6, errors


def test_gradient_check_batchnorm2d_in_a_network(rng):
    # 4-D batch norm (per channel) between reshapes of an affine map.
    class Reshape:
        uses_train_flg = False
        params = grads = buffers = {}

        def __init__(self, shape):
            self.shape = shape

        def forward(self, x):
            self.in_shape = x.shape
            return x.reshape(self.shape)

        def backward(self, dout):
            return dout.reshape(self.in_shape)

    net = Sequential(_affine(rng, 6, 24), Reshape((4, 3, 2, 4)), _bn(rng, 3), Relu(), _affine(rng, 24, 5))
    errors = gradient_check(net, rng.standard_normal((4, 6)), rng.integers(0, 5, 4))
    assert max(errors.values()) < 1e-6, errors


def test_gradient_check_restores_state_and_detects_wrong_gradients(rng):
    net = _mlp(rng)
    x = rng.standard_normal((8, 12))
    t = rng.integers(0, 4, 8)
    before = {k: v.copy() for k, v in net.buffers.items()}
    assert max(gradient_check(net, x, t).values()) < 1e-6
    for k, v in net.buffers.items():
        np.testing.assert_array_equal(v, before[k])
    assert net.layers[4].reuse_mask is False

    class WrongRelu(Relu):
        def backward(self, dout):
            return 1.1 * super().backward(dout)

    bad = Sequential(_affine(rng, 12, 6), WrongRelu(), _affine(rng, 6, 4))
    assert gradient_check(bad, x, t)["0.W"] > 1e-2
    with pytest.raises(TypeError, match="float64"):
        gradient_check(_mlp(rng, np.float32), x.astype(np.float32), t)


def test_reference_backend_network_matches_kernels(K, R, rng):
    seed = int(rng.integers(2**31))
    nets = [_mlp(np.random.default_rng(seed), backend=b, dropout=0.0) for b in (K, R)]
    x = rng.standard_normal((16, 12))
    t = rng.integers(0, 4, 16)
    gk, gr = (n.gradient(x, t) for n in nets)
    assert nets[0].last_loss == pytest.approx(nets[1].last_loss, rel=1e-12)
    for k in gk:
        np.testing.assert_allclose(gk[k], gr[k], rtol=1e-10, atol=1e-12)


def test_save_load_roundtrip(tmp_path, rng):
    a = _mlp(np.random.default_rng(1))
    x = rng.standard_normal((10, 12))
    a.gradient(x, rng.integers(0, 4, 10))  # moves the running statistics
    a.save(tmp_path / "w.npz")
    b = _mlp(np.random.default_rng(2))
    assert not np.array_equal(a.predict(x), b.predict(x))
    b.load(tmp_path / "w.npz")
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    other = Sequential(_affine(rng, 12, 4))
    with pytest.raises(ValueError, match="does not match"):
        other.load(tmp_path / "w.npz")


# -- Trainer -----------------------------------------------------------------------


class _PlainSGD:
    def __init__(self, lr):
        self.lr = lr

    def update(self, params, grads):
        for k in params:
            params[k] -= self.lr * grads[k]


def _blobs(rng, n):
    t = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 4)) * 0.3 + np.eye(3, 4)[t] * 2
    return x, t


def test_trainer_history_and_determinism(rng):
    x, t = _blobs(rng, 95)
    xt, tt = _blobs(rng, 30)
    runs = []
    for _ in range(2):
        r = np.random.default_rng(0)
        net = Sequential(_affine(r, 4, 8), Relu(), _affine(r, 8, 3))
        h = Trainer(net, _PlainSGD(0.3), x, t, xt, tt, epochs=8, batch_size=20, seed=5, quiet=True).train()
        runs.append((h, net.params["0.W"].copy()))
    (h, w0), (h2, w1) = runs
    np.testing.assert_array_equal(w0, w1)
    assert [r["epoch"] for r in h] == list(range(1, 9))
    assert set(h[0]) == {"epoch", "train_loss", "train_acc", "test_acc", "seconds", "eval_seconds"}
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert h[-1]["test_acc"] > 0.9
    assert [r["train_loss"] for r in h] == [r["train_loss"] for r in h2]


def test_trainer_visits_every_sample_once_per_epoch(rng):
    seen = []

    class Spy(Sequential):
        def gradient(self, x, t):
            seen.append(t.copy())
            return super().gradient(x, t)

    # Labels are sample ids here, so a batch's labels say which samples it held.
    x = rng.standard_normal((23, 4))
    net = Spy(_affine(rng, 4, 23))
    Trainer(net, _PlainSGD(0.0), x, np.arange(23), x, np.arange(23), epochs=2, batch_size=5, seed=0,
            quiet=True).train()
    assert [len(s) for s in seen] == [5, 5, 5, 5, 3] * 2
    e1, e2 = np.concatenate(seen[:5]), np.concatenate(seen[5:])
    assert sorted(e1) == list(range(23)) and sorted(e2) == list(range(23))
    assert not np.array_equal(e1, e2)  # reshuffled each epoch


def test_trainer_rejects_bad_data(rng):
    net = Sequential(_affine(rng, 4, 3))
    x, t = _blobs(rng, 10)
    opt = _PlainSGD(0.1)
    with pytest.raises(ValueError, match="x_train has 10 samples but t_train has 9"):
        Trainer(net, opt, x, t[:-1], x, t)
    with pytest.raises(ValueError, match="x_test has 10 samples but t_test has 8"):
        Trainer(net, opt, x, t, x, t[:-2])
    with pytest.raises(ValueError, match="train set is empty"):
        Trainer(net, opt, x[:0], t[:0], x, t)
    with pytest.raises(ValueError, match="test set is empty"):
        Trainer(net, opt, x, t, x[:0], t[:0])
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        Trainer(net, opt, x, t, x, t, batch_size=0)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        Trainer(net, opt, x, t, x, t, epochs=0)


def test_trainer_prints_epochs_unless_quiet(rng, capsys):
    net = Sequential(_affine(rng, 4, 3))
    x, t = _blobs(rng, 10)
    Trainer(net, _PlainSGD(0.1), x, t, x, t, epochs=2, batch_size=4).train()
    out = capsys.readouterr().out
    assert "epoch   1" in out and "epoch   2" in out
    Trainer(net, _PlainSGD(0.1), x, t, x, t, epochs=2, batch_size=4, quiet=True).train()
    assert capsys.readouterr().out == ""


# -- data --------------------------------------------------------------------------


def _write_idx(path, arr, code=0x08):
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    data = header + arr.astype(">u1" if code == 0x08 else ">i4").tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_idx(tmp_path, rng, gz):
    sfx = ".gz" if gz else ""
    xtr = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    ttr = rng.integers(0, 10, 7, dtype=np.uint8)
    xte = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    tte = rng.integers(0, 10, 3, dtype=np.uint8)
    _write_idx(tmp_path / f"train-images-idx3-ubyte{sfx}", xtr)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{sfx}", ttr)
    _write_idx(tmp_path / f"t10k-images.idx3-ubyte{sfx}", xte)  # the dotted spelling also works
    _write_idx(tmp_path / f"t10k-labels.idx1-ubyte{sfx}", tte)
    (a, b), (c, d) = load_mnist(tmp_path)
    assert a.shape == (7, 1, 28, 28) and a.dtype == np.float32 and c.shape == (3, 1, 28, 28)
    np.testing.assert_array_equal(a[:, 0], xtr.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(b, ttr)
    np.testing.assert_array_equal(d, tte)
    assert b.dtype == np.int64 and 0 <= a.min() and a.max() <= 1


def test_load_mnist_npz_and_errors(tmp_path, rng):
    x = rng.integers(0, 256, (5, 784), dtype=np.uint8)
    np.savez(tmp_path / "m.npz", x_train=x, y_train=np.arange(5), x_test=x[:2], y_test=np.arange(2))
    (a, b), (c, d) = load_mnist(tmp_path / "m.npz", dtype=np.float64)
    assert a.shape == (5, 1, 28, 28) and a.dtype == np.float64 and list(d) == [0, 1]
    with pytest.raises(FileNotFoundError):
        load_mnist(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError, match="no train"):
        load_mnist(tmp_path)  # a folder without IDX files
    (tmp_path / "bad-idx").write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad-idx")
    _write_idx(tmp_path / "short", np.zeros((2, 3), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match="should hold 6 bytes"):
        read_idx(tmp_path / "short")
    _write_idx(tmp_path / "ints", np.arange(6).reshape(2, 3), code=0x0C)
    np.testing.assert_array_equal(read_idx(tmp_path / "ints"), np.arange(6).reshape(2, 3))


def test_load_digits_split():
    pytest.importorskip("sklearn")
    from numbanet.nets import load_digits

    (xtr, ttr), (xte, tte) = load_digits()
    assert xtr.shape == (1438, 1, 8, 8) and xte.shape == (359, 1, 8, 8)
    assert xtr.dtype == np.float32 and ttr.dtype == np.int64
    assert 0 <= xtr.min() and xtr.max() <= 1
    assert np.abs(np.bincount(tte) - 36).max() <= 1  # stratified
    (x2, t2), _ = load_digits()
    np.testing.assert_array_equal(xtr, x2)  # fixed split
    (x3, _), _ = load_digits(seed=1)
    assert not np.array_equal(xtr, x3)


def test_default_loss_is_softmax(rng):
    net = Sequential(_affine(rng, 4, 3))
    assert isinstance(net.last_layer, SoftmaxWithLoss)
