"""Whole training processes, started from a plain pytest: SIGKILL at a
random point and resume (one process and ``mpiexec -n 2``), Ctrl-C, and a
rank that raises. Run with ``python -m pytest tests/mpi`` (not under mpiexec)."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("sklearn")  # the digits

TRAIN = [sys.executable, "-m", "numbanet.nets", "--network", "convnet", "--epochs", "3", "--threads", "1",
         "--quiet", "--checkpoint-every", "4"]


def _command(tmp_path, tag, mpiexec, resume=False):
    cmd = TRAIN + ["--checkpoint", str(tmp_path / f"{tag}.ckpt"), "--save", str(tmp_path / f"{tag}.npz")]
    if resume:
        cmd.append("--resume")
    if mpiexec:
        cmd = [mpiexec, "-n", "2"] + cmd + ["--distributed", "--batch-size", "25"]
    return cmd


def _run(cmd, ckpt, kill_after=None, sig=signal.SIGKILL, timeout=600):
    """Run ``cmd`` in its own process group. With ``kill_after``, send ``sig``
    to the whole group that many seconds after the checkpoint file first
    appears. Returns (process, seconds from start to the first checkpoint,
    seconds from start to the end, whether the signal was sent)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    first, sent = None, False
    while proc.poll() is None:
        now = time.perf_counter() - t0
        if now > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"{cmd} did not finish in {timeout} s")
        if first is None and os.path.exists(ckpt):
            first = now
        if kill_after is not None and first is not None and now >= first + kill_after and not sent:
            os.killpg(proc.pid, sig)
            sent = True
        time.sleep(0.005)
    out, err = proc.communicate()
    proc.stdout_text, proc.stderr_text = out, err
    return proc, first, time.perf_counter() - t0, sent


def _weights(path):
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def reference():
    """``reference(tmp_path, mpiexec)``: the uninterrupted run's weights and
    its times to the first checkpoint and to the end, run once per launcher."""
    cache = {}

    def get(tmp_path, mpiexec):
        if mpiexec not in cache:
            ref, first, total, _ = _run(_command(tmp_path, "ref", mpiexec), tmp_path / "ref.ckpt")
            assert ref.returncode == 0, ref.stderr_text
            cache[mpiexec] = (_weights(tmp_path / "ref.npz"), first, total)
        return cache[mpiexec]

    return get


@pytest.mark.parametrize("launcher", ["one-process", "mpiexec-2"])
def test_sigkill_at_a_random_point_then_resume_is_bitwise_identical(tmp_path, request, launcher, reference):
    mpiexec = request.getfixturevalue("mpiexec") if launcher == "mpiexec-2" else None
    want, first, total = reference(tmp_path, mpiexec)
    seed = random.randrange(2**32)
    pick = random.Random(seed)
    ckpt = tmp_path / "run.ckpt"
    killed = 0
    for attempt in range(4):  # a kill scheduled after the run ended is retried earlier
        delay = pick.uniform(0.0, (total - first) * 0.8 / 2**attempt)
        proc, _, _, sent = _run(_command(tmp_path, "run", mpiexec), ckpt, kill_after=delay)
        finished = (tmp_path / "run.npz").exists()  # the kill came after the weights were saved
        if sent and not finished:
            killed += 1
            assert proc.returncode != 0
            break
        assert finished, proc.stderr_text
        for f in tmp_path.glob("run.*"):
            f.unlink()
    assert killed, f"never managed to kill the run mid-training (seed {seed})"
    proc, _, _, _ = _run(_command(tmp_path, "run", mpiexec, resume=True), ckpt)
    assert proc.returncode == 0, proc.stderr_text
    assert "resumed from" in proc.stdout_text
    got = _weights(tmp_path / "run.npz")
    assert got.keys() == want.keys()
    diff = [k for k in want if not np.array_equal(got[k], want[k])]
    assert not diff, f"resumed run differs in {diff} (kill delay {delay:.3f} s, seed {seed})"


def test_sigint_writes_a_final_checkpoint_and_exits_cleanly(tmp_path, reference):
    want = reference(tmp_path, None)[0]
    ckpt = tmp_path / "run.ckpt"
    proc, _, _, sent = _run(_command(tmp_path, "run", None), ckpt, kill_after=0.0, sig=signal.SIGINT)
    assert sent
    assert proc.returncode == 130, proc.stderr_text
    assert "Traceback" not in proc.stderr_text
    assert "continue with --resume" in proc.stderr_text
    assert not (tmp_path / "run.npz").exists()
    proc, _, _, _ = _run(_command(tmp_path, "run", None, resume=True), ckpt)
    assert proc.returncode == 0, proc.stderr_text
    got = _weights(tmp_path / "run.npz")
    assert all(np.array_equal(got[k], want[k]) for k in want)


RAISES = """
import numpy as np
from numbanet import dist
from numbanet.nets import SimpleConvNet, Trainer, load_digits
from numbanet.optimizers import SGD

dist.init()

class Failing(SimpleConvNet):
    calls = 0
    def gradient(self, x, t):
        Failing.calls += 1
        if dist.rank() == 1 and Failing.calls == 3:
            raise RuntimeError("rank 1 fails mid-step")
        return super().gradient(x, t)

(x, t), (xt, tt) = load_digits()
net = Failing((1, 8, 8), {"filter_num": 4, "filter_size": 3, "pad": 1, "stride": 1}, hidden_size=10, seed=0)
Trainer(net, SGD(lr=0.1), x, t, xt, tt, epochs=50, batch_size=10, quiet=True, distributed=True).train()
"""


def test_a_rank_that_raises_ends_the_job(tmp_path, mpiexec):
    script = tmp_path / "fails.py"
    script.write_text(RAISES)
    t0 = time.perf_counter()
    proc = subprocess.Popen([mpiexec, "-n", "2", sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the job still ran 60 s after one rank raised")
    assert proc.returncode != 0
    assert "Traceback" in err  # the failing rank's report (its tail may be cut by the abort)
    assert time.perf_counter() - t0 < 60


def test_bench_dist_command(mpiexec):
    """``python -m numbanet.bench.dist`` (the README's scaling tables), tiny."""
    proc = subprocess.run([sys.executable, "-m", "numbanet.bench.dist", "--steps", "1", "--warmup", "0",
                           "--batch", "4", "--networks", "simple"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "PROJECTION" in out and "overlapped" in out
    assert out.count("SimpleConvNet (MNIST 28x28)        433890") == 2  # 1 x 2 and 2 x 1


def test_ring_allreduce_model():
    from numbanet.bench.dist import ring_allreduce_seconds

    assert ring_allreduce_seconds(10**6, 1, 10, 1e-5) == 0.0
    # 2 ranks: 2 messages of half the buffer each way -> 2 alpha + S / beta
    assert ring_allreduce_seconds(10**6, 2, 8, 1e-5) == pytest.approx(2e-5 + 1e-3)
