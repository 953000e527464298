"""``python -m numbanet.bench.dist``: where a data-parallel step's time goes,
and a projection of how it would scale.

Measured: for the book's SimpleConvNet on MNIST-size input and a network of
the book's DeepConvNet size, one training step (``gradient`` + Adam update)
with a fixed global batch, split into compute, waiting for the slowest rank
(a barrier) and the gradient allreduce, for 1 rank x 2 threads and 2 ranks x 1
thread. The command starts both runs itself with ``mpiexec`` (needs
``pip install 'numbanet[dist]'``).

Projected (a model, not a measurement): ring allreduce of ``S`` bytes over
``p`` ranks takes ``2 (p - 1) alpha + 2 (p - 1) / p * S / beta`` (latency
``alpha`` per message, link bandwidth ``beta``). With the per-rank batch held
fixed (weak scaling) and no overlap of communication with compute, the
scaling efficiency is ``t_compute / (t_compute + t_allreduce(p))``, fed with
the measured 1-thread compute time per step and the parameter bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

RANKS = (4, 8, 16, 32, 64, 128, 256)
LINKS_GBPS = (10, 25, 100)


def deep_convnet(dtype=np.float32, seed=0):
    """A network of the book's DeepConvNet size and shape on 1x28x28 input:
    six 3x3 convolutions (16, 16, 32, 32, 64, 64 filters; the fourth padded by
    2) with a 2x2 max pool after every second, affine 1024 -> 50, dropout 0.5,
    affine 50 -> 10 (about 126 k parameters)."""
    from numbanet import layers as L
    from numbanet.nets import Sequential

    rng = np.random.default_rng(seed)

    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)

    stack, c = [], 1
    for i, (f, pad) in enumerate(((16, 1), (16, 1), (32, 1), (32, 2), (64, 1), (64, 1))):
        stack += [L.Convolution(he((f, c, 3, 3), c * 9), np.zeros(f, dtype), stride=1, pad=pad), L.Relu()]
        if i % 2 == 1:
            stack.append(L.Pooling(2, 2, stride=2))
        c = f
    stack += [L.Flatten(), L.Affine(he((64 * 4 * 4, 50), 64 * 4 * 4), np.zeros(50, dtype)), L.Relu(),
              L.Dropout(0.5, seed=seed), L.Affine(he((50, 10), 50), np.zeros(10, dtype))]
    return Sequential(*stack, flat=True)


def _network(name):
    from numbanet.nets import SimpleConvNet

    if name == "simple":
        return SimpleConvNet((1, 28, 28), {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1},
                             hidden_size=100, weight_init_std="he", seed=0)
    return deep_convnet()


NETWORKS = {"simple": "SimpleConvNet (MNIST 28x28)", "deep": "DeepConvNet-size (MNIST 28x28)"}


def _layer_slices(net):
    """Per parameter layer (last first, the order backward produces them),
    the slice of the flat gradient buffer holding its gradients."""
    flat = net._flat
    out = {}
    for i, layer in enumerate(net.layers):
        sl = [flat.slices[f"{i}.{n}"] for n in layer.param_names]
        if sl:
            out[i] = slice(sl[0].start, sl[-1].stop)
    return out


def _gradient_overlapped(net, x, t, comm, weight, slices):
    """``net.gradient`` with each layer's gradients sent out (MPI_Iallreduce,
    in place) as soon as backward has produced them; returns the requests."""
    from mpi4py import MPI

    reqs = []

    def send(i):
        if i in slices:
            seg = net._flat.grad[slices[i]]
            seg *= seg.dtype.type(weight)
            reqs.append(comm.Iallreduce(MPI.IN_PLACE, seg, op=MPI.SUM))

    net.gradient(x, t, after_backward=send)
    return reqs


def _worker(args):
    from mpi4py import MPI

    from numbanet import dist
    from numbanet.kernels import set_num_threads
    from numbanet.optimizers import Adam

    set_num_threads(args.threads)
    comm = dist.init()
    rank, size = comm.Get_rank(), comm.Get_size()
    per_rank = args.batch // size
    rng = np.random.default_rng(rank)
    out = {}
    for name in args.networks:
        net = _network(name)
        opt = dist.DistributedOptimizer(Adam(lr=1e-3), comm=comm)
        x = rng.random((per_rank, 1, 28, 28)).astype(np.float32)
        t = rng.integers(0, 10, per_rank)
        rows = []
        for i in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            grads = net.gradient(x, t)
            t1 = time.perf_counter()
            comm.Barrier()
            t2 = time.perf_counter()
            opt.allreduce_gradients(grads)
            t3 = time.perf_counter()
            opt.optimizer.update(net.params, grads)
            t4 = time.perf_counter()
            if i >= args.warmup:
                rows.append((t1 - t0 + t4 - t3, t2 - t1, t3 - t2, t4 - t0))
        # Per step, the slowest rank's figures; then the median over steps.
        worst = np.max(np.array(comm.allgather(rows)), axis=0)
        med = np.median(worst, axis=0)
        # The same step with each layer's gradients reduced (MPI_Iallreduce)
        # while backward goes on through the layers below it.
        slices = _layer_slices(net)
        overlapped = []
        for i in range(args.warmup + args.steps):
            comm.Barrier()
            t0 = time.perf_counter()
            reqs = _gradient_overlapped(net, x, t, comm, 1.0 / size, slices)
            MPI.Request.Waitall(reqs)
            opt.optimizer.update(net.params, net.grads)
            if i >= args.warmup:
                overlapped.append(time.perf_counter() - t0)
        blocking = []
        for i in range(args.warmup + args.steps):  # the blocking step again, timed the same way
            comm.Barrier()
            t0 = time.perf_counter()
            opt.update(net.params, net.gradient(x, t))
            if i >= args.warmup:
                blocking.append(time.perf_counter() - t0)
        ov = float(np.median(np.max(np.array(comm.allgather(overlapped)), axis=0)))
        bl = float(np.median(np.max(np.array(comm.allgather(blocking)), axis=0)))
        out[name] = {
            "params": int(net._flat.data.size),
            "bytes": int(net._flat.data.nbytes),
            "compute": float(med[0]),
            "wait": float(med[1]),
            "allreduce": float(med[2]),
            "step": float(med[3]),
            "step_blocking": bl,
            "step_overlapped": ov,
            "per_rank_batch": per_rank,
        }
    if rank == 0:
        print("RESULT " + json.dumps({"ranks": size, "threads": args.threads, "results": out}), flush=True)
    MPI.COMM_WORLD.Barrier()


def _mpiexec():
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    exe = shutil.which("mpiexec", path=path)
    if exe is None:
        sys.exit("numbanet.bench.dist: no mpiexec found; pip install 'numbanet[dist]'")
    return exe


def _launch(args, ranks, threads):
    cmd = [_mpiexec(), "-n", str(ranks), sys.executable, "-m", "numbanet.bench.dist", "--worker",
           "--threads", str(threads), "--batch", str(args.batch), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--networks", *args.networks]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        sys.exit(f"numbanet.bench.dist: {' '.join(cmd)} failed:\n{proc.stderr}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def ring_allreduce_seconds(nbytes, ranks, gbps, alpha):
    """The alpha-beta model of ring allreduce: 2(p-1) messages of S/p bytes."""
    if ranks == 1:
        return 0.0
    beta = gbps * 1e9 / 8
    return 2 * (ranks - 1) * alpha + 2 * (ranks - 1) / ranks * nbytes / beta


def _ms(s):
    return f"{s * 1e3:.2f}"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m numbanet.bench.dist", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=100, help="global batch per step (split over the ranks)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--alpha", type=float, default=10e-6, help="projection: latency per message, seconds")
    p.add_argument("--networks", nargs="+", choices=sorted(NETWORKS), default=["simple", "deep"])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _worker(args)

    runs = [_launch(args, 1, 2), _launch(args, 2, 1)]
    print(f"Measured: one training step (gradient + Adam), float32, global batch {args.batch}, "
          f"median of {args.steps} steps (the slowest rank's times per step), times in ms")
    print(f"{'network':<32} {'params':>8} {'ranks x threads':>15} {'compute':>8} {'wait':>7} "
          f"{'allreduce':>9} {'step':>8}")
    for name in args.networks:
        for run in runs:
            r = run["results"][name]
            print(f"{NETWORKS[name]:<32} {r['params']:>8} {run['ranks']:>7} x {run['threads']:<5} "
                  f"{_ms(r['compute']):>8} {_ms(r['wait']):>7} {_ms(r['allreduce']):>9} {_ms(r['step']):>8}")
    print()
    print("Overlap: the same step with each layer's gradients reduced by MPI_Iallreduce as backward produces "
          "them, against the blocking step, both timed barrier to end, median ms")
    for name in args.networks:
        r = runs[1]["results"][name]
        print(f"{NETWORKS[name]:<32} 2 x 1   blocking {_ms(r['step_blocking']):>8}   "
              f"overlapped {_ms(r['step_overlapped']):>8}")
    print()
    print(f"PROJECTION (alpha-beta model of ring allreduce, not a measurement): scaling efficiency "
          f"t_c / (t_c + t_allreduce(p)) at a fixed per-rank batch of {args.batch // 2}, t_c = the measured "
          f"1-thread compute per step above, alpha = {args.alpha * 1e6:g} us per message, no overlap")
    two = runs[1]["results"]
    header = f"{'network':<32} {'link':>8} " + " ".join(f"{p_:>6}" for p_ in RANKS)
    print(header)
    for name in args.networks:
        r = two[name]
        for g in LINKS_GBPS:
            effs = [r["compute"] / (r["compute"] + ring_allreduce_seconds(r["bytes"], p_, g, args.alpha))
                    for p_ in RANKS]
            print(f"{NETWORKS[name]:<32} {g:>4}Gb/s " + " ".join(f"{e:>6.1%}" for e in effs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
