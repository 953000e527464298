"""Layers with the book's API: ``forward(x)``, ``backward(dout)``, parameters
as attributes (``W``, ``b``) and gradients (``dW``, ``db``) updated in place.

Thin wrappers: they hold state and call :mod:`numbanet.kernels` (or, with
``backend=numbanet.reference``, the pure-NumPy reference).
"""

from ._base import Layer
from .basic import Affine, Relu, Sigmoid, SoftmaxWithLoss
from .batchnorm import BatchNormalization
from .conv import Convolution
from .flatten import Flatten
from .pooling import Pooling
from .dropout import Dropout

__all__ = [
    "Layer",
    "Affine",
    "Relu",
    "Sigmoid",
    "SoftmaxWithLoss",
    "Convolution",
    "Pooling",
    "BatchNormalization",
    "Dropout",
    "Flatten",
]
