"""Checkpoint files (format, atomic writes, clear errors) and resuming a
Trainer in process; whole-process kills are in tests/mpi/test_launch.py."""

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from numbanet.nets import ConvNet, Trainer
from numbanet.nets.checkpoint import CheckpointError, load_checkpoint, previous_path, save_checkpoint
from numbanet.optimizers import Adam


def _data(rng, n):
    t = rng.integers(0, 10, n)
    x = rng.random((n, 1, 8, 8)) * 0.5
    x[np.arange(n), 0, t % 8, t // 2] += 1.0
    return x, t


def _trainer(x, t, path, epochs=2, resume=False, every=3, net_cls=ConvNet):
    net = net_cls((1, 8, 8), channels=(3,), hidden_size=12, dropout_ratio=0.3, dtype=np.float64, seed=2)
    tr = Trainer(net, Adam(lr=0.01), x, t, x[:20], t[:20], epochs=epochs, batch_size=16, seed=9, quiet=True,
                 checkpoint=path, checkpoint_every=every, resume=resume)
    return net, tr


def test_format_roundtrip_and_no_pickle(tmp_path):
    path = tmp_path / "a.ckpt"
    arrays = {"params/0.W": np.arange(6.0).reshape(2, 3), "x": np.array([1, 2], np.int64)}
    save_checkpoint(path, {"epoch": 3, "big": 2**100}, arrays)
    meta, got = load_checkpoint(path)
    assert meta["epoch"] == 3 and meta["big"] == 2**100 and meta["format"] == "numbanet-checkpoint"
    assert got.keys() == arrays.keys() and all(np.array_equal(got[k], arrays[k]) for k in arrays)
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["meta.json", "params/0.W.npy", "x.npy"]
        json.loads(z.read("meta.json"))
    save_checkpoint(path, {"epoch": 4}, arrays)
    assert load_checkpoint(previous_path(path))[0]["epoch"] == 3
    assert not list(tmp_path.glob("*.tmp-*"))
    with pytest.raises(ValueError, match="allow_pickle"):
        save_checkpoint(tmp_path / "b.ckpt", {}, {"o": np.array([object()])})
    assert not (tmp_path / "b.ckpt").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "not-a-checkpoint"])
def test_damaged_checkpoint_raises_naming_the_file(tmp_path, damage):
    path = tmp_path / "a.ckpt"
    save_checkpoint(path, {"epoch": 1}, {"w": np.random.default_rng(0).random(1000)})
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        i = data.index(b"\x93NUMPY") + 400
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("meta.json", json.dumps({"format": "something else"}))
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


def test_resume_mid_epoch_is_bitwise_identical(tmp_path, rng):
    x, t = _data(rng, 90)
    ref, ref_tr = _trainer(x, t, tmp_path / "ref.ckpt")
    ref_tr.train()

    class Crash(ConvNet):
        calls = 0

        def gradient(self, x, t):
            Crash.calls += 1
            if Crash.calls == 11:  # epochs of 6 steps: dies 5 steps into epoch 2
                raise RuntimeError("crash")
            return super().gradient(x, t)

    path = tmp_path / "run.ckpt"
    _, tr = _trainer(x, t, path, net_cls=Crash)
    with pytest.raises(RuntimeError, match="crash"):
        tr.train()
    meta, _ = load_checkpoint(path)
    assert (meta["epoch"], meta["step"], meta["iteration"]) == (2, 3, 9)  # the last save before the crash
    net, tr = _trainer(x, t, path, resume=True)
    hist = tr.train()
    assert tr.resumed_from == str(path)
    for k in ref.params:
        np.testing.assert_array_equal(net.params[k], ref.params[k])
    for k in ref.buffers:
        np.testing.assert_array_equal(net.buffers[k], ref.buffers[k])
    assert [r["train_loss"] for r in hist] == [r["train_loss"] for r in ref_tr.history]
    assert [r["test_acc"] for r in hist] == [r["test_acc"] for r in ref_tr.history]


def test_truncated_checkpoint_raises_and_the_previous_one_resumes(tmp_path, rng):
    x, t = _data(rng, 90)
    ref, tr = _trainer(x, t, tmp_path / "ref.ckpt", epochs=3)
    tr.train()
    path = tmp_path / "run.ckpt"
    _, tr = _trainer(x, t, path, epochs=2, every=4)
    tr.train()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=f"{path}.*truncated or corrupted"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=str(path)):
        _trainer(x, t, path, epochs=3)[1].load_checkpoint(path)
    net, tr = _trainer(x, t, path, epochs=3, resume=True, every=4)
    tr.train()
    assert tr.resumed_from == previous_path(path)
    for k in ref.params:
        np.testing.assert_array_equal(net.params[k], ref.params[k])


def test_checkpoint_must_fit_the_run(tmp_path, rng):
    x, t = _data(rng, 40)
    path = tmp_path / "run.ckpt"
    _trainer(x, t, path, epochs=1)[1].train()
    net = ConvNet((1, 8, 8), channels=(3,), hidden_size=12, dtype=np.float64, seed=2)
    with pytest.raises(CheckpointError, match="batch_size"):
        Trainer(net, Adam(lr=0.01), x, t, x, t, batch_size=8, seed=9, checkpoint=path).load_checkpoint(path)
    other = ConvNet((1, 8, 8), channels=(4,), hidden_size=12, dtype=np.float64, seed=2)
    with pytest.raises(CheckpointError, match="shape"):
        Trainer(other, Adam(lr=0.01), x, t, x, t, batch_size=16, seed=9, checkpoint=path).load_checkpoint(path)
    with pytest.raises(ValueError, match="need a checkpoint path"):
        Trainer(net, Adam(), x, t, x, t, resume=True)

    class NoState:
        def update(self, params, grads):
            pass

    with pytest.raises(TypeError, match="state_dict"):
        Trainer(net, NoState(), x, t, x, t, checkpoint=path)


def test_mpi4py_is_imported_only_by_numbanet_dist():
    code = ("import sys, numbanet.nets, numbanet.optimizers, numbanet.nets.train, numbanet.dist; "
            "assert 'mpi4py' not in sys.modules, 'mpi4py imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
