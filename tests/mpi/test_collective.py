"""Data-parallel training, run once per rank under ``mpiexec -n P`` (P >= 2).

Every assertion is evaluated on every rank on data all ranks share (results
are gathered first), so the ranks pass or fail together instead of one rank
leaving the others waiting in a collective.
"""

import math

import numpy as np
import pytest

from numbanet import dist
from numbanet.nets import ConvNet, SimpleConvNet, Trainer, load_digits
from numbanet.optimizers import Adam

CONV = {"filter_num": 4, "filter_size": 3, "pad": 1, "stride": 1}


@pytest.fixture(scope="module")
def comm(mpi):
    c = dist.init(abort_on_exception=False)
    if c.Get_size() < 2:
        pytest.skip("needs at least 2 ranks: mpiexec -n 2 python -m pytest tests/mpi")
    return c


@pytest.fixture(scope="module")
def digits64():
    return load_digits(dtype=np.float64)


def _normwise(got, want):
    return float(np.abs(got - want).max()) / max(float(np.abs(want).max()), 1e-300)


def _small_convnet(dtype, dropout, seed=3):
    return ConvNet((1, 8, 8), channels=(4,), hidden_size=16, output_size=10, dropout_ratio=dropout,
                   dtype=dtype, seed=seed)


def test_ranks_stay_bitwise_identical(comm, digits64):
    """Parameters, optimizer state and (after the epoch-end average) batch
    norm statistics are the same bits on every rank; dropout draws differ."""
    (x, t), (xt, tt) = digits64
    x, t = x[:301].astype(np.float32), t[:301]
    net = _small_convnet(np.float32, dropout=0.3)
    trainer = Trainer(net, Adam(lr=0.01), x, t, xt[:50].astype(np.float32), tt[:50], epochs=2, batch_size=16,
                      seed=1, quiet=True, distributed=True)
    trainer.train()
    assert trainer.iteration == 2 * math.ceil(301 / (16 * comm.Get_size()))
    sd = trainer.optimizer.state_dict()
    mine = {f"p/{k}": a.tobytes() for k, a in net.params.items()}
    mine.update({f"b/{k}": a.tobytes() for k, a in net.buffers.items()})
    mine.update({f"s/{n}/{k}": (a.tobytes() if k != "step" else a) for n, st in sd["state"].items()
                 for k, a in st.items()})
    mine["history"] = [(r["train_loss"], r["train_acc"], r["test_acc"]) for r in trainer.history]
    drop = [layer for layer in net.layers if type(layer).__name__ == "Dropout"][0]
    draws = comm.allgather(drop.rng.bit_generator.state["state"]["state"])
    everyone = comm.allgather(mine)
    for r, other in enumerate(everyone):
        assert other.keys() == mine.keys()
        diff = [k for k in mine if other[k] != mine[k]]
        assert not diff, f"rank {r} differs from rank {comm.Get_rank()} in {diff}"
    assert len(set(draws)) == comm.Get_size(), "dropout generators should differ per rank"


@pytest.mark.parametrize("n", [203, 193])
def test_p_ranks_batch_b_equal_one_process_batch_pb(comm, digits64, n):
    """Without batch norm and dropout, P ranks with batch b follow one process
    with batch P*b on the same samples. The epochs' last batches are uneven:
    203 leaves 11 samples (shards of 6/5 or 4/4/3), 193 leaves one sample
    (ranks without a sample contribute a zero gradient)."""
    (x, t), (xt, tt) = digits64
    b, p = 16, comm.Get_size()
    assert n % (b * p) != 0
    runs = []
    for distributed, batch in ((True, b), (False, b * p)):
        net = SimpleConvNet((1, 8, 8), CONV, hidden_size=20, weight_init_std="he", dtype=np.float64, seed=7)
        tr = Trainer(net, Adam(lr=0.01), x[:n], t[:n], xt[:80], tt[:80], epochs=2, batch_size=batch, seed=2,
                     quiet=True, distributed=distributed)
        runs.append((tr.train(), {k: a.copy() for k, a in net.params.items()}))
    (hd, pd), (h1, p1) = runs
    errs = {k: _normwise(pd[k], p1[k]) for k in p1}
    assert max(errs.values()) <= 1e-10, errs
    assert [r["test_acc"] for r in hd] == [r["test_acc"] for r in h1]
    assert [r["train_acc"] for r in hd] == [r["train_acc"] for r in h1]
    for rd, r1 in zip(hd, h1):
        assert abs(rd["train_loss"] - r1["train_loss"]) <= 1e-10 * r1["train_loss"]


def _ghost_batchnorm_reference(net, opt, x, t, epochs, b, p, seed):
    """One process doing what P ranks with batch b do with batch norm: each
    batch of P*b is split into P shards of b, each shard normalised with its
    own statistics and its own running statistics, the shard gradients
    averaged (weighted by shard size), the running statistics averaged at
    each epoch end."""
    rng = np.random.default_rng(seed)
    n = len(x)
    bufs = [{k: a.copy() for k, a in net.buffers.items()} for _ in range(p)]
    for _ in range(epochs):
        order = rng.permutation(n)
        for s in range(0, n, b * p):
            batch = order[s : s + b * p]
            acc = {k: np.zeros_like(a) for k, a in net.params.items()}
            for r in range(p):
                lo, hi = dist.shard_bounds(len(batch), p, r)
                for k, a in net.buffers.items():
                    a[...] = bufs[r][k]
                grads = net.gradient(x[batch[lo:hi]], t[batch[lo:hi]])
                for k, a in net.buffers.items():
                    bufs[r][k][...] = a
                for k in acc:
                    acc[k] += grads[k] * ((hi - lo) / len(batch))
            for k, g in net.grads.items():
                g[...] = acc[k]
            opt.update(net.params, net.grads)
        for k, a in net.buffers.items():
            a[...] = sum(bf[k] for bf in bufs) / p
            for bf in bufs:
                bf[k][...] = a


def test_batchnorm_is_ghost_batch_norm(comm, digits64):
    """With batch norm, P ranks with batch b equal one process normalising P
    shards of b separately and averaging their gradients (ghost batch norm),
    not one process with batch P*b."""
    (x, t), (xt, tt) = digits64
    n, b, p = 150, 12, comm.Get_size()
    net = _small_convnet(np.float64, dropout=0.0)
    Trainer(net, Adam(lr=0.01), x[:n], t[:n], xt[:40], tt[:40], epochs=2, batch_size=b, seed=4, quiet=True,
            distributed=True).train()
    ref = _small_convnet(np.float64, dropout=0.0)
    _ghost_batchnorm_reference(ref, Adam(lr=0.01), x[:n], t[:n], 2, b, p, seed=4)
    big = _small_convnet(np.float64, dropout=0.0)
    Trainer(big, Adam(lr=0.01), x[:n], t[:n], xt[:40], tt[:40], epochs=2, batch_size=b * p, seed=4,
            quiet=True).train()
    for k in ref.params:
        assert _normwise(net.params[k], ref.params[k]) <= 1e-10, k
    for k in ref.buffers:
        assert _normwise(net.buffers[k], ref.buffers[k]) <= 1e-10, k
    assert max(_normwise(net.params[k], big.params[k]) for k in big.params) > 1e-6


def test_digits_accuracy_distributed(comm):
    """The CLI's digits network and Adam settings, with the per-rank batch
    chosen so that P ranks take about the single process's 50 samples per
    step: at least 97% test accuracy, as one process reaches."""
    (x, t), (xt, tt) = load_digits()
    p = comm.Get_size()
    net = SimpleConvNet((1, 8, 8), {"filter_num": 30, "filter_size": 3, "pad": 1, "stride": 1},
                        hidden_size=100, weight_init_std="he", seed=0)
    hist = Trainer(net, Adam(lr=0.005), x, t, xt, tt, epochs=10, batch_size=-(-50 // p), seed=0, quiet=True,
                   distributed=True).train()
    assert hist[-1]["test_acc"] >= 0.97, hist[-1]
    assert comm.allgather(hist[-1]["test_acc"]) == [hist[-1]["test_acc"]] * p


def test_resume_on_every_rank(comm, digits64, tmp_path_factory):
    """Rank 0 writes the checkpoint, every rank reads it; continuing gives the
    bits of an uninterrupted run."""
    (x, t), (xt, tt) = digits64
    path = comm.bcast(str(tmp_path_factory.mktemp("ckpt") / "run.ckpt") if comm.Get_rank() == 0 else None)
    x, t = x[:130], t[:130]

    def run(epochs, resume, ckpt):
        net = _small_convnet(np.float64, dropout=0.4)
        tr = Trainer(net, Adam(lr=0.01), x, t, xt[:30], tt[:30], epochs=epochs, batch_size=10, seed=5,
                     quiet=True, distributed=True, checkpoint=ckpt, checkpoint_every=3 if ckpt else None,
                     resume=resume)
        tr.train()
        return net

    full = run(3, False, None)
    run(1, False, path)  # stops after epoch 1 ...
    resumed = run(3, True, path)  # ... and continues to 3
    same = all(np.array_equal(full.params[k], resumed.params[k]) for k in full.params)
    same &= all(np.array_equal(full.buffers[k], resumed.buffers[k]) for k in full.buffers)
    assert comm.allgather(same) == [True] * comm.Get_size()


@pytest.mark.parametrize("flat", [True, False])
def test_broadcast_and_distributed_optimizer_api(comm, flat):
    """Horovod's three calls on their own: rank 0's weights everywhere, then
    the update uses the rank-average of the gradients (flat buffer or a
    staging buffer for separate arrays)."""
    from numbanet.optimizers import SGD

    r, p = comm.Get_rank(), comm.Get_size()
    net = SimpleConvNet((1, 8, 8), CONV, hidden_size=6, dtype=np.float64, seed=r, flat=flat)
    root = comm.bcast({k: a.copy() for k, a in net.params.items()})
    dist.broadcast_parameters(net.params)
    assert all(np.array_equal(net.params[k], root[k]) for k in root)
    grads = net.grads  # FlatParams views (one Allreduce) or separate arrays (a staging buffer)
    for g in grads.values():
        g[...] = r + 1
    before = {k: a.copy() for k, a in net.params.items()}
    opt = dist.DistributedOptimizer(SGD(lr=0.5))
    opt.update(net.params, grads)
    mean = (p + 1) / 2
    for k in before:
        np.testing.assert_allclose(net.params[k], before[k] - 0.5 * mean, rtol=0, atol=1e-15)
    assert opt.lr == 0.5 and opt.allreduce_seconds > 0
    with pytest.raises(ValueError, match="broadcast_parameters"):
        dist.broadcast_parameters({"w": np.zeros(r + 1)})
