"""SimpleConvNet and ConvNet: gradient checks, backends, save/load, training on
the real digits, the training command, and the train-step registry cases."""

import subprocess
import sys

import numpy as np
import pytest

import numbanet.kernels as kernels
import numbanet.reference as reference
from numbanet.nets import ConvNet, SimpleConvNet, Trainer, gradient_check
from numbanet.optimizers import Adam

DIGITS_CONV = {"filter_num": 30, "filter_size": 3, "pad": 1, "stride": 1}


@pytest.fixture
def one_thread():
    """Training steps on 8x8 digits are ~1 ms of work split into ~30 parallel
    regions; on a 2-core machine shared with other jobs every region waits for
    both threads to get a time slice (measured: 10 epochs take 0.5 s on one
    thread, 50 s on two under a load of 4). The training tests test learning,
    not threading, so they run on one Numba thread and one BLAS thread."""
    import numba
    from threadpoolctl import threadpool_limits

    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with threadpool_limits(1, user_api="blas"):
            yield
    finally:
        numba.set_num_threads(old)


def _batch(rng, n, shape, classes=10):
    return rng.random((n, *shape)), rng.integers(0, classes, n)


@pytest.mark.parametrize("backend", [kernels, reference], ids=["kernels", "reference"])
def test_gradient_check_simple_convnet(rng, backend):
    net = SimpleConvNet((2, 6, 5), {"filter_num": 2, "filter_size": 3, "pad": 1, "stride": 1}, hidden_size=6,
                        output_size=5, weight_init_std="he", dtype=np.float64, backend=backend, seed=0)
    for b in (net.params["0.b"], net.params["4.b"], net.params["6.b"]):
        b[:] = rng.standard_normal(b.shape) * 0.1
    x, t = _batch(rng, 4, (2, 6, 5), 5)
    errors = gradient_check(net, x, t)
    assert list(errors) == ["0.W", "0.b", "4.W", "4.b", "6.W", "6.b"]
    assert max(errors.values()) < 1e-6, errors


def test_gradient_check_convnet(rng):
    net = ConvNet((1, 8, 8), channels=(3, 4), hidden_size=6, output_size=5, dropout_ratio=0.3,
                  dtype=np.float64, seed=1)
    x, t = _batch(rng, 6, (1, 8, 8), 5)
    errors = gradient_check(net, x, t)
    kinds = {type(layer).__name__ for layer in net.layers}
    assert {"Convolution", "BatchNormalization", "Relu", "Pooling", "Flatten", "Affine", "Dropout"} <= kinds
    # The affine bias feeding batch norm has a zero gradient; gradient_check
    # reports its absolute error, which must be at rounding level too.
    assert max(errors.values()) < 1e-6, errors


def test_simple_convnet_shapes_and_dtypes(rng):
    net = SimpleConvNet()
    shapes = {k: v.shape for k, v in net.params.items()}
    assert shapes == {"0.W": (30, 1, 5, 5), "0.b": (30,), "4.W": (4320, 100), "4.b": (100,),
                      "6.W": (100, 10), "6.b": (10,)}
    assert all(v.dtype == np.float32 for v in net.params.values())
    x = rng.random((3, 1, 28, 28)).astype(np.float32)
    assert net.predict(x).shape == (3, 10) and net.predict(x).dtype == np.float32
    assert np.all(net.params["0.b"] == 0)
    assert abs(net.params["4.W"].std() - 0.01) < 1e-3  # the book's weight_init_std


def test_kernel_and_reference_networks_agree(rng):
    nets = [SimpleConvNet((1, 8, 8), DIGITS_CONV, dtype=np.float64, backend=b, seed=3, weight_init_std="he")
            for b in (kernels, reference)]
    x, t = _batch(rng, 20, (1, 8, 8))
    gk, gr = (n.gradient(x, t) for n in nets)
    assert nets[0].last_loss == pytest.approx(nets[1].last_loss, rel=1e-12)
    for k in gk:
        np.testing.assert_allclose(gk[k], gr[k], rtol=1e-9, atol=1e-12)


def test_save_load_roundtrip_convnet(tmp_path, rng):
    a = ConvNet((1, 8, 8), channels=(4, 8), hidden_size=16, seed=0)
    x = rng.random((10, 1, 8, 8)).astype(np.float32)
    a.gradient(x, rng.integers(0, 10, 10))  # moves batch norm running statistics
    Adam(lr=0.01).update(a.params, a.grads)
    a.save(tmp_path / "w.npz")
    b = ConvNet((1, 8, 8), channels=(4, 8), hidden_size=16, seed=1)
    b.load(tmp_path / "w.npz")
    np.testing.assert_array_equal(a.predict(x), b.predict(x))


def test_simple_convnet_learns_digits(one_thread):
    pytest.importorskip("sklearn")
    from numbanet.nets import load_digits

    (xtr, ttr), (xte, tte) = load_digits()
    net = SimpleConvNet((1, 8, 8), DIGITS_CONV, weight_init_std="he", seed=0)
    hist = Trainer(net, Adam(lr=0.005), xtr, ttr, xte, tte, epochs=10, batch_size=50, seed=0, quiet=True).train()
    assert hist[-1]["test_acc"] >= 0.97, [round(r["test_acc"], 4) for r in hist]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] / 4


def test_training_is_deterministic(one_thread):
    pytest.importorskip("sklearn")
    from numbanet.nets import load_digits

    (xtr, ttr), (xte, tte) = load_digits()
    runs = []
    for _ in range(2):
        net = SimpleConvNet((1, 8, 8), DIGITS_CONV, weight_init_std="he", seed=0)
        hist = Trainer(net, Adam(lr=0.005), xtr[:400], ttr[:400], xte, tte, epochs=2, batch_size=50, seed=0,
                       quiet=True).train()
        runs.append(([(r["train_loss"], r["test_acc"]) for r in hist], net.params["4.W"].copy()))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_train_command_main(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from numbanet.nets.train import main

    out = tmp_path / "w.npz"
    assert main(["--epochs", "1", "--quiet", "--save", str(out), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "train loss" in text and "test acc" in text and out.exists()
    net = SimpleConvNet((1, 8, 8), DIGITS_CONV)
    net.load(out)


def test_train_command_module_on_mnist_files(tmp_path, rng):
    x = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "m.npz", x_train=x, y_train=rng.integers(0, 10, 30), x_test=x[:10],
             y_test=rng.integers(0, 10, 10))
    proc = subprocess.run(
        [sys.executable, "-m", "numbanet.nets", "--data", str(tmp_path / "m.npz"), "--epochs", "2",
         "--batch-size", "16", "--network", "convnet", "--optimizer", "sgd"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "MNIST from" in proc.stdout and "total training time" in proc.stdout
    assert proc.stdout.count("\n    2  ") == 1  # the table's row for epoch 2


def test_train_command_rejects_bad_options(capsys):
    from numbanet.nets.train import main

    with pytest.raises(SystemExit):
        main(["--epochs", "0"])
    assert "--epochs must be >= 1" in capsys.readouterr().err


def test_flat_parameters_match_separate_arrays(rng):
    flat = SimpleConvNet((1, 8, 8), DIGITS_CONV, weight_init_std="he", seed=0, flat=True)
    plain = SimpleConvNet((1, 8, 8), DIGITS_CONV, weight_init_std="he", seed=0, flat=False)
    buf = flat.flatten_params()
    assert flat.params is flat.params and flat.params is buf.params  # one dict: the optimizer's fast path
    assert np.shares_memory(flat.layers[0].W, buf.data) and np.shares_memory(flat.layers[0].dW, buf.grad)
    assert plain._flat is None
    x, t = _batch(rng, 30, (1, 8, 8))
    x = x.astype(np.float32)
    opts = Adam(lr=0.01), Adam(lr=0.01)
    for _ in range(3):
        for net, opt in zip((flat, plain), opts):
            opt.update(net.params, net.gradient(x, t))
    for k in plain.params:
        np.testing.assert_array_equal(flat.params[k], plain.params[k])
