"""A register-blocked matrix product for the convolution and Affine kernels.

Why not BLAS: on this project's reference machines OpenBLAS is pinned to its
AVX2 ("Haswell") kernels, about 120 GFLOP/s per core, while the CPUs have
AVX-512. A micro-kernel written as explicit 64-byte vectors reaches about
260 GFLOP/s per core on a cache-resident panel (the core's peak), and whole
products 1.6-1.8x OpenBLAS's on conv-sized shapes (``numbanet-bench`` shows
each case's GFLOP/s). It is also serial, deterministic and free of a second
thread pool, which is what the kernels want: they call it from their own
parallel tasks.

Structure (the BLIS/GotoBLAS scheme, kept small):

* ``C[MR, NR] (+)= sum_k Ap[k, 0:MR]^T Bp[k, 0:NR]`` is the micro-kernel:
  ``MR = 8`` rows by ``NR = 2 * (VECTOR_BYTES // itemsize)`` columns (32
  float32 or 16 float64 with AVX-512), i.e. 16 accumulator registers held
  across the whole ``k`` loop, one FMA per register per ``k``. It is written
  in LLVM IR (:func:`_microkernel_ir`) because Numba's loop vectoriser would
  keep the accumulators in memory.
* :func:`gemm` packs A (``MR`` rows at a time) and B (``NR`` columns at a
  time) into contiguous panels of ``KC`` steps, runs the micro-kernel over
  every full tile and finishes ragged edges through a small tile buffer.
  :func:`gemm_block` does one block of it, given as index ranges.
* :func:`kernel_block_bt` and :func:`kernel_block_at` read B's (or A's) rows
  in place, unpacked, through a table of row offsets into a flat array: the
  convolution's im2col matrix, whose rows are runs of its (phase) planes, is
  never built or packed.

The sum over ``k`` runs in a fixed order (blocks of ``KC``, then ``k`` within
a block), so results are bitwise reproducible, though not identical to BLAS.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._config import jit

__all__ = [
    "gemm", "gemm_block", "gemm_packed_cols", "pack_a", "pack_a_rows", "pack_a_rows_into", "a_offset", "pack_b", "kernel_block", "kernel_block_bt",
    "kernel_block_at", "b_buffer",
    "tile_cols", "nr", "MR", "KC", "NC", "VECTOR_BYTES",
]

#: Rows of A per micro-kernel call.
MR = 8
#: Steps of k per packed panel: an MR x KC panel of A and a KC x NR panel of B
#: (8 KiB and 32 KiB in float32) stay in L1/L2 while the tile is computed.
KC = 256
#: Columns of B per packed panel pass (bounds the packed-B buffer).
NC = 1024


def _vector_bytes() -> int:
    """The micro-kernel's vector width: 64 bytes with AVX-512, else 32 (AVX2;
    LLVM splits wider vectors, which would spill the accumulators).
    ``NUMBANET_GEMM_VECTOR_BYTES`` (16, 32 or 64) overrides it, for tests;
    compiled kernels are cached per CPU, so use a fresh ``NUMBA_CACHE_DIR``
    with the override."""
    import os

    forced = os.environ.get("NUMBANET_GEMM_VECTOR_BYTES", "").strip()
    if forced:
        if forced not in ("16", "32", "64"):
            raise ValueError(f"NUMBANET_GEMM_VECTOR_BYTES must be 16, 32 or 64, got {forced!r}")
        return int(forced)
    from llvmlite import binding as ll

    return 64 if ll.get_host_cpu_features().get("avx512f", False) else 32


#: Bytes per SIMD vector of the micro-kernel (read once, at import).
VECTOR_BYTES = _vector_bytes()


def nr(itemsize: int) -> int:
    """Columns of B per micro-kernel call: two vectors."""
    return 2 * (VECTOR_BYTES // itemsize)


@jit()
def tile_cols(a):
    """:func:`nr` for arrays like ``a``, inside compiled code."""
    return 2 * (VECTOR_BYTES // a.itemsize)


def _c_block(c, c_off, ldc, total, accumulate):
    i0, j0 = divmod(c_off, ldc)
    block = c[i0 : i0 + MR, j0 : j0 + total.shape[1]]
    total = total.astype(c.dtype)
    block[...] = block + total if accumulate else total


def _microkernel(kc, ap, a_off, bp, b_off, c, c_off, ldc, accumulate):
    """``C[r, j] = (C[r, j] if accumulate else 0) + sum_k ap[a_off + k*MR + r] *
    bp[b_off + k*NR + j]`` for ``r < MR``, ``j < NR``; ``C`` starts at flat
    offset ``c_off`` of the 2-D ``c`` (row stride ``ldc`` elements).

    Compiled code gets the LLVM version through the overload below; this
    NumPy body (and those of the two variants below) runs only with
    ``NUMBA_DISABLE_JIT=1`` (coverage, debugging).
    """
    nr_ = 2 * (VECTOR_BYTES // c.itemsize)
    a = ap[a_off : a_off + kc * MR].reshape(kc, MR)
    b = bp[b_off : b_off + kc * nr_].reshape(kc, nr_)
    _c_block(c, c_off, ldc, a.T @ b, accumulate)


def _microkernel_bt(kc, ap, a_off, b, btab, t0, b_col, c, c_off, ldc, accumulate):
    """:func:`_microkernel` with B read in place, unpacked: row ``k`` of the
    tile is ``b[btab[t0 + k] + b_col :][:NR]`` of the flat array ``b`` (an
    implicit im2col matrix: each row a run of some input plane)."""
    nr_ = 2 * (VECTOR_BYTES // c.itemsize)
    a = ap[a_off : a_off + kc * MR].reshape(kc, MR)
    rows = np.stack([b[btab[t0 + k] + b_col :][:nr_] for k in range(kc)]) if kc else np.zeros((0, nr_), b.dtype)
    _c_block(c, c_off, ldc, a.T @ rows, accumulate)


def _microkernel_at(kc, a, atab, r0, a_col, bp, b_off, c, c_off, ldc, accumulate):
    """:func:`_microkernel` with A read in place, unpacked: row ``r`` of the
    tile is ``a[atab[r0 + r] + a_col :][:kc]`` of the flat array ``a``."""
    nr_ = 2 * (VECTOR_BYTES // c.itemsize)
    rows = np.stack([a[atab[r0 + r] + a_col :][:kc] for r in range(MR)])
    b = bp[b_off : b_off + kc * nr_].reshape(kc, nr_)
    _c_block(c, c_off, ldc, rows @ b, accumulate)


@overload(_microkernel)
def _microkernel_impl(kc, ap, a_off, bp, b_off, c, c_off, ldc, accumulate):
    def impl(kc, ap, a_off, bp, b_off, c, c_off, ldc, accumulate):
        _microkernel_ir(kc, ap, a_off, bp, b_off, c, c_off, ldc, accumulate)

    return impl


@overload(_microkernel_bt)
def _microkernel_bt_impl(kc, ap, a_off, b, btab, t0, b_col, c, c_off, ldc, accumulate):
    def impl(kc, ap, a_off, b, btab, t0, b_col, c, c_off, ldc, accumulate):
        _microkernel_bt_ir(kc, ap, a_off, b, btab, t0, b_col, c, c_off, ldc, accumulate)

    return impl


@overload(_microkernel_at)
def _microkernel_at_impl(kc, a, atab, r0, a_col, bp, b_off, c, c_off, ldc, accumulate):
    def impl(kc, a, atab, r0, a_col, bp, b_off, c, c_off, ldc, accumulate):
        _microkernel_at_ir(kc, a, atab, r0, a_col, bp, b_off, c, c_off, ldc, accumulate)

    return impl


def _float_arrays(*arrays):
    """The common float dtype of these Numba array types, or None."""
    if not all(isinstance(a, types.Array) for a in arrays):
        return None
    dt = arrays[0].dtype
    if dt not in (types.float32, types.float64) or any(a.dtype != dt for a in arrays):
        return None
    return dt


def _emit(context, builder, dt, kc_v, a_scalar, b_row, c_ptr, ldc_v, acc_flag):
    """The micro-kernel's body: ``a_scalar(k, r)`` gives A's element, and
    ``b_row(k)`` a pointer to the NR elements of B's row ``k``; 2 * MR vector
    accumulators held in registers across the ``k`` loop, one FMA each per
    ``k``, then added to (or stored over) the tile of C at ``c_ptr``."""
    fty = context.get_value_type(dt)
    lanes = VECTOR_BYTES // (4 if dt == types.float32 else 8)
    vty = ir.VectorType(fty, lanes)
    i32, i64 = ir.IntType(32), ir.IntType(64)
    zero = ir.Constant(vty, [0.0] * lanes)
    # allocas in the entry block: LLVM promotes them to registers
    accs = [cgutils.alloca_once_value(builder, zero) for _ in range(2 * MR)]
    fma = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vty, [vty, vty, vty]),
        "llvm.fma.v%df%d" % (lanes, 32 if dt == types.float32 else 64),
    )
    splat = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)
    with cgutils.for_range(builder, kc_v) as loop:
        k = loop.index
        bk = b_row(k)
        b0 = builder.load(builder.bitcast(bk, vty.as_pointer()), align=4)
        b1 = builder.load(builder.bitcast(builder.gep(bk, [ir.Constant(i64, lanes)]), vty.as_pointer()), align=4)
        for r in range(MR):
            av = builder.insert_element(ir.Constant(vty, None), a_scalar(k, r), ir.Constant(i32, 0))
            av = builder.shuffle_vector(av, ir.Constant(vty, None), splat)
            for h, bv in enumerate((b0, b1)):
                acc = accs[2 * r + h]
                builder.store(builder.call(fma, [av, bv, builder.load(acc)]), acc)
    keep = builder.icmp_unsigned("!=", acc_flag, ir.Constant(acc_flag.type, 0))
    for r in range(MR):
        row = builder.gep(c_ptr, [builder.mul(ir.Constant(i64, r), ldc_v)])
        for h in range(2):
            p = builder.bitcast(builder.gep(row, [ir.Constant(i64, h * lanes)]), vty.as_pointer())
            total = builder.load(accs[2 * r + h])
            with builder.if_then(keep):
                builder.store(builder.fadd(builder.load(p, align=4), total), p, align=4)
            with builder.if_then(builder.not_(keep)):
                builder.store(total, p, align=4)
    return lanes


def _data(context, builder, sig, i, value):
    return context.make_array(sig.args[i])(context, builder, value).data


def _packed_a(builder, a_ptr):
    """A's element (k, r) in a panel packed by :func:`pack_a`."""
    step, i64 = ir.Constant(ir.IntType(64), MR), ir.IntType(64)
    return lambda k, r: builder.load(builder.gep(a_ptr, [builder.add(builder.mul(k, step), ir.Constant(i64, r))]))


def _packed_b(builder, b_ptr, dt):
    """B's row k in a panel packed by :func:`pack_b`."""
    step = ir.Constant(ir.IntType(64), 2 * (VECTOR_BYTES // (4 if dt == types.float32 else 8)))
    return lambda k: builder.gep(b_ptr, [builder.mul(k, step)])


@intrinsic
def _microkernel_ir(typingctx, kc, ap, a_off, bp, b_off, c, c_off, ldc, accumulate):
    """:func:`_microkernel` as LLVM IR (both operands packed)."""
    dt = _float_arrays(ap, bp, c)
    if dt is None:
        return None

    def codegen(context, builder, sig, args):
        kc_v, a_arr, a_off_v, b_arr, b_off_v, c_arr, c_off_v, ldc_v, acc_flag = args
        a_ptr = builder.gep(_data(context, builder, sig, 1, a_arr), [a_off_v])
        b_ptr = builder.gep(_data(context, builder, sig, 3, b_arr), [b_off_v])
        c_ptr = builder.gep(_data(context, builder, sig, 5, c_arr), [c_off_v])
        _emit(context, builder, dt, kc_v, _packed_a(builder, a_ptr), _packed_b(builder, b_ptr, dt), c_ptr, ldc_v, acc_flag)
        return context.get_dummy_value()

    return types.none(kc, ap, a_off, bp, b_off, c, c_off, ldc, accumulate), codegen


@intrinsic
def _microkernel_bt_ir(typingctx, kc, ap, a_off, b, btab, t0, b_col, c, c_off, ldc, accumulate):
    """:func:`_microkernel_bt` as LLVM IR (B rows found through ``btab``)."""
    dt = _float_arrays(ap, b, c)
    if dt is None or not isinstance(btab, types.Array) or btab.dtype != types.int64:
        return None

    def codegen(context, builder, sig, args):
        kc_v, a_arr, a_off_v, b_arr, tab_arr, t0_v, col_v, c_arr, c_off_v, ldc_v, acc_flag = args
        a_ptr = builder.gep(_data(context, builder, sig, 1, a_arr), [a_off_v])
        b_ptr = builder.gep(_data(context, builder, sig, 3, b_arr), [col_v])
        tab = builder.gep(_data(context, builder, sig, 4, tab_arr), [t0_v])
        c_ptr = builder.gep(_data(context, builder, sig, 7, c_arr), [c_off_v])

        def b_row(k):
            return builder.gep(b_ptr, [builder.load(builder.gep(tab, [k]))])

        _emit(context, builder, dt, kc_v, _packed_a(builder, a_ptr), b_row, c_ptr, ldc_v, acc_flag)
        return context.get_dummy_value()

    return types.none(kc, ap, a_off, b, btab, t0, b_col, c, c_off, ldc, accumulate), codegen


@intrinsic
def _microkernel_at_ir(typingctx, kc, a, atab, r0, a_col, bp, b_off, c, c_off, ldc, accumulate):
    """:func:`_microkernel_at` as LLVM IR (A rows found through ``atab``)."""
    dt = _float_arrays(a, bp, c)
    if dt is None or not isinstance(atab, types.Array) or atab.dtype != types.int64:
        return None

    def codegen(context, builder, sig, args):
        kc_v, a_arr, tab_arr, r0_v, col_v, b_arr, b_off_v, c_arr, c_off_v, ldc_v, acc_flag = args
        i64 = ir.IntType(64)
        a_base = builder.gep(_data(context, builder, sig, 1, a_arr), [col_v])
        tab = builder.gep(_data(context, builder, sig, 2, tab_arr), [r0_v])
        rows = [builder.gep(a_base, [builder.load(builder.gep(tab, [ir.Constant(i64, r)]))]) for r in range(MR)]
        b_ptr = builder.gep(_data(context, builder, sig, 5, b_arr), [b_off_v])
        c_ptr = builder.gep(_data(context, builder, sig, 7, c_arr), [c_off_v])

        def a_scalar(k, r):
            return builder.load(builder.gep(rows[r], [k]))

        _emit(context, builder, dt, kc_v, a_scalar, _packed_b(builder, b_ptr, dt), c_ptr, ldc_v, acc_flag)
        return context.get_dummy_value()

    return types.none(kc, a, atab, r0, a_col, bp, b_off, c, c_off, ldc, accumulate), codegen


@jit()
def _pack_a(a, i0, rows, k0, kc, out, o):
    """``out[o + k*MR + r] = a[i0 + r, k0 + k]`` (zero for ``r >= rows``)."""
    zero = out.dtype.type(0)
    for r in range(MR):
        dst = out[o + r :]
        if r < rows:
            src = a[i0 + r, k0:]
            for k in range(kc):
                dst[k * MR] = src[k]
        else:
            for k in range(kc):
                dst[k * MR] = zero


@jit()
def _pack_b(b, k0, kc, j0, cols, out, o, nr_):
    """``out[o + k*NR + j] = b[k0 + k, j0 + j]`` (zero for ``j >= cols``)."""
    zero = out.dtype.type(0)
    if b.strides[1] == b.itemsize:  # rows contiguous: one short copy per k
        for k in range(kc):
            dst = out[o + k * nr_ :]
            src = b[k0 + k, j0:]
            if cols == nr_:
                for j in range(nr_):
                    dst[j] = src[j]
            else:
                for j in range(nr_):
                    dst[j] = src[j] if j < cols else zero
    else:  # e.g. the transpose of a row-major matrix: walk its rows instead
        for j in range(nr_):
            dst = out[o + j :]
            if j < cols:
                src = b[k0:, j0 + j]
                for k in range(kc):
                    dst[k * nr_] = src[k]
            else:
                for k in range(kc):
                    dst[k * nr_] = zero


@jit()
def pack_a(a):
    """All of ``a`` (M, K) packed for :func:`kernel_block`: the block of
    ``k0 .. k0 + kc`` starts at ``a_offset(M, k0)``. Pack once, reuse for every
    product with the same left operand (a layer's weights across a batch)."""
    return pack_a_rows(a, 0, a.shape[0])


@jit()
def pack_a_rows(a, i0, i1):
    """:func:`pack_a` of rows ``i0 .. i1`` of ``a`` (a range, not a slice:
    slicing the rows of a transposed array would be one more array type,
    hence one more compilation of everything below)."""
    ap = np.empty(((i1 - i0 + MR - 1) // MR) * MR * a.shape[1], a.dtype)
    pack_a_rows_into(a, i0, i1, ap)
    return ap


@jit()
def pack_a_rows_into(a, i0, i1, ap):
    """:func:`pack_a_rows` into ``ap`` (``ceil((i1 - i0) / MR) * MR * K`` long)."""
    m_, k_ = i1 - i0, a.shape[1]
    mpan = (m_ + MR - 1) // MR
    for k0 in range(0, k_, KC):
        kc = min(KC, k_ - k0)
        for ip in range(mpan):
            _pack_a(a, i0 + ip * MR, min(MR, m_ - ip * MR), k0, kc, ap, mpan * MR * k0 + ip * MR * kc)


@jit()
def a_offset(m_, k0):
    """Where :func:`pack_a` put the block starting at step ``k0``."""
    return ((m_ + MR - 1) // MR) * MR * k0


@jit()
def pack_b(b, k0, kc, j0, nc, bp):
    """``b[k0:k0+kc, j0:j0+nc]`` packed for :func:`kernel_block` into ``bp``
    (at least ``ceil(nc / NR) * NR * kc`` long)."""
    nr_ = tile_cols(bp)
    for js in range(0, nc, nr_):
        _pack_b(b, k0, kc, j0 + js, min(nr_, nc - js), bp, (js // nr_) * nr_ * kc, nr_)


@jit()
def _tile_out(tile, c, i0, rows, j0, cols, add):
    """The valid ``rows x cols`` corner of an edge tile into ``c`` at (i0, j0)."""
    for r in range(rows):
        cr = c[i0 + r, j0:]
        tr = tile[r]
        for j in range(cols):
            cr[j] = cr[j] + tr[j] if add else tr[j]


@jit()
def kernel_block(ap, a_off, m_, kc, bp, nc, c, j0, add, tile):
    """``c[:, j0:j0+nc] (+)= A_block @ B_block`` for one packed ``kc`` block:
    A from ``ap`` at ``a_off`` (M rows), B from ``bp`` (``nc`` columns).
    ``tile`` is an (MR, NR) scratch for the ragged edges."""
    nr_ = tile_cols(c)
    ldc = c.strides[0] // c.itemsize
    for ip in range((m_ + MR - 1) // MR):
        i0 = ip * MR
        rows = min(MR, m_ - i0)
        for js in range(0, nc, nr_):
            cols = min(nr_, nc - js)
            b_off = (js // nr_) * nr_ * kc
            if rows == MR and cols == nr_:
                _microkernel(kc, ap, a_off + i0 * kc, bp, b_off, c, i0 * ldc + j0 + js, ldc, add)
            else:
                _microkernel(kc, ap, a_off + i0 * kc, bp, b_off, tile, 0, nr_, False)
                _tile_out(tile, c, i0, rows, j0 + js, cols, add)


@jit()
def kernel_block_bt(ap, a_off, m_, kc, b, btab, t0, b_col, nc, c, j0, add, tile):
    """:func:`kernel_block` with B unpacked: B's row ``k`` (of this ``kc``
    block) is ``b[btab[t0 + k] + b_col :]``, its columns ``0 .. nc``; they
    land in ``c[:, j0 : j0 + nc]``. A ragged last tile reads up to NR - 1
    elements past a row's ``nc`` (its results are dropped): ``b`` needs that
    much slack after the last row's end."""
    nr_ = tile_cols(c)
    ldc = c.strides[0] // c.itemsize
    for ip in range((m_ + MR - 1) // MR):
        i0 = ip * MR
        rows = min(MR, m_ - i0)
        for js in range(0, nc, nr_):
            cols = min(nr_, nc - js)
            if rows == MR and cols == nr_:
                _microkernel_bt(kc, ap, a_off + i0 * kc, b, btab, t0, b_col + js, c, i0 * ldc + j0 + js, ldc, add)
            else:
                _microkernel_bt(kc, ap, a_off + i0 * kc, b, btab, t0, b_col + js, tile, 0, nr_, False)
                _tile_out(tile, c, i0, rows, j0 + js, cols, add)


@jit()
def kernel_block_at(a, atab, a_col, m_, kc, bp, nc, c, j0, add, tile):
    """:func:`kernel_block` with A unpacked: A's row ``i`` (``i < m_``) is
    ``a[atab[i] + a_col :]``, its first ``kc`` elements. ``atab`` must have
    ``ceil(m_ / MR) * MR`` valid entries (the extra rows' results are dropped)."""
    nr_ = tile_cols(c)
    ldc = c.strides[0] // c.itemsize
    for ip in range((m_ + MR - 1) // MR):
        i0 = ip * MR
        rows = min(MR, m_ - i0)
        for js in range(0, nc, nr_):
            cols = min(nr_, nc - js)
            b_off = (js // nr_) * nr_ * kc
            if rows == MR and cols == nr_:
                _microkernel_at(kc, a, atab, i0, a_col, bp, b_off, c, i0 * ldc + j0 + js, ldc, add)
            else:
                _microkernel_at(kc, a, atab, i0, a_col, bp, b_off, tile, 0, nr_, False)
                _tile_out(tile, c, i0, rows, j0 + js, cols, add)


@jit()
def b_buffer(kc_max, nc_max, dtype_like):
    """Scratch for one packed block of B."""
    nr_ = tile_cols(dtype_like)
    return np.empty(((nc_max + nr_ - 1) // nr_) * nr_ * kc_max, dtype_like.dtype)


@jit()
def gemm(a, b, c, accumulate):
    """``c = a @ b`` (or ``c += a @ b`` when ``accumulate``), serially.

    ``a`` (M, K) and ``b`` (K, N) may have any strides; ``c`` (M, N) must
    have contiguous rows (any row stride). Summation order over ``k`` is fixed
    (see the module docstring). The callers guarantee the shapes agree.
    """
    gemm_block(a, b, c, 0, a.shape[0], 0, b.shape[1], accumulate)


@jit()
def gemm_block(a, b, c, i0, i1, j0, j1, accumulate):
    """``c[i0:i1, j0:j1] (+)= a[i0:i1] @ b[:, j0:j1]``: one block of
    :func:`gemm`, given as index ranges so that every block of a product runs
    the same compiled code (slices of transposed operands would each be a new
    array type). Each element's sum runs in the same order as in :func:`gemm`."""
    ap = pack_a_rows(a, i0, i1)
    gemm_packed_cols(ap, i1 - i0, b, c[i0:i1], j0, j1, accumulate)


@jit()
def gemm_packed_cols(ap, m_, b, c, j_lo, j_hi, accumulate):
    """``c[:, j_lo:j_hi] (+)= A @ b[:, j_lo:j_hi]`` with A (``m_`` rows)
    already packed by :func:`pack_a`: pack once, reuse for every product with
    the same left operand."""
    k_ = b.shape[0]
    n_ = j_hi - j_lo
    nr_ = tile_cols(c)
    if m_ == 0 or n_ <= 0:
        return
    if k_ == 0:
        if not accumulate:
            c[:, j_lo:j_hi] = 0
        return
    bp = b_buffer(min(KC, k_), min(NC, n_), c)
    tile = np.empty((MR, nr_), c.dtype)
    for j0 in range(j_lo, j_hi, NC):
        nc = min(NC, j_hi - j0)
        for k0 in range(0, k_, KC):
            kc = min(KC, k_ - k0)
            pack_b(b, k0, kc, j0, nc, bp)
            kernel_block(ap, a_offset(m_, k0), m_, kc, bp, nc, c, j0, accumulate or k0 > 0, tile)
