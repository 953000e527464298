"""Keep large freed blocks in the process instead of returning them to the OS.

A training step allocates and frees the same few large arrays every step
(layer outputs and gradients of several MiB). glibc's ``malloc`` serves a
block above its mmap threshold with a fresh ``mmap`` and trims free memory at
the top of the heap above its trim threshold; either way the next step's array
lands on pages the kernel must fault in and zero again. With 2 threads this
cost more than the arithmetic: in the book's SimpleConvNet step on MNIST-sized
input, ReLU forward on a 6.9 MB activation took 1.4 ms instead of 0.27 ms and
the whole step 17 ms instead of 12.4 ms.

glibc raises both thresholds by itself as it sees large frees, up to an mmap
threshold of 32 MiB (``DEFAULT_MMAP_THRESHOLD_MAX``) and a trim threshold of
twice that. numbanet sets those upper bounds at once, on its first kernel call:
blocks up to 32 MiB come from the heap, and up to 64 MiB of free heap stays
mapped for reuse. This is process-wide (``mallopt``), so it is skipped when

- the C library is not glibc (musl, macOS, Windows);
- the user tuned malloc already (any ``MALLOC_*_`` environment variable such as
  ``MALLOC_MMAP_THRESHOLD_``, or ``LD_PRELOAD`` of jemalloc or tcmalloc);
- ``NUMBANET_MALLOC_TUNING=0`` is set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

__all__ = ["tune_malloc", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

ENV_VAR = "NUMBANET_MALLOC_TUNING"
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
# From glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_state: str | None = None


def _user_tuned() -> bool:
    if any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ):
        return True
    preload = os.environ.get("LD_PRELOAD", "")
    return "jemalloc" in preload or "tcmalloc" in preload or "mimalloc" in preload


def tune_malloc() -> str:
    """Apply the thresholds once per process; return what happened.

    Returns one of ``"tuned"``, ``"disabled"`` (``NUMBANET_MALLOC_TUNING=0``),
    ``"user"`` (the user tuned malloc), ``"unsupported"`` (not glibc, or
    ``mallopt`` refused).
    """
    global _state
    if _state is not None:
        return _state
    if os.environ.get(ENV_VAR, "").strip() == "0":
        _state = "disabled"
    elif _user_tuned():
        _state = "user"
    elif platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        _state = "unsupported"
    else:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # Trim first: setting either disables glibc's dynamic adjustment, and
        # a trim threshold below the mmap threshold would trim what we keep.
        ok = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        ok = ok and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        _state = "tuned" if ok else "unsupported"
    return _state
