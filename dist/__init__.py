"""Data-parallel training over MPI (mpi4py), in Horovod's shape.

>>> from numbanet import dist                        # doctest: +SKIP
>>> dist.init()                                      # doctest: +SKIP
>>> dist.broadcast_parameters(net.params)            # doctest: +SKIP
>>> opt = dist.DistributedOptimizer(Adam(lr=1e-3))   # doctest: +SKIP
>>> opt.update(net.params, net.gradient(x_shard, t_shard))   # doctest: +SKIP

Every rank runs the same program on its own shard of each batch; the
optimizer sums the ranks' gradients with one in-place ``MPI_Allreduce`` over
the network's flat gradient buffer (:class:`~numbanet.optimizers.FlatParams`)
and then applies the wrapped update, identically on every rank. Launch with
``mpiexec -n 4 python train.py`` (MPICH's hydra, from the ``mpich`` wheel) or
``srun -n 4 python train.py`` under Slurm.

This module is the only place numbanet imports :mod:`mpi4py`; the rest of the
package runs without it. Install it with ``pip install 'numbanet[dist]'``.

Why the ranks stay bitwise identical: all start from rank 0's parameters
(:func:`broadcast_parameters`), every rank receives the same reduced gradient
(MPICH's allreduce algorithms combine the same operands in the same order on
every rank for a commutative operation; the tests check it under 2 and 3
ranks), and the update kernels are deterministic, so every rank computes the
same new parameters and optimizer state.
"""

from __future__ import annotations

import sys

import numpy as np

__all__ = [
    "init",
    "is_initialized",
    "rank",
    "size",
    "comm",
    "broadcast_parameters",
    "broadcast_object",
    "allreduce_sum",
    "average_buffers",
    "shard_bounds",
    "DistributedOptimizer",
]

_COMM = None


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "numbanet.dist needs mpi4py and an MPI library: pip install 'numbanet[dist]' "
            "(mpi4py plus the mpich wheel)"
        ) from None
    return MPI


def _abort_on_exception(exc_type, exc, tb, _previous=sys.excepthook):
    # An uncaught exception on one rank would leave the others waiting in the
    # next collective forever; print it, then take the whole job down.
    _previous(exc_type, exc, tb)
    try:
        sys.stderr.flush()
        # Give the launcher's output forwarding a moment to pass the traceback
        # on before Abort tears the job down (hydra was seen to drop its tail).
        import time

        time.sleep(0.2)
        _mpi().COMM_WORLD.Abort(1)
    finally:  # pragma: no cover - Abort does not return
        pass


def init(comm=None, abort_on_exception=True):
    """Initialise MPI (if the launcher has not) and pick the communicator.

    Parameters
    ----------
    comm : mpi4py communicator, optional
        Default ``MPI.COMM_WORLD``.
    abort_on_exception : bool
        Install a ``sys.excepthook`` that calls ``MPI_Abort`` after printing
        an uncaught exception, so that a rank that fails ends the whole job
        with a non-zero exit instead of leaving the other ranks blocked in a
        collective (what ``python -m mpi4py`` does too).

    Returns the communicator. Calling it again is harmless.
    """
    global _COMM
    MPI = _mpi()
    if not MPI.Is_initialized():  # pragma: no cover - mpi4py initialises at import
        MPI.Init()
    _COMM = MPI.COMM_WORLD if comm is None else comm
    if abort_on_exception and sys.excepthook is not _abort_on_exception:
        sys.excepthook = _abort_on_exception
    return _COMM


def is_initialized() -> bool:
    return _COMM is not None


def comm():
    """The communicator (initialising on first use)."""
    return _COMM if _COMM is not None else init()


def rank() -> int:
    return comm().Get_rank()


def size() -> int:
    return comm().Get_size()


def broadcast_parameters(params, root=0):
    """Overwrite every array of ``params`` (a dict name -> ndarray, e.g.
    ``net.params`` or ``net.buffers``) in place with ``root``'s values.

    A :class:`~numbanet.optimizers.FlatParams` dict is sent as its one buffer.
    Every rank must hold the same names, shapes and dtypes (checked by
    comparing a signature first: a mismatch raises ValueError on every rank
    instead of corrupting or hanging).
    """
    MPI = _mpi()
    c = comm()
    sig = [(k, a.shape, a.dtype.str) for k, a in params.items()]
    ref = c.bcast(sig, root=root)
    # Agreed by all ranks, so that all raise (none is left waiting in Bcast).
    if not c.allreduce(ref == sig, op=MPI.LAND):
        bad = "" if ref == sig else f": this rank ({c.Get_rank()}) holds {sig}, root {root} holds {ref}"
        raise ValueError(f"broadcast_parameters: the ranks hold different names, shapes or dtypes{bad}")
    flat = getattr(params, "flat", None)
    if flat is not None and flat.intact(params, flat.grads):
        c.Bcast(flat.data, root=root)
        return
    for a in params.values():
        buf = a if a.flags.c_contiguous else np.ascontiguousarray(a)
        c.Bcast(buf, root=root)
        if buf is not a:
            a[...] = buf


def broadcast_object(obj, root=0):
    """``root``'s Python object on every rank (pickled by mpi4py; use it for
    small metadata only)."""
    return comm().bcast(obj, root=root)


def allreduce_sum(x):
    """Sum of a number or array over the ranks (a new value; arrays keep their dtype)."""
    MPI = _mpi()
    if isinstance(x, np.ndarray):
        out = np.ascontiguousarray(x).copy()
        comm().Allreduce(MPI.IN_PLACE, out, op=MPI.SUM)
        return out
    return comm().allreduce(x, op=MPI.SUM)


def average_buffers(buffers):
    """Replace every array of ``buffers`` (e.g. ``net.buffers``: batch norm
    running statistics) in place by its mean over the ranks."""
    MPI = _mpi()
    c = comm()
    n = c.Get_size()
    if n == 1:
        return
    for a in buffers.values():
        buf = a if a.flags.c_contiguous else np.ascontiguousarray(a)
        c.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        buf /= a.dtype.type(n)
        if buf is not a:
            a[...] = buf


def shard_bounds(count, parts, index):
    """``(start, stop)`` of part ``index`` when ``count`` items are split into
    ``parts`` contiguous parts whose sizes differ by at most one (the first
    ``count % parts`` parts get the extra item)."""
    q, r = divmod(int(count), int(parts))
    start = index * q + min(index, r)
    return start, start + q + (1 if index < r else 0)


class DistributedOptimizer:
    """Wrap an optimizer so that each update uses the gradient averaged over
    the ranks.

    ``update(params, grads, weight=None)`` multiplies this rank's gradients by
    ``weight`` (default ``1 / size``), sums them over the ranks in place with
    one ``MPI_Allreduce`` and then calls the wrapped optimizer's ``update``.
    With ``weight = n_rank / n_total`` (what :class:`~numbanet.nets.Trainer`
    passes) the result is the gradient of the mean loss over all ranks'
    samples even when the shards differ in size, e.g. in an epoch's last batch.

    When ``grads`` is a :class:`~numbanet.optimizers.FlatParams` dict (the
    default for numbanet's networks), the whole model's gradient is one
    contiguous buffer and goes out in one call; otherwise the gradients are
    packed into a staging buffer, reduced in one call and unpacked.

    Attributes
    ----------
    optimizer : the wrapped optimizer
    allreduce_seconds : float
        Time spent in the gradient allreduce (including waiting for slower
        ranks), accumulated over all updates.

    Notes
    -----
    Overlapping the allreduce with backward (each layer's gradients sent with
    ``MPI_Iallreduce`` as soon as backward has produced them) was measured
    and not kept: ``python -m numbanet.bench.dist`` times it beside the
    blocking step, and on the 2-core machine of this project with 2 ranks it
    gained nothing (SimpleConvNet 118 vs 122 ms per step, within the noise;
    DeepConvNet-size 614 vs 548 ms, slower). MPICH advances a non-blocking
    collective only inside MPI calls unless an asynchronous progress thread
    is enabled, and on these cores such a thread would compete with the
    compute; the blocking allreduce is a few percent of the step here.
    """

    def __init__(self, optimizer, comm=None):
        if not callable(getattr(optimizer, "update", None)):
            raise TypeError(f"DistributedOptimizer: {type(optimizer).__name__} has no update(params, grads)")
        self.optimizer = optimizer
        self._comm = comm
        self._stage = None
        self.allreduce_seconds = 0.0

    @property
    def comm(self):
        return self._comm if self._comm is not None else globals()["comm"]()

    def __getattr__(self, name):
        # Hyperparameters, state, state_dict ... belong to the wrapped optimizer.
        if name == "optimizer":
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def __setattr__(self, name, value):
        if name in ("optimizer", "_comm", "_stage", "allreduce_seconds") or "optimizer" not in self.__dict__:
            object.__setattr__(self, name, value)
        else:
            setattr(self.optimizer, name, value)

    def allreduce_gradients(self, grads, weight=None):
        """Replace ``grads`` in place by ``sum over ranks of weight * grads``."""
        import time

        MPI = _mpi()
        c = self.comm
        n = c.Get_size()
        w = 1.0 / n if weight is None else float(weight)
        t0 = time.perf_counter()
        flat = getattr(grads, "flat", None)
        if flat is not None and grads is flat.grads and flat.intact(flat.params, grads):
            buf = flat.grad
            if w != 1.0:
                buf *= buf.dtype.type(w)
            c.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        else:
            arrays = list(grads.values())
            dtypes = {a.dtype for a in arrays}
            if len(dtypes) != 1:
                raise TypeError(f"DistributedOptimizer: gradients must share one dtype, got {sorted(map(str, dtypes))}")
            total = sum(a.size for a in arrays)
            dt = dtypes.pop()
            if self._stage is None or self._stage.size != total or self._stage.dtype != dt:
                self._stage = np.empty(total, dt)
            s = 0
            for a in arrays:
                self._stage[s : s + a.size] = a.reshape(-1)
                s += a.size
            if w != 1.0:
                self._stage *= dt.type(w)
            c.Allreduce(MPI.IN_PLACE, self._stage, op=MPI.SUM)
            s = 0
            for a in arrays:
                a[...] = self._stage[s : s + a.size].reshape(a.shape)
                s += a.size
        self.allreduce_seconds += time.perf_counter() - t0

    def update(self, params, grads, weight=None):
        """Average ``grads`` over the ranks (see the class), then update ``params``."""
        self.allreduce_gradients(grads, weight)
        return self.optimizer.update(params, grads)

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict):
        return self.optimizer.load_state_dict(state_dict)

    def __repr__(self):
        return f"DistributedOptimizer({self.optimizer!r})"
