"""Mini-batch training loop with per-epoch history, optional data-parallel
training over MPI and checkpoints that resume bit for bit."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import numpy as np

from .checkpoint import CheckpointError, load_checkpoint, previous_path, save_checkpoint


def _check_pair(name, x, t):
    if x is None or t is None:
        raise ValueError(f"Trainer: {name} data and labels must both be given")
    if len(x) != len(t):
        raise ValueError(f"Trainer: x_{name} has {len(x)} samples but t_{name} has {len(t)}")
    if len(x) == 0:
        raise ValueError(f"Trainer: the {name} set is empty")


def _dropout_layers(network):
    """(index, layer) of every layer with its own numpy Generator (Dropout)."""
    return [(i, layer) for i, layer in enumerate(getattr(network, "layers", ()))
            if isinstance(getattr(layer, "rng", None), np.random.Generator)]


def _json_scalar(x):
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)
    return x


class Trainer:
    """Train ``network`` with ``optimizer`` on shuffled mini-batches.

    Each epoch visits every training sample once, in an order drawn from a
    ``numpy.random.Generator`` seeded with ``seed`` (batches without
    replacement; the last batch may be smaller). After each epoch it records
    the mean training loss over the epoch's batches (weighted by batch size),
    the training and test accuracy (inference mode) and the seconds spent
    training (evaluation excluded; ``eval_seconds`` separately).

    Parameters
    ----------
    network : Sequential
        Anything with ``gradient(x, t)``, ``last_loss``, ``params`` and
        ``accuracy(x, t, batch_size)`` (plus ``buffers`` and ``layers`` to
        checkpoint or distribute batch norm and dropout state).
    optimizer : object with ``update(params, grads)``
        With ``checkpoint``, it also needs ``state_dict``/``load_state_dict``
        (every optimizer in :mod:`numbanet.optimizers` has them).
    x_train, t_train, x_test, t_test : ndarray
        Samples along axis 0; labels as class indices or one-hot rows.
    epochs, batch_size : int
        ``batch_size`` is per process: with ``distributed`` and P ranks a
        step consumes ``P * batch_size`` samples.
    seed : int
        Seeds the shuffling (and nothing else).
    quiet : bool
        No progress bar and no per-epoch lines. Otherwise a tqdm bar is shown
        when stderr is a terminal, and one line per epoch is printed.
    eval_samples : int or None
        Evaluate training accuracy on the first ``eval_samples`` training
        samples only (the book's shortcut for MNIST); None means all.
    eval_batch_size : int
        Batch size for the accuracy passes.
    file : text stream
        Where the per-epoch lines go (default ``sys.stdout``).
    distributed : bool
        Data-parallel training over MPI (:mod:`numbanet.dist`, needs mpi4py);
        see Notes.
    checkpoint : str or path, optional
        Write a checkpoint (:mod:`numbanet.nets.checkpoint`) to this file at
        every epoch end, every ``checkpoint_every`` steps, and when training
        is interrupted with Ctrl-C (SIGINT): then the current step finishes,
        the checkpoint is written and :class:`KeyboardInterrupt` is raised.
    checkpoint_every : int, optional
        Also checkpoint after every this many optimizer steps.
    resume : bool
        Continue from ``checkpoint`` if it exists (falling back to
        ``<checkpoint>.prev`` if the newest file is unreadable). The resumed
        run ends with bitwise the same parameters as an uninterrupted one.

    Notes
    -----
    With ``distributed=True`` every rank runs the same script on the full
    data. Each step, the next ``P * batch_size`` samples of the epoch's
    permutation (drawn from ``seed`` on every rank, so the ranks agree without
    talking) are split into P contiguous shards whose sizes differ by at most
    one (an epoch's last, smaller batch included); each rank computes the
    gradient of its shard, and :class:`numbanet.dist.DistributedOptimizer`
    (wrapped around ``optimizer`` if it is not one already) sums the shard
    gradients weighted by shard size / batch size. Without batch norm and
    dropout this is the gradient of the whole ``P * batch_size`` batch, so P
    ranks with batch b follow one process with batch ``P * b`` (to rounding).
    Batch norm normalises with each rank's own shard statistics (as
    Horovod's and PyTorch DDP's BatchNorm do): P ranks with batch b equal one
    process that splits each batch of ``P * b`` into P sub-batches of b,
    each normalised on its own, with their gradients averaged ("ghost batch
    norm"), not one batch of ``P * b``. The running statistics are averaged
    over the ranks at each epoch end. Dropout layers draw from a stream of
    their own per rank (rank 0 keeps the network's). The training loss and the
    accuracies are summed over the ranks (each evaluates a shard); rank 0
    alone prints, shows the progress bar and writes checkpoints; every rank
    reads them on resume.
    """

    def __init__(
        self,
        network,
        optimizer,
        x_train,
        t_train,
        x_test,
        t_test,
        epochs=20,
        batch_size=100,
        seed=0,
        quiet=False,
        eval_samples=None,
        eval_batch_size=500,
        file=None,
        distributed=False,
        checkpoint=None,
        checkpoint_every=None,
        resume=False,
    ):
        _check_pair("train", x_train, t_train)
        _check_pair("test", x_test, t_test)
        for name, value in (("epochs", epochs), ("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Trainer: {name} must be a positive int, got {value!r}")
        if checkpoint_every is not None and (
            isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, (int, np.integer))
            or checkpoint_every < 1
        ):
            raise ValueError(f"Trainer: checkpoint_every must be a positive int or None, got {checkpoint_every!r}")
        if checkpoint is None and (checkpoint_every is not None or resume):
            raise ValueError("Trainer: checkpoint_every and resume need a checkpoint path")
        if checkpoint is not None:
            for m in ("state_dict", "load_state_dict"):
                if not callable(getattr(optimizer, m, None)):
                    raise TypeError(f"Trainer: checkpointing needs optimizer.{m}(); "
                                    f"{type(optimizer).__name__} has none")
        self.network = network
        self.optimizer = optimizer
        self.x_train, self.t_train = x_train, t_train
        self.x_test, self.t_test = x_test, t_test
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.seed = seed
        self.quiet = quiet
        self.eval_samples = eval_samples
        self.eval_batch_size = int(eval_batch_size)
        self.file = file
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        self.checkpoint_every = None if checkpoint_every is None else int(checkpoint_every)
        self.resume = bool(resume)
        self.history: list[dict] = []
        self.distributed = bool(distributed)
        self.rank, self.size, self._comm = 0, 1, None
        if self.distributed:
            from numbanet import dist

            self._comm = dist.comm()  # init() on first use, with its abort-on-exception hook
            self.rank, self.size = self._comm.Get_rank(), self._comm.Get_size()
            if not isinstance(optimizer, dist.DistributedOptimizer):
                self.optimizer = dist.DistributedOptimizer(optimizer, comm=self._comm)
            # Every rank starts from rank 0's weights and statistics.
            dist.broadcast_parameters(network.params)
            buffers = getattr(network, "buffers", None)
            if buffers:
                dist.broadcast_parameters(buffers)
            if self.rank:
                # Independent dropout noise per rank, reproducible from the
                # network's seed: rank r jumps the generator r * 2^127 draws ahead.
                for _, layer in _dropout_layers(network):
                    layer.rng = np.random.Generator(layer.rng.bit_generator.jumped(self.rank))
        # Where training stands; advanced by train(), restored by a resume.
        self._epoch, self._step, self.iteration = 1, 0, 0
        self._shuffle_state = None  # the shuffling generator's state at the current epoch's start
        self._loss_sum, self._seconds = 0.0, 0.0
        self._interrupted = False
        self.resumed_from = None

    # -- output ---------------------------------------------------------------------
    def _print(self, msg):
        if not self.quiet and self.rank == 0:
            print(msg, file=self.file or sys.stdout, flush=True)

    # -- distributed helpers --------------------------------------------------------
    def _sum(self, x):
        if self._comm is None:
            return x
        from mpi4py import MPI

        return self._comm.allreduce(x, op=MPI.SUM)

    def _count_correct(self, x, t):
        """Correctly classified samples of ``(x, t)``; distributed: each rank
        counts a shard and the counts are summed."""
        n = len(x)
        if self._comm is None:
            return self.network.accuracy(x, t, self.eval_batch_size)
        from numbanet.dist import shard_bounds

        lo, hi = shard_bounds(n, self.size, self.rank)
        local = 0
        if hi > lo:
            local = int(round(self.network.accuracy(x[lo:hi], t[lo:hi], self.eval_batch_size) * (hi - lo)))
        return self._sum(local) / n

    def _zero_grads(self):
        for g in self.network.grads.values():
            g[...] = 0

    # -- checkpoints ----------------------------------------------------------------
    def _config(self):
        return {"n_train": len(self.x_train), "batch_size": self.batch_size, "seed": _json_scalar(self.seed),
                "world_size": self.size}

    def save_checkpoint(self, path=None):
        """Write the current training state to ``path`` (default: the
        ``checkpoint`` file). Collective when distributed: every rank must
        call it; rank 0 writes."""
        path = self.checkpoint if path is None else os.fspath(path)
        net = self.network
        local_meta = {
            "loss_sum": float(self._loss_sum),
            "dropout_rng": {str(i): layer.rng.bit_generator.state for i, layer in _dropout_layers(net)},
        }
        local_arrays = {k: np.array(a) for k, a in getattr(net, "buffers", {}).items()}
        if self._comm is not None and self.size > 1:
            gathered = self._comm.gather((local_meta, local_arrays), root=0)
        else:
            gathered = [(local_meta, local_arrays)]
        if self.rank != 0:
            return
        sd = self.optimizer.state_dict()
        arrays = {f"params/{k}": a for k, a in net.params.items()}
        opt_steps = {}
        for name, st in sd["state"].items():
            opt_steps[name] = int(st["step"])
            for key, a in st.items():
                if key != "step":
                    arrays[f"optimizer/{name}/{key}"] = a
        ranks = []
        for r, (m, bufs) in enumerate(gathered):
            ranks.append(m)
            for k, a in bufs.items():
                arrays[f"rank{r}/buffers/{k}"] = a
        meta = {
            "epoch": self._epoch,
            "step": self._step,
            "iteration": self.iteration,
            "seconds": self._seconds,
            "config": self._config(),
            "shuffle_rng": self._shuffle_state,
            "ranks": ranks,
            "history": self.history,
            "optimizer": {
                "class": sd["optimizer"],
                "hyperparameters": {k: _json_scalar(v) for k, v in sd["hyperparameters"].items()},
                "nonfinite": sd.get("nonfinite", "propagate"),
                "skipped_steps": int(sd.get("skipped_steps", 0)),
                "steps": opt_steps,
                "state_keys": {name: [k for k in st if k != "step"] for name, st in sd["state"].items()},
            },
        }
        save_checkpoint(path, meta, arrays)

    def load_checkpoint(self, path):
        """Restore the training state from ``path`` (every rank reads it).
        Raises :class:`~numbanet.nets.checkpoint.CheckpointError` naming the
        file if it is unreadable or was written for a different run."""
        path = os.fspath(path)
        meta, arrays = load_checkpoint(path)
        net = self.network
        want = self._config()
        if meta["config"] != want:
            raise CheckpointError(f"checkpoint {path} was written for {meta['config']}, this run is {want}")
        params = net.params
        saved = {k[len("params/"):] for k in arrays if k.startswith("params/")}
        if saved != set(params):
            raise CheckpointError(f"checkpoint {path} holds parameters {sorted(saved)}, "
                                  f"the network has {sorted(params)}")
        for k, a in params.items():
            if arrays[f"params/{k}"].shape != a.shape:
                raise CheckpointError(f"checkpoint {path}: {k} has shape {arrays[f'params/{k}'].shape}, "
                                      f"the network's is {a.shape}")
        om = meta["optimizer"]
        sd = {
            "optimizer": om["class"],
            "hyperparameters": om["hyperparameters"],
            "nonfinite": om["nonfinite"],
            "skipped_steps": om["skipped_steps"],
            "state": {
                name: {"step": step, **{key: arrays[f"optimizer/{name}/{key}"] for key in om["state_keys"][name]}}
                for name, step in om["steps"].items()
            },
        }
        try:
            self.optimizer.load_state_dict(sd)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint {path}: optimizer state does not fit: {e}") from e
        for k, a in params.items():
            np.copyto(a, arrays[f"params/{k}"])
        for k, a in getattr(net, "buffers", {}).items():
            np.copyto(a, arrays[f"rank{self.rank}/buffers/{k}"])
        mine = meta["ranks"][self.rank]
        for i, layer in _dropout_layers(net):
            layer.rng.bit_generator.state = mine["dropout_rng"][str(i)]
        self._loss_sum = mine["loss_sum"]
        self._epoch, self._step, self.iteration = meta["epoch"], meta["step"], meta["iteration"]
        self._seconds = meta["seconds"]
        self._shuffle_state = meta["shuffle_rng"]
        self.history = list(meta["history"])
        self.resumed_from = path

    def _resume(self):
        """Load the newest readable checkpoint, if any; return its path or None."""
        path = self.checkpoint
        prev = previous_path(path)
        if not os.path.exists(path) and not os.path.exists(prev):
            return None
        try:
            self.load_checkpoint(path)
            return path
        except (CheckpointError, FileNotFoundError) as e:
            if not os.path.exists(prev):
                raise
            if self.rank == 0:
                print(f"numbanet: {e}; resuming from the previous checkpoint {prev}", file=sys.stderr, flush=True)
            self.load_checkpoint(prev)
            return prev

    def _on_sigint(self, signum, frame):
        if self._interrupted:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._interrupted = True

    def _stop_requested(self):
        if self._comm is None or self.size == 1:
            return self._interrupted
        from mpi4py import MPI

        return bool(self._comm.allreduce(int(self._interrupted), op=MPI.MAX))

    # -- the loop -------------------------------------------------------------------
    def train(self):
        """Run all epochs; return the history, a list of one dict per epoch
        with keys ``epoch``, ``train_loss``, ``train_acc``, ``test_acc``,
        ``seconds``, ``eval_seconds``."""
        handler = None
        if self.checkpoint is not None and threading.current_thread() is threading.main_thread():
            handler = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            return self._train()
        finally:
            if handler is not None:
                signal.signal(signal.SIGINT, handler)

    def _train(self):
        from tqdm.auto import tqdm

        if self.resume:
            self._resume()
        rng = np.random.default_rng(self.seed)
        if self._shuffle_state is not None:
            rng.bit_generator.state = self._shuffle_state
        n = len(self.x_train)
        size, rank = self.size, self.rank
        gbatch = self.batch_size * size
        steps = -(-n // gbatch)
        net = self.network
        distributed = self._comm is not None
        bar = tqdm(
            total=self.epochs * steps,
            initial=min(self.epochs * steps, (self._epoch - 1) * steps + self._step),
            disable=True if (self.quiet or rank != 0) else None,  # None: only on a terminal
            unit="step",
            leave=False,
            file=sys.stderr,
        )
        stop_checks = self.checkpoint is not None
        try:
            while self._epoch <= self.epochs:
                epoch = self._epoch
                bar.set_description(f"epoch {epoch}/{self.epochs}")
                if self._step == 0:
                    self._shuffle_state = rng.bit_generator.state
                    self._loss_sum, self._seconds = 0.0, 0.0
                order = rng.permutation(n)
                t0 = time.perf_counter()
                for s in range(self._step, steps):
                    batch = order[s * gbatch : (s + 1) * gbatch]
                    if distributed:
                        from numbanet.dist import shard_bounds

                        lo, hi = shard_bounds(len(batch), size, rank)
                        idx = batch[lo:hi]
                        if len(idx):
                            grads = net.gradient(self.x_train[idx], self.t_train[idx])
                            self._loss_sum += float(net.last_loss) * len(idx)
                        else:  # fewer samples than ranks in the last batch
                            self._zero_grads()
                            grads = net.grads
                        self.optimizer.update(net.params, grads, weight=len(idx) / len(batch))
                    else:
                        grads = net.gradient(self.x_train[batch], self.t_train[batch])
                        self.optimizer.update(net.params, grads)
                        self._loss_sum += float(net.last_loss) * len(batch)
                    self._step = s + 1
                    self.iteration += 1
                    bar.update(1)
                    if stop_checks:
                        stop = self._stop_requested()
                        if stop or (self.checkpoint_every and self.iteration % self.checkpoint_every == 0):
                            self._seconds += time.perf_counter() - t0
                            t0 = time.perf_counter()
                            self.save_checkpoint()
                        if stop:
                            self._print(f"interrupted: checkpoint written to {self.checkpoint}")
                            raise KeyboardInterrupt
                seconds = self._seconds + time.perf_counter() - t0
                t1 = time.perf_counter()
                if distributed:
                    from numbanet.dist import average_buffers

                    average_buffers(getattr(net, "buffers", {}))
                m = n if self.eval_samples is None else min(n, self.eval_samples)
                train_acc = self._count_correct(self.x_train[:m], self.t_train[:m])
                test_acc = self._count_correct(self.x_test, self.t_test)
                row = {
                    "epoch": epoch,
                    "train_loss": self._sum(self._loss_sum) / n,
                    "train_acc": train_acc,
                    "test_acc": test_acc,
                    "seconds": seconds,
                    "eval_seconds": time.perf_counter() - t1,
                }
                self.history.append(row)
                self._epoch, self._step = epoch + 1, 0
                self._shuffle_state = rng.bit_generator.state
                self._loss_sum, self._seconds = 0.0, 0.0
                if self.checkpoint is not None:
                    self.save_checkpoint()
                bar.set_postfix(loss=f"{row['train_loss']:.4f}", test_acc=f"{test_acc:.4f}")
                msg = (
                    f"epoch {epoch:3d}  loss {row['train_loss']:.4f}  train acc {train_acc:.4f}  "
                    f"test acc {test_acc:.4f}  {seconds:.2f} s"
                )
                if bar.disable:
                    self._print(msg)
                else:
                    bar.write(msg, file=self.file or sys.stdout)
        finally:
            bar.close()
        return self.history


def format_history(history) -> str:
    """The per-epoch history as a plain-text table."""
    lines = [f"{'epoch':>5}  {'train loss':>10}  {'train acc':>9}  {'test acc':>8}  {'seconds':>8}"]
    for r in history:
        lines.append(
            f"{r['epoch']:>5}  {r['train_loss']:>10.4f}  {r['train_acc']:>9.4f}  "
            f"{r['test_acc']:>8.4f}  {r['seconds']:>8.2f}"
        )
    total = sum(r["seconds"] for r in history)
    lines.append(f"total training time {total:.2f} s")
    return "\n".join(lines)
