"""The book's layers (``common/layers.py``) on numbanet's kernels.

Same classes, constructor arguments, defaults, attributes and semantics as the
book's layers, so its networks and scripts run unchanged; the arithmetic runs
in :mod:`numbanet.kernels`.

Dtypes: a layer with parameters computes in their dtype (float64 as the book
creates them, float32 with ``numbanet.book.config.dtype = "float32"``) and
casts its input to it, so uint8, integer, bool, float16, float32 and float64
inputs all work. A layer without parameters keeps float32 and float64 input
as it is and casts any other dtype to ``numbanet.book.config.dtype``. The
kernels accept only float32/float64 of one dtype; the casting lives here, and
only happens when the dtype differs.

Every layer takes a keyword-only ``backend`` (an addition to the book's
signatures): the module of ops it computes with, :mod:`numbanet.kernels` by
default, or :mod:`numbanet.reference` for the same layer in plain NumPy (the
book's algorithm; the benchmark's reference side). It is the attribute
``ops``.

Every ``backward`` returns new arrays and stores new gradient arrays
(``dW``, ``db``, ``dgamma``, ``dbeta``), as the book does: a gradient returned
earlier is never overwritten by a later call.

Where these layers differ from the book's code (always at points where the
book's code fails or its result is not a gradient) the class docstring says
so; :mod:`numbanet.layers` keeps the modern (PyTorch) semantics instead.
"""

from __future__ import annotations

import numpy as np

from numbanet.reference.backend import resolve_backend

from . import config
from . import functions as _functions
from .functions import *  # noqa: F401,F403  (re-exported, as the book's module does)
from .functions import LOG_DELTA
from .util import col2im, im2col  # noqa: F401  (re-exported, as the book's module does)

__all__ = [
    "Relu",
    "Sigmoid",
    "Affine",
    "SoftmaxWithLoss",
    "Dropout",
    "BatchNormalization",
    "Convolution",
    "Pooling",
]
# The book's module has no ``__all__``: ``from common.layers import *`` also
# hands a script numpy, the functions and im2col/col2im, and the chapter
# networks (ch05/two_layer_net, ch07/simple_convnet) are written against that.
__all__ += ["np", "im2col", "col2im", *_functions.__all__]

_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: The book's batch-normalization epsilon (it writes ``10e-7``).
BN_EPS = 1e-6


def _param_dtype(p):
    """The dtype a layer with parameter ``p`` computes in."""
    dt = p.dtype
    return dt if dt in _KERNEL_DTYPES else config.float_dtype()


def _free_dtype(x):
    """The dtype a layer without parameters computes in, for input ``x``."""
    dt = getattr(x, "dtype", None)
    return dt if dt in _KERNEL_DTYPES else config.float_dtype()


def _cast(a, dt):
    """``a`` as an ndarray of dtype ``dt``: ``a`` itself when it already is one."""
    if type(a) is np.ndarray and a.dtype == dt:
        return a
    return np.asarray(a, dtype=dt)


def _input_and_weights(layer, x, n_out):
    """``(x, W, b)`` of a layer with weights, all in the weights' compute dtype.

    ``b`` is broadcast to its ``(n_out,)`` vector when it is not one: the book
    adds it with NumPy broadcasting, so a scalar bias works there
    (ch07/apply_filter passes ``b = 0``)."""
    dt = _param_dtype(layer.W)
    b = _cast(layer.b, dt)
    if b.shape != (n_out,):
        b = np.ascontiguousarray(np.broadcast_to(b, (n_out,)))
    return _cast(x, dt), _cast(layer.W, dt), b


class Relu:
    """Rectified linear unit, ``out = max(x, 0)``; ``dx = dout * (x > 0)``.

    ``mask`` is the book's boolean array ``x <= 0`` of the last forward input,
    computed when read (the kernels need no mask, so none is stored). ``x``
    is that input, or, when a network fused this layer into the batch norm
    before it (:meth:`Affine.forward_relu`, :meth:`BatchNormalization.forward_relu`), this layer's output:
    ``out <= 0`` exactly where ``x <= 0`` (NaN in both: False), so the mask
    and the gradient are the same.
    Unlike the book's code, ``backward`` leaves ``dout`` as it is and returns
    a new array.
    """

    def __init__(self, *, backend=None):
        self.ops = resolve_backend(backend)
        self.x = None

    @property
    def mask(self):
        return None if self.x is None else self.x <= 0

    def forward(self, x):
        x = _cast(x, _free_dtype(x))
        out = self.ops.relu_forward(x)
        self.x = x
        return out

    def backward(self, dout):
        return self.ops.relu_backward(_cast(dout, self.x.dtype), self.x)


class Sigmoid:
    """Logistic sigmoid, ``out = 1 / (1 + exp(-x))``; ``dx = dout * out * (1 - out)``.

    ``out`` is the last forward output.
    """

    def __init__(self, *, backend=None):
        self.ops = resolve_backend(backend)
        self.out = None

    def forward(self, x):
        out = self.ops.sigmoid_forward(_cast(x, _free_dtype(x)))
        self.out = out
        return out

    def backward(self, dout):
        return self.ops.sigmoid_backward(_cast(dout, self.out.dtype), self.out)


class Affine:
    """Fully connected layer ``out = x.reshape(N, -1) @ W + b``.

    Parameters
    ----------
    W : ndarray, shape (D, M)
    b : ndarray, shape (M,)
        Kept, not copied (the network's ``params`` entries and the optimizer
        update the same arrays).

    Attributes: ``x`` (the last input, flattened to (N, D) and cast to the
    weights' dtype), ``original_x_shape``, and after ``backward`` new arrays
    ``dW = x.T @ dout`` and ``db = dout.sum(axis=0)``; ``backward`` returns
    ``dx = dout @ W.T`` in the input's shape.
    """

    def __init__(self, W, b, *, backend=None):
        self.ops = resolve_backend(backend)
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None
        self._relu = None

    def forward(self, x):
        return self.forward_relu(x, None)

    def forward_relu(self, x, relu):
        """:meth:`forward`, then ``relu.forward`` (``relu`` a :class:`Relu`)
        in the same pass: returns the ReLU's output, which becomes ``relu``'s
        state; bitwise the two calls (how numbanet.book's networks run an
        Affine followed by a ReLU). ``relu=None`` is :meth:`forward`."""
        x, W, b = _input_and_weights(self, x, self.W.shape[1])
        self.original_x_shape = x.shape
        x = x.reshape(x.shape[0], -1)
        self.x = x
        self._relu = relu
        if relu is None:
            return self.ops.affine_forward(x, W, b)
        out = self.ops.affine_forward(x, W, b, relu=True)
        relu.x = out
        return out

    def backward_relu(self, dout, need_dx=True):
        """``backward(relu.backward(dout), need_dx)`` in one call, after
        :meth:`forward_relu` with that ``relu``: ``dout`` is the gradient of
        the ReLU's output."""
        x = self.x
        dx, self.dW, self.db = self.ops.affine_backward(
            _cast(dout, x.dtype), x, _cast(self.W, x.dtype), need_dx=need_dx, relu_out=self._relu.x
        )
        return dx.reshape(self.original_x_shape) if need_dx else None

    def backward(self, dout, need_dx=True):
        """Store ``dW``, ``db``; return ``dx`` (``None`` with ``need_dx=False``,
        an addition to the book's signature for a network's first layer,
        whose input gradient nobody reads)."""
        x = self.x
        dx, self.dW, self.db = self.ops.affine_backward(
            _cast(dout, x.dtype), x, _cast(self.W, x.dtype), need_dx=need_dx
        )
        return dx.reshape(self.original_x_shape) if need_dx else None


class SoftmaxWithLoss:
    """Softmax followed by the book's mean cross-entropy loss.

    ``forward(x, t)`` returns ``loss = -(1/N) sum_n log(y[n, t_n] + 1e-7)``
    with ``y = softmax(x)`` over the last axis (the book's ``1e-7``, so the
    printed losses are the book's). ``x`` is (N, K) or 1-D (K,) (a batch of
    one). ``t`` holds class indices of shape (N,) or (N, 1) (a scalar or (1,)
    for 1-D ``x``), or one-hot targets of the shape of ``x``, whose argmax is
    the class the loss reads (as the book).

    ``backward(dout=1)`` returns ``dout * (y - t) / N`` in the shape of ``x``
    (``t`` one-hot). Attributes ``loss``, ``y`` (the softmax output, shape of
    ``x``) and ``t`` (as given).

    Differences from the book's code, which fails or returns something else
    here: (N, 1) labels are read as (N,) (the book's indexing broadcasts them
    to an (N, N) selection); for 1-D ``x`` the gradient is ``y - t`` (the
    book's raises for index labels and divides by K for one-hot ones);
    ``dout`` scales the gradient (the book ignores it; its callers pass 1).
    """

    def __init__(self, *, backend=None):
        self.ops = resolve_backend(backend)
        self.loss = None
        self.y = None
        self.t = None
        self._labels = None

    def forward(self, x, t):
        x = _cast(x, _free_dtype(x))
        x2 = x.reshape(1, -1) if x.ndim == 1 else x
        n = x2.shape[0]
        t_arr = np.asarray(t)
        if t_arr.size == x2.size and t_arr.size != n:
            # One-hot targets (the book's test: as many labels as scores; a
            # single class K = 1 reads as indices, where both agree).
            labels = t_arr.reshape(x2.shape)
            picked = labels.argmax(axis=1)
        else:
            labels = picked = t_arr.reshape(-1)
        _, y = self.ops.softmax_cross_entropy(x2, labels)
        p = y[np.arange(n), picked]
        # the ndarray method: np.sum's dispatch costs more than the sum of a
        # gradient check's few rows (same reduction, same result)
        self.loss = -np.log(p + p.dtype.type(LOG_DELTA)).sum() / n
        self.y = y.reshape(x.shape)
        self.t = t
        self._labels = labels
        return self.loss

    def backward(self, dout=1):
        y = self.y
        y2 = y.reshape(1, -1) if y.ndim == 1 else y
        dx = self.ops.softmax_cross_entropy_backward(y2, self._labels)
        if dout != 1:
            dx *= dx.dtype.type(dout)
        return dx.reshape(y.shape)


class Dropout:
    """The book's (non-inverted) dropout.

    ``forward(x, train_flg=True)``: in training, ``mask = np.random.rand(*x.shape)
    > dropout_ratio`` (drawn from NumPy's global random state exactly as the
    book draws it, so a script seeded with ``np.random.seed`` sees the book's
    masks) and ``out = x * mask``; in inference ``out = x * (1 - dropout_ratio)``.
    ``backward(dout) = dout * mask``. ``mask`` is the boolean mask of the last
    training forward.
    """

    def __init__(self, dropout_ratio=0.5, *, backend=None):
        self.ops = resolve_backend(backend)  # unused: the book's dropout is NumPy's draw and product
        self.dropout_ratio = dropout_ratio
        self.mask = None

    def forward(self, x, train_flg=True):
        x = _cast(x, _free_dtype(x))
        if train_flg:
            self.mask = np.random.rand(*x.shape) > self.dropout_ratio
            return x * self.mask
        return x * x.dtype.type(1.0 - self.dropout_ratio)

    def backward(self, dout):
        dout = _cast(dout, _free_dtype(dout))
        return dout * self.mask


class BatchNormalization:
    """The book's batch normalization: per feature of the flattened input.

    Parameters
    ----------
    gamma, beta : ndarray, shape (D,)
        Scale and shift, D the number of features of ``x.reshape(N, -1)``
        (for 4-D input, C * H * W: the book normalises every (c, h, w)
        position separately, not per channel).
    momentum : float
        ``running = momentum * running + (1 - momentum) * batch``.
    running_mean, running_var : ndarray, shape (D,), optional
        Zeros of shape (D,) (in gamma's dtype) created at the first forward
        when not given, as the book.

    ``forward(x, train_flg=True)`` in training normalises with the batch mean
    and biased variance, ``out = gamma * (x - mu) / sqrt(var + 1e-6) + beta``,
    and moves the running statistics towards ``mu`` and the *biased* ``var``
    (new arrays, as the book); a batch of one is allowed (its variance is 0).
    In inference it uses the running statistics. ``backward(dout)`` returns
    ``dx`` and stores new ``dgamma``, ``dbeta``. Unlike the book's code, a
    ``backward`` after an inference forward returns the gradient of that
    forward (the book's reuses the last training batch's intermediates).
    """

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None, *, backend=None):
        self.ops = resolve_backend(backend)
        self.gamma = gamma
        self.beta = beta
        self.momentum = momentum
        self.input_shape = None
        self.running_mean = running_mean
        self.running_var = running_var
        self.batch_size = None
        self.dgamma = None
        self.dbeta = None
        self._x = self._mean = self._inv_std = None
        self._train = True
        self._relu = None

    def forward(self, x, train_flg=True):
        return self.forward_relu(x, None, train_flg)

    def forward_relu(self, x, relu, train_flg=True):
        """:meth:`forward`, then ``relu.forward`` (``relu`` a :class:`Relu`)
        in the same pass: returns the ReLU's output, which becomes ``relu``'s
        state. The values are bitwise those of the two calls; one kernel call
        and one pass over memory fewer (how numbanet.book's networks run a
        batch norm followed by a ReLU). ``relu=None`` is :meth:`forward`."""
        gamma = self.gamma
        dt = _param_dtype(gamma)
        x = _cast(x, dt)
        self.input_shape = x.shape
        x2 = x if x.ndim == 2 else x.reshape(x.shape[0], -1)
        if self.running_mean is None:
            self.running_mean = np.zeros(x2.shape[1], dt)
            self.running_var = np.zeros(x2.shape[1], dt)
        train = bool(train_flg)
        out, mean, inv_std, rm, rv = self.ops.batchnorm_forward(
            x2, _cast(gamma, dt), _cast(self.beta, dt), _cast(self.running_mean, dt),
            _cast(self.running_var, dt), self.momentum, BN_EPS, train, unbiased=False, relu=relu is not None,
        )
        if train:
            self.running_mean, self.running_var = rm, rv
            self.batch_size = x2.shape[0]
        self._x, self._mean, self._inv_std, self._train = x2, mean, inv_std, train
        out = out.reshape(self.input_shape)
        self._relu = relu
        if relu is not None:
            relu.x = out
        return out

    def backward_relu(self, dout):
        """``backward(relu.backward(dout))`` in one pass, after
        :meth:`forward_relu` with that ``relu``: ``dout`` is the gradient of
        the ReLU's output."""
        x2 = self._x
        r2 = self._relu.x.reshape(x2.shape)
        dout = _cast(dout, x2.dtype).reshape(x2.shape)
        dx, self.dgamma, self.dbeta = self.ops.batchnorm_backward(
            dout, x2, _cast(self.gamma, x2.dtype), self._mean, self._inv_std, self._train, relu_out=r2
        )
        return dx.reshape(self.input_shape)

    def backward(self, dout):
        x2 = self._x
        dout = _cast(dout, x2.dtype).reshape(x2.shape)
        dx, self.dgamma, self.dbeta = self.ops.batchnorm_backward(
            dout, x2, _cast(self.gamma, x2.dtype), self._mean, self._inv_std, self._train
        )
        return dx.reshape(self.input_shape)


class Convolution:
    """2-D convolution (cross-correlation) with the book's arguments.

    Parameters
    ----------
    W : ndarray, shape (FN, C, FH, FW)
    b : ndarray, shape (FN,)
    stride, pad : int
        Zero padding on each side.

    ``forward(x)`` maps (N, C, H, W) to (N, FN, OH, OW) with ``OH = (H + 2 pad
    - FH) // stride + 1``; ``backward(dout)`` returns ``dx`` and stores new
    ``dW``, ``db``. ``x`` is the last input (cast to the weights' dtype). The
    book's im2col intermediates ``col``/``col_W`` are not built (the kernels
    need none) and stay ``None``.
    """

    def __init__(self, W, b, stride=1, pad=0, *, backend=None):
        self.ops = resolve_backend(backend)
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad
        self.x = None
        self.col = None
        self.col_W = None
        self.dW = None
        self.db = None

    def forward(self, x):
        x, W, b = _input_and_weights(self, x, self.W.shape[0])
        out = self.ops.conv2d_forward(x, W, b, self.stride, self.pad)
        self.x = x
        return out

    def backward(self, dout, need_dx=True):
        """Store ``dW``, ``db``; return ``dx`` (``None`` with ``need_dx=False``,
        as :meth:`Affine.backward`)."""
        x = self.x
        dx, self.dW, self.db = self.ops.conv2d_backward(
            _cast(dout, x.dtype), x, _cast(self.W, x.dtype), self.stride, self.pad, need_dx=need_dx
        )
        return dx


class Pooling:
    """Max pooling with the book's arguments: ``Pooling(pool_h, pool_w, stride=2, pad=0)``.

    Note the book's default stride 2, whatever the window. Each output is the
    maximum of its window; ``backward`` routes ``dout`` to the first maximum
    of each window in row-major order (``np.argmax``), summing where windows
    overlap. ``arg_max`` is that index in the book's layout (flat, in (n, oh,
    ow, c) order), computed when read. The book's code fails for ``pad > 0``;
    here padded taps are ``-inf`` (never the maximum), as in
    :class:`numbanet.layers.Pooling`.
    """

    def __init__(self, pool_h, pool_w, stride=2, pad=0, *, backend=None):
        self.ops = resolve_backend(backend)
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.x = None
        self._arg = None

    @property
    def arg_max(self):
        return None if self._arg is None else self._arg.transpose(0, 2, 3, 1).reshape(-1)

    def forward(self, x):
        x = _cast(x, _free_dtype(x))
        out, self._arg = self.ops.maxpool2d_forward(x, self.pool_h, self.pool_w, self.stride, self.pad)
        self.x = x
        return out

    def backward(self, dout):
        x = self.x
        return self.ops.maxpool2d_backward(
            _cast(dout, x.dtype), self._arg, x.shape, self.pool_h, self.pool_w, self.stride, self.pad
        )


#: The layer classes above, whose ``backward`` stores new gradient arrays on
#: every call (subclasses may not: they are not listed).
OWN_LAYERS = frozenset({Relu, Sigmoid, Affine, SoftmaxWithLoss, Dropout, BatchNormalization, Convolution, Pooling})


def _fusable(layer, nxt):
    """Whether a network runs ``layer`` and the ``nxt`` layer after it as one
    fused pass: an Affine or a BatchNormalization followed by a Relu, exactly
    these numbanet.book types (a subclass or a user's layer may do anything
    in ``forward``)."""
    return type(nxt) is Relu and (type(layer) is Affine or type(layer) is BatchNormalization)
