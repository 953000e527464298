"""Networks, training loop, data loading and gradient checks.

- :class:`Sequential`: layers plus a loss; ``predict``, ``loss``, ``gradient``,
  ``accuracy``, ``params``/``grads`` dicts, ``save``/``load``.
- :class:`SimpleConvNet` (the book's) and :class:`ConvNet` (batch norm, dropout).
- :func:`gradient_check`: backprop against central differences per parameter.
- :class:`Trainer`: shuffled mini-batches, per-epoch history.
- :func:`load_digits`, :func:`load_mnist`: local data only.
"""

from .check import gradient_check
from .convnet import ConvNet, SimpleConvNet
from .data import load_digits, load_mnist, read_idx
from .gradient import numerical_gradient
from .sequential import Sequential
from .trainer import Trainer, format_history

__all__ = [
    "numerical_gradient",
    "gradient_check",
    "Sequential",
    "SimpleConvNet",
    "ConvNet",
    "Trainer",
    "format_history",
    "load_digits",
    "load_mnist",
    "read_idx",
]
