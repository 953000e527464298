"""Stochastic gradient descent, with the book's Momentum and Nesterov names."""

from __future__ import annotations

from numbanet.kernels import validate as v

from ._base import Optimizer


class SGD(Optimizer):
    r"""Stochastic gradient descent with optional momentum, dampening,
    Nesterov momentum and L2 weight decay; the same update as
    ``torch.optim.SGD``.

    .. math::

        d_t &= g_t + \lambda\,\theta_{t-1} \\
        b_t &= \begin{cases} d_t & t = 1 \\ \mu\, b_{t-1} + (1 - \tau)\, d_t & t > 1 \end{cases} \\
        u_t &= \begin{cases} d_t + \mu\, b_t & \text{Nesterov} \\ b_t & \text{otherwise} \end{cases}
               \qquad (u_t = d_t \text{ when } \mu = 0) \\
        \theta_t &= \theta_{t-1} - \eta\, u_t

    with learning rate :math:`\eta` (``lr``), momentum :math:`\mu`, dampening
    :math:`\tau` and weight decay :math:`\lambda`. The momentum buffer
    :math:`b` (state ``"momentum_buffer"``) exists only when :math:`\mu \ne 0`.

    The book's plain ``SGD`` is :math:`\theta \leftarrow \theta - \eta g`, the
    default here.

    Parameters
    ----------
    lr : float >= 0, default 0.01
    momentum : float >= 0, default 0
    dampening : float, default 0
    nesterov : bool, default False
        Needs ``momentum > 0`` and ``dampening == 0``.
    weight_decay : float >= 0, default 0
    backend, nonfinite
        See :class:`~numbanet.optimizers.Optimizer`.

    References
    ----------
    I. Sutskever, J. Martens, G. Dahl, G. Hinton, "On the importance of
    initialization and momentum in deep learning", ICML 2013 (momentum and
    Nesterov's form as used here).

    Examples
    --------
    >>> import numpy as np
    >>> params = {"w": np.array([1.0, -2.0])}
    >>> opt = SGD(lr=0.1)
    >>> for _ in range(2):
    ...     _ = opt.update(params, {"w": np.array([0.5, -0.25])})
    >>> params["w"].round(6)
    array([ 0.9 , -1.95])
    """

    hyperparameters = ("lr", "momentum", "dampening", "nesterov", "weight_decay")

    def __init__(self, lr=0.01, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, *,
                 backend=None, nonfinite="propagate"):
        super().__init__(backend=backend, nonfinite=nonfinite)
        self.lr = lr
        self.momentum = momentum
        self.dampening = dampening
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self._hyper(type(self).__name__)

    def _hyper(self, fn):
        h = {
            "lr": v.float_param(fn, "lr", self.lr, minimum=0.0),
            "momentum": v.float_param(fn, "momentum", self.momentum, minimum=0.0),
            "dampening": v.float_param(fn, "dampening", self.dampening),
            "weight_decay": v.float_param(fn, "weight_decay", self.weight_decay, minimum=0.0),
            "nesterov": bool(self.nesterov),
        }
        if h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0):
            raise ValueError(f"{fn}: nesterov needs momentum > 0 and dampening == 0, got "
                             f"momentum={h['momentum']}, dampening={h['dampening']}")
        return h

    def _state_init(self, h):
        return {"momentum_buffer": 0.0} if h["momentum"] != 0 else {}

    _kernel, _kernel_foreach, _buffers = "sgd_step", "sgd_step_foreach", ("momentum_buffer",)

    def _step_kwargs(self, st, new, h):
        return dict(lr=h["lr"], momentum=h["momentum"], dampening=h["dampening"], nesterov=h["nesterov"],
                    weight_decay=h["weight_decay"], first_step="momentum_buffer" in new)


class Momentum(SGD):
    r"""The book's Momentum: :class:`SGD` with ``momentum=0.9`` (PyTorch's form).

    .. math::

        b_t = \mu\, b_{t-1} + g_t \ (b_1 = g_1), \qquad \theta_t = \theta_{t-1} - \eta\, b_t

    The book writes it with a velocity :math:`v = -\eta b`:
    :math:`v \leftarrow \mu v - \eta g,\ \theta \leftarrow \theta + v`. The two
    give the same trajectory while :math:`\eta` is constant; when :math:`\eta`
    changes, PyTorch's form (used here) applies the new rate to the whole
    buffer, the book's only to new gradients.

    Symbols: :math:`\eta` ``lr``, :math:`\mu` ``momentum``, :math:`g` the
    gradient, :math:`b` state ``\"momentum_buffer\"``.

    References
    ----------
    B. T. Polyak, "Some methods of speeding up the convergence of iteration
    methods", USSR Comp. Math. and Math. Physics 4(5), 1964.

    Examples
    --------
    >>> import numpy as np
    >>> params = {"w": np.array([1.0, -2.0])}
    >>> opt = Momentum(lr=0.1)
    >>> for _ in range(2):
    ...     _ = opt.update(params, {"w": np.array([0.5, -0.25])})
    >>> params["w"].round(6)
    array([ 0.855 , -1.9275])
    """

    def __init__(self, lr=0.01, momentum=0.9, *, weight_decay=0.0, backend=None, nonfinite="propagate"):
        super().__init__(lr, momentum, weight_decay=weight_decay, backend=backend, nonfinite=nonfinite)


class Nesterov(SGD):
    r"""The book's Nesterov: :class:`SGD` with ``momentum=0.9, nesterov=True``
    (PyTorch's form).

    .. math::

        b_t = \mu\, b_{t-1} + g_t \ (b_1 = g_1), \qquad
        \theta_t = \theta_{t-1} - \eta\,(g_t + \mu\, b_t)

    With velocity :math:`v = -\eta b` this is the book's pair
    :math:`\theta \leftarrow \theta + \mu^2 v - (1 + \mu)\eta g` followed by
    :math:`v \leftarrow \mu v - \eta g` (same trajectory for constant
    :math:`\eta`). Note: the book's ``common/optimizer.py`` updates ``v``
    *before* the parameter, which is not Nesterov's method (nor PyTorch's);
    this class follows PyTorch.

    Symbols: :math:`\eta` ``lr``, :math:`\mu` ``momentum``, :math:`g` the
    gradient, :math:`b` state ``\"momentum_buffer\"``.

    References
    ----------
    Y. Nesterov, "A method of solving a convex programming problem with
    convergence rate O(1/k^2)", Soviet Math. Doklady 27, 1983; Sutskever et
    al., ICML 2013.

    Examples
    --------
    >>> import numpy as np
    >>> params = {"w": np.array([1.0, -2.0])}
    >>> opt = Nesterov(lr=0.1)
    >>> for _ in range(2):
    ...     _ = opt.update(params, {"w": np.array([0.5, -0.25])})
    >>> params["w"].round(6)
    array([ 0.7695 , -1.88475])
    """

    def __init__(self, lr=0.01, momentum=0.9, *, weight_decay=0.0, backend=None, nonfinite="propagate"):
        super().__init__(lr, momentum, nesterov=True, weight_decay=weight_decay, backend=backend,
                         nonfinite=nonfinite)
