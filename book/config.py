"""The speed switch of :mod:`numbanet.book`: the float dtype of new parameters.

The book computes in float64 (NumPy's default), and so does this package by
default. Readers who want the fastest run switch to float32 before building a
network::

    import numbanet.book.config
    numbanet.book.config.dtype = "float32"

The networks read :data:`dtype` when they create their parameters (weight
initialisation draws the same ``np.random`` numbers either way; they are then
stored in this dtype). The layers compute in the dtype of their parameters and
cast their inputs to it, so a float32 network also runs on the float64 or
uint8 images a script may feed it. Layers without parameters (``Relu``,
``Pooling``, ...) keep float32 and float64 inputs as they are and cast any
other dtype to :data:`dtype`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dtype", "float_dtype"]

#: ``"float64"`` (default, as the book) or ``"float32"`` (about twice as fast).
dtype = "float64"


def float_dtype() -> np.dtype:
    """The current :data:`dtype` as a NumPy dtype; raise if it is not a kernel dtype.

    Returns
    -------
    numpy.dtype
        ``float64`` or ``float32``.
    """
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"numbanet.book.config.dtype must be 'float32' or 'float64', got {dtype!r}")
    return dt
