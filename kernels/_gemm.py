"""A register-blocked matrix product for the convolution and Affine kernels.

Why not BLAS: OpenBLAS picks one kernel per CPU at load time and is often
pinned below the CPU's widest vectors (its AVX2 "Haswell" kernels on AVX-512
machines), and it runs its own thread pool. A micro-kernel written as
explicit vectors, sized to the target's register file, reaches the core's
FMA peak on a cache-resident panel (``numbanet-bench`` measures that peak
and each case's GFLOP/s). It is also serial, deterministic and free of a
second thread pool, which is what the kernels want: they call it from their
own parallel tasks.

Structure (the BLIS/GotoBLAS scheme, kept small):

* ``C[MR, NR] (+)= sum_k Ap[k, 0:MR]^T Bp[k, 0:NR]`` is the micro-kernel:
  ``MR`` rows by ``NR = NV * (VECTOR_BYTES // itemsize)`` columns (``NV``
  vectors per row), i.e. ``MR * NV`` vector accumulators held in registers
  across the whole ``k`` loop, one FMA each per ``k``. It is written in LLVM
  IR (:func:`_emit`) because Numba's loop vectoriser would keep the
  accumulators in memory.
* :func:`gemm` packs A (``MR`` rows at a time) and B (``NR`` columns at a
  time) into contiguous panels of ``KC`` steps and runs the micro-kernel
  over every tile. A ragged tile (the last rows or columns of C) is an edge
  variant of it: as few vectors per row as its columns need, a partial
  last vector stored lane by lane, its missing rows not stored, the same FMA chain per
  element (no scratch tile and copy: at the book's 100 x 784 x 50, 4-8%).
  :func:`gemm_block` does one block of it, given as index ranges. Two
  shortcuts skip packing where it costs more than it saves, both chosen from
  the whole product's shape and layouts (never the block), so a product's
  bits do not depend on how it is split: a row-major A is read in place when
  C is at most ``A_IN_PLACE_MAX_N`` columns wide (same micro-kernel, same
  bits as packing it), a column-major A too (each ``k`` step of a row panel
  is already ``MR`` contiguous elements; Affine's ``x.T @ dy``), and an A of fewer than ``MR`` rows with row-major B
  (a batch of one) is a plain k-ordered sum of B's rows, no tiles.
* :func:`kernel_block_bt` and :func:`kernel_block_at` read B's (or A's) rows
  in place, unpacked, through a table of row offsets into a flat array: the
  convolution's im2col matrix, whose rows are runs of its (phase) planes, is
  never built or packed.

The sum over ``k`` runs in a fixed order (blocks of ``KC``, then ``k`` within
a block), so results are bitwise reproducible on one target, though not
identical to BLAS nor across tiles.

Tiles (one per ISA family, :data:`TILES`)
-----------------------------------------
The tile is chosen for the CPU Numba compiles for, not the host: Numba's
``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` (``numba.core.config``), else the
host's name and features, exactly as Numba's code generator takes them.
:func:`target_isa` asks LLVM what that target does with a 16-lane float FMA
(512-bit registers, 256-bit FMAs, or neither), so a CPU name without an
explicit feature list is classified by LLVM's own feature tables.
Register budgets (accumulators + B vectors + A broadcast + temporaries):

* ``avx512``: 8 x 2 vectors of 64 bytes (8 x 32 float32, 8 x 16 float64):
  16 accumulators + 2 B + 1 broadcast = 19 of 32 zmm. Per ``k``, 16 FMAs
  against 2 vector loads and 8 broadcast loads: the FMA units, not the load
  ports, are the limit, and 16 independent chains cover the FMA latency
  (4 cycles x 2 pipes needs at least 8).
* ``avx2`` (AVX2 + FMA, 16 ymm registers): 6 x 2 vectors of 32 bytes (6 x 16
  float32, 6 x 8 float64, BLIS's Haswell tile): 12 accumulators + 2 B +
  1 broadcast = 15 of 16. The old 8 x 2 layout needed 16 + 3 and spilled.
* ``neon`` (AArch64, 32 128-bit registers): 8 x 3 vectors of 16 bytes
  (8 x 12 float32, 8 x 6 float64): 24 accumulators + 3 B + 1 broadcast =
  28 of 32 (v8-v15 are callee-saved, stored once in the prologue).
* ``generic`` (anything else, including x86 without FMA, e.g. plain x86-64
  or Sandy Bridge): 4 x 2 vectors of 16 bytes with ``llvm.fmuladd`` (fused
  where the target can, multiply then add where not): 8 accumulators + 2 B +
  1 broadcast + 1 product = 12 of x86's 16 xmm. Correct everywhere; fast
  nowhere in particular.

``KC`` keeps an ``MR x KC`` panel of A and a ``KC x NR`` panel of B (at most
8 KiB + 32 KiB) in L1/L2 while a tile is computed. Changing a tile is one
edit to :data:`TILES`; the tile's name is part of the kernels' cache file
names (the cache locator in ``_config.py``; an edit here changes their
freshness stamp).
``NUMBANET_GEMM_TILE`` (a :data:`TILES` name) forces a tile, for experiments
and tests: a tile wider than the target's registers is legal (LLVM splits its
vectors) but spills.

Checking the assembly for spills: ``python -c "from numbanet.kernels._gemm
import spill_report; spill_report()"`` compiles every tile's micro-kernel for its reference target with llvmlite (the same
IR as in the kernels, standalone) and reports the stack loads and stores
inside the ``k`` loop (none is the goal). :func:`microkernel_asm` gives the
assembly for any tile, dtype and target; :func:`loop_stack_accesses` finds
the stack accesses (``(%rsp)``/``(%rbp)`` on x86, ``[sp``/``[x29`` on AArch64)
inside its loops. For the real, inlined kernels use Numba's
``inspect_asm(sig)`` on the target in question, on the block loops that
hold them: ``_kernel_block_a.dispatcher`` (the ``.dispatcher`` of an
external helper, ``_config.jit(external=True)``), and likewise
``kernel_block_bt`` and ``kernel_block_at``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba import carray as _carray
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._config import jit

# What the kernels (conv, affine, _gemm_ext), bench/gemm_peak.py and the tests
# use; kernel_block is the packed-operand block gemm_peak times.
__all__ = [
    "gemm", "gemm_block", "pack_a", "pack_a_rows_into", "a_offset", "pack_b", "kernel_block", "kernel_block_bt",
    "kernel_block_at", "b_buffer",
    "tile_cols", "nr", "MR", "NV", "KC", "NC", "VECTOR_BYTES", "TILE", "TILES", "TILE_KEY", "Tile", "target_isa",
    "microkernel_asm", "loop_stack_accesses",
]


@dataclass(frozen=True)
class Tile:
    """One micro-kernel shape: ``mr`` rows of A by ``nv`` vectors of
    ``vector_bytes`` (``nr(itemsize)`` columns), ``kc`` steps per packed
    panel; ``fused`` picks ``llvm.fma`` (always one rounding) over
    ``llvm.fmuladd`` (fused only where the target has FMA)."""

    name: str
    mr: int
    nv: int
    vector_bytes: int
    kc: int
    fused: bool
    #: (triple, cpu) the budget above was written for: the spill check's target
    reference_target: tuple

    def lanes(self, itemsize: int) -> int:
        return self.vector_bytes // itemsize

    def nr(self, itemsize: int) -> int:
        return self.nv * self.lanes(itemsize)


_X86 = "x86_64-unknown-linux-gnu"

#: The micro-kernel per ISA family (budgets in the module docstring).
TILES = {
    "avx512": Tile("avx512", mr=8, nv=2, vector_bytes=64, kc=256, fused=True,
                   reference_target=(_X86, "skylake-avx512")),
    "avx2": Tile("avx2", mr=6, nv=2, vector_bytes=32, kc=256, fused=True, reference_target=(_X86, "haswell")),
    "neon": Tile("neon", mr=8, nv=3, vector_bytes=16, kc=256, fused=True,
                 reference_target=("aarch64-unknown-linux-gnu", "generic")),
    "generic": Tile("generic", mr=4, nv=2, vector_bytes=16, kc=256, fused=False, reference_target=(_X86, "x86-64")),
}


def _llvm():
    from llvmlite import binding as ll

    ll.initialize_all_targets()
    ll.initialize_all_asmprinters()
    return ll


def numba_target():
    """``(triple, cpu name, feature string)`` that Numba's JIT compiles for:
    ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` where set, else the host's
    (the same rules as ``numba.core.codegen``)."""
    from numba.core import config
    from numba.core.codegen import get_host_cpu_features

    ll = _llvm()
    cpu = config.CPU_NAME or ll.get_host_cpu_name()
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    return ll.get_process_triple(), cpu, features


_FMA_PROBE = """
define void @probe(<16 x float>* %p) {
  %v = load <16 x float>, <16 x float>* %p
  %r = call <16 x float> @llvm.fma.v16f32(<16 x float> %v, <16 x float> %v, <16 x float> %v)
  store <16 x float> %r, <16 x float>* %p
  ret void
}
declare <16 x float> @llvm.fma.v16f32(<16 x float>, <16 x float>, <16 x float>)
"""


def _assemble(module_ir: str, triple: str, cpu: str, features: str) -> str:
    ll = _llvm()
    tm = ll.Target.from_triple(triple).create_target_machine(cpu=cpu, features=features, opt=3)
    mod = ll.parse_assembly(module_ir)
    mod.triple = triple
    mod.verify()
    pto = ll.create_pipeline_tuning_options(speed_level=3)
    pb = ll.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return tm.emit_assembly(mod)


def target_isa(triple: str, cpu: str, features: str) -> str:
    """The :data:`TILES` family for a target: AArch64 is ``neon``; on x86-64,
    LLVM compiles a 16-lane float FMA for the target and the assembly says
    which (``zmm`` registers: ``avx512``; ``vfmadd``: ``avx2``); anything
    else is ``generic``."""
    arch = triple.split("-")[0]
    if arch in ("aarch64", "arm64"):
        return "neon"
    if arch != "x86_64":
        return "generic"
    asm = _assemble(_FMA_PROBE, triple, cpu, features)
    if "zmm" in asm:
        return "avx512"
    return "avx2" if "vfmadd" in asm else "generic"


def _select_tile() -> Tile:
    forced = os.environ.get("NUMBANET_GEMM_TILE", "").strip()
    if forced:
        if forced not in TILES:
            raise ValueError(f"NUMBANET_GEMM_TILE must be one of {sorted(TILES)}, got {forced!r}")
        return TILES[forced]
    return TILES[target_isa(*numba_target())]


#: The micro-kernel of Numba's target (read once, at import).
TILE = _select_tile()
#: The tile as one identifier (symbol names, cache keys).
TILE_KEY = f"{TILE.name}_mr{TILE.mr}_nv{TILE.nv}_v{TILE.vector_bytes}_kc{TILE.kc}"
#: Rows of A per micro-kernel call.
MR = TILE.mr
#: Vectors of B per micro-kernel row (``NR = NV * lanes``).
NV = TILE.nv
#: Bytes per SIMD vector of the micro-kernel.
VECTOR_BYTES = TILE.vector_bytes
#: Steps of k per packed panel.
KC = TILE.kc
#: Columns of B per packed panel pass (bounds the packed-B buffer). The packed
#: panel (KC x NC) is re-read by every row panel of A, so it should stay in L2:
#: 512 columns are 512 KiB in float32 and 1 MiB in float64, against L2s of
#: 512 KiB (Zen 3), 1 MiB (Zen 4/5) and 2 MiB (Sapphire/Emerald Rapids) per
#: core. Measured against 1024, one thread, process CPU time, alternating runs
#: (`numbanet-bench --threads 1 --cpu-time --dtype both --no-torch --cases
#: gemm_1024,affine_wide`): float64 gemm_1024 25-33% faster in each of 4
#: pairs on a 2-core Xeon (emeraldrapids; the 1024-column float64 panel is its
#: whole 2 MiB L2), float32 affine_wide 6-12% faster in each of 3 pairs on a
#: 2-core Zen 5 (EPYC family 26); no change beyond noise in the other pairs or
#: in the conv and training-step cases. 256, which would keep float64's panel
#: at 512 KiB, was slower in each of 3 pairs on the Zen 5 (float64 affine_wide
#: 381-412 against 343-378 ms, gemm_1024 23.6-26.3 against 22.6-22.8 ms).
NC = 512


def nr(itemsize: int) -> int:
    """Columns of B per micro-kernel call: ``NV`` vectors."""
    return TILE.nr(itemsize)


@jit()
def tile_cols(a):
    """:func:`nr` for arrays like ``a``, inside compiled code."""
    return NV * (VECTOR_BYTES // a.itemsize)


def _c_block(c, c_off, ldc, total, accumulate, rows, cols):
    i0, j0 = divmod(c_off, ldc)
    block = c[i0 : i0 + rows, j0 : j0 + cols]
    total = total[:rows, :cols].astype(c.dtype)
    block[...] = block + total if accumulate else total


def _microkernel(kc, ap, a_off, a_k, bp, b_off, c, c_off, ldc, accumulate, rows, cols):
    """``C[r, j] = (C[r, j] if accumulate else 0) + sum_k ap[a_off + k*a_k + r] *
    bp[b_off + k*NR + j]`` (``a_k = MR`` for a panel packed by :func:`pack_a`,
    a column-major A's column stride to read it in place) for ``r < rows <= MR``, ``j < cols <= NR``; ``C``
    starts at flat offset ``c_off`` of the 2-D ``c`` (row stride ``ldc``
    elements). Only those ``rows x cols`` elements of C are read or written:
    a full tile is the register-blocked kernel, a ragged one an edge variant
    of it (:func:`_emit_tile`). Each element's sum is the same FMA chain in
    both, so an element's bits do not depend on the tile it falls in.

    Compiled code gets the LLVM version through the overload below; this
    NumPy body (and those of the two variants below) runs only with
    ``NUMBA_DISABLE_JIT=1`` (coverage, debugging).
    """
    nr_ = NV * (VECTOR_BYTES // c.itemsize)
    a = np.stack([ap[a_off + k * a_k :][:MR] for k in range(kc)]) if kc else np.zeros((0, MR), ap.dtype)
    b = bp[b_off : b_off + kc * nr_].reshape(kc, nr_)
    _c_block(c, c_off, ldc, a.T @ b, accumulate, rows, cols)


def _microkernel_bt(kc, ap, a_off, b, btab, t0, b_col, c, c_off, ldc, accumulate, rows, cols):
    """:func:`_microkernel` with B read in place, unpacked: row ``k`` of the
    tile is ``b[btab[t0 + k] + b_col :][:NR]`` of the flat array ``b`` (an
    implicit im2col matrix: each row a run of some input plane)."""
    nr_ = NV * (VECTOR_BYTES // c.itemsize)
    a = ap[a_off : a_off + kc * MR].reshape(kc, MR)
    b_rows = np.stack([b[btab[t0 + k] + b_col :][:nr_] for k in range(kc)]) if kc else np.zeros((0, nr_), b.dtype)
    _c_block(c, c_off, ldc, a.T @ b_rows, accumulate, rows, cols)


def _microkernel_at(kc, a, atab, r0, a_col, bp, b_off, c, c_off, ldc, accumulate, rows, cols):
    """:func:`_microkernel` with A read in place, unpacked: row ``r`` of the
    tile is ``a[atab[r0 + r] + a_col :][:kc]`` of the flat array ``a``."""
    nr_ = NV * (VECTOR_BYTES // c.itemsize)
    a_rows = np.stack([a[atab[r0 + r] + a_col :][:kc] for r in range(MR)])
    b = bp[b_off : b_off + kc * nr_].reshape(kc, nr_)
    _c_block(c, c_off, ldc, a_rows @ b, accumulate, rows, cols)


@overload(_microkernel)
def _microkernel_impl(kc, ap, a_off, a_k, bp, b_off, c, c_off, ldc, accumulate, rows, cols):
    def impl(kc, ap, a_off, a_k, bp, b_off, c, c_off, ldc, accumulate, rows, cols):
        _microkernel_ir(kc, ap, a_off, a_k, bp, b_off, c, c_off, ldc, accumulate, rows, cols)

    return impl


@overload(_microkernel_bt)
def _microkernel_bt_impl(kc, ap, a_off, b, btab, t0, b_col, c, c_off, ldc, accumulate, rows, cols):
    def impl(kc, ap, a_off, b, btab, t0, b_col, c, c_off, ldc, accumulate, rows, cols):
        _microkernel_bt_ir(kc, ap, a_off, b, btab, t0, b_col, c, c_off, ldc, accumulate, rows, cols)

    return impl


@overload(_microkernel_at)
def _microkernel_at_impl(kc, a, atab, r0, a_col, bp, b_off, c, c_off, ldc, accumulate, rows, cols):
    def impl(kc, a, atab, r0, a_col, bp, b_off, c, c_off, ldc, accumulate, rows, cols):
        _microkernel_at_ir(kc, a, atab, r0, a_col, bp, b_off, c, c_off, ldc, accumulate, rows, cols)

    return impl


def _float_arrays(*arrays):
    """The common float dtype of these Numba array types, or None."""
    if not all(isinstance(a, types.Array) for a in arrays):
        return None
    dt = arrays[0].dtype
    if dt not in (types.float32, types.float64) or any(a.dtype != dt for a in arrays):
        return None
    return dt


def _emit(builder, fty, tile, kc_v, a_source, b_row, c_ptr, ldc_v, acc_flag, edge=None):
    """The micro-kernel's body for ``tile`` and float type ``fty``:
    ``a_source()``, called once where the body starts, returns ``a_scalar``,
    and ``a_scalar(k, r)`` gives A's element (so what it precomputes, e.g.
    row pointers, belongs to this body alone: shared by the full and edge
    bodies, it was held across all of them and one loop bound spilled), and ``b_row(k)`` a pointer to the NR
    elements of B's row ``k``; ``MR * NV`` vector accumulators held in
    registers across the ``k`` loop, one FMA each per ``k``, then added to (or
    stored over) the tile of C at ``c_ptr`` (row stride ``ldc_v`` elements).

    ``edge = (rows, cols)`` (int64 values) makes it an edge tile: only C's
    rows ``r < rows`` and columns ``j < cols`` are read and written (rows
    skipped by a branch, a row's partial last vector written lane by lane), so a
    ragged tile needs no scratch tile and copy. The sums are the full tile's:
    the lanes past ``cols`` (B's zero padding) and rows past ``rows`` are
    computed and dropped."""
    bits = 32 if isinstance(fty, ir.FloatType) else 64
    lanes = tile.lanes(bits // 8)
    vty = ir.VectorType(fty, lanes)
    i32, i64 = ir.IntType(32), ir.IntType(64)
    zero = ir.Constant(vty, [0.0] * lanes)
    # allocas in the entry block: LLVM promotes them to registers
    accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(tile.nv)] for _ in range(tile.mr)]
    fma = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vty, [vty, vty, vty]),
        "llvm.%s.v%df%d" % ("fma" if tile.fused else "fmuladd", lanes, bits),
    )
    splat = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)
    a_scalar = a_source()
    with cgutils.for_range(builder, kc_v) as loop:
        k = loop.index
        bk = b_row(k)
        bvs = [builder.load(builder.bitcast(builder.gep(bk, [ir.Constant(i64, h * lanes)]), vty.as_pointer()), align=4)
               for h in range(tile.nv)]
        for r in range(tile.mr):
            av = builder.insert_element(ir.Constant(vty, None), a_scalar(k, r), ir.Constant(i32, 0))
            av = builder.shuffle_vector(av, ir.Constant(vty, None), splat)
            for acc, bv in zip(accs[r], bvs):
                builder.store(builder.call(fma, [av, bv, builder.load(acc)]), acc)
    keep = builder.icmp_unsigned("!=", acc_flag, ir.Constant(acc_flag.type, 0))
    if edge is not None:
        # Only the last vector of a row may be partial: an edge tile has as
        # few vectors as its columns need.
        rows_v, cols_v = edge
        partial = _partial_store(builder, vty, tile.nv - 1, cols_v, keep)
    for r in range(tile.mr):
        row_ctx = builder.if_then(builder.icmp_signed("<", ir.Constant(i64, r), rows_v)) if edge else _nothing()
        with row_ctx:
            row = builder.gep(c_ptr, [builder.mul(ir.Constant(i64, r), ldc_v)])
            for h, acc in enumerate(accs[r]):
                p = builder.bitcast(builder.gep(row, [ir.Constant(i64, h * lanes)]), vty.as_pointer())
                total = builder.load(acc)
                if edge is not None and h == tile.nv - 1:
                    partial(total, p)
                    continue
                with builder.if_then(keep):
                    builder.store(builder.fadd(builder.load(p, align=4), total), p, align=4)
                with builder.if_then(builder.not_(keep)):
                    builder.store(total, p, align=4)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _partial_store(builder, vty, h, cols_v, keep):
    """``store(total, p)``: the ``h``-th vector ``total`` of a C row added to
    (``keep``) or stored over C at ``p``, only its lanes below column
    ``cols_v``: whole if they all are, else one scalar at a time. Masked
    vector loads and stores (``llvm.masked.load``/``store``, AVX2's
    ``vmaskmov``) were slower on Zen 3 where the product is short in k
    (784 x 1 x 50 float32: 0.85x the scratch tile they replaced); the lanes'
    sums are the same either way."""
    i32, i64 = ir.IntType(32), ir.IntType(64)
    lanes = vty.count

    def whole(total, p):
        with builder.if_else(keep) as (add, over):
            with add:
                builder.store(builder.fadd(builder.load(p, align=4), total), p, align=4)
            with over:
                builder.store(total, p, align=4)

    def store(total, p):
        with builder.if_else(builder.icmp_signed(">=", cols_v, ir.Constant(i64, (h + 1) * lanes))) as (full, part):
            with full:  # a row remainder's tile: its columns are whole
                whole(total, p)
            with part:
                lane_by_lane(total, p)

    def lane_by_lane(total, p):
        base = builder.bitcast(p, vty.element.as_pointer())
        for j in range(lanes):
            with builder.if_then(builder.icmp_signed("<", ir.Constant(i64, h * lanes + j), cols_v), likely=True):
                q = builder.gep(base, [ir.Constant(i64, j)])
                v = builder.extract_element(total, ir.Constant(i32, j))
                with builder.if_else(keep) as (add, over):
                    with add:
                        builder.store(builder.fadd(builder.load(q, align=4), v), q, align=4)
                    with over:
                        builder.store(v, q, align=4)

    return store


def _emit_tile(builder, fty, kc_v, a_source, b_row, c_ptr, ldc_v, acc_flag, rows_v, cols_v):
    """:func:`_emit` for :data:`TILE` when ``rows == MR`` and ``cols == NR``,
    else an edge tile of as few vectors per row as ``cols`` needs (a column
    remainder of 2 costs one vector's FMAs, not ``NV``'s). Same FMA chain per
    element either way."""
    import dataclasses

    i64 = ir.IntType(64)
    itemsize = 4 if isinstance(fty, ir.FloatType) else 8
    lanes = TILE.lanes(itemsize)
    args = (kc_v, a_source, b_row, c_ptr, ldc_v, acc_flag)

    def edges(nv):
        tile = dataclasses.replace(TILE, nv=nv)
        if nv == TILE.nv:
            _emit(builder, fty, tile, *args, edge=(rows_v, cols_v))
            return
        with builder.if_else(builder.icmp_signed("<=", cols_v, ir.Constant(i64, nv * lanes))) as (narrow, wider):
            with narrow:
                _emit(builder, fty, tile, *args, edge=(rows_v, cols_v))
            with wider:
                edges(nv + 1)

    full = builder.and_(builder.icmp_signed("==", rows_v, ir.Constant(i64, TILE.mr)),
                        builder.icmp_signed("==", cols_v, ir.Constant(i64, TILE.nr(itemsize))))
    with builder.if_else(full) as (whole, ragged):
        with whole:
            _emit(builder, fty, TILE, *args)
        with ragged:
            edges(1)


def _data(context, builder, sig, i, value):
    return context.make_array(sig.args[i])(context, builder, value).data


def _edge(context, builder, sig, args):
    """The intrinsics' last two arguments (the tile's valid rows and columns) as int64."""
    return [context.cast(builder, v, t, types.int64) for v, t in zip(args[-2:], sig.args[-2:])]


def _packed_a(builder, a_ptr, tile, step=None):
    """A's element (k, r) in a panel packed by :func:`pack_a` (``step``, the
    distance between k steps, is ``MR``), or of a column-major A read in
    place (``step`` its column stride, an int64 value)."""
    i64 = ir.IntType(64)
    step = ir.Constant(i64, tile.mr) if step is None else step
    return lambda k, r: builder.load(builder.gep(a_ptr, [builder.add(builder.mul(k, step), ir.Constant(i64, r))]))


def _packed_b(builder, b_ptr, tile, itemsize):
    """B's row k in a panel packed by :func:`pack_b`."""
    step = ir.Constant(ir.IntType(64), tile.nr(itemsize))
    return lambda k: builder.gep(b_ptr, [builder.mul(k, step)])


def _itemsize(dt):
    return 4 if dt == types.float32 else 8


@intrinsic
def _microkernel_ir(typingctx, kc, ap, a_off, a_k, bp, b_off, c, c_off, ldc, accumulate, rows, cols):
    """:func:`_microkernel` as LLVM IR (B packed; A packed or column-major)."""
    dt = _float_arrays(ap, bp, c)
    if dt is None:
        return None

    def codegen(context, builder, sig, args):
        kc_v, a_arr, a_off_v, a_k_v, b_arr, b_off_v, c_arr, c_off_v, ldc_v, acc_flag = args[:10]
        a_ptr = builder.gep(_data(context, builder, sig, 1, a_arr), [a_off_v])
        b_ptr = builder.gep(_data(context, builder, sig, 4, b_arr), [b_off_v])
        c_ptr = builder.gep(_data(context, builder, sig, 6, c_arr), [c_off_v])
        a_k_v = context.cast(builder, a_k_v, sig.args[3], types.int64)
        _emit_tile(builder, context.get_value_type(dt), kc_v, lambda: _packed_a(builder, a_ptr, TILE, a_k_v),
                   _packed_b(builder, b_ptr, TILE, _itemsize(dt)), c_ptr, ldc_v, acc_flag, *_edge(context, builder, sig, args))
        return context.get_dummy_value()

    return types.none(kc, ap, a_off, a_k, bp, b_off, c, c_off, ldc, accumulate, rows, cols), codegen


@intrinsic
def _microkernel_bt_ir(typingctx, kc, ap, a_off, b, btab, t0, b_col, c, c_off, ldc, accumulate, rows, cols):
    """:func:`_microkernel_bt` as LLVM IR (B rows found through ``btab``)."""
    dt = _float_arrays(ap, b, c)
    if dt is None or not isinstance(btab, types.Array) or btab.dtype != types.int64:
        return None

    def codegen(context, builder, sig, args):
        kc_v, a_arr, a_off_v, b_arr, tab_arr, t0_v, col_v, c_arr, c_off_v, ldc_v, acc_flag = args[:11]
        a_ptr = builder.gep(_data(context, builder, sig, 1, a_arr), [a_off_v])
        b_ptr = builder.gep(_data(context, builder, sig, 3, b_arr), [col_v])
        tab = builder.gep(_data(context, builder, sig, 4, tab_arr), [t0_v])
        c_ptr = builder.gep(_data(context, builder, sig, 7, c_arr), [c_off_v])

        def b_row(k):
            return builder.gep(b_ptr, [builder.load(builder.gep(tab, [k]))])

        _emit_tile(builder, context.get_value_type(dt), kc_v, lambda: _packed_a(builder, a_ptr, TILE), b_row, c_ptr, ldc_v, acc_flag,
                   *_edge(context, builder, sig, args))
        return context.get_dummy_value()

    return types.none(kc, ap, a_off, b, btab, t0, b_col, c, c_off, ldc, accumulate, rows, cols), codegen


@intrinsic
def _microkernel_at_ir(typingctx, kc, a, atab, r0, a_col, bp, b_off, c, c_off, ldc, accumulate, rows, cols):
    """:func:`_microkernel_at` as LLVM IR (A rows found through ``atab``)."""
    dt = _float_arrays(a, bp, c)
    if dt is None or not isinstance(atab, types.Array) or atab.dtype != types.int64:
        return None

    def codegen(context, builder, sig, args):
        kc_v, a_arr, tab_arr, r0_v, col_v, b_arr, b_off_v, c_arr, c_off_v, ldc_v, acc_flag = args[:11]
        i64 = ir.IntType(64)
        a_base = builder.gep(_data(context, builder, sig, 1, a_arr), [col_v])
        tab = builder.gep(_data(context, builder, sig, 2, tab_arr), [r0_v])
        b_ptr = builder.gep(_data(context, builder, sig, 5, b_arr), [b_off_v])
        c_ptr = builder.gep(_data(context, builder, sig, 7, c_arr), [c_off_v])

        def a_source():
            rows = [builder.gep(a_base, [builder.load(builder.gep(tab, [ir.Constant(i64, r)]))]) for r in range(MR)]
            return lambda k, r: builder.load(builder.gep(rows[r], [k]))

        _emit_tile(builder, context.get_value_type(dt), kc_v, a_source, _packed_b(builder, b_ptr, TILE, _itemsize(dt)), c_ptr,
                   ldc_v, acc_flag, *_edge(context, builder, sig, args))
        return context.get_dummy_value()

    return types.none(kc, a, atab, r0, a_col, bp, b_off, c, c_off, ldc, accumulate, rows, cols), codegen


@jit(external=True)
def _pack_a(a, i0, rows, k0, kc, out, o):
    """``out[o + k*MR + r] = a[i0 + r, k0 + k]`` (zero for ``r >= rows``)."""
    zero = out.dtype.type(0)
    if rows == MR and a.strides[0] == a.itemsize and a.strides[1] > 0:
        # Columns contiguous (a transposed row-major matrix, as Affine's
        # x.T): each k step's MR values are adjacent in memory, one short
        # copy through a C-typed flat view.
        lda = a.strides[1] // a.itemsize
        flat = _flat_span(a, a.shape[1], lda, a.shape[0])
        for k in range(kc):
            s = (k0 + k) * lda + i0
            src = flat[s : s + MR]
            dst = out[o + k * MR : o + (k + 1) * MR]
            for r in range(MR):
                dst[r] = src[r]
        return
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
def _pack_b_cols(b, k0, kc, j0, cols, out, o, nr_):
    """``out[o + k*NR + j] = b[k0 + k, j0 + j]`` (zero for ``j >= cols``),
    walking ``b``'s columns: for the transpose of a row-major matrix."""
    zero = out.dtype.type(0)
    if b.strides[0] == b.itemsize and b.strides[1] > 0:
        # Columns contiguous (a transposed row-major matrix, as Affine's
        # w.T): read each through a C-typed flat view of B's memory, not
        # with the strided view's per-element stride.
        ldb = b.strides[1] // b.itemsize
        flat = _flat_span(b, b.shape[1], ldb, b.shape[0])
        for j in range(nr_):
            dst = out[o + j :]
            if j < cols:
                s = (j0 + j) * ldb + k0
                src = flat[s : s + kc]
                for k in range(kc):
                    dst[k * nr_] = src[k]
            else:
                for k in range(kc):
                    dst[k * nr_] = zero
        return
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
    return _pack_a_rows(a, 0, a.shape[0])


@jit(inline=True)
def _pack_a_rows(a, i0, i1):
    """:func:`pack_a` of rows ``i0 .. i1`` of ``a`` (a range, not a slice:
    slicing the rows of a transposed array would be one more array type,
    hence one more compilation of everything below)."""
    ap = np.empty(((i1 - i0 + MR - 1) // MR) * MR * a.shape[1], a.dtype)
    pack_a_rows_into(a, i0, i1, ap)
    return ap


@jit(inline=True)
def pack_a_rows_into(a, i0, i1, ap):
    """:func:`_pack_a_rows` into ``ap`` (``ceil((i1 - i0) / MR) * MR * K`` long)."""
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


@jit(external=True)
def pack_b(b, k0, kc, j0, nc, bp):
    """``b[k0:k0+kc, j0:j0+nc]`` packed for :func:`kernel_block` into ``bp``
    (at least ``ceil(nc / NR) * NR * kc`` long): panel ``p`` holds
    ``bp[p*NR*kc + k*NR + j] = b[k0 + k, j0 + p*NR + j]``, zero past ``nc``."""
    nr_ = tile_cols(bp)
    if b.strides[1] != b.itemsize or b.strides[0] < 0:  # e.g. the transpose of a row-major matrix
        for js in range(0, nc, nr_):
            _pack_b_cols(b, k0, kc, j0 + js, min(nr_, nc - js), bp, (js // nr_) * nr_ * kc, nr_)
        return
    # Rows contiguous: each row of b once, into every panel (3-4x faster
    # than a panel at a time, measured on 1024 x 1024).
    # B's rows through a C-typed flat view of its memory (the C entry point
    # passes B as a strided view, whose rows Numba copies element by element
    # with their stride), and copies between views indexed by the bare loop
    # variable (a flat offset, bp[o + j], carries a negative-index test per
    # element): both vectorise. All of a 4096 x 4096 float32 B, the weights
    # of affine_wide's forward pass, packed in 18-21 ms before, 9.5-9.9 ms
    # so (1 thread, process CPU, Zen 5).
    zero = bp.dtype.type(0)
    full = nc // nr_
    rest = nc - full * nr_
    ldb = b.strides[0] // b.itemsize
    flat = _flat_span(b, b.shape[0], ldb, b.shape[1])
    if rest:
        # The ragged panel zeroed in one contiguous pass, then only its
        # valid columns copied row by row: a zero tail per row cost as much
        # as the copy (pack of a 50 x 10 B, the book's last Affine, 0.9 us).
        tail = bp[full * nr_ * kc : (full + 1) * nr_ * kc]
        for j in range(nr_ * kc):
            tail[j] = zero
    for k in range(kc):
        start = (k0 + k) * ldb + j0
        for p in range(full):
            dst = bp[p * nr_ * kc + k * nr_ : p * nr_ * kc + (k + 1) * nr_]
            src = flat[start + p * nr_ : start + (p + 1) * nr_]
            for j in range(nr_):
                dst[j] = src[j]
        if rest:
            o, r = full * nr_ * kc + k * nr_, start + full * nr_
            for j in range(rest):
                bp[o + j] = flat[r + j]


@jit()
def kernel_block(ap, a_off, m_, kc, bp, nc, c, j0, add, tile):
    """``c[:, j0:j0+nc] (+)= A_block @ B_block`` for one packed ``kc`` block:
    A from ``ap`` at ``a_off`` (M rows), B from ``bp`` (``nc`` columns).
    ``tile`` is unused (ragged tiles store only their valid part), as in
    :func:`kernel_block_bt` and :func:`kernel_block_at`: kept so that their C
    entry points (``_gemm_ext``) and callers keep their signatures."""
    _kernel_block_a(ap, a_off, MR * kc, MR, m_, kc, bp, nc, c, 0, j0, add)


@jit(external=True)
def _kernel_block_a(a, a_off, a_panel, a_k, m_, kc, bp, nc, c, c_row, j0, add):
    """``c[c_row : c_row + m_, j0 : j0 + nc] (+)= A_block @ B_block`` with B
    packed: A's element (i, k) is ``a[a_off + (i // MR) * a_panel + k * a_k +
    i % MR]``: packed panels (``a_panel = MR * kc``, ``a_k = MR``) or a
    column-major A read in place (``a_panel = MR``, ``a_k`` its column
    stride; a ragged last panel then reads up to MR - 1 elements past row
    ``m_`` of every column, which the caller must own)."""
    nr_ = tile_cols(c)
    ldc = c.strides[0] // c.itemsize
    for ip in range((m_ + MR - 1) // MR):
        i0 = ip * MR
        rows = min(MR, m_ - i0)
        for js in range(0, nc, nr_):
            cols = min(nr_, nc - js)
            b_off = (js // nr_) * nr_ * kc
            _microkernel(kc, a, a_off + ip * a_panel, a_k, bp, b_off, c, (c_row + i0) * ldc + j0 + js, ldc, add, rows,
                         cols)


@jit(external=True)
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
            _microkernel_bt(kc, ap, a_off + i0 * kc, b, btab, t0, b_col + js, c, i0 * ldc + j0 + js, ldc, add, rows, cols)


@jit(external=True)
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
            _microkernel_at(kc, a, atab, i0, a_col, bp, b_off, c, i0 * ldc + j0 + js, ldc, add, rows, cols)


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


@jit(inline=True)
def gemm_block(a, b, c, i0, i1, j0, j1, accumulate):
    """``c[i0:i1, j0:j1] (+)= a[i0:i1] @ b[:, j0:j1]``: one block of
    :func:`gemm`, given as index ranges so that every block of a product runs
    the same compiled code (slices of transposed operands would each be a new
    array type). Each element's sum runs in the same order as in :func:`gemm`."""
    if a.shape[0] < MR and b.strides[1] == b.itemsize:
        _gemm_few_rows(a, b, c[i0:i1], i0, i1, j0, j1, accumulate)
        return
    if a.strides[1] == a.itemsize and a.strides[0] >= 0 and j1 - j0 <= A_IN_PLACE_MAX_N:
        _gemm_a_in_place(a, b, c[i0:i1], i0, i1, j0, j1, accumulate)
        return
    if a.strides[0] == a.itemsize and a.strides[1] > 0 and j1 - j0 <= A_IN_PLACE_MAX_N:
        _gemm_a_cols_in_place(a, b, c[i0:i1], i0, i1, j0, j1, accumulate)
        return
    ap = _pack_a_rows(a, i0, i1)
    _gemm_packed_cols(ap, i1 - i0, b, c[i0:i1], j0, j1, accumulate)


@jit(inline=True)
def _gemm_few_rows(a, b, c, i0, i1, j_lo, j_hi, accumulate):
    """``c[:, j_lo:j_hi] (+)= a[i0:i1] @ b[:, j_lo:j_hi]`` for an ``a`` of
    fewer than ``MR`` rows in all (a batch of one): a micro-kernel tile would
    be mostly padding, and packing B would cost more than the product. Each
    row of C is a sum of rows of B scaled by A's entries, ``k`` in order (one
    rounding per multiply and per add), vectorised along B's rows, which
    must be contiguous (for a transposed B, e.g. Affine's ``dy @ w.T``, the
    strided reads made this 1.1-1.4x slower than packing, so that keeps the
    tile path). Measured on Zen 3: 1 x 784 x 50 in 25 us instead of 135 us.
    The choice depends on ``a``'s whole row count and B's layout, never on
    the block, so how a product is split never changes its bits."""
    k_ = b.shape[0]
    acc = np.empty(j_hi - j_lo, c.dtype)
    for i in range(i0, i1):
        arow = a[i]
        acc[:] = 0
        for k in range(k_):
            aik = arow[k]
            brow = b[k, j_lo:j_hi]
            for j in range(acc.size):
                acc[j] += aik * brow[j]
        crow = c[i - i0, j_lo:j_hi]
        for j in range(acc.size):
            crow[j] = crow[j] + acc[j] if accumulate else acc[j]


@intrinsic
def data_ptr(typingctx, arr):
    """The data pointer of an array (its first element)."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, sig, args):
        return context.make_array(sig.args[0])(context, builder, args[0]).data

    return types.CPointer(arr.dtype)(arr), codegen


@jit(inline=True)
def _flat_view(a, n):
    """``n`` elements of ``a``'s memory from its first element on, as a 1-D
    C-contiguous array (a view: ``a`` must outlive it). The in-place paths
    read a strided matrix through such a flat view; typed C-contiguous, like
    the packed buffers, it shares their compiled block loops (an
    ``as_strided`` view, typed 'A', compiled ``_kernel_block_a`` and
    ``kernel_block_at`` once more each)."""
    return _carray(data_ptr(a), n)



@jit(inline=True)
def _flat_span(a, runs, ld, length):
    """:func:`_flat_view` of the memory a strided matrix spans: ``runs``
    contiguous runs of ``length`` elements, ``ld`` apart (rows of a
    row-major matrix, columns of a transposed one); empty for no runs."""
    return _flat_view(a, (runs - 1) * ld + length if runs > 0 else 0)

#: Widest product (columns of C) for which :func:`gemm_block` reads a
#: row-major A in place instead of packing it. Packing A costs one pass over
#: its M x K elements against M x K x N multiply-adds, so it matters when N is
#: small: Affine's forward at the book's 100 x 784 x 50 spent a third of its
#: time packing x. Wide products keep packing (TLB-friendly panels).
A_IN_PLACE_MAX_N = 256


@jit(inline=True)
def _empty_product(m_, n_, k_, c, j_lo, j_hi, accumulate):
    """Finish a product with no rows, no columns or no ``k`` (C's block is
    zeroed unless accumulating); return whether there was nothing else to do."""
    if m_ == 0 or n_ <= 0:
        return True
    if k_ == 0:
        if not accumulate:
            c[:, j_lo:j_hi] = 0
        return True
    return False


@jit(inline=True)
def _gemm_a_in_place(a, b, c, i0, i1, j_lo, j_hi, accumulate):
    """:func:`_gemm_packed_cols` for rows ``i0 .. i1`` of a row-major ``a``
    (unit column stride) read in place by :func:`kernel_block_at`, so it is
    never packed. Same micro-kernel, same summation order, same result bits
    as the packed path."""
    m_ = i1 - i0
    k_ = b.shape[0]
    n_ = j_hi - j_lo
    if _empty_product(m_, n_, k_, c, j_lo, j_hi, accumulate):
        return
    lda = a.strides[0] // a.itemsize
    flat = _flat_span(a, a.shape[0], lda, a.shape[1])
    mpad = (m_ + MR - 1) // MR * MR
    atab = np.empty(mpad, np.int64)
    for r in range(mpad):
        # rows past the end repeat row i0: read, computed, dropped
        atab[r] = (i0 + (r if r < m_ else 0)) * lda
    bp = b_buffer(min(KC, k_), min(NC, n_), c)
    tile = np.empty((MR, tile_cols(c)), c.dtype)
    for j0 in range(j_lo, j_hi, NC):
        nc = min(NC, j_hi - j0)
        for k0 in range(0, k_, KC):
            kc = min(KC, k_ - k0)
            pack_b(b, k0, kc, j0, nc, bp)
            kernel_block_at(flat, atab, k0, m_, kc, bp, nc, c, j0, accumulate or k0 > 0, tile)


@jit(inline=True)
def _gemm_a_cols_in_place(a, b, c, i0, i1, j_lo, j_hi, accumulate):
    """:func:`_gemm_packed_cols` for rows ``i0 .. i1`` of a column-major ``a``
    (unit row stride: the transpose of a row-major matrix, as Affine's
    ``dw = x.T @ dy``), read in place: each ``k`` step of a row panel is
    ``MR`` contiguous elements, as in a packed panel, so packing would only
    copy it (a strided pass over all of A: a fifth of ``dw``'s time at the
    book's 784 x 100 x 50). A ragged last panel is packed, so nothing past
    A's last column is read. Same micro-kernel and order of every sum as
    packing all of A: the same bits."""
    m_ = i1 - i0
    k_ = b.shape[0]
    n_ = j_hi - j_lo
    if _empty_product(m_, n_, k_, c, j_lo, j_hi, accumulate):
        return
    lda = a.strides[1] // a.itemsize
    flat = _flat_span(a, a.shape[1], lda, a.shape[0])
    full = m_ // MR * MR
    kc_max = min(KC, k_)
    tail = np.empty(MR * kc_max, c.dtype)
    bp = b_buffer(kc_max, min(NC, n_), c)
    for j0 in range(j_lo, j_hi, NC):
        nc = min(NC, j_hi - j0)
        for k0 in range(0, k_, KC):
            kc = min(KC, k_ - k0)
            pack_b(b, k0, kc, j0, nc, bp)
            add = accumulate or k0 > 0
            _kernel_block_a(flat, i0 + k0 * lda, MR, lda, full, kc, bp, nc, c, 0, j0, add)
            if full < m_:
                _pack_a(a, i0 + full, m_ - full, k0, kc, tail, 0)
                _kernel_block_a(tail, 0, MR * kc, MR, m_ - full, kc, bp, nc, c, full, j0, add)


@jit(inline=True)
def _gemm_packed_cols(ap, m_, b, c, j_lo, j_hi, accumulate):
    """``c[:, j_lo:j_hi] (+)= A @ b[:, j_lo:j_hi]`` with A (``m_`` rows)
    already packed by :func:`pack_a`: pack once, reuse for every product with
    the same left operand."""
    k_ = b.shape[0]
    n_ = j_hi - j_lo
    if _empty_product(m_, n_, k_, c, j_lo, j_hi, accumulate):
        return
    bp = b_buffer(min(KC, k_), min(NC, n_), c)
    for j0 in range(j_lo, j_hi, NC):
        nc = min(NC, j_hi - j0)
        for k0 in range(0, k_, KC):
            kc = min(KC, k_ - k0)
            pack_b(b, k0, kc, j0, nc, bp)
            _kernel_block_a(ap, a_offset(m_, k0), MR * kc, MR, m_, kc, bp, nc, c, 0, j0, accumulate or k0 > 0)


# --- the assembly check (register budgets) ------------------------------------------


def microkernel_asm(tile: Tile, dtype, triple: str, cpu: str, features: str = "") -> str:
    """The assembly of ``tile``'s micro-kernel (both operands packed, as in
    :func:`kernel_block`) for ``dtype`` compiled standalone by llvmlite at O3
    for ``triple`` / ``cpu`` / ``features``: the same IR as inside the
    kernels, as one function ``void @microkernel(i64 kc, T* a, T* b, T* c,
    i64 ldc, i8 accumulate)``."""
    fty = ir.FloatType() if np.dtype(dtype) == np.float32 else ir.DoubleType()
    i64 = ir.IntType(64)
    mod = ir.Module(name="numbanet_microkernel")
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [i64, fty.as_pointer(), fty.as_pointer(), fty.as_pointer(), i64,
                                                          ir.IntType(8)]), "microkernel")
    kc, a, b, c, ldc, acc = fn.args
    for p in (a, b, c):
        p.add_attribute("noalias")
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    _emit(builder, fty, tile, kc, lambda: _packed_a(builder, a, tile), _packed_b(builder, b, tile, np.dtype(dtype).itemsize), c, ldc,
          acc)
    builder.ret_void()
    return _assemble(str(mod), triple, cpu, features)


_LABEL = re.compile(r"^(\.?L\w+):")
_MULADD = re.compile(r"\b(v?fmadd\w*|fmla|v?mulp[sd]|fmul)\b")
_STACK = re.compile(r"\(%rsp\)|\[(sp|x29)\b")
_FRAME = re.compile(r"\(%rbp\)")
_FRAME_SETUP = re.compile(r"\bmovq?\s+%rsp,\s*%rbp\b")


def _frame_pointer_lines(lines: list) -> list:
    """Per line of ``lines``: whether its function (``.cfi_startproc`` ..
    ``.cfi_endproc``) sets up ``%rbp`` as a frame pointer. Without that,
    ``%rbp`` is one more general register (LLVM hands it out when
    registers run short: a packed A panel's pointer, say), and ``(%rbp)``
    is not the stack."""
    out, start = [False] * len(lines), 0
    for i, ln in enumerate(lines):
        if ".cfi_startproc" in ln:
            start = i
        elif ".cfi_endproc" in ln:
            fp = any(_FRAME_SETUP.search(x) for x in lines[start:i])
            out[start : i + 1] = [fp] * (i + 1 - start)
    return out


def loop_stack_accesses(asm: str) -> list:
    """The instructions that touch the stack (``(%rsp)``, and ``(%rbp)`` in
    functions that make it a frame pointer, on x86; ``[sp``/``[x29`` on
    AArch64) inside the innermost loops of ``asm`` that
    do floating-point multiply-adds (from a label to the last branch back to
    it): the micro-kernel's ``k`` loop, where a spill or reload shows up here.
    Prologue saves do not (a backward branch over a ``ret`` is a jump into an
    epilogue, not a loop), nor do the outer loops around the micro-kernel."""
    lines = [ln.split("//")[0].split("#")[0].rstrip() for ln in asm.splitlines()]
    frame = _frame_pointer_lines(lines)
    where = {}
    for i, ln in enumerate(lines):
        m = _LABEL.match(ln.strip())
        if m:
            where[m.group(1)] = i
    loops = []
    for i, ln in enumerate(lines):
        words = ln.replace(",", " ").split()
        if not words or _LABEL.match(ln.strip()):
            continue
        target = words[-1]
        if target in where and where[target] < i:  # a branch backwards
            body = lines[where[target] : i + 1]
            if not any(s.split()[:1] in (["ret"], ["retq"]) for s in body):
                loops.append((where[target], i))
    found = []
    for lo, hi in loops:
        if any((lo, hi) != (l2, h2) and lo <= l2 and h2 <= hi for l2, h2 in loops):
            continue  # not innermost
        body = lines[lo : hi + 1]
        if any(_MULADD.search(s) for s in body):
            found += [s.strip() for s, fp in zip(body, frame[lo : hi + 1])
                      if _STACK.search(s) or (fp and _FRAME.search(s))]
    return found


def _loop_fmas(asm: str) -> int:
    """How many FMA instructions ``asm`` has (x86 ``vfmadd``, AArch64 ``fmla``)."""
    return len(re.findall(r"\bv?fmadd\w*|\bfmla\b", asm))


def spill_report() -> None:
    """Print every tile's micro-kernel check on its reference target: FMA
    instructions and stack accesses inside its loops (none is the goal)."""
    for name, tile in TILES.items():
        for dt in (np.float32, np.float64):
            asm = microkernel_asm(tile, dt, *tile.reference_target)
            print(f"{name:8s} {np.dtype(dt).name:8s} {tile.mr} x {tile.nr(np.dtype(dt).itemsize):2d} on "
                  f"{tile.reference_target[1]:15s} FMAs {_loop_fmas(asm):3d}  stack accesses in loops: "
                  f"{len(loop_stack_accesses(asm))}")
    print("this process's tile:", TILE.name, "for", numba_target()[:2])
