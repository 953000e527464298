"""Argument checks shared by the public kernel wrappers, layers and optimizers.

Kernels trust their inputs (Numba does no bounds checking), so every public
function in :mod:`numbanet.kernels` runs these checks first. Each raises a
``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape or
value) whose message names the function, the argument, what was expected and
what was given.

The checks are pure: they start no threads and compute nothing. The set-up a
kernel call needs (Numba's thread pool, the thread count, glibc's malloc
thresholds) is the separate :func:`numbanet.kernels._threads.kernel_op` step
that wraps every public op, so layers that only reshape (``Flatten``,
``Dropout``) and networks on ``backend=reference`` start nothing.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
import os

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F32, _F64 = FLOAT_DTYPES

#: Numba's MemInfo type once Numba's runtime is loaded (never imported from
#: here: without it no array can have such a base).
_meminfo = None


def owner_key(a: np.ndarray):
    """An int naming the one allocation ``a`` lies in when no other array
    can reach that memory except through views of it, or None.

    Two arrays with different keys do not overlap, so the pairwise
    ``np.may_share_memory`` (about 1 us a pair) is needed only where a key is
    None or two keys are equal. An array that owns its memory (``base`` None)
    is keyed by its identity. So is, in effect, an array a kernel allocated
    and returned: its base is Numba's MemInfo of a buffer Numba's runtime
    allocated (no Python ``parent``), keyed by that buffer's address, which
    every view of the same buffer shares. Arrays a kernel returns (a layer's
    gradients) are of that kind: keyed, they skip the pairwise checks the
    optimizers run on every tensor of every step. Anything else (a NumPy
    view, a Numba view of a Python array) gets None."""
    global _meminfo
    base = a.base
    if base is None:
        return id(a)
    t = type(base)
    if t is not _meminfo:
        if _meminfo is not None or t.__name__ != "_MemInfo":
            return None
        import sys

        runtime = sys.modules.get("numba.core.runtime._nrt_python")
        if runtime is None or t is not getattr(runtime, "_MemInfo", None):
            return None
        _meminfo = t
    return base.data if base.parent is None else None


def float_array(fn: str, name: str, a, ndim=None, *, min_ndim=None) -> np.ndarray:
    """Return ``a`` as a C-contiguous float32/float64 array, or raise.

    ``ndim`` is an int or a tuple of accepted ranks; ``min_ndim`` a lower bound.
    """
    # Runs several times per kernel call: the common case (an ndarray of a
    # native float dtype, the rank asked for) is tested first, by identity.
    if type(a) is not np.ndarray and not isinstance(a, np.ndarray):
        if a is None:
            raise TypeError(f"{fn}: {name} must be a float32 or float64 array, got None")
        a = np.asarray(a)
    dt = a.dtype
    if dt is not _F64 and dt is not _F32 and dt not in FLOAT_DTYPES:
        raise TypeError(
            f"{fn}: {name} must have dtype float32 or float64, got {a.dtype}"
        )
    if ndim is not None and a.ndim != ndim:  # an int rank compares at once; a tuple goes on
        ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if a.ndim not in ranks:
            want = " or ".join(f"{r}-D" for r in ranks)
            raise ValueError(f"{fn}: {name} must be {want}, got {a.ndim}-D array of shape {a.shape}")
    if min_ndim is not None and a.ndim < min_ndim:
        raise ValueError(
            f"{fn}: {name} must have at least {min_ndim} dimensions, got shape {a.shape}"
        )
    # Read-only inputs are copied: Numba would compile (and cache) a separate
    # read-only specialisation of every kernel for every such combination of
    # arguments, seconds of latency that warmup() cannot foresee.
    # Not np.ascontiguousarray: it turns a 0-D array into shape (1,).
    flags = a.flags
    if flags.c_contiguous and flags.writeable:
        return a
    return np.array(a, order="C")


def same_dtype(fn: str, **arrays: np.ndarray) -> np.dtype:
    """Check that all arrays share one float dtype and return it."""
    items = list(arrays.items())
    first_name, first = items[0]
    for name, a in items[1:]:
        if a.dtype != first.dtype:
            raise TypeError(
                f"{fn}: {name} has dtype {a.dtype} but {first_name} has dtype "
                f"{first.dtype}; cast them to one float dtype"
            )
    return first.dtype


def shape(fn: str, name: str, a: np.ndarray, expected: tuple, why: str = "") -> None:
    """Check ``a.shape`` against ``expected`` (``None`` entries match anything)."""
    ok = a.ndim == len(expected) and all(
        e is None or e == s for e, s in zip(expected, a.shape)
    )
    if not ok:
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected)
        want += ",)" if len(expected) == 1 else ")"
        extra = f" ({why})" if why else ""
        raise ValueError(f"{fn}: {name} must have shape {want}{extra}, got {a.shape}")


def int_param(fn: str, name: str, value, *, minimum: int | None = None) -> int:
    """Return ``value`` as a Python int, checking type and lower bound."""
    if type(value) is not int:  # the common case skips the slower ABC check (bool is not int here)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{fn}: {name} must be an int, got {type(value).__name__} {value!r}")
        value = operator.index(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value}")
    if not -(2**62) <= value < 2**62:
        # Kernels compute in int64: keep sums like H + 2 * pad from wrapping.
        raise ValueError(f"{fn}: {name} must lie in [-2**62, 2**62), got {value}")
    return value


def bool_param(fn: str, name: str, value) -> bool:
    """Return ``value`` as a Python bool; only ``True``/``False`` (or NumPy's) pass."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


@functools.cache
def _memory_bytes() -> int:
    # once per process: two sysconf calls cost a microsecond or two, on
    # every call of a small convolution or pooling
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX
        return 2**40


def output_size(fn: str, shape: tuple, dtype, blame: str) -> None:
    """Refuse an output that could not fit in this machine's memory.

    Without this a huge ``pad`` (say) surfaces as NumPy's ``MemoryError`` or
    "array is too big" naming neither the function nor the argument.
    ``blame`` names the arguments that set the size.
    """
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes > _memory_bytes():
        raise ValueError(
            f"{fn}: {blame} give an output of shape {tuple(shape)} ({nbytes / 2**30:.3g} GiB), "
            f"more than this machine's memory"
        )


def class_labels(fn: str, labels, n: int, k: int, dtype: np.dtype, first_bad) -> tuple[np.ndarray, bool]:
    """Validate softmax labels: class indices (N,) or targets (N, K).

    Returns ``(labels, is_index)``: int64 indices checked to lie in ``[0, K)``,
    or targets cast to ``dtype`` (one-hot rows, or any probability rows).
    ``first_bad(indices, k)`` returns the position of the first index outside
    ``[0, k)`` or -1 (the caller's compiled loop: this module imports no
    Numba).
    """
    if labels is None:
        raise TypeError(f"{fn}: labels must be integer class indices (N,) or targets (N, K), got None")
    t = np.asarray(labels)
    # dtype kinds rather than np.issubdtype (a microsecond a call): "i"/"u"
    # are NumPy's integers (bool is "b"), "f" its floats
    if t.ndim == 1:
        if t.dtype.kind not in "iu":
            raise TypeError(
                f"{fn}: 1-D labels must be integer class indices, got dtype {t.dtype}"
            )
        if t.shape[0] != n:
            shape(fn, "labels", t, (n,), "one class index per row of logits")
        t64 = np.ascontiguousarray(t, dtype=np.int64)
        if not t64.flags.writeable:
            # read-only labels are copied, as read-only float inputs are (see
            # float_array): a read-only array is another kernel specialisation
            t64 = t64.copy()
        # (uint64 labels beyond 2**63 wrap to negative in the int64 cast and
        # are caught as negative.)
        if n and first_bad(t64, k) >= 0:
            bad = t[(t < 0) | (t >= k)][0]
            raise ValueError(f"{fn}: labels must lie in [0, {k}) for {k} classes, got {bad}")
        return t64, True
    if t.ndim == 2:
        if t.dtype.kind not in "iuf":
            raise TypeError(f"{fn}: 2-D (one-hot) labels must be numeric, got dtype {t.dtype}")
        if t.shape != (n, k):
            shape(fn, "labels", t, (n, k), "one-hot targets matching logits")
        t = np.ascontiguousarray(t, dtype=dtype)
        return (t if t.flags.writeable else t.copy()), False
    raise ValueError(
        f"{fn}: labels must be class indices of shape ({n},) or one-hot of shape ({n}, {k}), got shape {t.shape}"
    )


def float_param(fn: str, name: str, value, *, minimum=None, below=None) -> float:
    """Return ``value`` as a Python float, checking that it is a finite real
    number in ``[minimum, below)`` (either bound may be ``None``)."""
    if type(value) is not float:  # the common case skips the slower ABC check
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"{fn}: {name} must be a real number, got {type(value).__name__} {value!r}")
        value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{fn}: {name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value}")
    if below is not None and not value < below:
        where = f"in [{minimum}, {below})" if minimum is not None else f"< {below}"
        raise ValueError(f"{fn}: {name} must lie {where}, got {value}")
    return value


def inplace_array(fn: str, name: str, a, like: np.ndarray | None = None) -> np.ndarray:
    """Check that ``a`` is a writable float32/float64 ndarray (updated in place),
    with the dtype and shape of ``like`` when given. Returns ``a`` itself.
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(
            f"{fn}: {name} must be a float32 or float64 ndarray (it is updated in place), "
            f"got {type(a).__name__}"
        )
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{fn}: {name} must have dtype float32 or float64, got {a.dtype}")
    if not a.flags.writeable:
        raise ValueError(f"{fn}: {name} is read-only but is updated in place")
    if like is not None:
        if a.dtype != like.dtype:
            raise TypeError(f"{fn}: {name} has dtype {a.dtype} but param has dtype {like.dtype}")
        if a.shape != like.shape:
            raise ValueError(f"{fn}: {name} must have the shape of param {like.shape}, got {a.shape}")
    return a


def int_pair(fn: str, name: str, value, *, minimum: int | None = None) -> tuple[int, int]:
    """Return an int or an ``(h, w)`` pair of ints as a pair, checking each."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{fn}: {name} must be an int or an (h, w) pair, got {value!r}")
        return (
            int_param(fn, f"{name}[0]", value[0], minimum=minimum),
            int_param(fn, f"{name}[1]", value[1], minimum=minimum),
        )
    v = int_param(fn, name, value, minimum=minimum)
    return v, v
