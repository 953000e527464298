"""The GEMM compiled once per dtype and CPU, called from kernels as external symbols.

Why: Numba links every ``@njit`` function a kernel calls into the kernel's own
LLVM module and optimises the result again (``CPUCodeLibrary.finalize``), at
every level of the call chain and once more in each ``prange`` body, which is
a library of its own. The GEMM of :mod:`numbanet.kernels._gemm` (packing,
blocking, the unrolled micro-kernel) was therefore optimised several times
inside every parallel convolution and Affine kernel: most of their compile
time (``NUMBA_LLVM_PASS_TIMINGS=1`` shows it) was LLVM re-optimising the same
GEMM code.

How: each entry point below is compiled once per dtype as a C callback
(``numba.cfunc``, cached on disk like the kernels) and its address registered
under a fixed name with ``llvmlite.binding.add_symbol``. The kernels call it
through ``types.ExternalFunction``: a declaration, not linked code, so a
kernel's module holds only the call. The functions here have the same names
and arguments as :mod:`._gemm`'s; compiled code gets the external call
(through the ``@overload`` of each), plain Python (``NUMBA_DISABLE_JIT=1``)
calls :mod:`._gemm` directly.

When the symbols are registered: before any kernel that calls them is
compiled (the overloads register them while the kernel is typed) or loaded
from the cache (:func:`links_gemm` wraps the kernel dispatcher's cache
loader), and only the entry points it calls, for the dtype being compiled or
loaded. Nothing happens at import.

Correctness across machines and tiles:

* the C callbacks are cached by Numba's own cache, whose index keys on the
  target CPU's name and features (``codegen.magic_tuple()``): an object built
  for AVX-512 is never loaded on a CPU without it;
* the symbol names hold the tile (:func:`tile_key`), and the cache stamp of
  this file and of every kernel file that calls it holds the tile and the
  content hash of ``_gemm.py`` and this file (``_config.DEPENDENCIES``), so a
  kernel compiled for one tile never calls another tile's GEMM.

Arrays cross the C boundary as a data pointer plus sizes (and strides for the
operands that may be transposed views); the callers' contracts are
:mod:`._gemm`'s, plus: 1-D arrays and output matrices must be C-contiguous.
"""

from __future__ import annotations

import numpy as np
from numba import carray as _carray
from numba import types
from numba.core import errors
from numba.extending import intrinsic, overload

from . import _gemm
from ._config import CACHE, jit

__all__ = ["gemm_block", "kernel_block_bt", "kernel_block_at", "pack_a_rows_into", "pack_b",
           "links_gemm", "link", "symbol", "tile_key", "ENTRIES"]


def tile_key() -> str:
    """The micro-kernel's tile, as it goes into symbol names and cache stamps."""
    key = getattr(_gemm, "TILE_KEY", None)  # the per-ISA tile table, where it exists
    if key is None:
        key = f"mr{_gemm.MR}_v{_gemm.VECTOR_BYTES}_kc{_gemm.KC}_nc{_gemm.NC}"
    return "".join(ch if ch.isalnum() else "_" for ch in str(key))


# --- the C side: rebuild arrays from pointers, call the real GEMM ---------------------


@jit()
def _strided(p, rows, cols, rs, cs):
    """A (rows, cols) view with element strides (rs, cs) of the memory at ``p``."""
    n = (rows - 1) * rs + (cols - 1) * cs + 1 if rows > 0 and cols > 0 else 0
    flat = _carray(p, n)
    return np.lib.stride_tricks.as_strided(flat, (rows, cols), (rs * flat.itemsize, cs * flat.itemsize))


def _c_gemm_block(a_p, a_rows, a_cols, a_rs, a_cs, b_p, b_cols, b_rs, b_cs, c_p, c_rows, ldc, i0, i1, j0, j1, acc):
    a = _strided(a_p, a_rows, a_cols, a_rs, a_cs)
    b = _strided(b_p, a_cols, b_cols, b_rs, b_cs)
    c = _carray(c_p, (c_rows, ldc))
    _gemm.gemm_block(a, b, c, i0, i1, j0, j1, acc != 0)


def _c_kernel_block_bt(ap_p, ap_n, a_off, m_, kc, b_p, b_n, tab_p, tab_n, t0, b_col, nc,
                       c_p, c_rows, ldc, j0, add, tile_p):
    ap = _carray(ap_p, ap_n)
    b = _carray(b_p, b_n)
    tab = _carray(tab_p, tab_n)
    c = _carray(c_p, (c_rows, ldc))
    tile = _carray(tile_p, (_gemm.MR, _gemm.tile_cols(ap)))
    _gemm.kernel_block_bt(ap, a_off, m_, kc, b, tab, t0, b_col, nc, c, j0, add != 0, tile)


def _c_kernel_block_at(a_p, a_n, tab_p, tab_n, a_col, m_, kc, bp_p, bp_n, nc, c_p, c_rows, ldc, j0, add, tile_p):
    a = _carray(a_p, a_n)
    tab = _carray(tab_p, tab_n)
    bp = _carray(bp_p, bp_n)
    c = _carray(c_p, (c_rows, ldc))
    tile = _carray(tile_p, (_gemm.MR, _gemm.tile_cols(a)))
    _gemm.kernel_block_at(a, tab, a_col, m_, kc, bp, nc, c, j0, add != 0, tile)


def _c_pack_a_rows_into(a_p, a_rows, a_cols, a_rs, a_cs, i0, i1, ap_p, ap_n):
    _gemm.pack_a_rows_into(_strided(a_p, a_rows, a_cols, a_rs, a_cs), i0, i1, _carray(ap_p, ap_n))


def _c_pack_b(b_p, b_rows, b_cols, b_rs, b_cs, k0, kc, j0, nc, bp_p, bp_n):
    _gemm.pack_b(_strided(b_p, b_rows, b_cols, b_rs, b_cs), k0, kc, j0, nc, _carray(bp_p, bp_n))


# Entry name -> (C-side function, its arguments: "p" a data pointer of the
# dtype, "t" a pointer to int64 (row tables), "i" an int64).
ENTRIES = {
    "gemm_block": (_c_gemm_block, "piiiipiiipiiiiiii"),
    "kernel_block_bt": (_c_kernel_block_bt, "piiiipitiiiipiiiip"),
    "kernel_block_at": (_c_kernel_block_at, "pitiiiipiipiiiip"),
    "pack_a_rows_into": (_c_pack_a_rows_into, "piiiiiipi"),
    "pack_b": (_c_pack_b, "piiiiiiiipi"),
}


def _signature(entry: str, dt):
    fn, spec = ENTRIES[entry]
    assert len(spec) == fn.__code__.co_argcount, entry
    codes = {"p": types.CPointer(dt), "t": types.CPointer(types.int64), "i": types.int64}
    return types.void(*(codes[c] for c in ENTRIES[entry][1]))


def _dtype_name(dt) -> str:
    return {types.float32: "f32", types.float64: "f64"}[dt]


def symbol(entry: str, dt) -> str:
    """The process-wide name of ``entry`` for Numba dtype ``dt``."""
    return f"numbanet_gemm_{entry}_{_dtype_name(dt)}_{tile_key()}"


#: (entry, dtype) -> the compiled C callback (kept alive: kernels call its code).
_compiled: dict = {}


def link(dt, entries=None) -> None:
    """Compile (or load from the cache) the entry points ``entries`` (all by
    default) for Numba dtype ``dt`` and register their symbols. Idempotent and
    cheap once done."""
    entries = tuple(ENTRIES) if entries is None else entries
    if all((e, dt) in _compiled for e in entries):
        return
    import numba
    from llvmlite import binding as ll
    from numba.core.compiler_lock import global_compiler_lock

    # The compiler lock, not one of our own: this runs both from Python and
    # while Numba compiles a caller (which holds that lock already).
    with global_compiler_lock:
        for entry in entries:
            if (entry, dt) in _compiled:
                continue
            fn = ENTRIES[entry][0]
            cf = numba.cfunc(_signature(entry, dt), cache=CACHE, error_model="numpy")(fn)
            ll.add_symbol(symbol(entry, dt), cf.address)
            _compiled[entry, dt] = cf


def _array_dtype(sig):
    for a in getattr(sig, "args", sig):
        if isinstance(a, types.Array) and a.dtype in (types.float32, types.float64):
            return a.dtype
    return None


def links_gemm(*entries):
    """Decorator for a kernel dispatcher whose code calls ``entries``: loading
    it from the cache registers their symbols for its dtype first (a cached
    kernel is machine code with the symbols unresolved). Only what the kernel
    calls: each entry loaded is one more cache read at start-up."""
    unknown = set(entries) - set(ENTRIES)
    if unknown:
        raise ValueError(f"links_gemm: no entry points {sorted(unknown)}")

    def decorate(dispatcher):
        cache = getattr(dispatcher, "_cache", None)
        if cache is None:  # NUMBA_DISABLE_JIT: a plain function
            return dispatcher
        load = cache.load_overload

        def load_overload(sig, target_context):
            dt = _array_dtype(sig)
            if dt is not None:
                link(dt, entries)
            return load(sig, target_context)

        cache.load_overload = load_overload
        dispatcher.gemm_entries = entries
        return dispatcher

    return decorate


# --- the kernel side: the same names as in _gemm, lowered to external calls -----------


@intrinsic
def _ptr(typingctx, arr):
    """The data pointer of an array."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, sig, args):
        return context.make_array(sig.args[0])(context, builder, args[0]).data

    return types.CPointer(arr.dtype)(arr), codegen


def _external(entry: str, *arrays):
    """The ExternalFunction for ``entry`` at the dtype of ``arrays``, symbols
    registered; or a typing error naming the contract."""
    dt = arrays[0].dtype
    if dt not in (types.float32, types.float64) or any(a.dtype != dt for a in arrays):
        raise errors.TypingError(f"_gemm_ext.{entry}: float32 or float64 arrays of one dtype, got {arrays}")
    link(dt, (entry,))
    return types.ExternalFunction(symbol(entry, dt), _signature(entry, dt))


def _need_c(entry, **arrays):
    for name, a in arrays.items():
        if not isinstance(a, types.Array) or a.layout != "C":
            raise errors.TypingError(f"_gemm_ext.{entry}: {name} must be a C-contiguous array, got {a}")


def gemm_block(a, b, c, i0, i1, j0, j1, accumulate):
    """:func:`._gemm.gemm_block` (``c`` C-contiguous)."""
    _gemm.gemm_block(a, b, c, i0, i1, j0, j1, accumulate)


@overload(gemm_block)
def _gemm_block_ol(a, b, c, i0, i1, j0, j1, accumulate):
    _need_c("gemm_block", c=c)
    fn = _external("gemm_block", a, b, c)

    def impl(a, b, c, i0, i1, j0, j1, accumulate):
        s = a.itemsize
        fn(_ptr(a), a.shape[0], a.shape[1], a.strides[0] // s, a.strides[1] // s,
           _ptr(b), b.shape[1], b.strides[0] // s, b.strides[1] // s,
           _ptr(c), c.shape[0], c.shape[1], i0, i1, j0, j1, np.int64(accumulate))

    return impl


def kernel_block_bt(ap, a_off, m_, kc, b, btab, t0, b_col, nc, c, j0, add, tile):
    """:func:`._gemm.kernel_block_bt` (every array C-contiguous)."""
    _gemm.kernel_block_bt(ap, a_off, m_, kc, b, btab, t0, b_col, nc, c, j0, add, tile)


@overload(kernel_block_bt)
def _kernel_block_bt_ol(ap, a_off, m_, kc, b, btab, t0, b_col, nc, c, j0, add, tile):
    _need_c("kernel_block_bt", ap=ap, b=b, btab=btab, c=c, tile=tile)
    fn = _external("kernel_block_bt", ap, b, c, tile)

    def impl(ap, a_off, m_, kc, b, btab, t0, b_col, nc, c, j0, add, tile):
        fn(_ptr(ap), ap.size, a_off, m_, kc, _ptr(b), b.size, _ptr(btab), btab.size, t0, b_col, nc,
           _ptr(c), c.shape[0], c.shape[1], j0, np.int64(add), _ptr(tile))

    return impl


def kernel_block_at(a, atab, a_col, m_, kc, bp, nc, c, j0, add, tile):
    """:func:`._gemm.kernel_block_at` (every array C-contiguous)."""
    _gemm.kernel_block_at(a, atab, a_col, m_, kc, bp, nc, c, j0, add, tile)


@overload(kernel_block_at)
def _kernel_block_at_ol(a, atab, a_col, m_, kc, bp, nc, c, j0, add, tile):
    _need_c("kernel_block_at", a=a, atab=atab, bp=bp, c=c, tile=tile)
    fn = _external("kernel_block_at", a, bp, c, tile)

    def impl(a, atab, a_col, m_, kc, bp, nc, c, j0, add, tile):
        fn(_ptr(a), a.size, _ptr(atab), atab.size, a_col, m_, kc, _ptr(bp), bp.size, nc,
           _ptr(c), c.shape[0], c.shape[1], j0, np.int64(add), _ptr(tile))

    return impl


def pack_a_rows_into(a, i0, i1, ap):
    """:func:`._gemm.pack_a_rows_into` (``ap`` C-contiguous)."""
    _gemm.pack_a_rows_into(a, i0, i1, ap)


@overload(pack_a_rows_into)
def _pack_a_rows_into_ol(a, i0, i1, ap):
    _need_c("pack_a_rows_into", ap=ap)
    fn = _external("pack_a_rows_into", a, ap)

    def impl(a, i0, i1, ap):
        s = a.itemsize
        fn(_ptr(a), a.shape[0], a.shape[1], a.strides[0] // s, a.strides[1] // s, i0, i1, _ptr(ap), ap.size)

    return impl


def pack_b(b, k0, kc, j0, nc, bp):
    """:func:`._gemm.pack_b` (``bp`` C-contiguous)."""
    _gemm.pack_b(b, k0, kc, j0, nc, bp)


@overload(pack_b)
def _pack_b_ol(b, k0, kc, j0, nc, bp):
    _need_c("pack_b", bp=bp)
    fn = _external("pack_b", b, bp)

    def impl(b, k0, kc, j0, nc, bp):
        s = b.itemsize
        fn(_ptr(b), b.shape[0], b.shape[1], b.strides[0] // s, b.strides[1] // s, k0, kc, j0, nc, _ptr(bp), bp.size)

    return impl
