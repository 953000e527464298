"""What every optimizer shares: validation, lazy per-name state, the flat
fast path, non-finite gradient policy and the state dict."""

from __future__ import annotations

import numbers
from typing import Mapping

import numpy as np

from numbanet.kernels import validate as v
from numbanet.reference.backend import resolve_backend

from .flat import FlatParams

NONFINITE_POLICIES = ("propagate", "skip")


class Optimizer:
    """Base class: ``update(params, grads)`` on dicts of arrays, in place.

    Parameters
    ----------
    backend : module, optional
        :mod:`numbanet.kernels` (default, fused kernels) or
        :mod:`numbanet.reference` (plain NumPy), or any module with the same
        ``*_step`` functions.
    nonfinite : {"propagate", "skip"}
        What a NaN or infinite gradient does. ``"propagate"`` (default, as
        PyTorch) applies the step anyway, so NaN/inf reach the parameters.
        ``"skip"`` first checks every gradient; if any is not finite the whole
        step is skipped: no parameter, state or step count changes,
        :meth:`update` returns ``False``, :attr:`last_step_skipped` is set and
        :attr:`skipped_steps` counts it. The check costs one extra read of the
        gradients.

    Attributes
    ----------
    state : dict
        name -> ``{"step": int, <buffer name>: ndarray, ...}``, created lazily
        on the first update of each name, with the parameter's dtype and
        shape (PyTorch's buffer names). Buffers are updated in place. Treat
        it as read-only between updates and change it with
        :meth:`load_state_dict`: an optimizer driving a
        :class:`~numbanet.optimizers.FlatParams` model keeps its state in flat
        buffers (``state`` holds views of them) and re-checks it only after
        ``load_state_dict`` or a per-tensor update.
    skipped_steps : int
        Steps skipped for non-finite gradients (``nonfinite="skip"``).
    last_step_skipped : bool
        Whether the most recent :meth:`update` was skipped.

    Hyperparameters are plain attributes (``opt.lr = 1e-4``) that may change
    between steps, e.g. for a learning-rate schedule; they are validated at
    every :meth:`update`.
    """

    #: Hyperparameter attribute names, saved by :meth:`state_dict`.
    hyperparameters: tuple[str, ...] = ()

    def __init__(self, *, backend=None, nonfinite="propagate"):
        self.ops = resolve_backend(backend)
        self.nonfinite = nonfinite
        self.state: dict[str, dict] = {}
        self.skipped_steps = 0
        self.last_step_skipped = False
        # _FlatState while the state of a FlatParams model lives in flat
        # buffers; valid while _version (bumped by every other way of changing
        # the state) is unchanged.
        self._flat = None
        self._version = 0

    # --- subclass interface ------------------------------------------------------

    def _hyper(self, fn: str) -> dict:
        """Validate the hyperparameter attributes; return them by name."""
        raise NotImplementedError

    def _state_init(self, h: dict) -> dict[str, float]:
        """State buffers these hyperparameters use -> their initial value."""
        raise NotImplementedError

    #: The backend's step op for one tensor (``"adam_step"``), its list form
    #: (``"adam_step_foreach"``; None: one call per tensor), and the state
    #: buffers both take after the parameter and gradient, in order.
    _kernel: str = ""
    _kernel_foreach: str | None = None
    _buffers: tuple[str, ...] = ()

    def _step_kwargs(self, st: dict, new: tuple, h: dict) -> dict:
        """The step op's keyword arguments for an entry with state ``st``
        (``st["step"]`` is the number of this step; ``new`` the buffers
        created for it)."""
        raise NotImplementedError

    def _foreach_kwargs(self, st: dict, new: tuple, h: dict) -> dict:
        """The list form's keyword arguments (by default the step op's)."""
        return self._step_kwargs(st, new, h)

    def _apply(self, p, g, st: dict, new: tuple, h: dict) -> None:
        """Run the step op on ``p`` with state ``st``."""
        step = getattr(self.ops, self._kernel)
        step(p, g, *(st.get(k) for k in self._buffers), **self._step_kwargs(st, new, h))

    def _apply_group(self, group: list, new: tuple, h: dict) -> None:
        """The step on each ``(p, g, st)`` of ``group``, in order: entries at
        one step with the same ``new`` buffers. Several go to the backend's
        list form in one call where it has one; else one call per tensor."""
        many = getattr(self.ops, self._kernel_foreach, None) if self._kernel_foreach and len(group) > 1 else None
        if many is None:
            for p, g, st in group:
                self._apply(p, g, st, new, h)
            return
        sts = [st for _, _, st in group]
        # A buffer these hyperparameters do not use is a list of None: the
        # list form ignores it, as the step op ignores a None buffer.
        many([p for p, _, _ in group], [g for _, g, _ in group], *([st.get(k) for st in sts] for k in self._buffers),
             **self._foreach_kwargs(sts[0], new, h))

    # --- validation ----------------------------------------------------------------

    def _check_policy(self, fn):
        if self.nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"{fn}: nonfinite must be one of {NONFINITE_POLICIES}, got {self.nonfinite!r}")

    def _validate(self, fn, params, grads):
        """Check every entry; return [(name, param, grad)]. Mutates nothing."""
        for what, d in (("params", params), ("grads", grads)):
            if not isinstance(d, Mapping):
                raise TypeError(f"{fn}: {what} must be a dict of name -> ndarray, got {type(d).__name__}")
        entries = []
        for name, p in params.items():
            if not isinstance(p, np.ndarray):
                raise TypeError(f"{fn}: params[{name!r}] must be a numpy array, got {type(p).__name__}")
            if p.dtype not in v.FLOAT_DTYPES:
                raise TypeError(f"{fn}: params[{name!r}] must have dtype float32 or float64, got {p.dtype}")
            if not p.flags.writeable:
                raise ValueError(f"{fn}: params[{name!r}] is read-only but is updated in place")
            if name not in grads:
                raise ValueError(f"{fn}: no gradient for params[{name!r}] (grads has {sorted(grads)})")
            g = grads[name]
            if not isinstance(g, np.ndarray):
                raise TypeError(f"{fn}: grads[{name!r}] must be a numpy array, got {type(g).__name__}")
            if g.dtype != p.dtype:
                raise TypeError(f"{fn}: grads[{name!r}] has dtype {g.dtype} but params[{name!r}] has {p.dtype}")
            if g.shape != p.shape:
                raise ValueError(f"{fn}: grads[{name!r}] has shape {g.shape} but params[{name!r}] has {p.shape}")
            # Arrays alone in separate allocations (a kernel's gradient among
            # them) cannot overlap: the common case skips may_share_memory's cost.
            kp, kg = v.owner_key(p), v.owner_key(g)
            if (kp is None or kg is None or kp == kg) and np.may_share_memory(g, p):
                raise ValueError(f"{fn}: grads[{name!r}] shares memory with params[{name!r}]; pass separate arrays")
            st = self.state.get(name)
            if st is not None:
                for key, a in st.items():
                    if key != "step" and (a.shape != p.shape or a.dtype != p.dtype):
                        raise ValueError(
                            f"{fn}: state {key!r} of {name!r} is {a.dtype} {a.shape} but params[{name!r}] is "
                            f"{p.dtype} {p.shape}; load a matching state or delete optimizer.state[{name!r}]"
                        )
            entries.append((name, p, g))
        return entries

    def _flat_usable(self, flat: FlatParams) -> bool:
        """Whether the model's state allows one update of the whole buffer: all
        names new, or all at the same step with the same (well-shaped) buffers."""
        sts = [self.state.get(n) for n in flat.slices]
        if all(st is None for st in sts):
            return True
        if any(st is None for st in sts):
            return False
        keys, step = sts[0].keys(), sts[0]["step"]
        for (name, view), st in zip(flat._param_views, sts):
            if st["step"] != step or st.keys() != keys:
                return False
            for key, a in st.items():
                if key != "step" and (a.shape != view.shape or a.dtype != view.dtype):
                    return False
        return True

    # --- the step ------------------------------------------------------------------------

    def update(self, params, grads) -> bool:
        """Update ``params`` in place from ``grads`` (dicts of name -> ndarray).

        Everything is validated before anything is modified: a missing
        gradient, a shape or dtype mismatch, a non-float or read-only array, or
        an invalid hyperparameter raises ``TypeError``/``ValueError`` naming the
        entry, and leaves parameters and state as they were.

        When ``params`` and ``grads`` are ``flat.params`` and ``flat.grads`` of
        a :class:`~numbanet.optimizers.FlatParams`, the whole model is updated
        with one kernel call.

        Returns
        -------
        bool
            ``True`` if the step was applied, ``False`` if it was skipped for a
            non-finite gradient (``nonfinite="skip"``).
        """
        fn = f"{type(self).__name__}.update"
        h = self._hyper(fn)
        self._check_policy(fn)
        flat = getattr(params, "flat", None)
        if not (isinstance(flat, FlatParams) and flat.intact(params, grads)
                and (self._flat_current(flat) or self._flat_usable(flat))):
            flat = None
            entries = self._validate(fn, params, grads)
        if self.nonfinite == "skip":
            finite = (self.ops.all_finite(flat.grad) if flat is not None
                      else all(self.ops.all_finite(g) for _, _, g in entries))
            if not finite:
                self.skipped_steps += 1
                self.last_step_skipped = True
                return False
        init = self._state_init(h)
        if flat is not None:
            self._update_flat(flat, h, init)
        else:
            self._version += 1
            # Entries in dict order; each run of consecutive entries at the
            # same step with the same new buffers (usually all of them) goes
            # to _apply_group together.
            run, run_key = [], None
            for name, p, g in entries:
                st = self.state.setdefault(name, {"step": 0})
                new = tuple(k for k in init if k not in st)
                for k in new:
                    st[k] = np.full(p.shape, init[k], p.dtype)
                st["step"] += 1
                key = (st["step"], new)
                if run and key != run_key:
                    self._apply_group(run, run_key[1], h)
                    run = []
                run.append((p, g, st))
                run_key = key
            if run:
                self._apply_group(run, run_key[1], h)
        self.last_step_skipped = False
        return True

    def _flat_current(self, flat: FlatParams) -> bool:
        fs = self._flat
        return fs is not None and fs.flat is flat and fs.version == self._version and fs.state is self.state

    def _update_flat(self, flat: FlatParams, h, init):
        fs = self._flat
        new = ()
        if not (self._flat_current(flat) and all(k in fs.buffers for k in init)):
            fs, new = self._build_flat(flat, init)
        fs.step += 1
        for st in fs.states:
            st["step"] = fs.step
        self._apply(flat.data, flat.grad, dict(fs.buffers, step=fs.step), new, h)

    def _build_flat(self, flat: FlatParams, init):
        """Move the model's state into flat buffers (one per state key) whose
        per-name views become the state entries; return it and the keys new
        this step."""
        names = list(flat.slices)
        first = self.state.get(names[0])
        new = tuple(k for k in init if first is None or k not in first)
        states = [self.state.setdefault(n, {"step": 0}) for n in names]
        keys = [k for k in states[0] if k != "step"] + list(new)
        old = self._flat if self._flat is not None and self._flat.flat is flat else None
        buffers, views = {}, {}
        for key in keys:
            if old is not None and key in old.views and all(
                st.get(key) is vw for st, vw in zip(states, old.views[key])
            ):
                buffers[key], views[key] = old.buffers[key], old.views[key]
                continue
            buf = np.empty(flat.data.size, flat.dtype)
            views[key] = []
            for n, st in zip(names, states):
                view = buf[flat.slices[n]].reshape(flat.params[n].shape)
                view[...] = st[key] if key in st else init[key]
                st[key] = view
                views[key].append(view)
            buffers[key] = buf
        self._version += 1
        self._flat = _FlatState(flat, buffers, views, states, states[0]["step"], self._version, self.state)
        return self._flat, new

    # --- state dict ----------------------------------------------------------------------

    def state_dict(self) -> dict:
        """A deep copy of everything needed to resume bit for bit:
        hyperparameters, the non-finite policy, and per-name step counts and
        buffers."""
        return {
            "optimizer": type(self).__name__,
            "hyperparameters": {k: getattr(self, k) for k in self.hyperparameters},
            "nonfinite": self.nonfinite,
            "skipped_steps": self.skipped_steps,
            "state": {
                name: {k: (a if k == "step" else a.copy()) for k, a in st.items()}
                for name, st in self.state.items()
            },
        }

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore a :meth:`state_dict`. Validated first: on error nothing
        changes. Buffers whose shape and dtype already match are overwritten in
        place (so flat views stay valid)."""
        fn = f"{type(self).__name__}.load_state_dict"
        sd = state_dict
        if not isinstance(sd, Mapping) or not {"optimizer", "hyperparameters", "state"} <= set(sd):
            raise ValueError(f"{fn}: not an optimizer state dict")
        if sd["optimizer"] != type(self).__name__:
            raise ValueError(f"{fn}: state dict is for {sd['optimizer']}, not {type(self).__name__}")
        for name, st in sd["state"].items():
            step = st.get("step") if isinstance(st, Mapping) else None
            if isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Integral) or step < 0:
                raise ValueError(f"{fn}: state of {name!r} needs an int step >= 0, got {step!r}")
            arrays = [(k, a) for k, a in st.items() if k != "step"]
            for k, a in arrays:
                if not isinstance(a, np.ndarray) or a.dtype not in v.FLOAT_DTYPES:
                    raise TypeError(f"{fn}: state {k!r} of {name!r} must be a float ndarray")
                if a.shape != arrays[0][1].shape or a.dtype != arrays[0][1].dtype:
                    raise ValueError(f"{fn}: state buffers of {name!r} differ in shape or dtype")
        old = {k: getattr(self, k) for k in self.hyperparameters}
        old_policy = self.nonfinite
        try:
            for k in self.hyperparameters:
                setattr(self, k, sd["hyperparameters"][k])
            self.nonfinite = sd.get("nonfinite", self.nonfinite)
            self._hyper(fn)
            self._check_policy(fn)
        except Exception:
            for k, val in old.items():
                setattr(self, k, val)
            self.nonfinite = old_policy
            raise
        state = {}
        for name, st in sd["state"].items():
            cur = self.state.get(name, {})
            new = {"step": int(st["step"])}
            for k, a in st.items():
                if k == "step":
                    continue
                c = cur.get(k)
                if c is not None and c.shape == a.shape and c.dtype == a.dtype:
                    np.copyto(c, a)
                    new[k] = c
                else:
                    new[k] = a.copy()
            state[name] = new
        self.state = state
        self.skipped_steps = int(sd.get("skipped_steps", 0))
        self._version += 1


class _FlatState:
    """The flat buffers holding a FlatParams model's optimizer state."""

    __slots__ = ("flat", "buffers", "views", "states", "step", "version", "state")

    def __init__(self, flat, buffers, views, states, step, version, state):
        self.flat = flat
        self.buffers = buffers  # key -> 1-D buffer
        self.views = views  # key -> [per-name view of the buffer], the state entries
        self.states = states  # the per-name state dicts, in flat order
        self.step = step
        self.version = version
        self.state = state  # the optimizer's state dict these belong to
