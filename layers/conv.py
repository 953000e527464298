"""The convolution layer with the book's API."""

from __future__ import annotations

from ._base import Layer


class Convolution(Layer):
    """2-D convolution (cross-correlation) layer.

    Parameters
    ----------
    W : ndarray, shape (F, C/groups, KH, KW)
    b : ndarray, shape (F,), or None for no bias
    stride, pad, dilation : int or (int, int)
    groups : int
        Divides C and F (``groups == C == F`` is depthwise).
    backend : module, optional
        :mod:`numbanet.kernels` (default) or :mod:`numbanet.reference`.

    ``forward(x)`` maps (N, C, H, W) to (N, F, OH, OW); ``backward(dout)``
    returns ``dx`` and overwrites ``dW`` (and ``db``) in place.
    """

    def __init__(self, W, b, stride=1, pad=0, dilation=1, groups=1, backend=None):
        super().__init__(backend)
        self.W = W
        self.b = b
        self.param_names = ("W",) if b is None else ("W", "b")
        self.stride = stride
        self.pad = pad
        self.dilation = dilation
        self.groups = groups
        self.x = None
        self._init_grads()

    def _geometry(self):
        return dict(stride=self.stride, pad=self.pad, dilation=self.dilation, groups=self.groups)

    def forward(self, x):
        # State changes only once the kernel accepted the input, so a bad call
        # leaves the layer as it was.
        y = self.ops.conv2d_forward(x, self.W, self.b, **self._geometry())
        self.x = x
        return y

    skips_dx = True

    def backward(self, dout, need_dx=True):
        """Store ``dW`` (and ``db``); return ``dx`` (``None`` when ``need_dx`` is False)."""
        dx, dW, db = self.ops.conv2d_backward(dout, self.x, self.W, **self._geometry(), need_dx=need_dx)
        if self.b is None:
            self._store_grads(W=dW)
        else:
            self._store_grads(W=dW, b=db)
        return dx
