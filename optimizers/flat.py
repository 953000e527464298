"""One contiguous buffer for all of a model's parameters (and one for their
gradients), so that an optimizer updates the whole model with one kernel call.

A network with many small tensors (biases, small convolution filters) would
otherwise pay a Python-level kernel dispatch and argument validation per
tensor per step, which for small models costs more than the arithmetic.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from numbanet.kernels.validate import FLOAT_DTYPES

__all__ = ["FlatParams", "FlatDict"]


class FlatDict(dict):
    """A ``dict`` of name -> view into a :class:`FlatParams` buffer.

    It behaves as an ordinary dict (the book's ``params``/``grads``); its
    ``flat`` attribute lets an optimizer recognise it and update the
    underlying buffer in one call. Any change of its entries (assigning,
    deleting, ``update``...) marks it ``modified``; optimizers then update it
    entry by entry until the original views are back in place.
    """

    __slots__ = ("flat", "modified")

    def __init__(self, flat: "FlatParams", views):
        super().__init__(views)
        self.flat = flat
        self.modified = False


def _marks_modified(name):
    method = getattr(dict, name)

    def wrapper(self, *args, **kwargs):
        self.modified = True
        return method(self, *args, **kwargs)

    wrapper.__name__ = name
    wrapper.__doc__ = method.__doc__
    return wrapper


for _m in ("__setitem__", "__delitem__", "__ior__", "clear", "pop", "popitem", "setdefault", "update"):
    setattr(FlatDict, _m, _marks_modified(_m))


class FlatParams:
    """Parameters and gradients packed into two contiguous 1-D buffers, with
    per-name views of the original shapes.

    Parameters
    ----------
    params : mapping of name -> ndarray
        The parameters (float32 or float64, all one dtype). Their current
        values are *copied* into the buffer; from then on the views in
        :attr:`params` are the parameters (re-point the model at them).

    Attributes
    ----------
    data : ndarray, 1-D
        All parameters, concatenated in ``params`` order.
    grad : ndarray, 1-D, same size and dtype
        All gradients (zero-initialised), same layout.
    params : FlatDict
        name -> view of ``data`` with the parameter's shape.
    grads : FlatDict
        name -> view of ``grad`` with the parameter's shape.
    slices : dict
        name -> ``slice`` of ``data``/``grad`` holding that tensor.

    Notes
    -----
    Any optimizer in :mod:`numbanet.optimizers` given ``(flat.params,
    flat.grads)`` updates ``data`` with a single fused kernel call (its state
    is kept flat too, with per-name views, so ``state_dict`` looks the same as
    without flattening). The fast path is taken as long as every entry of both
    dicts is still the original view; if an entry is replaced the optimizer
    falls back to updating tensor by tensor (correct, just slower).

    Write gradients *into* the views (``np.copyto(flat.grads["W1"], dW)`` or
    ``out=``), never rebind them. Layers in :mod:`numbanet.layers` already
    do: their ``backward`` copies into the persistent ``dW`` array.

    Examples
    --------
    >>> flat = FlatParams({"W": np.ones((3, 2)), "b": np.zeros(2)})
    >>> layer.W, layer.b = flat.params["W"], flat.params["b"]      # doctest: +SKIP
    >>> layer.dW, layer.db = flat.grads["W"], flat.grads["b"]      # doctest: +SKIP
    >>> opt = Adam(lr=1e-3)                                         # doctest: +SKIP
    >>> # each iteration: forward, backward (fills flat.grad), then
    >>> opt.update(flat.params, flat.grads)     # one kernel call   # doctest: +SKIP
    """

    def __init__(self, params: Mapping[str, np.ndarray]):
        if not params:
            raise ValueError("FlatParams: params is empty")
        dtypes = set()
        for name, a in params.items():
            if not isinstance(a, np.ndarray) or a.dtype not in FLOAT_DTYPES:
                what = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
                raise TypeError(f"FlatParams: params[{name!r}] must be a float32 or float64 ndarray, got {what}")
            dtypes.add(a.dtype)
        if len(dtypes) > 1:
            raise TypeError(f"FlatParams: all params must share one dtype, got {sorted(map(str, dtypes))}")
        dtype = dtypes.pop()
        self.slices = {}
        start = 0
        for name, a in params.items():
            self.slices[name] = slice(start, start + a.size)
            start += a.size
        self.data = np.empty(start, dtype)
        self.grad = np.zeros(start, dtype)
        shapes = {name: a.shape for name, a in params.items()}
        self.params = FlatDict(self, {n: self.data[s].reshape(shapes[n]) for n, s in self.slices.items()})
        self.grads = FlatDict(self, {n: self.grad[s].reshape(shapes[n]) for n, s in self.slices.items()})
        for name, a in params.items():
            self.params[name][...] = a
        self._param_views = tuple(self.params.items())
        self._grad_views = tuple(self.grads.items())

    def __len__(self):
        return len(self.slices)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def intact(self, params, grads) -> bool:
        """Whether ``params``/``grads`` are this object's dicts holding exactly
        the original views, so that one update of the whole buffer is the same
        as updating every entry. O(1) unless a dict was modified (then its
        entries are compared once; restoring them re-enables the fast path).
        The views' ``writeable`` flags are not consulted: the buffers are."""
        if params is not self.params or grads is not self.grads:
            return False
        for d, views in ((params, self._param_views), (grads, self._grad_views)):
            if d.modified:
                if len(d) != len(views) or not all(d.get(n) is a for n, a in views):
                    return False
                d.modified = False
        return True

    def __repr__(self):
        return f"FlatParams({len(self)} tensors, {self.data.size} elements, {self.dtype})"

