"""Which implementation of the op API a layer or optimizer computes with.

Here rather than in layers/ or optimizers/, which both use it, and importing
nothing: :mod:`numbanet.kernels` (and with it Numba) loads on the first call
that asks for it, so ``import numbanet.layers`` stays light.
"""

from __future__ import annotations

__all__ = ["resolve_backend"]


def resolve_backend(backend):
    """Return the module of operations a layer or optimizer calls.

    ``None`` means :mod:`numbanet.kernels`; :mod:`numbanet.reference` (or any
    module with the same functions) may be passed to run the same network on
    the pure-NumPy implementation.
    """
    if backend is None:
        from numbanet import kernels

        return kernels
    return backend
