"""The book's basic layers: Affine, Relu, Sigmoid and SoftmaxWithLoss."""

from __future__ import annotations

import numpy as np

from ._base import Layer


class Affine(Layer):
    """Fully connected layer ``y = x.reshape(N, -1) @ W + b``.

    Parameters
    ----------
    W : ndarray, shape (D, M)
    b : ndarray, shape (M,)
    backend : module, optional
        :mod:`numbanet.kernels` (default) or :mod:`numbanet.reference`.

    Attributes ``W``, ``b`` are the given arrays (not copies); ``dW``, ``db``
    are overwritten in place by :meth:`backward`.
    """

    param_names = ("W", "b")

    def __init__(self, W, b, backend=None):
        super().__init__(backend)
        self.W = W
        self.b = b
        self.x = None
        self._init_grads()

    def forward(self, x):
        # State changes only after the kernel accepted the input, so a bad
        # call leaves the layer as it was.
        y = self.ops.affine_forward(x, self.W, self.b)
        self.x = x
        return y

    skips_dx = True

    def backward(self, dout, need_dx=True):
        """Store ``dW``, ``db``; return ``dx`` (``None`` when ``need_dx`` is False)."""
        dx, dW, db = self.ops.affine_backward(dout, self.x, self.W, need_dx=need_dx)
        self._store_grads(W=dW, b=db)
        return dx


class Relu(Layer):
    """Rectified linear unit, ``y = max(x, 0)``."""

    def __init__(self, backend=None):
        super().__init__(backend)
        self.x = None

    def forward(self, x):
        y = self.ops.relu_forward(x)
        self.x = x
        return y

    def backward(self, dout):
        return self.ops.relu_backward(dout, self.x)


class Sigmoid(Layer):
    """Logistic sigmoid, ``y = 1 / (1 + exp(-x))``."""

    def __init__(self, backend=None):
        super().__init__(backend)
        self.out = None

    def forward(self, x):
        self.out = self.ops.sigmoid_forward(x)
        return self.out

    def backward(self, dout):
        return self.ops.sigmoid_backward(dout, self.out)


class SoftmaxWithLoss(Layer):
    """Softmax activation fused with the mean cross-entropy loss.

    ``forward(x, t)`` returns the loss; ``t`` holds class indices (N,) or
    one-hot targets (N, K). ``backward(dout=1)`` returns ``dout * (y - t) / N``.
    """

    def __init__(self, backend=None):
        super().__init__(backend)
        self.loss = None
        self.y = None
        self.t = None

    def forward(self, x, t):
        self.loss, self.y = self.ops.softmax_cross_entropy(x, t)
        self.t = t
        return self.loss

    def backward(self, dout=1):
        dx = self.ops.softmax_cross_entropy_backward(self.y, self.t)
        if dout != 1:
            dx *= dx.dtype.type(dout)
        return dx
