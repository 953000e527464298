"""The book's training loop: ``Trainer``."""

from __future__ import annotations

import numpy as np

from . import optimizer as _opt

#: ``optimizer=`` names (case-insensitive) and their classes in :mod:`numbanet.book.optimizer`.
OPTIMIZERS = {
    "sgd": "SGD",
    "momentum": "Momentum",
    "nesterov": "Nesterov",
    "adagrad": "AdaGrad",
    "rmsprop": "RMSprop",
    "adam": "Adam",
}


class Trainer:
    """Train ``network`` on random mini-batches, printing as the book does.

    Parameters
    ----------
    network : one of the book's networks
        Anything with ``params``, ``gradient(x, t)``, ``loss(x, t)`` and
        ``accuracy(x, t)``.
    x_train, t_train, x_test, t_test : ndarray
    epochs : int
    mini_batch_size : int
    optimizer : str
        ``"SGD"``, ``"Momentum"``, ``"Nesterov"``, ``"AdaGrad"``, ``"RMSprop"``
        or ``"Adam"`` (any case): a class of :mod:`numbanet.book.optimizer`.
    optimizer_param : dict
        Keyword arguments of the optimizer (``{"lr": 0.01}`` by default).
    evaluate_sample_num_per_epoch : int or None
        Evaluate the per-epoch accuracies on the first this many training and
        test samples only; None means all of them.
    verbose : bool
        Print ``train loss:<loss>`` after every step, an ``=== epoch:...``
        line per epoch and the final test accuracy.

    Each step draws its batch with ``np.random.choice(train_size,
    mini_batch_size)`` (with replacement, from NumPy's global state, as the
    book), applies ``gradient`` and the optimizer's ``update``, then records
    ``loss`` on the same batch. Training runs ``int(epochs * iter_per_epoch)``
    steps with ``iter_per_epoch = max(train_size / mini_batch_size, 1)``; the
    accuracies are measured after each step whose index (from 0) is a
    multiple of ``iter_per_epoch``, the first after one update.

    Attributes
    ----------
    train_loss_list : list of float
        The loss after every step.
    train_acc_list, test_acc_list : list of float
        The accuracies of every epoch.
    """

    def __init__(self, network, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100,
                 optimizer="SGD", optimizer_param={"lr": 0.01},  # noqa: B006 (the book's default, never mutated)
                 evaluate_sample_num_per_epoch=None, verbose=True):
        self.network = network
        self.verbose = verbose
        self.x_train = x_train
        self.t_train = t_train
        self.x_test = x_test
        self.t_test = t_test
        self.epochs = epochs
        self.batch_size = mini_batch_size
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch

        try:
            cls = getattr(_opt, OPTIMIZERS[optimizer.lower()])
        except KeyError:
            raise ValueError(f"Trainer: optimizer must be one of {sorted(OPTIMIZERS.values())}, got {optimizer!r}") from None
        self.optimizer = cls(**optimizer_param)

        self.train_size = x_train.shape[0]
        self.iter_per_epoch = max(self.train_size / mini_batch_size, 1)
        self.max_iter = int(epochs * self.iter_per_epoch)
        self.current_iter = 0
        self.current_epoch = 0

        self.train_loss_list = []
        self.train_acc_list = []
        self.test_acc_list = []

    def train_step(self):
        """One update on a random batch; at an epoch boundary, also the accuracies."""
        batch_mask = np.random.choice(self.train_size, self.batch_size)
        x_batch = self.x_train[batch_mask]
        t_batch = self.t_train[batch_mask]

        grads = self.network.gradient(x_batch, t_batch)
        self.optimizer.update(self.network.params, grads)

        loss = self.network.loss(x_batch, t_batch)
        self.train_loss_list.append(loss)
        if self.verbose:
            print("train loss:" + str(loss))

        if self.current_iter % self.iter_per_epoch == 0:
            self.current_epoch += 1
            x_tr, t_tr, x_te, t_te = self.x_train, self.t_train, self.x_test, self.t_test
            n = self.evaluate_sample_num_per_epoch
            if n is not None:
                x_tr, t_tr, x_te, t_te = x_tr[:n], t_tr[:n], x_te[:n], t_te[:n]
            train_acc = self.network.accuracy(x_tr, t_tr)
            test_acc = self.network.accuracy(x_te, t_te)
            self.train_acc_list.append(train_acc)
            self.test_acc_list.append(test_acc)
            if self.verbose:
                print("=== epoch:" + str(self.current_epoch) + ", train acc:" + str(train_acc)
                      + ", test acc:" + str(test_acc) + " ===")
        self.current_iter += 1

    def train(self):
        """Run all ``max_iter`` steps, then print the test accuracy on the whole test set."""
        for _ in range(self.max_iter):
            self.train_step()
        test_acc = self.network.accuracy(self.x_test, self.t_test)
        if self.verbose:
            print("=============== Final Test Accuracy ===============")
            print("test acc:" + str(test_acc))
