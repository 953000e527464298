"""Mini-batch training loop with per-epoch history."""

from __future__ import annotations

import sys
import time

import numpy as np


def _check_pair(name, x, t):
    if x is None or t is None:
        raise ValueError(f"Trainer: {name} data and labels must both be given")
    if len(x) != len(t):
        raise ValueError(f"Trainer: x_{name} has {len(x)} samples but t_{name} has {len(t)}")
    if len(x) == 0:
        raise ValueError(f"Trainer: the {name} set is empty")


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
        ``accuracy(x, t, batch_size)``.
    optimizer : object with ``update(params, grads)``
    x_train, t_train, x_test, t_test : ndarray
        Samples along axis 0; labels as class indices or one-hot rows.
    epochs, batch_size : int
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
    ):
        _check_pair("train", x_train, t_train)
        _check_pair("test", x_test, t_test)
        for name, value in (("epochs", epochs), ("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Trainer: {name} must be a positive int, got {value!r}")
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
        self.history: list[dict] = []

    def _print(self, msg):
        if not self.quiet:
            print(msg, file=self.file or sys.stdout, flush=True)

    def train(self):
        """Run all epochs; return the history, a list of one dict per epoch
        with keys ``epoch``, ``train_loss``, ``train_acc``, ``test_acc``,
        ``seconds``, ``eval_seconds``."""
        from tqdm.auto import tqdm

        rng = np.random.default_rng(self.seed)
        n = len(self.x_train)
        steps = -(-n // self.batch_size)
        net = self.network
        bar = tqdm(
            total=self.epochs * steps,
            disable=True if self.quiet else None,  # None: only on a terminal
            unit="step",
            leave=False,
            file=sys.stderr,
        )
        try:
            for epoch in range(1, self.epochs + 1):
                bar.set_description(f"epoch {epoch}/{self.epochs}")
                order = rng.permutation(n)
                total = 0.0
                t0 = time.perf_counter()
                for s in range(0, n, self.batch_size):
                    idx = order[s : s + self.batch_size]
                    grads = net.gradient(self.x_train[idx], self.t_train[idx])
                    self.optimizer.update(net.params, grads)
                    total += float(net.last_loss) * len(idx)
                    bar.update(1)
                seconds = time.perf_counter() - t0
                t1 = time.perf_counter()
                m = n if self.eval_samples is None else min(n, self.eval_samples)
                train_acc = net.accuracy(self.x_train[:m], self.t_train[:m], self.eval_batch_size)
                test_acc = net.accuracy(self.x_test, self.t_test, self.eval_batch_size)
                row = {
                    "epoch": epoch,
                    "train_loss": total / n,
                    "train_acc": train_acc,
                    "test_acc": test_acc,
                    "seconds": seconds,
                    "eval_seconds": time.perf_counter() - t1,
                }
                self.history.append(row)
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
