"""What every layer shares: the backend it computes with and its parameters."""

from __future__ import annotations

import numpy as np

from numbanet.reference.backend import resolve_backend


class Layer:
    """Base class: ``forward``/``backward`` plus named parameters and gradients.

    Subclasses list their parameter attribute names in ``param_names``; the
    gradient of parameter ``W`` lives in attribute ``dW``. Gradients are
    allocated once and overwritten in place by every ``backward`` so that
    networks and optimizers can hold on to the arrays.
    """

    param_names: tuple[str, ...] = ()
    #: Non-trainable state saved with the parameters (e.g. running statistics).
    buffer_names: tuple[str, ...] = ()
    #: True for layers whose ``forward`` takes ``train_flg`` (dropout, batch norm).
    uses_train_flg: bool = False
    #: True for layers whose ``backward`` takes ``need_dx=False`` to skip the
    #: input gradient (a network's first layer, whose input is data).
    skips_dx: bool = False

    def __init__(self, backend=None):
        self.ops = resolve_backend(backend)

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The parameter arrays by name (``{"W": ..., "b": ...}``), not copies."""
        return {name: getattr(self, name) for name in self.param_names}

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """The gradient arrays by parameter name, not copies."""
        return {name: getattr(self, "d" + name) for name in self.param_names}

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        """Non-trainable state arrays by name, not copies."""
        return {name: getattr(self, name) for name in self.buffer_names}

    def _init_grads(self):
        for name in self.param_names:
            setattr(self, "d" + name, np.zeros_like(getattr(self, name)))

    def _store_grads(self, **grads):
        """Write freshly computed gradients into the persistent arrays."""
        for name, g in grads.items():
            np.copyto(getattr(self, "d" + name), g)
