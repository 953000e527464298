"""One knob for the number of threads numbanet computes with.

``set_num_threads(n)`` (or the environment variable ``NUMBANET_NUM_THREADS``)
sets

- Numba's thread count for every ``parallel=True`` kernel, in *every* Python
  thread that calls a kernel: Numba's own ``numba.set_num_threads`` only
  affects the calling thread (a new ``threading.Thread`` starts again with all
  ``NUMBA_NUM_THREADS``), so numbanet re-applies the request in each calling
  thread on its next kernel call;
- the thread count of NumPy's BLAS, via threadpoolctl, for whatever NumPy
  code runs beside the kernels (the reference, the user's own). No kernel
  uses BLAS: convolution and Affine run on numbanet's own product,
  :mod:`numbanet.kernels._gemm`, inside Numba's threads, so there is one pool.

Idle worker threads spin briefly, then sleep. Numba's OpenMP layer uses GNU
libgomp, whose idle workers by default busy-wait for 300,000 ``pause``
iterations (milliseconds on current CPUs) after every parallel region: any
other thread pool in the process, NumPy's OpenBLAS above all, then finds the
cores taken (on 2 cores the digits training step took 16 ms instead of 1.7 ms
when its Affine products ran on OpenBLAS). Sleeping at once
(``OMP_WAIT_POLICY=PASSIVE``) fixes that, but then every parallel region pays
for waking the workers, which is as long as a small kernel (softmax on
256 x 1000 gained nothing from a second thread). So numbanet starts the pool
with a spin count of :data:`SPIN_COUNT` (a few tenths of a millisecond of
spinning, enough to bridge the gaps between the parallel kernels of a
training step; all numbanet's products run on this pool, none on OpenBLAS)
set in the environment only while libgomp loads
(it reads it once), and restores the environment straight after, so nothing
else in the process or its subprocesses sees the change. A user who sets
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` keeps their own choice, and the TBB
and workqueue layers are not affected. Measured with ``numbanet-bench`` (2
threads): digits step 1.31 ms passive, 0.81 ms with the spin count.

The same first call also keeps glibc from unmapping large freed blocks (see
:mod:`numbanet.kernels._malloc`), the other cost that grew with threads.

All of this is one explicit step, :func:`kernel_op`, the decorator of every
public kernel op; argument validation (:mod:`numbanet.kernels.validate`) does
none of it.

Nothing happens at import. ``NUMBANET_NUM_THREADS`` is read on the first
kernel call (or the first ``get_num_threads``/``set_num_threads``); unset,
Numba's default (all cores, or ``NUMBA_NUM_THREADS``) and the BLAS defaults
stay. ``NUMBA_NUM_THREADS`` remains the upper bound: Numba launches that many
threads once and ``n`` may not exceed it.
"""

from __future__ import annotations

import functools
import os
import threading

from ._malloc import tune_malloc

__all__ = ["set_num_threads", "get_num_threads", "sync_thread", "kernel_op", "call_threads", "on_calling_thread"]

ENV_VAR = "NUMBANET_NUM_THREADS"

_lock = threading.Lock()
_local = threading.local()
_launched = False
_env_read = False
_requested: int | None = None
# Replaced by every set_num_threads; a Python thread whose copy differs has not
# applied the latest request yet.
_token = object()


def _max_threads() -> int:
    import numba

    return int(numba.config.NUMBA_NUM_THREADS)


def _check(n, name: str) -> int:
    from . import validate as v

    n = v.int_param("set_num_threads", name, n, minimum=1)
    top = _max_threads()
    if n > top:
        raise ValueError(
            f"set_num_threads: {name} must be <= NUMBA_NUM_THREADS={top} (the threads "
            f"Numba launches; raise it with the NUMBA_NUM_THREADS environment variable "
            f"before starting Python), got {n}"
        )
    return n


def _limit_blas(n: int) -> None:
    from threadpoolctl import ThreadpoolController

    for lib in ThreadpoolController().lib_controllers:
        if lib.user_api == "blas":
            lib.set_num_threads(n)


def _apply(n: int) -> None:
    global _requested, _token
    _requested = n
    _token = object()
    _limit_blas(n)


#: libgomp's spin count for numbanet's pool (see the module docstring): how
#: long an idle worker waits awake for the next parallel region. Measured on
#: a 2-vCPU Xeon (2026-12-02), a 100 x 784 x 50 float64 Affine forward at 2
#: threads after a busy gap on the calling thread: the workers were still up
#: after 50-100 us and asleep after 200 us with 10000 (74 -> 106-123 us per
#: call, as slow as one thread), up after 300 us and asleep after 500 us
#: with 30000. A small network's step has gaps of that length between its
#: parallel kernels (the input cast, the small layers, the update): 30000
#: against 10000, alternating, 2 runs each, ``numbanet-bench --no-torch
#: --dtype both --cases 'train_step*,affine_book*,adam*,...'``:
#: train_step_book_twolayer float64 0.56-0.60 -> 0.41-0.42 ms,
#: multilayerextend float64 1.68-1.71 -> 1.47-1.51 ms, float32 1.16-1.19 ->
#: 0.98 ms, train_step_digits float64 1.43-1.46 -> 1.28-1.36 ms, the others
#: within noise. The cost: another thread pool in the process (NumPy's
#: OpenBLAS at 2 threads) finds the other core busy for that much longer
#: after each kernel. Was 10000 (about 0.1 ms on Zen 3; libgomp's default,
#: 300000, is milliseconds).
SPIN_COUNT = "30000"


def _launch_numba_threads() -> None:
    """Start Numba's thread pool with a short OpenMP spin, unless the user chose."""
    global _launched
    if _launched:
        return
    _launched = True
    from numba.np.ufunc import parallel

    if parallel._is_initialized:
        return  # somebody else started the pool first; their settings stand
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        parallel._launch_threads()
        return
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    try:
        parallel._launch_threads()
    finally:
        del os.environ["GOMP_SPINCOUNT"]


def _read_env() -> None:
    global _env_read
    if _env_read:
        return
    _env_read = True
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"{ENV_VAR} must be a positive integer, got {raw!r}") from None
    _apply(_check(n, ENV_VAR))


def sync_thread() -> None:
    """Apply the requested thread count to the calling Python thread.

    Cheap after the first call in each thread (one attribute comparison);
    every public op runs it first, through :func:`kernel_op`.
    """
    if getattr(_local, "token", None) is _token:
        return
    with _lock:
        _launch_numba_threads()
        tune_malloc()
        _read_env()
        token, n = _token, _requested
    import numba

    if n is not None:
        numba.set_num_threads(n)
    _local.threads = numba.get_num_threads()
    _local.token = token


def call_threads() -> int:
    """The thread count of the calling Python thread, as :func:`sync_thread`
    last set it: for a kernel op to pass to its parallel kernel, called
    inside a :func:`kernel_op`. ``numba.get_num_threads()`` costs about 1 us
    from Python (it checks the pool is up on every call), a tenth of a small
    Affine layer; and the value cannot be read inside a cached kernel (Numba
    then refuses to cache it). Only the number of blocks a product is cut
    into depends on it, never the result."""
    return _local.threads


#: Numba's threading-layer getter and setter, once the pool is up (see _swap_threads).
_raw_threads = None


def _swap_threads(n):
    """Set the calling thread's Numba thread count to ``n``; return the old
    one. Numba's ``get_num_threads`` and ``set_num_threads`` take two locks
    each from Python (about 5 us for a get and two sets on Zen 3, process
    CPU time, as much as a small kernel): once the pool is up this calls the
    threading layer's C functions behind them directly (under 1 us), or the
    public functions if a Numba version lacks them. (A compiled helper
    would be as fast, but Numba cannot cache it.)"""
    global _raw_threads
    import numba

    if _raw_threads is None:
        from numba.np.ufunc import parallel

        get, put = getattr(parallel, "_get_num_threads", None), getattr(parallel, "_set_num_threads", None)
        if not (parallel._is_initialized and callable(get) and callable(put)):
            old = numba.get_num_threads()
            numba.set_num_threads(n)
            return old
        _raw_threads = get, put
    get, put = _raw_threads
    old = get()
    if old < 1:  # not set in this thread yet: the public getter resolves the default
        old = numba.get_num_threads()
    put(n)
    return old


def on_calling_thread(kernel, *args):
    """``kernel(*args)`` with Numba's thread count at one, then restored: its
    parallel regions run on the calling thread and wake no worker. For a
    parallel kernel given too little work to pay for the pool (called inside
    a :func:`kernel_op`, which has started the pool). The result is bitwise
    the same as with more threads, as for every kernel (their work split
    never depends on the thread count); only the time differs. The count
    restored is Numba's own (not :func:`call_threads`), in case the caller
    set it directly."""
    old = _swap_threads(1)
    if old == 1:
        return kernel(*args)
    try:
        return kernel(*args)
    finally:
        _swap_threads(old)


def kernel_op(fn):
    """Decorator of every public kernel op: before the call, apply the thread
    count to the calling Python thread and, on the very first call, start
    Numba's pool and tune malloc (:func:`sync_thread`).

    The op's name, used in its error messages, is ``fn.__name__``; the
    decorated function carries it as ``op_name``. A test checks that every op
    in ``numbanet.kernels.__all__`` is decorated.
    """

    @functools.wraps(fn)
    def op(*args, **kwargs):
        if getattr(_local, "token", None) is not _token:
            sync_thread()
        return fn(*args, **kwargs)

    op.op_name = fn.__name__
    return op


def set_num_threads(n: int) -> None:
    """Set the number of threads numbanet's kernels and BLAS use.

    Parameters
    ----------
    n : int
        ``1 <= n <= numba.config.NUMBA_NUM_THREADS``. Applies to every Python
        thread that calls a kernel from now on, and to NumPy's BLAS.

    Raises
    ------
    TypeError
        ``n`` is not an int.
    ValueError
        ``n`` is below 1 or above ``NUMBA_NUM_THREADS``.
    """
    n = _check(n, "n")
    with _lock:
        global _env_read
        _env_read = True  # an explicit call overrides the environment
        _apply(n)
    sync_thread()


def get_num_threads() -> int:
    """The number of threads kernels called from this Python thread will use."""
    import numba

    sync_thread()
    return int(numba.get_num_threads())
