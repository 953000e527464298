"""Numba compilation options for every numbanet kernel, kept in one place.

Every kernel module decorates its private kernels with :func:`jit` so that the
options (caching, GIL release, parallelism, fast-math flags) are decided here
and nowhere else.

Environment variables
---------------------
NUMBANET_DISABLE_CACHE
    Set to ``1`` to compile without Numba's on-disk cache (``cache=False``).
    For read-only installs, keep the cache on and point ``NUMBA_CACHE_DIR`` at a
    writable directory instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os

import numba
from numba.core import caching

__all__ = ["CACHE", "FASTMATH_FLAGS", "FASTMATH_ORDERED", "jit"]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


#: Whether kernels are cached on disk (on unless ``NUMBANET_DISABLE_CACHE=1``).
CACHE = not _env_flag("NUMBANET_DISABLE_CACHE")

#: Fast-math flags a kernel may opt into. Never ``nnan``/``ninf`` (what
#: ``fastmath=True`` adds): they let LLVM assume NaN and Inf never occur, which
#: makes NaN checks and NaN propagation lie.
FASTMATH_FLAGS = frozenset({"nsz", "arcp", "contract", "reassoc", "afn"})

#: The same without ``reassoc``, for code whose rounding depends on the order
#: of evaluation (e.g. the Cody-Waite range reduction of an ``exp``).
FASTMATH_ORDERED = FASTMATH_FLAGS - {"reassoc"}


def _prange_only():
    """Numba's ``parallel`` option with only ``prange`` loops parallel.

    By default ``parallel=True`` also turns every array expression and NumPy
    call of a kernel (``np.zeros``, ``np.arange(n) * k``, ``s += t``,
    ``a.sum()``) into a parallel loop of its own, each compiled as a separate
    gufunc (a body, a wrapper and a launch, whose code LLVM optimises again
    in the kernel). numbanet's kernels do their parallel work in explicit
    ``prange`` loops over fixed chunks; their other array expressions are
    set-up and small (partial sums, index tables, zeroed buffers), so those
    run serially as Numba's plain NumPy code: same values (element-wise, or
    integer and boolean reductions), no float reduction changes order.
    Slice assignments (``a[:] = 0``) stay loops of Numba's parallel
    lowering (``setitem``): inside a ``prange`` body they are its plain
    sequential loops, which vectorise. Write the set-up outside ``prange``
    as loops, not array expressions: Numba compiles an array expression as a
    small function of its own with the kernel's options, and then warns that
    ``parallel=True`` found nothing to parallelise in it.

    An instance, not a dict: Numba's ``ParallelOptions`` pops the keys of a
    dict it is given, and the dispatcher parses its options again for every
    new signature, so a dict would be empty (all defaults) from the second.
    """
    from numba.core.cpu_options import ParallelOptions

    return ParallelOptions({"prange": True, "setitem": True, "numpy": False, "reduction": False,
                            "inplace_binop": False, "comprehension": False, "stencil": False})


def jit(*, parallel: bool = False, fastmath: bool = False, inline: bool = False, external: bool = False):
    """Return the ``numba.njit`` decorator with numbanet's options.

    Parameters
    ----------
    parallel : bool
        Compile ``prange`` loops for Numba's thread pool.
    fastmath : bool
        Enable :data:`FASTMATH_FLAGS` (re-association, contraction, ...), but
        never the no-NaN/no-Inf assumptions. Use only where measured to help.
    inline : bool
        Inline the function into its callers in Numba's IR
        (``inline="always"``): callers compile its code as their own, so it is
        not compiled as a function of its own for each signature, then linked
        and optimised again by LLVM at every level of the call chain. For
        helpers called once per caller on a chain of compiled calls (the
        GEMM's levels); a helper called from many places is better compiled
        once. Its code takes the caller's options (``fastmath`` included):
        never inline a fastmath helper into a caller without it.
    external : bool
        Compiled callers call the function through an external symbol
        (:mod:`._extcall`), not as code linked into theirs: it is compiled
        once per signature instead of again in each caller and in each of the
        three libraries Numba builds around a ``prange`` body. For per-chunk
        helpers of parallel kernels (called once per chunk, never per element).

    Notes
    -----
    A helper compiles once per distinct tuple of argument *types*, and each
    compile is a full LLVM pipeline (0.2-1 s). Two argument types creep in
    unseen: a constant (``0``, ``True``) is a literal type of its own, and a
    ``prange`` index is ``uint64``. So a per-chunk helper called as
    ``f(..., 0, n)`` on the serial branch and ``f(..., t, t + 1)`` in the
    ``prange`` compiled three times (``Literal[int](0)``, ``int64``,
    ``uint64``). Pass such bounds as ``np.int64(...)`` (flags as
    ``np.bool_(...)``) so both branches share one compiled helper.
    """
    options = dict(nogil=True, cache=CACHE, error_model="numpy")
    if parallel:
        options["parallel"] = _prange_only()
    if fastmath:
        options["fastmath"] = set(FASTMATH_FLAGS)
    if inline:
        options["inline"] = "always"
    njit = numba.njit(**options)

    def decorate(py_func):
        dispatcher = njit(py_func)
        if not hasattr(dispatcher, "py_func"):  # NUMBA_DISABLE_JIT: a plain function
            return dispatcher
        if CACHE:
            load_without_refresh(dispatcher._cache)
            load_external_helpers_first(dispatcher._cache)
            save_concurrent_safe(dispatcher._cache)
        if external:
            from ._extcall import external as stand_in

            return stand_in(dispatcher)
        return dispatcher

    return decorate


def load_without_refresh(cache) -> None:
    """Make ``cache`` (a dispatcher's or a C callback's Numba cache) load
    machine code without initialising Numba's compiler first.

    Numba's ``Cache.load_overload`` calls ``target_context.refresh()`` before
    it reads the cache: on the first call in a process that imports every
    typing and lowering registry Numba has, among them ``numba.np.linalg``,
    which imports SciPy's ``linalg`` to see whether a BLAS is there (and SciPy
    imports ``numpy.f2py``). Rebuilding a cached kernel needs none of it: the
    library is object code, loaded by the code generator. On a warm cache that
    refresh was 0.88 of the 1.5 s from the first conv call to its result
    (0.42 s of it SciPy; cProfile, shared 2-core Zen 3). Compiling still
    refreshes: Numba's compiler does it at the start of every compilation
    (``compile_extra``), so a cache miss, and any other ``@njit`` code,
    compiles as before. What a load does need, the runtime (``NRT_*``
    symbols, which the kernels' machine code calls), is initialised here, as
    Numba's refresh would (``rtsys.initialize``, a no-op once done)."""
    from numba.core.runtime import rtsys

    guard = cache._guard_against_spurious_io_errors
    load = cache._load_overload

    def load_overload(sig, target_context):
        rtsys.initialize(target_context)  # the one part a load needs: the runtime's symbols (NRT_Free, ...)
        with guard():
            return load(sig, target_context)
        # None when the guard swallowed an I/O error, as in Numba's own method

    cache.load_overload = load_overload


class _ConcurrentSafeCacheFile(caching.IndexDataCacheFile):
    """Numba's index-and-data cache file, safe for processes that save
    entries of one function at the same time (``warmup`` compiles float32 and
    float64 in parallel workers, both into each kernel's one index).

    Numba's own ``save`` reads the index, takes the first free number as the
    data file's name, writes the index, then the data. Two processes saving
    different signatures of one function both took number 1: the index ended
    up naming one signature, the data file holding the other's code. A later
    load then ran float32 machine code on float64 arrays ("can't unbox array
    from PyObject", seen from warmup) or keyed it under a signature it was
    not compiled for (a KeyError in ``_extcall._register``). Reproduced with
    two back-to-back ``numbanet-bench`` runs after a tunable edit (Xeon).

    Here each entry's data file is named after its key (signature, target and
    bytecode hash), so no two signatures share a file; the data is written
    before the index names it; and the index is read, updated and written
    under an exclusive lock on a file beside it (where ``fcntl`` exists), so
    no entry is lost. Without the lock an entry can still be lost (a
    recompile later), never pointed at another entry's code.
    """

    def save(self, key, data):
        name = self._entry_name(key)
        self._save_data(name, data)
        with self._index_lock():
            overloads = self._load_index()
            if overloads.get(key) != name:
                overloads[key] = name
                self._save_index(overloads)

    def _entry_name(self, key) -> str:
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:20]
        return self._data_name_pattern.replace("{number:d}", digest)

    @contextlib.contextmanager
    def _index_lock(self):
        try:
            import fcntl
        except ImportError:  # not POSIX: unlocked (see the class docstring)
            yield
            return
        with open(self._index_path + ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def save_concurrent_safe(cache) -> None:
    """Make ``cache`` (a dispatcher's or C callback's) save entries with
    :class:`_ConcurrentSafeCacheFile`."""
    cache_file = getattr(cache, "_cache_file", None)
    if type(cache_file) is caching.IndexDataCacheFile:
        cache_file.__class__ = _ConcurrentSafeCacheFile


def load_external_helpers_first(cache) -> None:
    """Before a cached kernel's (or C callback's) machine code loads from
    ``cache``, register the helpers it calls through external symbols
    (``jit(external=True)``): a name MCJIT cannot resolve is a fatal error,
    not an exception."""
    impl = getattr(cache, "_impl", None)
    if impl is None:  # NUMBA_DISABLE_JIT: a plain function
        return
    rebuild = impl.rebuild

    def rebuild_after_registering(target_context, payload):
        _name, kind, data = payload[0]  # CompileResult._reduce(): the library's serialized state
        if kind == "object":
            from ._extcall import register_symbols_in

            register_symbols_in(data[0])
        return rebuild(target_context, payload)

    impl.rebuild = rebuild_after_registering


# --- cache freshness across files ---------------------------------------------------
#
# Numba decides whether a cached kernel is stale from its own source file alone,
# but a kernel's machine code also contains every @njit helper it calls and
# every module-level constant it reads. So kernels keep their helpers in their
# own file, with declared exceptions (DEPENDENCIES): the GEMM (kernels/_gemm.py),
# shared by convolution and Affine; the convolution's wide-grid helpers
# (_conv_grid.py), shared by its two strategies' files; and the tunables
# (_tunables.py) read inside kernels. For those files the cache locator below
# adds the dependencies' content hashes to the freshness stamp, so editing
# _gemm.py or a tunable recompiles the kernels that hold it instead of
# loading stale ones. The cache files of everything that compiles GEMM code
# (_gemm.py included) are also named after the micro-kernel's tile
# (_gemm.TILE.name), so kernels built for one tile are never loaded for another
# (Numba's index keys on the target CPU, but the tile can also be forced with
# NUMBANET_GEMM_TILE), and each tile keeps its own entries instead of one
# invalidating the other's (as a tile in the freshness stamp would).
# The GEMM itself is compiled once per dtype as external symbols
# (_gemm_ext.py), whose symbol names also hold the tile.

_KERNEL_DIR = os.path.dirname(os.path.abspath(__file__))

#: Kernel file -> the files of other @njit code compiled into its kernels,
#: and _tunables.py where its kernels read a tunable (a global frozen into the
#: machine code), and _extcall.py where they call external helpers (the
#: symbol names in the machine code are its format). Not transitive: list
#: every file whose code ends up inside.
DEPENDENCIES = {
    "activation.py": ("_tunables.py",),
    "optim.py": ("_tunables.py", "_extcall.py"),
    "loss.py": ("_tunables.py", "_extcall.py"),
    "batchnorm.py": ("_tunables.py", "_extcall.py", "activation.py"),
    "pool.py": ("_extcall.py",),
    "_conv_direct.py": ("_conv_grid.py", "_extcall.py"),
    "_conv_gemm.py": ("_conv_grid.py", "_gemm.py", "_gemm_ext.py", "_extcall.py"),
    "affine.py": ("_gemm.py", "_gemm_ext.py", "_tunables.py", "activation.py"),
    "_gemm_ext.py": ("_gemm.py", "_extcall.py"),
    "_gemm.py": ("_extcall.py",),
}

#: The files whose kernels hold GEMM code: their cache files carry the tile's name.
_GEMM_FILE = "_gemm.py"


def _file_hash(path: str) -> bytes:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).digest()


def _tile_name() -> str:
    from . import _gemm  # imported by the time anything is cached

    return _gemm.TILE.name


def _dependencies(py_file: str):
    path = os.path.abspath(py_file)
    if os.path.dirname(path) != _KERNEL_DIR:
        return None
    names = DEPENDENCIES.get(os.path.basename(path))
    return None if names is None else [os.path.join(_KERNEL_DIR, n) for n in names]


def _holds_gemm(py_file: str) -> bool:
    name = os.path.basename(os.path.abspath(py_file))
    return name == _GEMM_FILE or _GEMM_FILE in DEPENDENCIES.get(name, ())


def _with_dependencies(base):
    class Locator(base):
        @classmethod
        def from_function(cls, py_func, py_file):
            if _dependencies(py_file) is None:
                return None  # not ours: numba's own locators take it
            return super().from_function(py_func, py_file)

        def get_source_stamp(self):
            deps = tuple(_file_hash(p) for p in _dependencies(self._py_file))
            return (super().get_source_stamp(), deps)

        def get_disambiguator(self):
            base_name = super().get_disambiguator()
            if not _holds_gemm(self._py_file):
                return base_name
            return f"{base_name}-{_tile_name()}"

    Locator.__name__ = Locator.__qualname__ = "Numbanet" + base.__name__
    return Locator


def _install_locators() -> None:
    existing = {c.__name__ for c in caching.CacheImpl._locator_classes}
    if "NumbanetInTreeCacheLocator" in existing:
        return
    ours = [_with_dependencies(c) for c in
            (caching.UserProvidedCacheLocator, caching.InTreeCacheLocator, caching.UserWideCacheLocator)]
    caching.CacheImpl._locator_classes[:0] = ours


_install_locators()
