"""The book's networks and Trainer in numbanet.book.

- seeded initialisation: the same numbers as a twin drawing from
  ``np.random`` the way the book's constructors do (one ``randn`` per weight
  array, in order, times the scale), in float64 and, cast, under the float32
  switch;
- ``gradient()`` against the numerical gradient in float64 on tiny configs,
  and arrays it returned surviving the next call;
- ``load_params`` on a pickle written in the book's layout (a dict of
  float64 arrays);
- the Trainer's attributes, printed lines and ``np.random`` batch draws.
"""

import pickle
import re

import numpy as np
import pytest

import numbanet.book.config as config
from numbanet.book.deep_convnet import DeepConvNet
from numbanet.book.multi_layer_net import MultiLayerNet
from numbanet.book.multi_layer_net_extend import MultiLayerNetExtend
from numbanet.book.optimizer import SGD
from numbanet.book.simple_convnet import SimpleConvNet
from numbanet.book.trainer import Trainer
from numbanet.book.two_layer_net import TwoLayerNet

SEED = 42


def _twin_init(shapes_scales):
    """The book's draws: ``scale * randn(*shape)`` per weight, in order."""
    np.random.seed(SEED)
    return [scale * np.random.randn(*shape) for shape, scale in shapes_scales]


def _tiny_conv(**kw):
    return SimpleConvNet(input_dim=(1, 6, 6), conv_param={"filter_num": 2, "filter_size": 3, "pad": 0, "stride": 1},
                         hidden_size=4, output_size=3, **kw)


# name -> (constructor, [(weight shape, scale)], other parameter names and shapes)
NETS = {
    "two_layer": (lambda: TwoLayerNet(6, 5, 3, weight_init_std=0.1), [((6, 5), 0.1), ((5, 3), 0.1)]),
    "multi_layer_he": (lambda: MultiLayerNet(6, [5, 4], 3), [((6, 5), np.sqrt(2 / 6)), ((5, 4), np.sqrt(2 / 5)), ((4, 3), np.sqrt(2 / 4))]),
    "multi_layer_xavier": (lambda: MultiLayerNet(6, [5], 3, activation="sigmoid", weight_init_std="Xavier"),
                           [((6, 5), np.sqrt(1 / 6)), ((5, 3), np.sqrt(1 / 5))]),
    "extend_bn": (lambda: MultiLayerNetExtend(6, [5, 4], 3, weight_init_std=0.3, use_batchnorm=True),
                  [((6, 5), 0.3), ((5, 4), 0.3), ((4, 3), 0.3)]),
    "simple_conv": (lambda: _tiny_conv(weight_init_std=0.3), [((2, 1, 3, 3), 0.3), ((8, 4), 0.3), ((4, 3), 0.3)]),
}


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_seeded_init_draws_as_the_book(monkeypatch, name, dtype):
    monkeypatch.setattr(config, "dtype", dtype)
    make, shapes_scales = NETS[name]
    want = _twin_init(shapes_scales)
    np.random.seed(SEED)
    net = make()
    for i, w in enumerate(want, start=1):
        got = net.params["W" + str(i)]
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, w.astype(dtype))
        b = net.params["b" + str(i)]
        assert b.dtype == np.dtype(dtype) and not b.any() and b.shape == (w.shape[0 if w.ndim == 4 else 1],)
    # nothing else drawn: the next draw is the twin's next one
    assert np.random.rand() == (_twin_init(shapes_scales), np.random.rand())[1]


def test_deep_convnet_init_draws_as_the_book():
    fan_in = [9, 144, 144, 288, 288, 576, 1024, 50]
    shapes = [(16, 1, 3, 3), (16, 16, 3, 3), (32, 16, 3, 3), (32, 32, 3, 3), (64, 32, 3, 3), (64, 64, 3, 3),
              (1024, 50), (50, 10)]
    want = _twin_init([(s, np.sqrt(2.0 / f)) for s, f in zip(shapes, fan_in)])
    np.random.seed(SEED)
    net = DeepConvNet()
    assert list(net.params) == [p + str(i) for i in range(1, 9) for p in "Wb"]
    for i, w in enumerate(want, start=1):
        np.testing.assert_array_equal(net.params["W" + str(i)], w)
    assert [type(net.layers[i]).__name__ for i in DeepConvNet._WEIGHT_LAYERS] == ["Convolution"] * 6 + ["Affine"] * 2


def test_extend_parameter_names_and_layers():
    net = MultiLayerNetExtend(6, [5, 4], 3, use_batchnorm=True, use_dropout=True)
    assert list(net.params) == ["W1", "b1", "W2", "b2", "W3", "b3", "gamma1", "beta1", "gamma2", "beta2"]
    assert list(net.layers) == ["Affine1", "BatchNorm1", "Activation_function1", "Dropout1",
                                "Affine2", "BatchNorm2", "Activation_function2", "Dropout2", "Affine3"]
    assert net.layers["BatchNorm1"].gamma is net.params["gamma1"]


def _data(rng, shape, n=4, k=3, one_hot=False):
    x = rng.random((n, *shape))
    t = rng.integers(0, k, n)
    return x, (np.eye(k)[t] if one_hot else t)


@pytest.mark.parametrize("name, one_hot", [("two_layer", True), ("multi_layer_he", False),
                                           ("multi_layer_xavier", True), ("extend_bn", False),
                                           ("simple_conv", False)])
def test_gradient_matches_numerical_gradient(rng, name, one_hot):
    np.random.seed(SEED)
    net = NETS[name][0]()
    if isinstance(net, MultiLayerNet):
        net.weight_decay_lambda = 0.1  # exercise the L2 term too
    x, t = _data(rng, (1, 6, 6) if name == "simple_conv" else (6,), one_hot=one_hot)
    num = net.numerical_gradient(x, t)
    grad = net.gradient(x, t)
    assert list(grad) == list(num) and set(grad) == set(net.params)
    for key in num:
        assert grad[key].dtype == np.float64 and grad[key].shape == net.params[key].shape
        # h = 1e-4 central differences: O(h^2) truncation
        np.testing.assert_allclose(grad[key], num[key], atol=1e-7, rtol=1e-5, err_msg=key)


def test_deep_convnet_gradient_matches_central_differences(rng):
    np.random.seed(SEED)
    net = DeepConvNet()
    x, t = rng.random((2, 1, 28, 28)), np.array([3, 7])

    def loss():
        np.random.seed(7)  # the same dropout masks for every evaluation
        return net.loss(x, t)

    np.random.seed(7)
    grad = net.gradient(x, t)
    # small steps: fewer ReLU kinks and pooling ties crossed (2 x 28 x 28 inputs)
    h = 1e-7
    for key, p in net.params.items():
        flat = p.reshape(-1)
        for i in rng.choice(flat.size, 2, replace=False):
            old = flat[i]
            flat[i] = old + h
            fp = loss()
            flat[i] = old - h
            fm = loss()
            flat[i] = old
            g = grad[key].reshape(-1)[i]
            assert abs((fp - fm) / (2 * h) - g) < 1e-6 + 1e-5 * abs(g), (key, i)


@pytest.mark.parametrize("name", ["two_layer", "extend_bn", "simple_conv"])
def test_gradient_arrays_survive_the_next_call(rng, name):
    np.random.seed(SEED)
    net = NETS[name][0]()
    shape = (1, 6, 6) if name == "simple_conv" else (6,)
    x1, t1 = _data(rng, shape)
    x2, t2 = _data(rng, shape)
    g1 = net.gradient(x1, t1)
    kept = {k: v.copy() for k, v in g1.items()}
    g2 = net.gradient(x2, t2)
    for k in g1:
        np.testing.assert_array_equal(g1[k], kept[k], err_msg=k)
        assert not np.shares_memory(g1[k], g2[k])


def test_a_users_layer_that_reuses_its_gradient_buffer_is_copied(rng):
    # numbanet.book's own layers make new gradient arrays; a layer a user
    # puts in the network may write into the same buffer every time, and
    # gradient() must still hand out arrays the next call leaves alone.
    from numbanet.book.layers import Affine

    class InPlaceAffine(Affine):
        def backward(self, dout, need_dx=True):
            dx = super().backward(dout, need_dx)
            if getattr(self, "_buf", None) is None:
                self._buf = np.empty_like(self.dW)
            np.copyto(self._buf, self.dW)
            self.dW = self._buf
            return dx

    np.random.seed(SEED)
    net = NETS["two_layer"][0]()
    old = net.layers["Affine2"]
    net.layers["Affine2"] = InPlaceAffine(old.W, old.b)
    x1, t1 = _data(rng, (6,))
    x2, t2 = _data(rng, (6,))
    g1 = net.gradient(x1, t1)
    kept = g1["W2"].copy()
    g2 = net.gradient(x2, t2)
    np.testing.assert_array_equal(g1["W2"], kept)
    assert not np.shares_memory(g1["W2"], g2["W2"])
    assert net.layers["Affine2"].dW is net.layers["Affine2"]._buf  # the layer did reuse it


def test_float32_switch_gives_float32_gradients(monkeypatch, rng):
    monkeypatch.setattr(config, "dtype", "float32")
    np.random.seed(SEED)
    net = _tiny_conv()
    x, t = _data(rng, (1, 6, 6))
    grads = net.gradient(x.astype(np.uint8), t)  # any real input dtype is cast at the layers
    assert all(g.dtype == np.float32 for g in grads.values())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_load_params_reads_the_books_pickle_layout(tmp_path, monkeypatch, rng, dtype):
    monkeypatch.setattr(config, "dtype", dtype)
    net = _tiny_conv()
    # the book's file: a dict of float64 arrays, pickled with the default protocol
    saved = {k: rng.standard_normal(v.shape) for k, v in net.params.items()}
    path = tmp_path / "params.pkl"
    with open(path, "wb") as f:
        pickle.dump(saved, f)
    x = rng.random((3, 1, 6, 6))
    net.load_params(str(path))
    for i, key in enumerate(["Conv1", "Affine1", "Affine2"], start=1):
        assert net.layers[key].W is net.params["W" + str(i)] and net.layers[key].b is net.params["b" + str(i)]
    for k, v in saved.items():
        assert net.params[k].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(net.params[k], v.astype(dtype))
    # the same weights written into a fresh network in place predict the same
    twin = _tiny_conv()
    for k, v in saved.items():
        twin.params[k][...] = v
    np.testing.assert_array_equal(net.predict(x), twin.predict(x))
    # save_params writes the same layout back
    net.save_params(str(tmp_path / "again.pkl"))
    with open(tmp_path / "again.pkl", "rb") as f:
        again = pickle.load(f)
    assert set(again) == set(saved)


def test_load_params_refuses_a_crafted_pickle(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"W1": Evil()}, f)
    net = _tiny_conv()
    with pytest.raises(pickle.UnpicklingError):
        net.load_params(str(path))


def test_deep_convnet_load_params_repoints_every_weight_layer(tmp_path, rng):
    net = DeepConvNet()
    saved = {k: rng.standard_normal(v.shape) for k, v in net.params.items()}
    with open(tmp_path / "deep.pkl", "wb") as f:
        pickle.dump(saved, f)
    net.load_params(str(tmp_path / "deep.pkl"))
    for i, idx in enumerate(DeepConvNet._WEIGHT_LAYERS, start=1):
        np.testing.assert_array_equal(net.layers[idx].W, saved["W" + str(i)])
        assert net.layers[idx].b is net.params["b" + str(i)]


def test_trainer_attributes_lines_and_random_draws(capsys, rng):
    x_train, t_train = rng.random((20, 6)), rng.integers(0, 3, 20)
    x_test, t_test = rng.random((8, 6)), rng.integers(0, 3, 8)

    np.random.seed(SEED)
    net = TwoLayerNet(6, 5, 3, weight_init_std=0.5)
    trainer = Trainer(net, x_train, t_train, x_test, t_test, epochs=2, mini_batch_size=10,
                      optimizer="sgd", optimizer_param={"lr": 0.5})
    trainer.train()
    lines = capsys.readouterr().out.splitlines()

    # the book's loop written out: batch choice from np.random, update, loss
    np.random.seed(SEED)
    twin = TwoLayerNet(6, 5, 3, weight_init_std=0.5)
    opt = SGD(lr=0.5)
    losses, train_acc = [], []
    for i in range(4):
        mask = np.random.choice(20, 10)
        opt.update(twin.params, twin.gradient(x_train[mask], t_train[mask]))
        losses.append(twin.loss(x_train[mask], t_train[mask]))
        if i % 2 == 0:
            train_acc.append(twin.accuracy(x_train, t_train))

    assert trainer.max_iter == 4 and trainer.iter_per_epoch == 2.0 and trainer.current_epoch == 2
    assert trainer.train_loss_list == losses
    assert trainer.train_acc_list == train_acc and len(trainer.test_acc_list) == 2
    number = r"[-+0-9.e]+"
    pattern = [rf"train loss:{number}", rf"=== epoch:1, train acc:{number}, test acc:{number} ===",
               rf"train loss:{number}", rf"train loss:{number}",
               rf"=== epoch:2, train acc:{number}, test acc:{number} ===", rf"train loss:{number}",
               "=============== Final Test Accuracy ===============", rf"test acc:{number}"]
    assert len(lines) == len(pattern)
    for line, pat in zip(lines, pattern):
        assert re.fullmatch(pat, line), (line, pat)
    assert lines[0] == "train loss:" + str(losses[0])


def test_trainer_evaluates_a_sample_and_knows_the_optimizers(capsys, rng):
    x, t = rng.random((30, 6)), rng.integers(0, 3, 30)
    trainer = Trainer(TwoLayerNet(6, 5, 3), x, t, x, t, epochs=1, mini_batch_size=10,
                      evaluate_sample_num_per_epoch=5, verbose=False)
    trainer.train()
    assert len(trainer.train_loss_list) == 3 and trainer.train_acc_list[0] in np.arange(6) / 5
    assert capsys.readouterr().out == ""
    assert trainer.optimizer.lr == 0.01 and type(trainer.optimizer).__name__ == "SGD"
    for name, cls in [("momentum", "Momentum"), ("Nesterov", "Nesterov"), ("adagrad", "AdaGrad"),
                      ("RMSprop", "RMSprop"), ("ADAM", "Adam")]:
        opt = Trainer(TwoLayerNet(6, 5, 3), x, t, x, t, optimizer=name, optimizer_param={"lr": 0.5}).optimizer
        assert type(opt).__name__ == cls and opt.lr == 0.5
    with pytest.raises(ValueError, match="optimizer"):
        Trainer(TwoLayerNet(6, 5, 3), x, t, x, t, optimizer="lbfgs")


def test_convnet_accuracy_counts_whole_batches_only(rng):
    net = _tiny_conv()
    x, t = rng.random((5, 1, 6, 6)), rng.integers(0, 3, 5)
    want = np.sum(np.argmax(net.predict(x[:4]), axis=1) == t[:4]) / 5
    assert net.accuracy(x, t, batch_size=2) == want
    assert net.accuracy(x, np.eye(3)[t], batch_size=2) == want
    assert net.accuracy(x, t) == 0.0  # fewer samples than one batch of 100, as the book


@pytest.mark.parametrize("name", ["two_layer", "simple_conv"])
def test_skipping_the_first_input_gradient_changes_nothing(rng, name):
    np.random.seed(SEED)
    net = NETS[name][0]()
    x, t = _data(rng, (1, 6, 6) if name == "simple_conv" else (6,))
    fast = net.gradient(x, t)
    net.skip_first_dx = False  # the book's algorithm: dx of the first layer computed too
    full = net.gradient(x, t)
    for k in fast:
        np.testing.assert_array_equal(fast[k], full[k], err_msg=k)


BACKEND_NETS = {
    "two_layer": lambda **kw: TwoLayerNet(6, 5, 3, weight_init_std=0.1, **kw),
    "multi_layer": lambda **kw: MultiLayerNet(6, [5, 4], 3, weight_decay_lambda=0.1, **kw),
    "extend_bn_dropout": lambda **kw: MultiLayerNetExtend(6, [5, 4], 3, use_batchnorm=True, use_dropout=True, **kw),
    "simple_conv": lambda **kw: _tiny_conv(weight_init_std=0.3, **kw),
}


@pytest.mark.parametrize("name", BACKEND_NETS)
def test_backend_argument_runs_the_network_and_optimizer_on_the_reference(rng, name):
    # backend= is how the benchmark's reference side runs the same network in
    # NumPy: every layer and the optimizer compute with the module given, and
    # the kernels give the same step to rounding.
    import numbanet.kernels as K
    import numbanet.reference as R
    from numbanet.book.optimizer import Adam, Momentum

    x, t = _data(rng, (1, 6, 6) if name == "simple_conv" else (6,))
    steps = {}
    for backend in (None, R):
        np.random.seed(SEED)
        net = BACKEND_NETS[name](backend=backend)
        want = K if backend is None else R
        assert net.backend is want
        loss_layer = net.lastLayer if hasattr(net, "lastLayer") else net.last_layer
        assert all(layer.ops is want for layer in [*net._layer_list(), loss_layer])
        assert Adam(backend=backend).ops is want
        # Momentum, not Adam: Adam's first step is about lr * sign(g), and the
        # gradients of biases feeding a batch norm are rounding noise.
        opt = Momentum(lr=0.1, backend=backend)
        assert opt.ops is want
        np.random.seed(SEED + 1)  # the same dropout masks on both sides
        grads = net.gradient(x, t)
        opt.update(net.params, grads)
        opt.update(net.params, grads)  # the second uses the velocity
        steps[backend] = (grads, {k: v.copy() for k, v in net.params.items()})
    (g_k, p_k), (g_r, p_r) = steps[None], steps[R]
    for k in g_k:
        np.testing.assert_allclose(g_k[k], g_r[k], rtol=1e-9, atol=1e-12, err_msg=k)
        np.testing.assert_allclose(p_k[k], p_r[k], rtol=1e-9, atol=1e-12, err_msg=k)


FUSED_NETS = {
    # name: (network, input shape, fused pairs, ReLU layers)
    "extend_bn": (lambda: MultiLayerNetExtend(6, [5, 4], 3, use_batchnorm=True), (6,), 2, 2),
    "extend_bn_dropout": (lambda: MultiLayerNetExtend(6, [5, 4], 3, use_batchnorm=True, use_dropout=True), (6,), 2, 2),
    "extend_plain": (lambda: MultiLayerNetExtend(6, [5, 4], 3), (6,), 2, 2),
    "two_layer": (lambda: TwoLayerNet(6, 5, 3, weight_init_std=0.1), (6,), 1, 1),
    "multi_layer": (lambda: MultiLayerNet(6, [5, 4], 3, weight_decay_lambda=0.1), (6,), 2, 2),
    "simple_conv": (lambda: _tiny_conv(weight_init_std=0.3), (1, 6, 6), 1, 2),  # conv + ReLU stays two calls
}


@pytest.mark.parametrize("name", FUSED_NETS)
def test_fused_pairs_change_nothing(monkeypatch, name):
    """The book networks run each Affine or BatchNormalization followed by a
    Relu as one fused pass forward and back. Against the same network with
    fusion off: the same loss, gradients, running statistics and
    ``Relu.mask`` bits; and the pairs did run fused (no ReLU call of their
    own)."""
    import numbanet.book.layers as L
    from numbanet import kernels

    build, shape, pairs, relus = FUSED_NETS[name]

    def run(fuse):
        if not fuse:
            monkeypatch.setattr(L, "_fusable", lambda layer, nxt: False)
        np.random.seed(SEED)
        net = build()
        x, t = _data(np.random.default_rng(0), shape)
        calls = {"relu_forward": 0, "relu_backward": 0}
        for op in calls:
            def counted(*a, _op=getattr(kernels, op), _name=op, **k):
                calls[_name] += 1
                return _op(*a, **k)
            monkeypatch.setattr(kernels, op, counted)
        np.random.seed(SEED + 1)
        grads = net.gradient(x, t)
        monkeypatch.undo()
        layers = net._layer_list()
        stats = [(b.running_mean, b.running_var) for b in layers if isinstance(b, L.BatchNormalization)]
        masks = [r.mask for r in layers if isinstance(r, L.Relu)]
        return net._loss_layer().loss, grads, stats + masks, calls

    loss, grads, state, calls = run(True)
    loss0, grads0, state0, calls0 = run(False)
    assert calls0 == {"relu_forward": relus, "relu_backward": relus}
    assert calls == {"relu_forward": relus - pairs, "relu_backward": relus - pairs}
    assert loss == loss0
    for k in grads0:
        np.testing.assert_array_equal(grads[k], grads0[k], err_msg=k)
    assert len(state) == len(state0) > 0
    for a, b in zip(state, state0):
        np.testing.assert_array_equal(a, b)


def test_a_users_relu_after_a_batch_norm_is_not_fused(rng):
    """Only numbanet.book's own Relu fuses: a subclass's forward and backward run."""
    import numbanet.book.layers as L

    class LoudRelu(L.Relu):
        calls = 0

        def forward(self, x):
            LoudRelu.calls += 1
            return super().forward(x)

        def backward(self, dout):
            LoudRelu.calls += 1
            return super().backward(dout)

    np.random.seed(SEED)
    net = MultiLayerNetExtend(6, [5, 4], 3, use_batchnorm=True)
    net.layers["Activation_function1"] = LoudRelu()
    x, t = _data(rng, (6,))
    net.gradient(x, t)
    assert LoudRelu.calls == 2
