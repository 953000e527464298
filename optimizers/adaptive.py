"""Optimizers with per-element step sizes: AdaGrad, RMSprop, Adam, AdamW."""

from __future__ import annotations

from numbanet.kernels import validate as v

from ._base import Optimizer


def _nonneg(fn, obj, *names):
    return {n: v.float_param(fn, n, getattr(obj, n), minimum=0.0) for n in names}


class AdaGrad(Optimizer):
    r"""AdaGrad; the same update as ``torch.optim.Adagrad``.

    .. math::

        d_t &= g_t + \lambda\,\theta_{t-1} \\
        s_t &= s_{t-1} + d_t^2, \qquad s_0 = \text{initial\_accumulator\_value} \\
        \theta_t &= \theta_{t-1} - \eta_t\, \frac{d_t}{\sqrt{s_t} + \epsilon},
        \qquad \eta_t = \frac{\eta}{1 + (t - 1)\,\text{lr\_decay}}

    State: ``"sum"`` (:math:`s`). The book's AdaGrad is this with
    :math:`\epsilon = 10^{-7}` hard-coded (PyTorch's default is
    :math:`10^{-10}`).

    Parameters
    ----------
    lr : float >= 0, default 0.01
    eps : float >= 0, default 1e-10
    weight_decay : float >= 0, default 0
    initial_accumulator_value : float >= 0, default 0
    lr_decay : float >= 0, default 0
    backend, nonfinite
        See :class:`~numbanet.optimizers.Optimizer`.

    Symbols: :math:`\eta` ``lr``, :math:`\epsilon` ``eps``, :math:`\lambda`
    ``weight_decay``, ``lr_decay`` and ``initial_accumulator_value`` as
    written, :math:`g` the gradient, :math:`t` the step count.

    References
    ----------
    J. Duchi, E. Hazan, Y. Singer, "Adaptive subgradient methods for online
    learning and stochastic optimization", JMLR 12, 2011.

    Examples
    --------
    >>> import numpy as np
    >>> params = {"w": np.array([1.0, -2.0])}
    >>> opt = AdaGrad(lr=0.1)
    >>> for _ in range(2):
    ...     _ = opt.update(params, {"w": np.array([0.5, -0.25])})
    >>> params["w"].round(6)
    array([ 0.829289, -1.829289])
    """

    hyperparameters = ("lr", "eps", "weight_decay", "initial_accumulator_value", "lr_decay")

    def __init__(self, lr=0.01, eps=1e-10, weight_decay=0.0, initial_accumulator_value=0.0, lr_decay=0.0, *,
                 backend=None, nonfinite="propagate"):
        super().__init__(backend=backend, nonfinite=nonfinite)
        self.lr = lr
        self.eps = eps
        self.weight_decay = weight_decay
        self.initial_accumulator_value = initial_accumulator_value
        self.lr_decay = lr_decay
        self._hyper(type(self).__name__)

    def _hyper(self, fn):
        return _nonneg(fn, self, *self.hyperparameters)

    def _state_init(self, h):
        return {"sum": h["initial_accumulator_value"]}

    _kernel, _kernel_foreach, _buffers = "adagrad_step", "adagrad_step_foreach", ("sum",)

    def _step_kwargs(self, st, new, h):
        return dict(step=st["step"], lr=h["lr"], eps=h["eps"], weight_decay=h["weight_decay"], lr_decay=h["lr_decay"])


class RMSprop(Optimizer):
    r"""RMSprop, optionally centered and with momentum; the same update as
    ``torch.optim.RMSprop``.

    .. math::

        d_t &= g_t + \lambda\,\theta_{t-1} \\
        v_t &= \alpha\, v_{t-1} + (1 - \alpha)\, d_t^2 \\
        \bar g_t &= \alpha\, \bar g_{t-1} + (1 - \alpha)\, d_t \qquad \text{(centered)} \\
        a_t &= \sqrt{v_t - \bar g_t^2} + \epsilon \ \text{(centered)}, \qquad
               a_t = \sqrt{v_t} + \epsilon \ \text{(otherwise)} \\
        b_t &= \mu\, b_{t-1} + d_t / a_t, \quad \theta_t = \theta_{t-1} - \eta\, b_t
               \qquad (\mu > 0) \\
        \theta_t &= \theta_{t-1} - \eta\, d_t / a_t \qquad (\mu = 0)

    State: ``"square_avg"`` (:math:`v`), ``"grad_avg"`` (:math:`\bar g`,
    centered only), ``"momentum_buffer"`` (:math:`b`, momentum only), all
    starting at zero. The book's RMSprop (``decay_rate`` = :math:`\alpha`) is
    the plain form with :math:`\epsilon = 10^{-7}` hard-coded.

    Parameters
    ----------
    lr : float >= 0, default 0.01
    alpha : float >= 0, default 0.99
    eps : float >= 0, default 1e-8
    weight_decay : float >= 0, default 0
    momentum : float >= 0, default 0
    centered : bool, default False
    backend, nonfinite
        See :class:`~numbanet.optimizers.Optimizer`.

    Symbols: :math:`\eta` ``lr``, :math:`\alpha` ``alpha``, :math:`\epsilon`
    ``eps``, :math:`\lambda` ``weight_decay``, :math:`\mu` ``momentum``,
    :math:`g` the gradient.

    References
    ----------
    T. Tieleman, G. Hinton, Lecture 6.5 of "Neural Networks for Machine
    Learning", Coursera, 2012; centered: A. Graves, "Generating sequences
    with recurrent neural networks", arXiv:1308.0850, 2013.

    Examples
    --------
    >>> import numpy as np
    >>> params = {"w": np.array([1.0, -2.0])}
    >>> opt = RMSprop(lr=0.01)
    >>> for _ in range(2):
    ...     _ = opt.update(params, {"w": np.array([0.5, -0.25])})
    >>> params["w"].round(6)
    array([ 0.829112, -1.829112])
    """

    hyperparameters = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, *,
                 backend=None, nonfinite="propagate"):
        super().__init__(backend=backend, nonfinite=nonfinite)
        self.lr = lr
        self.alpha = alpha
        self.eps = eps
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.centered = centered
        self._hyper(type(self).__name__)

    def _hyper(self, fn):
        h = _nonneg(fn, self, "lr", "alpha", "eps", "weight_decay", "momentum")
        h["centered"] = bool(self.centered)
        return h

    def _state_init(self, h):
        init = {"square_avg": 0.0}
        if h["momentum"] > 0:
            init["momentum_buffer"] = 0.0
        if h["centered"]:
            init["grad_avg"] = 0.0
        return init

    _kernel, _kernel_foreach = "rmsprop_step", "rmsprop_step_foreach"
    _buffers = ("square_avg", "grad_avg", "momentum_buffer")

    def _step_kwargs(self, st, new, h):
        return dict(lr=h["lr"], alpha=h["alpha"], eps=h["eps"], weight_decay=h["weight_decay"],
                    momentum=h["momentum"], centered=h["centered"])


class Adam(Optimizer):
    r"""Adam with L2 weight decay (added to the gradient) and optional
    AMSGrad; the same update as ``torch.optim.Adam``.

    .. math::

        d_t &= g_t + \lambda\,\theta_{t-1} \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, d_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\, d_t^2 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t) \ \text{(amsgrad)}, \qquad \hat v_t = v_t \ \text{(otherwise)} \\
        \theta_t &= \theta_{t-1} - \frac{\eta}{1 - \beta_1^t}\,
                    \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    State: ``"exp_avg"`` (:math:`m`), ``"exp_avg_sq"`` (:math:`v`),
    ``"max_exp_avg_sq"`` (:math:`\hat v`, amsgrad only), all starting at zero,
    and the step count :math:`t`. The bias corrections are computed once per
    step in float64.

    Where the book differs: its Adam adds :math:`\epsilon` to the
    *uncorrected* root, :math:`\theta \leftarrow \theta - \eta
    \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t} \frac{m}{\sqrt{v} + \epsilon}`,
    i.e. an effective :math:`\epsilon / \sqrt{1 - \beta_2^t}` here, and hard-codes
    :math:`\epsilon = 10^{-7}`.

    Parameters
    ----------
    lr : float >= 0, default 0.001
    beta1, beta2 : float in [0, 1), default 0.9, 0.999
    eps : float >= 0, default 1e-8
    weight_decay : float >= 0, default 0
    amsgrad : bool, default False
    backend, nonfinite
        See :class:`~numbanet.optimizers.Optimizer`.

    Symbols: :math:`\eta` ``lr``, :math:`\beta_1` ``beta1``, :math:`\beta_2`
    ``beta2``, :math:`\epsilon` ``eps``, :math:`\lambda` ``weight_decay``,
    :math:`g` the gradient, :math:`t` the step count.

    References
    ----------
    D. P. Kingma, J. Ba, "Adam: a method for stochastic optimization", ICLR
    2015, arXiv:1412.6980; AMSGrad: S. J. Reddi, S. Kale, S. Kumar, "On the
    convergence of Adam and beyond", ICLR 2018.

    Examples
    --------
    >>> import numpy as np
    >>> params = {"w": np.array([1.0, -2.0])}
    >>> opt = Adam(lr=0.1)
    >>> for _ in range(2):
    ...     _ = opt.update(params, {"w": np.array([0.5, -0.25])})
    >>> params["w"].round(6)
    array([ 0.8, -1.8])
    """

    hyperparameters = ("lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad")
    _kernel, _kernel_foreach = "adam_step", "adam_step_foreach"
    _buffers = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 backend=None, nonfinite="propagate"):
        super().__init__(backend=backend, nonfinite=nonfinite)
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weight_decay = weight_decay
        self.amsgrad = amsgrad
        self._hyper(type(self).__name__)

    def _hyper(self, fn):
        h = _nonneg(fn, self, "lr", "eps", "weight_decay")
        h["beta1"] = v.float_param(fn, "beta1", self.beta1, minimum=0.0, below=1.0)
        h["beta2"] = v.float_param(fn, "beta2", self.beta2, minimum=0.0, below=1.0)
        h["amsgrad"] = bool(self.amsgrad)
        return h

    def _state_init(self, h):
        init = {"exp_avg": 0.0, "exp_avg_sq": 0.0}
        if h["amsgrad"]:
            init["max_exp_avg_sq"] = 0.0
        return init

    def _step_kwargs(self, st, new, h):
        return dict(step=st["step"], lr=h["lr"], beta1=h["beta1"], beta2=h["beta2"], eps=h["eps"],
                    weight_decay=h["weight_decay"], amsgrad=h["amsgrad"])

    def _foreach_kwargs(self, st, new, h):
        # one list form for both: AdamW's is Adam's with decoupled weight decay
        return dict(self._step_kwargs(st, new, h), decoupled_weight_decay=self._kernel == "adamw_step")


class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay; the same update as
    ``torch.optim.AdamW``.

    .. math::

        \theta' &= \theta_{t-1}\,(1 - \eta\lambda) \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2 \\
        \theta_t &= \theta' - \frac{\eta}{1 - \beta_1^t}\,
                    \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    (:math:`\hat v` as in :class:`Adam`). The weight decay shrinks the
    parameter directly instead of entering :math:`m` and :math:`v` through the
    gradient. Default ``weight_decay=0.01`` (PyTorch's). The book has no AdamW.

    Symbols as in :class:`Adam`; :math:`\lambda` is ``weight_decay``.

    References
    ----------
    I. Loshchilov, F. Hutter, "Decoupled weight decay regularization", ICLR
    2019, arXiv:1711.05101.

    Examples
    --------
    >>> import numpy as np
    >>> params = {"w": np.array([1.0, -2.0])}
    >>> opt = AdamW(lr=0.1)
    >>> for _ in range(2):
    ...     _ = opt.update(params, {"w": np.array([0.5, -0.25])})
    >>> params["w"].round(6)
    array([ 0.798101, -1.796102])
    """

    _kernel = "adamw_step"

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, amsgrad=False, *,
                 backend=None, nonfinite="propagate"):
        super().__init__(lr, beta1, beta2, eps, weight_decay, amsgrad, backend=backend, nonfinite=nonfinite)
