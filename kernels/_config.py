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

import os

import numba

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


def jit(*, parallel: bool = False, fastmath: bool = False):
    """Return the ``numba.njit`` decorator with numbanet's options.

    Parameters
    ----------
    parallel : bool
        Compile ``prange`` loops for Numba's thread pool.
    fastmath : bool
        Enable :data:`FASTMATH_FLAGS` (re-association, contraction, ...), but
        never the no-NaN/no-Inf assumptions. Use only where measured to help.
    """
    options = dict(nogil=True, cache=CACHE, error_model="numpy")
    if parallel:
        options["parallel"] = True
    if fastmath:
        options["fastmath"] = set(FASTMATH_FLAGS)
    return numba.njit(**options)
