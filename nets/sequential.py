"""A stack of layers with a loss: prediction, backprop, accuracy, save/load."""

from __future__ import annotations

import os

import numpy as np

from numbanet.layers import SoftmaxWithLoss


class Sequential:
    """Layers applied in order, followed by a loss layer.

    Parameters
    ----------
    *layers : Layer
        Objects with ``forward``/``backward`` (``forward(x, train_flg)`` for
        layers whose ``uses_train_flg`` is true) and ``params``/``grads``.
    loss : layer, optional
        Final layer with ``forward(x, t) -> loss`` and ``backward()``; default a
        new ``SoftmaxWithLoss`` on the first layer's backend.
    flat : bool
        Call :meth:`flatten_params` (one buffer for all parameters, one for
        all gradients) so that optimizers take their one-call fast path.

    Attributes
    ----------
    params, grads : dict of str -> ndarray
        The layers' own arrays (not copies) named ``"<layer index>.<name>"``,
        e.g. ``"0.W"``; an optimizer updating ``params`` in place trains the
        network, and :meth:`gradient` overwrites ``grads`` in place.
    buffers : dict of str -> ndarray
        Non-trainable state (batch norm running statistics), same naming.
    last_loss : float
        The loss of the latest :meth:`gradient` call.
    """

    def __init__(self, *layers, loss=None, flat=False):
        self.layers = list(layers)
        if loss is None:
            loss = SoftmaxWithLoss(backend=self.layers[0].ops if self.layers else None)
        self.last_layer = loss
        self.last_loss = None
        self._flat = None
        if flat:
            self.flatten_params()

    # -- named arrays ------------------------------------------------------
    def _named(self, attr):
        out = {}
        for i, layer in enumerate(self.layers):
            for name, arr in getattr(layer, attr, {}).items():
                out[f"{i}.{name}"] = arr
        return out

    @property
    def params(self) -> dict[str, np.ndarray]:
        return self._flat.params if self._flat is not None else self._named("params")

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return self._flat.grads if self._flat is not None else self._named("grads")

    def flatten_params(self):
        """Move every parameter and gradient into one contiguous buffer each.

        Uses :class:`numbanet.optimizers.FlatParams`: the current values are
        copied in and each layer's ``W``/``dW`` (etc.) attributes are re-pointed
        at views of the buffers, so the layers keep working (they write
        gradients in place). From then on :attr:`params` and :attr:`grads`
        return the same two dicts every time, which lets an optimizer update
        the whole model with one fused kernel call. Returns the FlatParams.
        Idempotent; all parameters must share one dtype.
        """
        if self._flat is not None:
            return self._flat
        from numbanet.optimizers import FlatParams

        flat = FlatParams(self._named("params"))
        for i, layer in enumerate(self.layers):
            for name in getattr(layer, "param_names", ()):
                setattr(layer, name, flat.params[f"{i}.{name}"])
                setattr(layer, "d" + name, flat.grads[f"{i}.{name}"])
        self._flat = flat
        return flat

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        return self._named("buffers")

    # -- computation ---------------------------------------------------------
    def predict(self, x, train_flg=False):
        """Scores before the loss (logits), shape (N, K)."""
        for layer in self.layers:
            if getattr(layer, "uses_train_flg", False):
                x = layer.forward(x, train_flg)
            else:
                x = layer.forward(x)
        return x

    def loss(self, x, t, train_flg=False):
        """The loss of the batch ``(x, t)``; ``t`` holds class indices or one-hot rows."""
        return self.last_layer.forward(self.predict(x, train_flg), t)

    def gradient(self, x, t, after_backward=None):
        """Backpropagation in training mode; returns :attr:`grads` (updated in place).

        ``after_backward(i)``, if given, is called right after layer ``i``'s
        backward (last layer first), when that layer's gradients are final:
        e.g. to start sending them while backward goes on.
        """
        self.last_loss = self.loss(x, t, train_flg=True)
        dout = self.last_layer.backward(1)
        # Nothing needs the gradient of the input data: stop at the first
        # layer with parameters and let it skip its dx (as autograd does for
        # an input without requires_grad).
        first = next((i for i, layer in enumerate(self.layers) if layer.param_names), len(self.layers))
        for i in range(len(self.layers) - 1, first - 1, -1):
            layer = self.layers[i]
            if i == first and layer.skips_dx:
                layer.backward(dout, need_dx=False)
            else:
                dout = layer.backward(dout)
            if after_backward is not None:
                after_backward(i)
        return self.grads

    def accuracy(self, x, t, batch_size=100):
        """Fraction of rows whose arg-max score is the label (inference mode)."""
        t = np.asarray(t)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        n = len(x)
        if n != len(t):
            raise ValueError(f"accuracy: x has {n} samples but t has {len(t)}")
        if n == 0:
            raise ValueError("accuracy: empty dataset")
        if batch_size < 1:
            raise ValueError(f"accuracy: batch_size must be >= 1, got {batch_size}")
        correct = 0
        for s in range(0, n, batch_size):
            y = self.predict(x[s : s + batch_size], train_flg=False)
            correct += int(np.sum(np.argmax(y, axis=1) == t[s : s + batch_size]))
        return correct / n

    # -- persistence -----------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """Parameters and buffers together (what :meth:`save` writes)."""
        return {**self.params, **self.buffers}

    def save(self, path):
        """Write parameters and buffers to a ``.npz`` file."""
        np.savez(os.fspath(path), **self.state())

    def load(self, path):
        """Read a file written by :meth:`save` into the existing arrays (in place).

        Raises ``ValueError`` if names or shapes do not match this network.
        Values are cast to each array's dtype.
        """
        state = self.state()
        with np.load(os.fspath(path)) as data:
            missing = sorted(set(state) - set(data.files))
            extra = sorted(set(data.files) - set(state))
            if missing or extra:
                raise ValueError(f"load: {path} does not match this network (missing {missing}, unexpected {extra})")
            for name, arr in state.items():
                if data[name].shape != arr.shape:
                    raise ValueError(f"load: {name} has shape {data[name].shape} in {path}, network has {arr.shape}")
            for name, arr in state.items():
                np.copyto(arr, data[name], casting="unsafe")

    def __repr__(self):
        inner = ",\n  ".join(type(layer).__name__ for layer in self.layers)
        return f"{type(self).__name__}(\n  {inner},\n  loss={type(self.last_layer).__name__})"
