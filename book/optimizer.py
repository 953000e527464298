"""The book's optimizers (``common/optimizer.py``) on numbanet's fused kernels.

Each class keeps the book's constructor, defaults, attribute names and state
layout (``Momentum.v``, ``AdaGrad.h``, ``Adam.iter``/``m``/``v``: dicts of
name -> array, created on the first :meth:`update` with ``np.zeros_like``),
and ``update(params, grads)`` updates the entries of ``params`` in place.

The formulas are the book's, which differ from :mod:`numbanet.optimizers`
(PyTorch's): with :math:`\\eta` the learning rate, :math:`g` the gradient,

========  ==========================================================================
SGD       :math:`\\theta \\leftarrow \\theta - \\eta g`
Momentum  :math:`v \\leftarrow \\mu v - \\eta g`, :math:`\\theta \\leftarrow \\theta + v`
Nesterov  :math:`\\theta \\leftarrow \\theta + \\mu^2 v - (1 + \\mu) \\eta g`,
          :math:`v \\leftarrow \\mu v - \\eta g`
AdaGrad   :math:`h \\leftarrow h + g^2`,
          :math:`\\theta \\leftarrow \\theta - \\eta g / (\\sqrt{h} + 10^{-7})`
RMSprop   :math:`h \\leftarrow \\rho h + (1 - \\rho) g^2`,
          :math:`\\theta \\leftarrow \\theta - \\eta g / (\\sqrt{h} + 10^{-7})`
Adam      :math:`m \\leftarrow m + (1 - \\beta_1)(g - m)`,
          :math:`v \\leftarrow v + (1 - \\beta_2)(g^2 - v)`,
          :math:`\\theta \\leftarrow \\theta - \\eta_t m / (\\sqrt{v} + 10^{-7})`,
          :math:`\\eta_t = \\eta \\sqrt{1 - \\beta_2^t} / (1 - \\beta_1^t)`
========  ==========================================================================

How each entry is updated:

- a float32 or float64 array (of any shape but 0-d) whose state arrays have
  its shape and dtype: one fused, in-place kernel call
  (:func:`numbanet.kernels.sgd_step`,
  :func:`~numbanet.kernels.book_momentum_step`,
  :func:`~numbanet.kernels.book_nesterov_step`,
  :func:`~numbanet.kernels.adagrad_step` and
  :func:`~numbanet.kernels.rmsprop_step` with eps 1e-7,
  :func:`~numbanet.kernels.book_adam_step`), made for each run of such
  arrays (all of them, in the book's networks) in one ``*_step_foreach``
  call. The operations are evaluated in
  the book's order, so float64 results are the book's bit for bit. A
  gradient of another real dtype is cast to the parameter's dtype first: the
  update runs in the parameter's dtype. (The book's float32 Adam computes its
  update in float64 and rounds it to float32; here it stays float32, which
  differs in the last bits.)
- anything else (Python floats as in the book's ``optimizer_compare_naive``,
  0-d arrays, float16 arrays, state replaced by other types): the book's
  formula in plain NumPy, with the book's results and types.

Every optimizer also takes a keyword-only ``backend`` (an addition to the
book's signatures, attribute ``ops``): the module whose ``*_step`` functions
the fused path calls, :mod:`numbanet.kernels` by default or
:mod:`numbanet.reference` (the same update in NumPy).
"""

from __future__ import annotations

import numpy as np

from numbanet.reference.backend import resolve_backend

# ``np`` too: the book's module has no ``__all__``, so ``from common.optimizer
# import *`` hands scripts numpy, and ch06/optimizer_compare_mnist relies on it.
__all__ = ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "np"]

_FUSED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: The book's eps for AdaGrad, RMSprop and Adam.
EPS = 1e-7


def _fusable(p, g, *states):
    """``g`` ready for a fused step of ``p`` with ``states``, or None when the
    entry takes the plain NumPy path."""
    if type(p) is np.ndarray and type(g) is np.ndarray and not states and g.dtype is p.dtype and p.ndim:
        # the common call, tested first (one dtype object for both arrays)
        return g if p.dtype in _FUSED_DTYPES else None
    if not (isinstance(p, np.ndarray) and p.ndim and p.dtype in _FUSED_DTYPES and isinstance(g, np.ndarray)):
        return None
    for s in states:
        if not (isinstance(s, np.ndarray) and s.dtype == p.dtype and s.shape == p.shape):
            return None
    if g.dtype != p.dtype:
        if g.dtype.kind not in "biuf":
            return None
        g = g.astype(p.dtype)
    return g


class _BookOptimizer:
    """What the six share: the state dicts named in ``_states`` (created on
    the first update with ``np.zeros_like`` of each parameter, as the book
    does) and the choice between the fused and the NumPy path per entry."""

    _states: tuple[str, ...] = ()

    def _entries(self, params, grads):
        """Yield ``(key, grad, fused_grad, states)`` for every entry of
        ``params``; ``fused_grad`` is None where the entry takes NumPy."""
        if self._states and getattr(self, self._states[0]) is None:
            for name in self._states:
                setattr(self, name, {key: np.zeros_like(val) for key, val in params.items()})
        for key in params.keys():
            p, g = params[key], grads[key]
            states = [getattr(self, name)[key] for name in self._states]
            yield key, g, _fusable(p, g, *states), states

    def _update_runs(self, params, grads, fused, numpy_step):
        """Update every entry in dict order: each run of consecutive entries
        that take the fused path goes to ``fused(ps, gs, *state_lists)`` in
        one call (a ``*_step_foreach``), any other entry to
        ``numpy_step(key, g, states)``."""
        run = []
        for key, g, gf, states in self._entries(params, grads):
            if gf is not None:
                run.append((params[key], gf, states))
                continue
            if run:
                fused(*_columns(run))
                run = []
            numpy_step(key, g, states)
        if run:
            fused(*_columns(run))


def _columns(run):
    """``[(p, g, [s1, ...]), ...]`` as ``[p, ...], [g, ...], [s1, ...], ...``."""
    return [p for p, _, _ in run], [g for _, g, _ in run], *([st[i] for _, _, st in run] for i in range(len(run[0][2])))


class SGD(_BookOptimizer):
    """Stochastic gradient descent: ``p -= lr * g``.

    Parameters
    ----------
    lr : float
        Learning rate (attribute ``lr``).
    """

    def __init__(self, lr=0.01, *, backend=None):
        self.ops = resolve_backend(backend)
        self.lr = lr

    def update(self, params, grads):
        """Update every entry of the dict ``params`` from ``grads``, in place."""
        # The arrays go to one sgd_step_foreach call per run of fused entries
        # (all of them, in the book's networks), in dict order: one check of
        # lr and a short check per tensor, where an sgd_step call per tensor
        # cost about 3 us of Python around a 0.6 us kernel call. SGD has no
        # state, so _entries' generator is not needed either.
        lr = self.lr
        ps, gs = [], []
        for key, p in params.items():
            g = grads[key]
            gf = _fusable(p, g)
            if gf is not None:
                ps.append(p)
                gs.append(gf)
                continue
            if ps:
                self.ops.sgd_step_foreach(ps, gs, lr=lr)
                ps, gs = [], []
            params[key] -= lr * g
        if ps:
            self.ops.sgd_step_foreach(ps, gs, lr=lr)


class _Velocity(_BookOptimizer):
    _states = ("v",)

    def __init__(self, lr=0.01, momentum=0.9, *, backend=None):
        self.ops = resolve_backend(backend)
        self.lr = lr
        self.momentum = momentum
        self.v = None


class Momentum(_Velocity):
    """Momentum SGD, the book's form: ``v = momentum*v - lr*g``; ``p += v``.

    Attributes
    ----------
    lr, momentum : float
        Defaults 0.01 and 0.9.
    v : dict or None
        The velocities, name -> array like the parameter; ``None`` until the
        first :meth:`update`.
    """

    def update(self, params, grads):
        """Update every entry of the dict ``params`` from ``grads``, in place."""

        def fused(ps, gs, vs):
            self.ops.book_momentum_step_foreach(ps, gs, vs, lr=self.lr, momentum=self.momentum)

        def numpy_step(key, g, states):
            self.v[key] = self.momentum * states[0] - self.lr * g
            params[key] += self.v[key]

        self._update_runs(params, grads, fused, numpy_step)


class Nesterov(_Velocity):
    """Nesterov's accelerated gradient in the form of Bengio et al.
    (arXiv:1212.0901), as the book writes it::

        p += momentum**2 * v;  p -= (1 + momentum) * lr * g
        v = momentum * v - lr * g

    Attributes
    ----------
    lr, momentum : float
        Defaults 0.01 and 0.9.
    v : dict or None
        The velocities, ``None`` until the first :meth:`update`.
    """

    def update(self, params, grads):
        """Update every entry of the dict ``params`` from ``grads``, in place."""
        mu, lr = self.momentum, self.lr

        def fused(ps, gs, vs):
            self.ops.book_nesterov_step_foreach(ps, gs, vs, lr=lr, momentum=mu)

        def numpy_step(key, g, states):
            params[key] += mu * mu * states[0]
            params[key] -= (1 + mu) * lr * g
            self.v[key] *= mu
            self.v[key] -= lr * g

        self._update_runs(params, grads, fused, numpy_step)


class AdaGrad(_BookOptimizer):
    """AdaGrad: ``h += g*g``; ``p -= lr * g / (sqrt(h) + 1e-7)``.

    Attributes
    ----------
    lr : float
    h : dict or None
        Sums of squared gradients, ``None`` until the first :meth:`update`.
    """

    _states = ("h",)

    def __init__(self, lr=0.01, *, backend=None):
        self.ops = resolve_backend(backend)
        self.lr = lr
        self.h = None

    def update(self, params, grads):
        """Update every entry of the dict ``params`` from ``grads``, in place."""

        def fused(ps, gs, hs):
            # step 1 without lr_decay: the step size is lr itself.
            self.ops.adagrad_step_foreach(ps, gs, hs, step=1, lr=self.lr, eps=EPS)

        def numpy_step(key, g, states):
            self.h[key] += g * g
            params[key] -= self.lr * g / (np.sqrt(self.h[key]) + EPS)

        self._update_runs(params, grads, fused, numpy_step)


class RMSprop(_BookOptimizer):
    """RMSprop: ``h = decay_rate*h + (1 - decay_rate)*g*g``;
    ``p -= lr * g / (sqrt(h) + 1e-7)``.

    Attributes
    ----------
    lr, decay_rate : float
    h : dict or None
        Running averages of squared gradients, ``None`` until the first
        :meth:`update`.
    """

    _states = ("h",)

    def __init__(self, lr=0.01, decay_rate=0.99, *, backend=None):
        self.ops = resolve_backend(backend)
        self.lr = lr
        self.decay_rate = decay_rate
        self.h = None

    def update(self, params, grads):
        """Update every entry of the dict ``params`` from ``grads``, in place."""
        rho = self.decay_rate

        def fused(ps, gs, hs):
            self.ops.rmsprop_step_foreach(ps, gs, hs, lr=self.lr, alpha=rho, eps=EPS)

        def numpy_step(key, g, states):
            self.h[key] *= rho
            self.h[key] += (1 - rho) * g * g
            params[key] -= self.lr * g / (np.sqrt(self.h[key]) + EPS)

        self._update_runs(params, grads, fused, numpy_step)


class Adam(_BookOptimizer):
    """Adam in the book's form (bias correction folded into the step size,
    eps 1e-7 outside the square root)::

        iter += 1;  lr_t = lr * sqrt(1 - beta2**iter) / (1 - beta1**iter)
        m += (1 - beta1) * (g - m);  v += (1 - beta2) * (g*g - v)
        p -= lr_t * m / (sqrt(v) + 1e-7)

    Attributes
    ----------
    lr, beta1, beta2 : float
    iter : int
        Number of updates so far.
    m, v : dict or None
        First and second moment estimates, ``None`` until the first
        :meth:`update`.
    """

    _states = ("m", "v")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, *, backend=None):
        self.ops = resolve_backend(backend)
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.iter = 0
        self.m = None
        self.v = None

    def update(self, params, grads):
        """Update every entry of the dict ``params`` from ``grads``, in place."""
        self.iter += 1
        b1, b2, t = self.beta1, self.beta2, self.iter
        # A NumPy float64 scalar, as the book's np.sqrt makes it.
        lr_t = self.lr * np.sqrt(1.0 - b2**t) / (1.0 - b1**t)

        def fused(ps, gs, ms, vs):
            self.ops.book_adam_step_foreach(ps, gs, ms, vs, step=t, lr=self.lr, beta1=b1, beta2=b2, eps=EPS)

        def numpy_step(key, g, states):
            m, v = states
            self.m[key] += (1 - b1) * (g - m)
            self.v[key] += (1 - b2) * (g**2 - v)
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + EPS)

        self._update_runs(params, grads, fused, numpy_step)
