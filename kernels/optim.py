"""Fused, in-place optimizer steps: SGD (momentum, Nesterov), AdaGrad, RMSprop,
Adam and AdamW, computing what ``torch.optim`` computes; and the three steps
of "Deep Learning from Scratch" whose formulas differ from PyTorch's
(``book_momentum_step``, ``book_nesterov_step``, ``book_adam_step``, used by
:mod:`numbanet.book.optimizer`; the book's SGD, AdaGrad and RMSprop are
``sgd_step``, ``adagrad_step`` and ``rmsprop_step`` with its eps).

Each step is one pass over memory: every element of the parameter, its
gradient and its state is read once and the parameter and state are written
once, all in registers in between (a multi-pass NumPy formula reads and writes
whole temporaries for every operator). The per-step scalars (bias
corrections, ``1 - beta``, ``-lr``, ...) are computed once per step in float64
(by the wrapper, or at the top of the kernel) and cast to the array dtype once
per call, so float32 math stays float32 and rounds like PyTorch's (which also
casts its double scalars to float).

Every step also has a ``*_foreach`` form (``sgd_step_foreach``, ...,
``book_adam_step_foreach``) taking lists of tensors: the same compiled kernel
called on each entry in order, with the hyperparameters checked once and every
entry checked before any is updated. A network's many small tensors pay
Python checks per call that cost more than their update, worse inside a
training step, where those checks run with cold caches; the optimizers of
:mod:`numbanet.optimizers` and :mod:`numbanet.book` use the foreach forms.

The kernels work on the flattened data: arrays below ``PARALLEL_MIN``
elements run on one thread (the threshold's measurement is in
:mod:`._tunables`); larger
ones are split into ``CHUNK``-element tasks, each a simple loop that LLVM
vectorises. Every element belongs to exactly one task, so results are
bitwise independent of the thread count.

The operation order inside each element follows PyTorch's single-tensor
(``foreach=False``) implementation, e.g. ``addcmul`` is ``s + (value * a) * b``,
``addcdiv`` is ``s + (value * a) / b``, and ``lerp`` is
``base + coeff * (end - start)`` with ``base, coeff = start, w`` for
``|w| < 0.5`` and ``end, w - 1`` otherwise.
"""

from __future__ import annotations

import math
from itertools import repeat

import numpy as np
from numba import prange

from . import validate as v
from ._threads import kernel_op
from ._config import jit
from ._tunables import CHUNK, PARALLEL_MIN  # read inside the kernels (see _tunables)

__all__ = ["sgd_step", "sgd_step_foreach", "adagrad_step", "adagrad_step_foreach", "rmsprop_step",
           "rmsprop_step_foreach", "adam_step", "adam_step_foreach", "adamw_step", "all_finite",
           "book_momentum_step", "book_momentum_step_foreach", "book_nesterov_step", "book_nesterov_step_foreach",
           "book_adam_step", "book_adam_step_foreach"]


# --- element loops (one contiguous chunk each) --------------------------------
# Flags are loop invariant, so LLVM unswitches the loops on them and each
# combination is a straight-line vectorised loop (measured: every variant
# runs at 0.05-0.2 ns per element on one core with the data in cache).


@jit(external=True)
def _sgd_chunk(p, g, buf, neg_lr, wd, l2, mom, one_minus_damp, use_buf, first, nesterov):
    for i in range(p.size):
        d = g[i]
        if l2:
            d = d + wd * p[i]
        if use_buf:
            b = d if first else buf[i] * mom + one_minus_damp * d
            buf[i] = b
            d = d + mom * b if nesterov else b
        p[i] = p[i] + neg_lr * d


@jit(external=True)
def _adagrad_chunk(p, g, s, neg_clr, wd, l2, eps):
    for i in range(p.size):
        d = g[i]
        if l2:
            d = d + wd * p[i]
        si = s[i] + d * d
        s[i] = si
        p[i] = p[i] + (neg_clr * d) / (np.sqrt(si) + eps)


@jit(external=True)
def _rmsprop_chunk(p, g, sq, ga, buf, neg_lr, wd, l2, alpha, oma, c_alpha, base_avg, eps, mom, centered,
                   use_buf):
    # oma = 1 - alpha; c_alpha and base_avg are the lerp coefficient and base
    # choice for the centered running average (weight 1 - alpha).
    for i in range(p.size):
        d = g[i]
        if l2:
            d = d + wd * p[i]
        s = sq[i] * alpha + (oma * d) * d
        sq[i] = s
        if centered:
            a = ga[i]
            a = (a if base_avg else d) + c_alpha * (d - a)
            ga[i] = a
            avg = np.sqrt(s - a * a) + eps
        else:
            avg = np.sqrt(s) + eps
        if use_buf:
            b = buf[i] * mom + d / avg
            buf[i] = b
            p[i] = p[i] + neg_lr * b
        else:
            p[i] = p[i] + (neg_lr * d) / avg


@jit()
def _nanmax(a, b):
    # torch.maximum semantics: NaN in either argument wins.
    return b if (b > a or b != b) else a


@jit(external=True)
def _adam_chunk(p, g, m, v, vmax, decay, wd, l2, c1, base_m, beta2, omb2, bc2_sqrt, eps, neg_step, amsgrad):
    for i in range(p.size):
        pi = p[i] * decay
        d = g[i]
        if l2:
            d = d + wd * pi
        mi = m[i]
        mi = (mi if base_m else d) + c1 * (d - mi)
        m[i] = mi
        vi = v[i] * beta2 + (omb2 * d) * d
        v[i] = vi
        if amsgrad:
            vi = _nanmax(vmax[i], vi)
            vmax[i] = vi
        p[i] = pi + (neg_step * mi) / (np.sqrt(vi) / bc2_sqrt + eps)


# The book's variants evaluate each element in the order of the book's NumPy
# expressions (one rounding per operator, no FMA), so that float64 results are
# the book's bit for bit.


@jit(external=True)
def _book_velocity_chunk(p, g, vel, mom, mom_sq, one_plus_mom_lr, lr, nesterov):
    for i in range(p.size):
        vi = vel[i]
        gi = g[i]
        if nesterov:
            # The parameter moves with the old velocity, then the velocity
            # is updated.
            p[i] = (p[i] + mom_sq * vi) - one_plus_mom_lr * gi
            vel[i] = vi * mom - lr * gi
        else:
            vi = mom * vi - lr * gi
            vel[i] = vi
            p[i] = p[i] + vi


@jit(external=True)
def _book_adam_chunk(p, g, m, v, omb1, omb2, lr_t, eps):
    for i in range(p.size):
        gi = g[i]
        mi = m[i]
        mi = mi + omb1 * (gi - mi)
        m[i] = mi
        vi = v[i]
        vi = vi + omb2 * (gi * gi - vi)
        v[i] = vi
        p[i] = p[i] - (lr_t * mi) / (np.sqrt(vi) + eps)


@jit(external=True)
def _finite_chunk(a):
    ok = True
    for i in range(a.size):
        # x - x is 0 for finite x and NaN for +-inf and NaN.
        ok &= a[i] - a[i] == 0
    return ok


# --- parallel drivers ----------------------------------------------------------
# Scalars arrive as float64 (cheap to dispatch) and are cast to the array
# dtype here, once per call, exactly as NumPy would cast them.


@jit()
def _lerp_coeff(dt, weight):
    """``(coeff, base_is_start)`` of ``lerp(start, end, weight)`` as PyTorch
    evaluates it in dtype ``dt``: ``base + coeff * (end - start)``."""
    w = dt(weight)
    if abs(w) < 0.5:
        return w, True
    return w - dt(1), False


@jit(parallel=True)
def _sgd_step(p, g, buf, lr, wd, mom, dampening, use_buf, first, nesterov):
    dt = p.dtype.type
    neg_lr, wd_, mom_, omd = dt(-lr), dt(wd), dt(mom), dt(1.0 - dampening)
    l2 = wd != 0
    n = p.size
    if n < PARALLEL_MIN:
        _sgd_chunk(p, g, buf, neg_lr, wd_, l2, mom_, omd, use_buf, first, nesterov)
        return
    for c in prange((n + CHUNK - 1) // CHUNK):
        s, e = c * CHUNK, min(n, (c + 1) * CHUNK)
        _sgd_chunk(p[s:e], g[s:e], buf[s:e], neg_lr, wd_, l2, mom_, omd, use_buf, first, nesterov)


@jit(parallel=True)
def _adagrad_step(p, g, s, clr, wd, eps):
    dt = p.dtype.type
    neg_clr, wd_, eps_ = dt(-clr), dt(wd), dt(eps)
    l2 = wd != 0
    n = p.size
    if n < PARALLEL_MIN:
        _adagrad_chunk(p, g, s, neg_clr, wd_, l2, eps_)
        return
    for c in prange((n + CHUNK - 1) // CHUNK):
        a, e = c * CHUNK, min(n, (c + 1) * CHUNK)
        _adagrad_chunk(p[a:e], g[a:e], s[a:e], neg_clr, wd_, l2, eps_)


@jit(parallel=True)
def _rmsprop_step(p, g, sq, ga, buf, lr, wd, alpha, eps, mom, centered):
    dt = p.dtype.type
    neg_lr, wd_, alpha_, oma, eps_, mom_ = dt(-lr), dt(wd), dt(alpha), dt(1.0 - alpha), dt(eps), dt(mom)
    c_alpha, base_avg = _lerp_coeff(dt, 1.0 - alpha)
    l2 = wd != 0
    use_buf = mom > 0
    n = p.size
    if n < PARALLEL_MIN:
        _rmsprop_chunk(p, g, sq, ga, buf, neg_lr, wd_, l2, alpha_, oma, c_alpha, base_avg, eps_, mom_, centered,
                       use_buf)
        return
    for c in prange((n + CHUNK - 1) // CHUNK):
        s, e = c * CHUNK, min(n, (c + 1) * CHUNK)
        _rmsprop_chunk(
            p[s:e], g[s:e], sq[s:e], ga[s:e], buf[s:e],
            neg_lr, wd_, l2, alpha_, oma, c_alpha, base_avg, eps_, mom_, centered, use_buf,
        )


@jit(parallel=True)
def _adam_step(p, g, m, v, vmax, decay, wd, l2, beta1, beta2, bc2_sqrt, eps, step_size, amsgrad):
    dt = p.dtype.type
    decay_, wd_, beta2_, omb2 = dt(decay), dt(wd), dt(beta2), dt(1.0 - beta2)
    bc2s, eps_, neg_step = dt(bc2_sqrt), dt(eps), dt(-step_size)
    c1, base_m = _lerp_coeff(dt, 1.0 - beta1)
    n = p.size
    if n < PARALLEL_MIN:
        _adam_chunk(p, g, m, v, vmax, decay_, wd_, l2, c1, base_m, beta2_, omb2, bc2s, eps_, neg_step, amsgrad)
        return
    for c in prange((n + CHUNK - 1) // CHUNK):
        s, e = c * CHUNK, min(n, (c + 1) * CHUNK)
        _adam_chunk(
            p[s:e], g[s:e], m[s:e], v[s:e], vmax[s:e],
            decay_, wd_, l2, c1, base_m, beta2_, omb2, bc2s, eps_, neg_step, amsgrad,
        )


@jit(parallel=True)
def _book_velocity_step(p, g, vel, lr, mom, nesterov):
    dt = p.dtype.type
    # mom * mom and (1 + mom) * lr are float64 products cast once, as the
    # book's Python-float expressions are before they meet an array.
    mom_, mom_sq, c, lr_ = dt(mom), dt(mom * mom), dt((1.0 + mom) * lr), dt(lr)
    n = p.size
    if n < PARALLEL_MIN:
        _book_velocity_chunk(p, g, vel, mom_, mom_sq, c, lr_, nesterov)
        return
    for k in prange((n + CHUNK - 1) // CHUNK):
        s, e = k * CHUNK, min(n, (k + 1) * CHUNK)
        _book_velocity_chunk(p[s:e], g[s:e], vel[s:e], mom_, mom_sq, c, lr_, nesterov)


@jit(parallel=True)
def _book_adam_step(p, g, m, v, beta1, beta2, lr_t, eps):
    dt = p.dtype.type
    omb1, omb2, lr_t_, eps_ = dt(1.0 - beta1), dt(1.0 - beta2), dt(lr_t), dt(eps)
    n = p.size
    if n < PARALLEL_MIN:
        _book_adam_chunk(p, g, m, v, omb1, omb2, lr_t_, eps_)
        return
    for c in prange((n + CHUNK - 1) // CHUNK):
        s, e = c * CHUNK, min(n, (c + 1) * CHUNK)
        _book_adam_chunk(p[s:e], g[s:e], m[s:e], v[s:e], omb1, omb2, lr_t_, eps_)


@jit(parallel=True)
def _all_finite(a):
    n = a.size
    if n < PARALLEL_MIN:
        return _finite_chunk(a)
    nchunks = (n + CHUNK - 1) // CHUNK
    ok = np.empty(nchunks, np.bool_)
    for c in prange(nchunks):
        ok[c] = _finite_chunk(a[c * CHUNK : min(n, (c + 1) * CHUNK)])
    return ok.all()


# --- validating wrappers --------------------------------------------------------

# Stand-ins for state buffers a step does not use (never read or written).
_UNUSED = {dt: np.empty(0, dt) for dt in v.FLOAT_DTYPES}


def _arrays(fn, param, grad, *states, names=("param", "grad")):
    """Validate a step's arrays; return their flat working views and the
    ``(array, contiguous copy)`` pairs to copy back afterwards.

    ``states`` are ``(name, array, needed)``; ``names`` name the parameter and
    gradient in messages. The parameter and state are updated in place: a
    C-contiguous array is worked on directly (its flat view shares memory), a
    non-contiguous one through a contiguous copy.
    """
    fast = _own_contiguous_views(param, grad, states)
    if fast is not None:
        return fast, ()
    p_name, g_name = names
    p = v.inplace_array(fn, p_name, param)
    g = grad
    # A read-only grad goes through float_array too, which copies it: passed
    # as it is, it would compile a read-only specialisation of the step kernel.
    if not (isinstance(g, np.ndarray) and g.dtype == p.dtype and g.shape == p.shape and g.flags.writeable):
        g = v.float_array(fn, g_name, g)
        v.same_dtype(fn, **{p_name: p, g_name: g})
        v.shape(fn, g_name, g, p.shape, f"the shape of {p_name}")
    copies = []
    views = [_work(p, copies), np.ascontiguousarray(g).ravel()]
    for name, a, needed in states:
        if not needed:
            views.append(_UNUSED[p.dtype])
            continue
        if a is None:
            raise ValueError(f"{fn}: {name} is required by these hyperparameters, got None")
        views.append(_work(v.inplace_array(fn, name, a, like=p), copies))
    _no_overlap(fn, param, grad, states, names)
    return views, copies


def _foreach_arrays(fn, params, grads, *states):
    """:func:`_arrays` of every entry of a ``*_foreach`` step, all checked
    before the caller updates any: a list of ``(views, copies)``.

    ``states`` are ``(name, sequence or None, needed)``; entry ``i``'s
    messages name ``params[i]``, ``grads[i]`` and ``<name>[i]``.
    """
    params = _tensor_list(fn, "params", params, None)
    n = len(params)
    grads = _tensor_list(fn, "grads", grads, n)
    # Each entry's (name, array, needed) states, zipped together by
    # iterators (a comprehension per entry cost 0.4 us of Adam's 2.3 us per
    # tensor, Xeon); an unused state is one tuple repeated.
    cols = [zip(repeat(name), _tensor_list(fn, name, seq, n), repeat(True)) if needed
            else repeat((name, None, False), n) for name, seq, needed in states]
    out = []
    for i, (p, g, st) in enumerate(zip(params, grads, zip(*cols) if cols else repeat((), n))):
        fast = _own_contiguous_views(p, g, st)
        if fast is not None:
            out.append((fast, ()))
            continue
        # the general path, with the entry's index in every message
        st = tuple((f"{name}[{i}]", a, needed) for name, a, needed in st)
        out.append(_arrays(fn, p, g, *st, names=(f"params[{i}]", f"grads[{i}]")))
    return out


def _each(kernel, entries, *scalars):
    """``kernel(*views, *scalars)`` on each entry :func:`_foreach_arrays`
    returned, in order, each non-contiguous array copied back after its own
    step (a later entry may read it)."""
    for views, copies in entries:
        kernel(*views, *scalars)
        if copies:
            _write_back(copies)


def _tensor_list(fn, name, seq, n):
    """``seq`` as a list or tuple of ``n`` items (any length for None), or raise."""
    if not isinstance(seq, (list, tuple)):
        raise TypeError(f"{fn}: {name} must be a list or tuple of arrays, got {type(seq).__name__}")
    if n is not None and len(seq) != n:
        raise ValueError(f"{fn}: {name} must have one array per entry of params ({n}), got {len(seq)}")
    return seq


def _own_contiguous_views(param, grad, states):
    """The flat views of the common call, or None.

    The common call: every array an ndarray of one float dtype and one shape,
    C-contiguous and writable, each owning its memory, no two the same array
    (separate allocations cannot overlap). Such a call passes every check of
    the general path unchanged, so its views are taken at once: a small
    tensor's step spent most of its time in those checks (0.8 us kernel, 5 us
    call for 100 float64 values, Zen 3). Written out flat, without the
    general path's lists of pairs: it runs once per tensor per step (1.8x
    faster for SGD's arrays than the list-of-pairs form, side by side in one
    process, Zen 3)."""
    if type(param) is not np.ndarray or type(grad) is not np.ndarray:
        return None
    dt, shape = param.dtype, param.shape
    if dt not in v.FLOAT_DTYPES or (grad.dtype is not dt and grad.dtype != dt) or grad.shape != shape:
        return None
    # Every array checked in line rather than by a helper per array: two
    # calls fewer per array on every tensor of every step (with
    # _foreach_arrays' zipped states, its checks of 22 tensors of 10 float64
    # went 34.6 -> 22.0 us, Xeon). Distinct allocations (v.owner_key)
    # cannot overlap. ravel, not reshape(-1): the same view of a C-contiguous
    # array at half the call cost; a list of keys, not a generator over the
    # views' bases (2.4 -> 1.5 us for Adam's four arrays, Xeon).
    fp, fg = param.flags, grad.flags
    if not (fp.c_contiguous and fp.writeable and fg.c_contiguous and fg.writeable):
        return None
    kp, kg = v.owner_key(param), v.owner_key(grad)
    if kp is None or kg is None or kp == kg:
        return None
    views = [param.ravel(), grad.ravel()]
    seen = [kp, kg]
    for _, a, needed in states:
        if not needed:
            views.append(_UNUSED[dt])
            continue
        # the same checks as param's, in line (a call per state array was a
        # fifth of Adam's per-tensor check)
        if type(a) is not np.ndarray or (a.dtype is not dt and a.dtype != dt) or a.shape != shape:
            return None
        fa = a.flags
        if not (fa.c_contiguous and fa.writeable):
            return None
        key = v.owner_key(a)
        if key is None or key in seen:
            return None
        seen.append(key)
        views.append(a.ravel())
    return views


def _no_overlap(fn, param, grad, states, names=("param", "grad")):
    """Refuse arrays that share memory with an array the step writes: the
    fused kernel reads and writes element by element, so an alias or an
    overlap would feed it values it already updated."""
    arrays = [(names[0], param), (names[1], grad)]
    arrays += [(name, a) for name, a, needed in states if needed and isinstance(a, np.ndarray)]
    if _all_own_distinct(arrays):
        return
    for i, (name_a, a) in enumerate(arrays):
        for name_b, b in arrays[i + 1:]:
            if isinstance(b, np.ndarray) and np.may_share_memory(a, b):
                raise ValueError(f"{fn}: {name_b} shares memory with {name_a}; pass separate arrays")


def _all_own_distinct(arrays):
    """Whether these are distinct arrays that each own their memory: separate
    allocations cannot overlap, so the pairwise ``np.may_share_memory`` (about
    1 us a pair, six pairs for Adam, the larger part of a small tensor's step)
    is not needed. Optimizer state and most parameters and gradients are such
    arrays; views (FlatParams, slices) take the pairwise check."""
    seen = set()
    for _, a in arrays:
        if not isinstance(a, np.ndarray):
            return False
        key = v.owner_key(a)
        if key is None or key in seen:
            return False
        seen.add(key)
    return True


def _work(a, copies):
    if a.flags.c_contiguous:
        return a.ravel()
    work = np.ascontiguousarray(a)
    copies.append((a, work))
    return work.ravel()


def _write_back(copies):
    for a, work in copies:
        np.copyto(a, work)


@kernel_op
def sgd_step(param, grad, momentum_buffer=None, *, lr=0.01, momentum=0.0, dampening=0.0,
             nesterov=False, weight_decay=0.0, first_step=False):
    r"""One SGD step in place (PyTorch's ``torch.optim.SGD``).

    The update of :class:`numbanet.optimizers.SGD` (its docstring has the
    equations, written once), on one tensor. Without momentum the buffer is
    neither used nor needed.

    Parameters
    ----------
    param : ndarray, float32 or float64, any shape
        Updated in place.
    grad : ndarray, same shape and dtype as ``param``
    momentum_buffer : ndarray like ``param``, or None when ``momentum == 0``
        Updated in place; on ``first_step`` it is overwritten with ``d``.
    lr, momentum, dampening, weight_decay : float, >= 0
    nesterov : bool
        Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
    first_step : bool
        Whether the buffer is new (PyTorch initialises it to ``d``).
    """
    fn = "sgd_step"
    lr, momentum, dampening, weight_decay = _sgd_hyper(fn, lr, momentum, dampening, weight_decay, nesterov)
    use_buf = momentum != 0
    (p, g, buf), copies = _arrays(fn, param, grad, ("momentum_buffer", momentum_buffer, use_buf))
    _sgd_step(p, g, buf, lr, weight_decay, momentum, dampening, use_buf, bool(first_step), bool(nesterov))
    if copies:
        _write_back(copies)


@kernel_op
def sgd_step_foreach(params, grads, momentum_buffers=None, *, lr=0.01, momentum=0.0, dampening=0.0,
                     nesterov=False, weight_decay=0.0, first_step=False):
    r""":func:`sgd_step` on every tensor of a list, in place.

    The same as ``sgd_step(params[i], grads[i], momentum_buffers[i], ...)``
    for ``i = 0, 1, ...`` in order, with one set of hyperparameters: for a
    network's many small tensors, where :func:`sgd_step`'s checks around
    each kernel call cost more than the update (about 2 us of Python per
    tensor against 0.6 us for the call). Here the hyperparameters are checked
    once and each tensor only as far as the common call needs.

    Parameters
    ----------
    params : list or tuple of ndarray, float32 or float64
        Updated in place. Entries may differ in shape and dtype.
    grads : list or tuple of ndarray, as long as ``params``
        ``grads[i]`` has the shape and dtype of ``params[i]``.
    momentum_buffers : list or tuple of ndarray like ``params``, or None when ``momentum == 0``
        Updated in place.
    lr, momentum, dampening, weight_decay, nesterov, first_step
        As for :func:`sgd_step`, for every entry.

    Every entry is checked before any is updated: a bad one raises, naming
    its index, and leaves all of them unchanged.
    """
    fn = "sgd_step_foreach"
    lr, momentum, dampening, weight_decay = _sgd_hyper(fn, lr, momentum, dampening, weight_decay, nesterov)
    use_buf = momentum != 0
    entries = _foreach_arrays(fn, params, grads, ("momentum_buffers", momentum_buffers, use_buf))
    _each(_sgd_step, entries, lr, weight_decay, momentum, dampening, use_buf, bool(first_step), bool(nesterov))


def _sgd_hyper(fn, lr, momentum, dampening, weight_decay, nesterov):
    """SGD's checked ``lr, momentum, dampening, weight_decay``."""
    lr = v.float_param(fn, "lr", lr, minimum=0.0)
    if not (type(momentum) is float and momentum == 0.0 and type(dampening) is float and dampening == 0.0
            and type(weight_decay) is float and weight_decay == 0.0 and nesterov is False):
        # anything but plain SGD (the book's, and the defaults) is checked in
        # full; plain SGD skips three checks it would pass (a tenth of a
        # small tensor's step)
        momentum = v.float_param(fn, "momentum", momentum, minimum=0.0)
        dampening = v.float_param(fn, "dampening", dampening)
        weight_decay = v.float_param(fn, "weight_decay", weight_decay, minimum=0.0)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(f"{fn}: nesterov needs momentum > 0 and dampening == 0, got "
                             f"momentum={momentum}, dampening={dampening}")
    return lr, momentum, dampening, weight_decay


@kernel_op
def adagrad_step(param, grad, state_sum, *, step, lr=0.01, eps=1e-10, weight_decay=0.0, lr_decay=0.0):
    r"""One AdaGrad step in place (PyTorch's ``torch.optim.Adagrad``).

    The update of :class:`numbanet.optimizers.AdaGrad` (equations there), on
    one tensor.

    Parameters
    ----------
    param : ndarray, float32 or float64, updated in place
    grad : ndarray like ``param``
    state_sum : ndarray like ``param``
        Sum of squared gradients, updated in place.
    step : int >= 1
        The number of this step (1 for the first).
    lr, eps, weight_decay, lr_decay : float, >= 0
    """
    fn = "adagrad_step"
    scalars = _adagrad_scalars(fn, step, lr, eps, weight_decay, lr_decay)
    (p, g, s), copies = _arrays(fn, param, grad, ("state_sum", state_sum, True))
    _adagrad_step(p, g, s, *scalars)
    _write_back(copies)


@kernel_op
def adagrad_step_foreach(params, grads, state_sums, *, step, lr=0.01, eps=1e-10, weight_decay=0.0, lr_decay=0.0):
    r""":func:`adagrad_step` on every tensor of a list, in place, all at one
    ``step`` (see :func:`sgd_step_foreach`): ``params``, ``grads`` and
    ``state_sums`` are lists or tuples of arrays, entry ``i`` of each like
    ``params[i]``. Every entry is checked before any is updated."""
    fn = "adagrad_step_foreach"
    scalars = _adagrad_scalars(fn, step, lr, eps, weight_decay, lr_decay)
    _each(_adagrad_step, _foreach_arrays(fn, params, grads, ("state_sums", state_sums, True)), *scalars)


def _adagrad_scalars(fn, step, lr, eps, weight_decay, lr_decay):
    """The checked hyperparameters as :func:`_adagrad_step`'s scalars."""
    step = v.int_param(fn, "step", step, minimum=1)
    lr = v.float_param(fn, "lr", lr, minimum=0.0)
    eps = v.float_param(fn, "eps", eps, minimum=0.0)
    weight_decay = v.float_param(fn, "weight_decay", weight_decay, minimum=0.0)
    lr_decay = v.float_param(fn, "lr_decay", lr_decay, minimum=0.0)
    return lr / (1 + (step - 1) * lr_decay), weight_decay, eps


@kernel_op
def rmsprop_step(param, grad, square_avg, grad_avg=None, momentum_buffer=None, *, lr=0.01, alpha=0.99,
                 eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    r"""One RMSprop step in place (PyTorch's ``torch.optim.RMSprop``).

    The update of :class:`numbanet.optimizers.RMSprop` (equations there), on
    one tensor. The centered average is computed as
    :math:`\bar g + (1 - \alpha)(d - \bar g)`, PyTorch's ``lerp`` order.

    Parameters
    ----------
    param : ndarray, float32 or float64, updated in place
    grad : ndarray like ``param``
    square_avg : ndarray like ``param``
        Running average of squared gradients :math:`v`, updated in place.
    grad_avg : ndarray like ``param``, needed only when ``centered``
    momentum_buffer : ndarray like ``param``, needed only when ``momentum > 0``
        Starts at zero (PyTorch's initialisation).
    lr, alpha, eps, weight_decay, momentum : float, >= 0
    centered : bool
    """
    fn = "rmsprop_step"
    scalars = _rmsprop_scalars(fn, lr, alpha, eps, weight_decay, momentum, centered)
    (p, g, sq, ga, buf), copies = _arrays(
        fn, param, grad, ("square_avg", square_avg, True), ("grad_avg", grad_avg, bool(centered)),
        ("momentum_buffer", momentum_buffer, scalars[4] > 0),
    )
    _rmsprop_step(p, g, sq, ga, buf, *scalars)
    _write_back(copies)


@kernel_op
def rmsprop_step_foreach(params, grads, square_avgs, grad_avgs=None, momentum_buffers=None, *, lr=0.01,
                         alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    r""":func:`rmsprop_step` on every tensor of a list, in place (see
    :func:`sgd_step_foreach`): ``params``, ``grads``, ``square_avgs`` (and
    ``grad_avgs`` when ``centered``, ``momentum_buffers`` when
    ``momentum > 0``) are lists or tuples of arrays, entry ``i`` of each like
    ``params[i]``. Every entry is checked before any is updated."""
    fn = "rmsprop_step_foreach"
    scalars = _rmsprop_scalars(fn, lr, alpha, eps, weight_decay, momentum, centered)
    entries = _foreach_arrays(fn, params, grads, ("square_avgs", square_avgs, True),
                              ("grad_avgs", grad_avgs, bool(centered)), ("momentum_buffers", momentum_buffers,
                                                                         scalars[4] > 0))
    _each(_rmsprop_step, entries, *scalars)


def _rmsprop_scalars(fn, lr, alpha, eps, weight_decay, momentum, centered):
    """The checked hyperparameters as :func:`_rmsprop_step`'s scalars
    (``lr, weight_decay, alpha, eps, momentum, centered``)."""
    lr = v.float_param(fn, "lr", lr, minimum=0.0)
    alpha = v.float_param(fn, "alpha", alpha, minimum=0.0)
    eps = v.float_param(fn, "eps", eps, minimum=0.0)
    weight_decay = v.float_param(fn, "weight_decay", weight_decay, minimum=0.0)
    momentum = v.float_param(fn, "momentum", momentum, minimum=0.0)
    return lr, weight_decay, alpha, eps, momentum, bool(centered)


@kernel_op
def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr=0.001, beta1=0.9,
              beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled_weight_decay=False):
    r"""One Adam step in place (PyTorch's ``torch.optim.Adam``; AdamW with
    ``decoupled_weight_decay=True``).

    The update of :class:`numbanet.optimizers.Adam`, or of
    :class:`numbanet.optimizers.AdamW` with ``decoupled_weight_decay=True``
    (equations there), on one tensor. As in PyTorch, :math:`m` is computed as
    :math:`m + (1 - \beta_1)(d - m)` (``lerp``) and the bias corrections once
    per call in float64.

    Parameters
    ----------
    param : ndarray, float32 or float64, updated in place
    grad : ndarray like ``param``
    exp_avg, exp_avg_sq : ndarray like ``param``
        First and second moment estimates :math:`m`, :math:`v`, updated in place.
    max_exp_avg_sq : ndarray like ``param``, needed only when ``amsgrad``
    step : int >= 1
        The number of this step :math:`t` (1 for the first).
    lr, eps, weight_decay : float, >= 0
    beta1, beta2 : float in [0, 1)
    amsgrad, decoupled_weight_decay : bool
    """
    return _adam("adam_step", param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2,
                 eps, weight_decay, amsgrad, decoupled_weight_decay)


@kernel_op
def adamw_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr=0.001, beta1=0.9,
               beta2=0.999, eps=1e-8, weight_decay=0.01, amsgrad=False):
    r"""One AdamW step in place (PyTorch's ``torch.optim.AdamW``): :func:`adam_step`
    with decoupled weight decay, :math:`\theta \leftarrow \theta (1 - \eta\lambda)`
    before the Adam update, and PyTorch's default ``weight_decay=0.01``."""
    return _adam("adamw_step", param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2,
                 eps, weight_decay, amsgrad, True)


@kernel_op
def adam_step_foreach(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs=None, *, step, lr=0.001, beta1=0.9,
                      beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled_weight_decay=False):
    r""":func:`adam_step` on every tensor of a list, in place.

    The same as ``adam_step(params[i], grads[i], exp_avgs[i],
    exp_avg_sqs[i], max_exp_avg_sqs[i], ...)`` for ``i = 0, 1, ...`` in
    order, all at one ``step`` with one set of hyperparameters (PyTorch's
    ``foreach`` form): the hyperparameters are checked and the bias
    corrections computed once, each tensor checked only as far as the common
    call needs (see :func:`sgd_step_foreach`).

    Parameters
    ----------
    params : list or tuple of ndarray, float32 or float64, updated in place
        Entries may differ in shape and dtype.
    grads, exp_avgs, exp_avg_sqs : lists or tuples of ndarray, as long as ``params``
        Entry ``i`` has the shape and dtype of ``params[i]``; the moments
        are updated in place.
    max_exp_avg_sqs : list or tuple like ``exp_avgs``, needed only when ``amsgrad``
    step, lr, beta1, beta2, eps, weight_decay, amsgrad, decoupled_weight_decay
        As for :func:`adam_step`, for every entry.

    Every entry is checked before any is updated: a bad one raises, naming
    its index, and leaves all of them unchanged.
    """
    fn = "adam_step_foreach"
    scalars = _adam_scalars(fn, step, lr, beta1, beta2, eps, weight_decay, amsgrad, decoupled_weight_decay)
    entries = _foreach_arrays(fn, params, grads, ("exp_avgs", exp_avgs, True), ("exp_avg_sqs", exp_avg_sqs, True),
                              ("max_exp_avg_sqs", max_exp_avg_sqs, bool(amsgrad)))
    _each(_adam_step, entries, *scalars)


def _adam(fn, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay,
          amsgrad, decoupled):
    scalars = _adam_scalars(fn, step, lr, beta1, beta2, eps, weight_decay, amsgrad, decoupled)
    (p, g, m, sq, vmax), copies = _arrays(
        fn, param, grad, ("exp_avg", exp_avg, True), ("exp_avg_sq", exp_avg_sq, True),
        ("max_exp_avg_sq", max_exp_avg_sq, bool(amsgrad)),
    )
    _adam_step(p, g, m, sq, vmax, *scalars)
    _write_back(copies)


def _adam_scalars(fn, step, lr, beta1, beta2, eps, weight_decay, amsgrad, decoupled):
    """The checked hyperparameters as :func:`_adam_step`'s scalar arguments
    (after its five arrays)."""
    step = v.int_param(fn, "step", step, minimum=1)
    lr = v.float_param(fn, "lr", lr, minimum=0.0)
    beta1 = v.float_param(fn, "beta1", beta1, minimum=0.0, below=1.0)
    beta2 = v.float_param(fn, "beta2", beta2, minimum=0.0, below=1.0)
    eps = v.float_param(fn, "eps", eps, minimum=0.0)
    weight_decay = v.float_param(fn, "weight_decay", weight_decay, minimum=0.0)
    decoupled = bool(decoupled) and weight_decay != 0
    return (1 - lr * weight_decay if decoupled else 1.0, weight_decay, weight_decay != 0 and not decoupled,
            beta1, beta2, math.sqrt(1 - beta2**step), eps, lr / (1 - beta1**step), bool(amsgrad))


# --- the book's variants ("Deep Learning from Scratch", common/optimizer.py) -----


@kernel_op
def book_momentum_step(param, grad, velocity, *, lr=0.01, momentum=0.9):
    r"""One momentum step in place, the book's form (classical momentum).

    .. math::

        v &= \mu v - \eta g \\
        \theta &= \theta + v

    PyTorch's :func:`sgd_step` instead keeps :math:`b = \mu b + g` and
    steps :math:`\theta - \eta b`: the same trajectory for a constant
    :math:`\eta` (:math:`v = -\eta b`), different rounding, and a different
    response to a change of :math:`\eta` between steps.

    Parameters
    ----------
    param : ndarray, float32 or float64, any shape
        Updated in place.
    grad : ndarray, same shape and dtype as ``param``
    velocity : ndarray like ``param``
        :math:`v`, starts at zero; updated in place.
    lr, momentum : float, >= 0
    """
    _book_velocity("book_momentum_step", param, grad, velocity, lr, momentum, False)


@kernel_op
def book_nesterov_step(param, grad, velocity, *, lr=0.01, momentum=0.9):
    r"""One Nesterov momentum step in place, the book's form (Bengio,
    Boulanger-Lewandowski and Pascanu, arXiv:1212.0901).

    .. math::

        \theta &= \theta + \mu^2 v - (1 + \mu)\, \eta\, g \\
        v &= \mu v - \eta g

    evaluated as :math:`(\theta + (\mu^2) v) - ((1 + \mu)\eta) g` and
    :math:`v \mu - \eta g`, with the two scalar products in float64.
    The parameters are those of :func:`book_momentum_step`.
    """
    _book_velocity("book_nesterov_step", param, grad, velocity, lr, momentum, True)


@kernel_op
def book_momentum_step_foreach(params, grads, velocities, *, lr=0.01, momentum=0.9):
    r""":func:`book_momentum_step` on every tensor of a list, in place (see
    :func:`sgd_step_foreach`): ``params``, ``grads`` and ``velocities`` are
    lists or tuples of arrays, entry ``i`` of each like ``params[i]``. Every
    entry is checked before any is updated."""
    _book_velocity_foreach("book_momentum_step_foreach", params, grads, velocities, lr, momentum, False)


@kernel_op
def book_nesterov_step_foreach(params, grads, velocities, *, lr=0.01, momentum=0.9):
    r""":func:`book_nesterov_step` on every tensor of a list, in place, as
    :func:`book_momentum_step_foreach`."""
    _book_velocity_foreach("book_nesterov_step_foreach", params, grads, velocities, lr, momentum, True)


def _book_velocity(fn, param, grad, velocity, lr, momentum, nesterov):
    """Validate and run a velocity step (the book's Momentum or Nesterov)."""
    lr = v.float_param(fn, "lr", lr, minimum=0.0)
    momentum = v.float_param(fn, "momentum", momentum, minimum=0.0)
    (p, g, vel), copies = _arrays(fn, param, grad, ("velocity", velocity, True))
    _book_velocity_step(p, g, vel, lr, momentum, nesterov)
    _write_back(copies)


def _book_velocity_foreach(fn, params, grads, velocities, lr, momentum, nesterov):
    """:func:`_book_velocity` on every entry of the lists."""
    lr = v.float_param(fn, "lr", lr, minimum=0.0)
    momentum = v.float_param(fn, "momentum", momentum, minimum=0.0)
    _each(_book_velocity_step, _foreach_arrays(fn, params, grads, ("velocities", velocities, True)), lr, momentum,
          nesterov)


@kernel_op
def book_adam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7):
    r"""One Adam step in place, the book's form.

    .. math::

        m &= m + (1 - \beta_1)(g - m) \\
        v &= v + (1 - \beta_2)(g^2 - v) \\
        \theta &= \theta - \frac{\eta_t\, m}{\sqrt{v} + \epsilon},
        \qquad \eta_t = \eta \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}

    :math:`\eta_t` is computed in float64 once per call. PyTorch's
    :func:`adam_step` divides by :math:`\sqrt{v / (1 - \beta_2^t)} +
    \epsilon` instead, i.e. its :math:`\epsilon` sits inside the bias
    correction (and its default is 1e-8; the book's is 1e-7).

    Parameters
    ----------
    param : ndarray, float32 or float64, updated in place
    grad : ndarray like ``param``
    exp_avg, exp_avg_sq : ndarray like ``param``
        :math:`m` and :math:`v` (the book's ``m`` and ``v``), start at zero;
        updated in place.
    step : int >= 1
        The number of this step :math:`t` (the book's ``iter`` after its increment).
    lr, eps : float, >= 0
    beta1, beta2 : float in [0, 1)
    """
    fn = "book_adam_step"
    scalars = _book_adam_scalars(fn, step, lr, beta1, beta2, eps)
    (p, g, m, sq), copies = _arrays(fn, param, grad, ("exp_avg", exp_avg, True), ("exp_avg_sq", exp_avg_sq, True))
    _book_adam_step(p, g, m, sq, *scalars)
    _write_back(copies)


@kernel_op
def book_adam_step_foreach(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=0.001, beta1=0.9, beta2=0.999,
                           eps=1e-7):
    r""":func:`book_adam_step` on every tensor of a list, in place, all at one
    ``step`` (see :func:`sgd_step_foreach`): ``params``, ``grads``,
    ``exp_avgs`` and ``exp_avg_sqs`` are lists or tuples of arrays, entry
    ``i`` of each like ``params[i]``. Every entry is checked before any is
    updated."""
    fn = "book_adam_step_foreach"
    scalars = _book_adam_scalars(fn, step, lr, beta1, beta2, eps)
    entries = _foreach_arrays(fn, params, grads, ("exp_avgs", exp_avgs, True), ("exp_avg_sqs", exp_avg_sqs, True))
    _each(_book_adam_step, entries, *scalars)


def _book_adam_scalars(fn, step, lr, beta1, beta2, eps):
    r"""The checked hyperparameters as :func:`_book_adam_step`'s scalars:
    ``beta1, beta2``, the book's bias-corrected step size
    :math:`\eta \sqrt{1 - \beta_2^t} / (1 - \beta_1^t)` (in float64) and ``eps``."""
    step = v.int_param(fn, "step", step, minimum=1)
    lr = v.float_param(fn, "lr", lr, minimum=0.0)
    beta1 = v.float_param(fn, "beta1", beta1, minimum=0.0, below=1.0)
    beta2 = v.float_param(fn, "beta2", beta2, minimum=0.0, below=1.0)
    eps = v.float_param(fn, "eps", eps, minimum=0.0)
    return beta1, beta2, lr * math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step), eps


@kernel_op
def all_finite(a) -> bool:
    """Whether every element of the float array ``a`` is finite (no NaN or
    +-inf); ``True`` for an empty array."""
    a = v.float_array("all_finite", "a", a)
    return bool(_all_finite(a.reshape(-1)))
