"""What the book's networks share: parameter creation in the configured dtype,
the layer loop, accuracy, numerical gradients and saving/loading weights.

The chapter networks (:mod:`.two_layer_net`, :mod:`.multi_layer_net`,
:mod:`.multi_layer_net_extend`, :mod:`.simple_convnet`, :mod:`.deep_convnet`)
subclass :class:`BookNet`. Each keeps the book's constructor, attribute names
and random draws; this base holds the parts they have in common.
"""

from __future__ import annotations

import pickle

import numpy as np

from . import config
from . import layers as _L


def param_dtype() -> np.dtype:
    """The dtype new parameters get: ``numbanet.book.config.dtype`` (float64 by default)."""
    return config.float_dtype()


def weights(scale, shape, dtype):
    """``scale * np.random.randn(*shape)`` in ``dtype``.

    Draws from NumPy's global random state exactly as the book does (one
    ``randn`` call per weight array, in the book's order), so that a script
    seeded with ``np.random.seed(s)`` gets the book's initial weights. The
    product is formed in float64, as the book's, and then cast.
    """
    return np.asarray(scale * np.random.randn(*shape), dtype=dtype)


def init_mlp_weights(params, sizes, weight_init_std, dtype):
    """The book's MLP initialisation into ``params`` (``W1``, ``b1``, ...).

    ``sizes`` lists the layer widths from input to output. The standard
    deviation of ``W<i>`` is ``weight_init_std``, or for ``"relu"``/``"he"``
    ``sqrt(2 / fan_in)`` and for ``"sigmoid"``/``"xavier"`` ``sqrt(1 / fan_in)``
    (matched case-insensitively on ``str(weight_init_std)``, as the book).
    """
    kind = str(weight_init_std).lower()
    for idx in range(1, len(sizes)):
        fan_in = sizes[idx - 1]
        scale = weight_init_std
        if kind in ("relu", "he"):
            scale = np.sqrt(2.0 / fan_in)
        elif kind in ("sigmoid", "xavier"):
            scale = np.sqrt(1.0 / fan_in)
        params["W" + str(idx)] = weights(scale, (fan_in, sizes[idx]), dtype)
        params["b" + str(idx)] = np.zeros(sizes[idx], dtype=dtype)


class BookNet:
    """Base of the book's networks.

    Subclasses set ``self.params`` (dict of arrays), ``self.layers`` (an
    ``OrderedDict`` or a list of layers) and the loss layer, and list in
    ``_weight_layers()`` the layer that owns each ``W<i>``/``b<i>``. Every
    network takes the book's arguments plus a keyword-only ``backend`` (see
    :meth:`_use_backend`), kept as the attribute ``backend``.
    """

    #: Skip the first layer's input gradient (False computes it, as the book).
    skip_first_dx = True

    def _use_backend(self, backend):
        """Point every layer (the loss layer included) at ``backend``.

        ``backend`` is the networks' keyword-only argument (an addition to
        the book's signatures): :mod:`numbanet.kernels` when ``None``, or
        :mod:`numbanet.reference` for the same network in plain NumPy.
        """
        from numbanet.reference.backend import resolve_backend

        ops = resolve_backend(backend)
        self.backend = ops
        for layer in [*self._layer_list(), self._loss_layer()]:
            layer.ops = ops

    def _weight_layers(self):
        """Layer names (or list indices) holding W1/b1, W2/b2, ... in order."""
        raise NotImplementedError

    def _loss_layer(self):
        return self.last_layer

    def predict(self, x):
        """Scores before the softmax, shape (N, output_size): every layer in order."""
        return self._forward_layers(x)

    def _forward_layers(self, x, train_flg=None):
        """Every layer's ``forward`` in order; with ``train_flg``, layers named
        Dropout* or BatchNorm* get it (MultiLayerNetExtend's rule, the book's).

        A numbanet.book Affine or BatchNormalization followed by a
        numbanet.book Relu runs as one fused pass (``forward_relu``: the same
        values, one kernel call and one pass over memory fewer);
        :meth:`_backprop` runs the pair back in one call too."""
        items = list(self.layers.items()) if isinstance(self.layers, dict) else [("", lay) for lay in self.layers]
        i = 0
        while i < len(items):
            key, layer = items[i]
            nxt = items[i + 1][1] if i + 1 < len(items) else None
            args = (train_flg,) if train_flg is not None and ("Dropout" in key or "BatchNorm" in key) else ()
            if _L._fusable(layer, nxt):
                x = layer.forward_relu(x, nxt, *args)
                i += 2
            else:
                x = layer.forward(x, *args)
                i += 1
        return x

    def loss(self, x, t):
        """Mean cross-entropy of the softmax of :meth:`predict` against ``t``, plus
        the L2 term of networks with ``weight_decay_lambda``."""
        return self._loss_layer().forward(self.predict(x), t) + self._decay_term()

    def gradient(self, x, t):
        """Backpropagated gradients of ``loss(x, t)``, keyed as ``params``.

        New arrays on every call (an earlier result is never overwritten);
        with ``weight_decay_lambda`` each ``W`` gradient includes ``lambda * W``.
        """
        self.loss(x, t)
        self._backprop(self._loss_layer())
        grads = {}
        decay = getattr(self, "weight_decay_lambda", 0)
        for i, key in enumerate(self._weight_layers(), start=1):
            self._weight_grads(grads, i, self.layers[key], decay)
        return grads

    def _layer_list(self):
        return list(self.layers.values()) if isinstance(self.layers, dict) else list(self.layers)

    # -- forward and backward --------------------------------------------
    def _backprop(self, loss_layer):
        """Run backward from ``loss_layer`` through every layer in reverse.

        The first layer is not asked for its input gradient."""
        layers = self._layer_list()
        dout = loss_layer.backward(1)

        def fused(i):  # layers i - 1 and i ran forward as one fused pass
            prev = layers[i - 1]
            return _L._fusable(prev, layers[i]) and prev._relu is layers[i]

        i = len(layers) - 1
        while i >= 2 or (i == 1 and not fused(1)):
            if fused(i):
                dout = layers[i - 1].backward_relu(dout)
                i -= 2
            else:
                dout = layers[i].backward(dout)
                i -= 1
        # i is 1 if the first layer and the ReLU after it ran fused (still to go back), else 0
        first = layers[0]
        # The input gradient of the first layer is never used (its input is
        # the data): Affine and Convolution skip computing it, which saves
        # the largest product of a ConvNet's backward pass. Same parameter
        # gradients either way.
        skip = self.skip_first_dx and isinstance(first, (_L.Affine, _L.Convolution))
        if i == 1:
            if skip:
                first.backward_relu(dout, need_dx=False)
            else:
                first.backward_relu(dout)
        elif skip:
            first.backward(dout, need_dx=False)
        else:
            first.backward(dout)

    @staticmethod
    def _grad(layer, attr):
        """``layer.<attr>`` after :meth:`_backprop`, as an array the next
        ``gradient()`` call leaves alone.

        numbanet.book's own layers store new gradient arrays on every
        backward, handed out as they are. A layer of another class (a user's
        own, or a subclass) may write into one buffer every time, from its
        first call on, so its gradient arrays are copied.
        """
        g = getattr(layer, attr)
        if type(layer) not in _L.OWN_LAYERS and isinstance(g, np.ndarray):
            g = g.copy()
        return g

    def _weight_grads(self, grads, idx, layer, decay=0.0, W=None):
        """Put ``layer``'s ``dW``/``db`` into ``grads`` as ``W<idx>``/``b<idx>``;
        ``decay`` adds the book's L2 term ``decay * W`` (to a new array)."""
        if decay:
            gW = layer.dW + decay * (layer.W if W is None else W)
        else:
            gW = self._grad(layer, "dW")
        grads["W" + str(idx)] = gW
        grads["b" + str(idx)] = self._grad(layer, "db")

    def _decay_term(self):
        """The MLPs' L2 term, ``sum_i 0.5 * lambda * sum(W_i ** 2)``, summed in the book's order.

        Skipped (0) when lambda is 0: the book adds exactly 0.0 then.
        """
        lam = getattr(self, "weight_decay_lambda", 0)
        decay = 0
        if lam:
            for idx in range(1, self.hidden_layer_num + 2):
                decay += 0.5 * lam * np.sum(self.params["W" + str(idx)] ** 2)
        return decay

    # -- accuracy --------------------------------------------------------
    @staticmethod
    def _labels(t):
        return t if t.ndim == 1 else np.argmax(t, axis=1)

    def _accuracy_full(self, y, t, n):
        """The MLPs' accuracy: one forward pass over all of ``x``."""
        return np.sum(np.argmax(y, axis=1) == self._labels(t)) / float(n)

    def _accuracy_batched(self, x, t, batch_size, **predict_kw):
        """The ConvNets' accuracy: whole batches of ``batch_size`` only.

        As the book, samples past the last whole batch are not predicted but
        still count in the denominator (fewer than ``batch_size`` samples
        give 0.0).
        """
        t = self._labels(t)
        hits = 0.0
        for i in range(int(x.shape[0] / batch_size)):
            sl = slice(i * batch_size, (i + 1) * batch_size)
            y = self.predict(x[sl], **predict_kw)
            hits += np.sum(np.argmax(y, axis=1) == t[sl])
        return hits / x.shape[0]

    # -- numerical gradient ---------------------------------------------
    def _numerical(self, loss, names):
        """Central differences of ``loss()`` for each parameter in ``names``."""
        from .gradient import numerical_gradient

        f = lambda _w: loss()  # noqa: E731  (the book's calling convention: f(x))
        return {name: numerical_gradient(f, self.params[name]) for name in names}


class SavesParams:
    """``save_params``/``load_params`` of the book's ConvNets (mixed into them)."""

    def save_params(self, file_name="params.pkl"):
        """Pickle ``params`` as a dict of arrays (the book's file layout)."""
        with open(file_name, "wb") as f:
            pickle.dump(dict(self.params), f)

    def load_params(self, file_name="params.pkl"):
        """Load weights saved by :meth:`save_params` or by the book's code.

        The file is read with a restricted unpickler that builds only dicts
        and NumPy arrays (a crafted pickle raises instead of running code).
        Each array is cast to the dtype of the parameter it replaces and the
        layers are pointed at the new arrays, as the book does.
        """
        from ._pickle import load

        loaded = load(file_name)
        if not isinstance(loaded, dict):
            raise TypeError(f"load_params: {file_name!r} holds a {type(loaded).__name__}, expected a dict of arrays")
        for key, val in loaded.items():
            old = self.params.get(key)
            dtype = old.dtype if old is not None else param_dtype()
            self.params[key] = np.ascontiguousarray(val, dtype=dtype)
        for i, key in enumerate(self._weight_layers(), start=1):
            layer = self.layers[key]
            layer.W = self.params["W" + str(i)]
            layer.b = self.params["b" + str(i)]
