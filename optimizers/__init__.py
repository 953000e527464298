"""Optimizers with the book's interface, ``optimizer.update(params, grads)``,
computing exactly what ``torch.optim`` computes, with one fused in-place
kernel call per tensor (or per model, see :class:`FlatParams`).

>>> opt = Adam(lr=1e-3)
>>> opt.update(net.params, net.grads)          # doctest: +SKIP

``backend=numbanet.reference`` runs the same optimizer on the plain-NumPy
formulas.
"""

from ._base import Optimizer
from .adaptive import AdaGrad, Adam, AdamW, RMSprop
from .flat import FlatDict, FlatParams
from .sgd import SGD, Momentum, Nesterov

__all__ = [
    "Optimizer",
    "SGD",
    "Momentum",
    "Nesterov",
    "AdaGrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "FlatParams",
    "FlatDict",
]
