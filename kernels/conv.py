"""2-D convolution (cross-correlation) kernels, forward and backward.

Two strategies, chosen per shape (:func:`_use_direct`):

* **wide grid, direct** (few input channels and filters per group, stride 1:
  depthwise convolution, narrow first layers). No column buffer: the
  samples' planes are zero-padded to (Hp, Wp), flattened and laid end to
  end, and every kernel tap becomes a shift by ``i*dh*Wp + j*dw``; the output
  is accumulated on a grid of width Wp (the Wp - OW extra columns are
  cropped), so each tap is one long contiguous multiply-add, up to eight taps
  per pass. dx is the same full correlation of dy padded onto that grid, dw a
  set of dot products. One parallel region per call (tasks are blocks of
  samples or batch chunks).
* **wide grid, GEMM** (many input channels or filters per group, any
  stride). The padded planes are split into their stride phases, on whose
  grid every row of the im2col matrix is a contiguous run of one phase plane;
  numbanet's GEMM reads those runs in place, so no column matrix is built and
  the large operand is never packed; col2im is one contiguous add per row.
  Per sample and group, in batch-chunk tasks.

The GEMM is :mod:`numbanet.kernels._gemm`, numbanet's own register-blocked
product (a micro-kernel per ISA family: AVX-512, AVX2, NEON, generic), run
serially inside each batch-chunk task, with the weights packed once per call.
The extra memory is one sample's phase planes and small buffers per task.

Geometry: ``y[n, f, oh, ow] = b[f] + sum_{c, i, j} w[f, c, i, j] *
x[n, g*Cg + c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]`` (taps outside the input
read zero), ``g = f // (F/groups)``, ``Cg = C/groups``,
``OH = (H + 2ph - dh(KH-1) - 1) // sh + 1`` (likewise OW).

Determinism: every output element (of y, dx, dw, db) is written by one task,
or summed from per-chunk partials in a fixed order, so results are bitwise
identical from run to run whatever the thread scheduling.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from numbanet.reference.geometry import out_size

from . import validate as v
from ._threads import kernel_op
from ._config import jit
from ._gemm import KC, MR, NC, a_offset, b_buffer, tile_cols
from ._gemm_ext import kernel_block_at, kernel_block_bt, links_gemm, pack_a_rows_into, pack_b

__all__ = ["conv2d_forward", "conv2d_backward"]

#: Input channels per group up to which the wide-grid loops beat the GEMM
#: (measured: Cg=32, F=64 still about even, conv_mid's Cg=64 clearly not).
_DIRECT_MAX_CG = 16

#: Filters per group from which the forward pass takes the GEMM even with few
#: input channels: with a full micro-kernel panel of filters it beat the direct
#: loops on every shape measured (MNIST's 1 -> 30 channels 5x5: 0.51 vs 0.72
#: ms; CIFAR's 3 -> 32: 0.58 vs 0.87 ms; the 8x8 digits: 0.068 vs 0.076 ms).
#: Depthwise convolution (one filter per group) stays direct: there the GEMM
#: was 2x slower forward and 15x slower backward.
_GEMM_MIN_FG = 8

#: The backward pass's products have the Cg*KH*KW taps as their rows (dx's
#: columns, dw^T's rows), in panels of MR: with few taps the panels run part
#: empty (9 taps fill 9 of 16 rows with MR = 8), and small planes give each
#: product little to do. Measured with the AVX-512 tile (2 threads, batch 100, 3x3 unless said, backward without
#: dx, direct vs GEMM ms): 8x8 C=1 F=30 0.095 vs 0.151; 28x28 C=1 F=30 0.54
#: vs 0.82; 12x12 C=3 F=16 0.17 vs 0.24; 16x16 C=3 F=32 0.45 vs 0.40; 32x32
#: C=3 F=32 1.61 vs 1.33; MNIST's 28x28 C=1 F=30 5x5 0.82 vs 0.78; 8x8 C=8
#: F=16 0.22 vs 0.20; 16x16 C=16 F=32 1.9 vs 0.86 (with dx alike). So the
#: backward pass stays direct below this many taps, or below the second
#: figure with fewer output positions than the third.
_BACKWARD_GEMM_MIN_TAPS = 16, 64, 256

#: Batch chunks: the unit of parallel work over samples and of the dw/db
#: partial sums. A fixed number (not the thread count) so that the summation
#: order, hence the result, never depends on the threads.
_CHUNKS = 8
#: The direct kernels' partial sums are small: more chunks balance the threads better.
_DIRECT_CHUNKS = 16

@jit()
def _valid_range(off, s, size, out):
    """Outputs ``o`` in ``[lo, hi)`` whose tap ``o*s + off`` lies in ``[0, size)``."""
    lo = 0
    if off < 0:
        lo = (-off + s - 1) // s
    hi = 0
    if size - off > 0:
        hi = (size - off + s - 1) // s
    if hi > out:
        hi = out
    if lo > hi:
        lo = hi
    return lo, hi


@jit()
def _sum_chunks(part_w, part_b):
    """Sum per-chunk partials (nchunks, F, R) and (nchunks, F) in chunk order."""
    nchunks, f_, r_ = part_w.shape
    dw = np.zeros((f_, r_), part_w.dtype)
    db = np.zeros(f_, part_b.dtype)
    for k in range(nchunks):
        for f in range(f_):
            db[f] += part_b[k, f]
            for r in range(r_):
                dw[f, r] += part_w[k, f, r]
    return dw, db


# --- direct kernels on the "wide grid" (stride 1) --------------------------------
#
# With stride 1 the taps of a plane are plain shifts of one another once the
# input is zero-padded to (Hp, Wp) and flattened: the output computed on a grid
# of width Wp (OW valid columns, Wp - OW junk ones, cropped at the end) gets
# ``y_wide[q] += w[tap] * x_pad_flat[off[tap] + q]`` with
# ``off = i*dh*Wp + j*dw``: one long contiguous multiply-add per tap, which
# vectorises fully, instead of OH short rows.


@jit()
def _copy_row(dst, src, length):
    # Indexing by the bare loop variable spares Numba's negative-index
    # wraparound test, which would keep the loop from vectorising; hence the
    # slices taken by the callers here and below.
    for q in range(length):
        dst[q] = src[q]


@jit(fastmath=True)
def _dot4(a, b0, b1, b2, b3, length):
    """``(sum_q a[q] * b_u[q] for u < 4)`` over q < length."""
    z = a.dtype.type(0)
    s0 = s1 = s2 = s3 = z
    for q in range(length):
        aq = a[q]
        s0 += aq * b0[q]
        s1 += aq * b1[q]
        s2 += aq * b2[q]
        s3 += aq * b3[q]
    return s0, s1, s2, s3


@jit(fastmath=True)
def _dot1(a, b, length):
    s = a.dtype.type(0)
    for q in range(length):
        s += a[q] * b[q]
    return s


@jit(fastmath=True)
def _dot_sum(a, length):
    s = a.dtype.type(0)
    for q in range(length):
        s += a[q]
    return s


@jit()
def _phase_taps(kh_, kw_, sh, sw, dh, dw, wq):
    """Phase plane and offset of every tap on the phase grid of width ``wq``.

    Tap ``(i, j)`` of output ``(oh, ow)`` reads ``x_pad[oh*sh + i*dh, ow*sw + j*dw]
    = P[(i*dh % sh)*sw + j*dw % sw][(oh + i*dh // sh)*wq + ow + j*dw // sw]``,
    with the phase planes ``P[a*sw + b][u*wq + v] = x_pad[u*sh + a, v*sw + b]``
    (:func:`_pad_phases`): on the grid ``q = oh*wq + ow`` every tap is a
    contiguous run of one phase plane, whatever the stride.
    """
    kk = kh_ * kw_
    tpl = np.empty(kk, np.int64)
    off = np.empty(kk, np.int64)
    for i in range(kh_):
        for j in range(kw_):
            r, c = i * dh, j * dw
            tpl[i * kw_ + j] = (r % sh) * sw + c % sw
            off[i * kw_ + j] = (r // sh) * wq + c // sw
    return tpl, off


@jit()
def _axpy_taps(acc, src, rows, off, wts, length):
    """``acc[q] += sum_t wts[t] * src[rows[t], off[t] + q]`` for q < length.

    Eight (then four, then one) taps per pass over ``acc``, so each load and
    store of ``acc`` feeds several multiply-adds; the order is fixed.
    """
    nt = off.shape[0]
    t = 0
    while t + 8 <= nt:
        w0, w1, w2, w3 = wts[t], wts[t + 1], wts[t + 2], wts[t + 3]
        w4, w5, w6, w7 = wts[t + 4], wts[t + 5], wts[t + 6], wts[t + 7]
        s0 = src[rows[t], off[t] :]
        s1 = src[rows[t + 1], off[t + 1] :]
        s2 = src[rows[t + 2], off[t + 2] :]
        s3 = src[rows[t + 3], off[t + 3] :]
        s4 = src[rows[t + 4], off[t + 4] :]
        s5 = src[rows[t + 5], off[t + 5] :]
        s6 = src[rows[t + 6], off[t + 6] :]
        s7 = src[rows[t + 7], off[t + 7] :]
        for q in range(length):
            acc[q] += (w0 * s0[q] + w1 * s1[q] + w2 * s2[q] + w3 * s3[q]) + (
                w4 * s4[q] + w5 * s5[q] + w6 * s6[q] + w7 * s7[q]
            )
        t += 8
    while t + 4 <= nt:
        w0, w1, w2, w3 = wts[t], wts[t + 1], wts[t + 2], wts[t + 3]
        s0 = src[rows[t], off[t] :]
        s1 = src[rows[t + 1], off[t + 1] :]
        s2 = src[rows[t + 2], off[t + 2] :]
        s3 = src[rows[t + 3], off[t + 3] :]
        for q in range(length):
            acc[q] += w0 * s0[q] + w1 * s1[q] + w2 * s2[q] + w3 * s3[q]
        t += 4
    while t < nt:
        w0 = wts[t]
        s0 = src[rows[t], off[t] :]
        for q in range(length):
            acc[q] += w0 * s0[q]
        t += 1


@jit()
def _flat_taps(nrows, off):
    """Row and offset of every (row, tap) pair, row-major: ``nrows * len(off)`` taps."""
    kk = off.shape[0]
    rows = np.empty(nrows * kk, np.int64)
    offs = np.empty(nrows * kk, np.int64)
    for r in range(nrows):
        for k in range(kk):
            rows[r * kk + k] = r
            offs[r * kk + k] = off[k]
    return rows, offs


@jit()
def _pad_block(xb, ph, pw, front, plane, out):
    """Zero-padded, flattened planes of the samples ``xb`` (S, C, H, W) side by
    side: ``out[c, front + s*plane + (i + ph)*Wp + pw + j] = xb[s, c, i, j]``,
    zero elsewhere; out has shape (C, >= front + S*plane)."""
    s_, c_, h_, w_ = xb.shape
    wp = w_ + 2 * pw
    out[:] = 0
    for c in range(c_):
        dst = out[c]
        for s in range(s_):
            for i in range(h_):
                _copy_row(dst[front + s * plane + (i + ph) * wp + pw :], xb[s, c, i], w_)


def _block_samples(n, plane, blocks):
    """Samples per block of the wide grid: enough to make each long loop a few
    thousand elements (small images gain most: an 8x8 image alone gives
    loops of 78), at most ``ceil(n / blocks)`` so the threads get work."""
    return max(1, min(-(-n // blocks), 4096 // plane))


@jit(parallel=True)
def _conv2d_forward_wide(x, w, b, ph, pw, dh, dw, groups, oh_, ow_, spb):
    n_, c_, h_, w_ = x.shape
    f_, cg, kh_, kw_ = w.shape
    fg = f_ // groups
    wp = w_ + 2 * pw
    plane = (h_ + 2 * ph) * wp
    kk = kh_ * kw_
    off = _phase_taps(kh_, kw_, 1, 1, dh, dw, wp)[1]
    wf = w.reshape(f_, cg * kk)
    rows, offs = _flat_taps(cg, off)
    y = np.empty((n_, f_, oh_, ow_), x.dtype)
    # One task per block of `spb` samples whose padded planes lie end to end:
    # every tap is one shift over the whole block (the rows between samples
    # are junk, never copied out). A single parallel region: under load from
    # other processes every extra region end is a barrier that can stall.
    for blk in prange((n_ + spb - 1) // spb):
        n0 = blk * spb
        s_ = min(spb, n_ - n0)
        length = (s_ - 1) * plane + (oh_ - 1) * wp + ow_
        xp = np.empty((c_, s_ * plane), x.dtype)
        _pad_block(x[n0 : n0 + s_], ph, pw, 0, plane, xp)
        acc = np.empty(length, x.dtype)
        for f in range(f_):
            g = f // fg
            acc[:] = b[f]
            _axpy_taps(acc, xp[g * cg : (g + 1) * cg], rows, offs, wf[f], length)
            for s in range(s_):
                yp = y[n0 + s, f]
                for i in range(oh_):
                    _copy_row(yp[i], acc[s * plane + i * wp :], ow_)
    return y


@jit(parallel=True)
def _conv2d_backward_wide(dy, x, w, ph, pw, dh, dw, groups, nchunks, need_dx, spb):
    n_, f_, oh_, ow_ = dy.shape
    _, c_, h_, w_ = x.shape
    _, cg, kh_, kw_ = w.shape
    fg = f_ // groups
    kk = kh_ * kw_
    ntaps = cg * kk
    wp = w_ + 2 * pw
    plane = (h_ + 2 * ph) * wp
    off = _phase_taps(kh_, kw_, 1, 1, dh, dw, wp)[1]
    front = off[kk - 1]
    # dx_pad[p] = sum_{f, t} w[f, c, t] * dy_wide[f, p - off[t]]: the taps of
    # the full correlation sit at offsets front - off[t] of dy_wide stored
    # behind `front` zeros (its junk columns zero too).
    roff = np.empty(kk, np.int64)
    for k in range(kk):
        roff[k] = front - off[k]
    # weights seen by input channel c: wc[c, fi*KK + tap] = w[g*Fg + fi, c - g*Cg, tap]
    wr = w.reshape(f_, cg, kk)
    wc = np.empty((c_, fg * kk), w.dtype)
    for c in range(c_):
        g = c // cg
        for fi in range(fg):
            for k in range(kk):
                wc[c, fi * kk + k] = wr[g * fg + fi, c - g * cg, k]
    rows_dx, offs_dx = _flat_taps(fg, roff)
    rows, offs = _flat_taps(cg, off)
    dx = np.empty((n_ if need_dx else 0, c_, h_, w_), dy.dtype)
    chunk = (n_ + nchunks - 1) // nchunks
    # Per-chunk partial dw and db, summed in chunk order at the end. Within a
    # chunk, blocks of `spb` samples share one wide grid (their planes end to
    # end, as in the forward pass); spb depends on the shapes only, so the
    # summation order, hence the result, never depends on the threads.
    part_w = np.zeros((nchunks, f_, ntaps), dy.dtype)
    part_b = np.zeros((nchunks, f_), dy.dtype)
    for k in prange(nchunks):
        xp = np.empty((c_, spb * plane), dy.dtype)
        dyw = np.empty((f_, front + spb * plane), dy.dtype)
        acc = np.empty(spb * plane, dy.dtype)
        for n0 in range(k * chunk, min(n_, (k + 1) * chunk), spb):
            s_ = min(spb, min(n_, (k + 1) * chunk) - n0)
            length = (s_ - 1) * plane + (oh_ - 1) * wp + ow_
            _pad_block(x[n0 : n0 + s_], ph, pw, 0, plane, xp)
            # dy_wide: dy on the padded grids of width Wp, behind `front` zeros
            dyw[:] = 0
            for f in range(f_):
                for s in range(s_):
                    for i in range(oh_):
                        _copy_row(dyw[f, front + s * plane + i * wp :], dy[n0 + s, f, i], ow_)
            for c in range(c_ if need_dx else 0):
                g = c // cg
                acc[:] = 0
                _axpy_taps(acc, dyw[g * fg : (g + 1) * fg], rows_dx, offs_dx, wc[c], s_ * plane)
                for s in range(s_):
                    for i in range(h_):
                        _copy_row(dx[n0 + s, c, i], acc[s * plane + (i + ph) * wp + pw :], w_)
            for f in range(f_):
                g = f // fg
                d = dyw[f, front:]
                src = xp[g * cg : (g + 1) * cg]
                part_b[k, f] += _dot_sum(d, length)  # junk columns are zero
                # dw: dot products of dy_wide with the shifted input planes,
                # four taps per sweep sharing each load of dy.
                pw_f = part_w[k, f]
                for t0 in range(0, ntaps, 4):
                    if t0 + 4 <= ntaps:
                        a0, a1, a2, a3 = _dot4(
                            d,
                            src[rows[t0], offs[t0] :], src[rows[t0 + 1], offs[t0 + 1] :],
                            src[rows[t0 + 2], offs[t0 + 2] :], src[rows[t0 + 3], offs[t0 + 3] :],
                            length,
                        )
                        pw_f[t0] += a0
                        pw_f[t0 + 1] += a1
                        pw_f[t0 + 2] += a2
                        pw_f[t0 + 3] += a3
                    else:
                        for u in range(t0, ntaps):
                            pw_f[u] += _dot1(d, src[rows[u], offs[u] :], length)
    dwt, db = _sum_chunks(part_w, part_b)
    return dx, dwt.reshape(w.shape), db


# --- GEMM on the wide grid (many channels, any stride) ----------------------------
#
# Split each zero-padded plane into its sh*sw stride phases (P[a, b][u, v] =
# x_pad[u*sh + a, v*sw + b], each of Hq x Wq = ceil(Hp/sh) x ceil(Wp/sw)) and
# flatten them: output (oh, ow) on the grid q = oh*Wq + ow reads tap (i, j) at
# one fixed phase and shift, so row (c, i, j) of the im2col matrix on that grid
# is a contiguous run of one phase plane (Pw = (OH - 1)*Wq + OW long). The GEMM
# reads those runs in place (``_gemm.kernel_block_bt`` / ``kernel_block_at``):
# no im2col buffer, no packing of the large operand, and col2im is one
# contiguous add per row. The Wq - OW junk columns per output row cost
# (Wq - OW) / Wq extra work and are cropped (forward) or zero (dy on the grid,
# backward). With stride 1 there is one phase: the padded planes themselves.


@links_gemm("pack_a_rows_into")
@jit()
def _pack_weights(w2, groups, transpose):
    """Each group's weights ``w_g`` (Fg, Cg*KH*KW), or ``w_g^T``, packed for
    the GEMM once per call: every sample's product reuses them."""
    fg = w2.shape[0] // groups
    rows = w2.shape[1] if transpose else fg
    cols = fg if transpose else w2.shape[1]
    out = np.empty((groups, ((rows + MR - 1) // MR) * MR * cols), w2.dtype)
    for g in range(groups):
        wg = w2[g * fg : (g + 1) * fg]
        if transpose:
            pack_a_rows_into(wg.T, 0, rows, out[g])
        else:
            pack_a_rows_into(wg, 0, rows, out[g])
    return out


@jit()
def _pad_phases(xn, ph, pw, sh, sw, hq, wq, out):
    """The zero-padded planes of one sample ``xn`` (C, H, W) split into their
    ``sh*sw`` stride phases: ``out[c*sh*sw + a*sw + b, u*wq + v] =
    x_pad[c, u*sh + a, v*sw + b]``, zero in the padding and beyond its edge.
    With stride 1 this is just the padded, flattened planes."""
    c_, h_, w_ = xn.shape
    out[:] = 0
    # The valid ranges depend on the phase only: worked out once per phase
    # (a floor division per row cost as much as the copy itself).
    for bb in range(sw):
        lo, hi = _valid_range(bb - pw, sw, w_, wq)
        s0 = lo * sw + bb - pw
        for a in range(sh):
            ulo, uhi = _valid_range(a - ph, sh, h_, hq)
            for c in range(c_):
                dplane = out[(c * sh + a) * sw + bb]
                for u in range(ulo, uhi):
                    src = xn[c, u * sh + a - ph, s0:]
                    dst = dplane[u * wq + lo :]
                    if sw == 1:
                        _copy_row(dst, src, hi - lo)
                    else:  # a plain strided loop: LLVM's stride-2 vector form was slower
                        for q in range(hi - lo):
                            dst[q] = src[q * sw]


@jit()
def _unpad_phases(dxp, ph, pw, sh, sw, hq, wq, dxn):
    """The inverse of :func:`_pad_phases` on the real (unpadded) positions:
    ``dxn[c, y, z] = dxp[c*sh*sw + a*sw + b, u*wq + v]`` with
    ``y + ph = u*sh + a`` and ``z + pw = v*sw + b``."""
    c_, h_, w_ = dxn.shape
    for bb in range(sw):
        lo, hi = _valid_range(bb - pw, sw, w_, wq)
        d0 = lo * sw + bb - pw
        for a in range(sh):
            ulo, uhi = _valid_range(a - ph, sh, h_, hq)
            for c in range(c_):
                splane = dxp[(c * sh + a) * sw + bb]
                for u in range(ulo, uhi):
                    dst = dxn[c, u * sh + a - ph, d0:]
                    src = splane[u * wq + lo :]
                    if sw == 1:
                        _copy_row(dst, src, hi - lo)
                    else:
                        for q in range(hi - lo):
                            dst[q * sw] = src[q]


@jit()
def _phase_grid(h_, w_, kh_, kw_, sh, sw, ph, pw, dh, dw, oh_, ow_):
    """The phase grid of a geometry: phases ``sh*sw``, phase plane ``hq x wq``
    (flattened, ``plane`` long), grid length ``pwide = (OH - 1)*wq + OW`` and
    every tap's phase and offset (:func:`_phase_taps`)."""
    hq = (h_ + 2 * ph + sh - 1) // sh
    wq = (w_ + 2 * pw + sw - 1) // sw
    tpl, off = _phase_taps(kh_, kw_, sh, sw, dh, dw, wq)
    return sh * sw, hq, wq, hq * wq, (oh_ - 1) * wq + ow_, tpl, off


@jit()
def _rows_with_slack(rows, cols, like):
    """A zeroed flat buffer and its (rows, cols) view: the GEMM reads rows of
    it in place, and a ragged last tile reads up to NR - 1 elements past a
    row's end, so the flat buffer has that much slack after the last row."""
    flat = np.zeros(rows * cols + tile_cols(like), like.dtype)
    return flat, flat[: rows * cols].reshape(rows, cols)


@jit()
def _row_table(cg, groups, tpl, off, nph, plane, rows_per_group):
    """Where each row of each group's wide-grid im2col matrix starts in the
    flat phase planes: ``tab[g, c*KK + t] = ((g*Cg + c)*nph + tpl[t])*plane +
    off[t]``. Rows past ``Cg*KK`` (up to ``rows_per_group``, a whole last
    micro-kernel panel) point at 0: read, never kept."""
    kk = off.shape[0]
    tab = np.zeros((groups, rows_per_group), np.int64)
    for g in range(groups):
        for r in range(cg * kk):
            c = r // kk
            t = r - c * kk
            tab[g, r] = ((g * cg + c) * nph + tpl[t]) * plane + off[t]
    return tab


@links_gemm("kernel_block_bt", "pack_a_rows_into")
@jit(parallel=True)
def _conv2d_forward_wgemm(x, w, b, sh, sw, ph, pw, dh, dw, groups, oh_, ow_, nchunks):
    n_, c_, h_, w_ = x.shape
    f_, cg, kh_, kw_ = w.shape
    fg = f_ // groups
    ck = cg * kh_ * kw_
    nph, hq, wq, plane, pwide, tpl, off = _phase_grid(h_, w_, kh_, kw_, sh, sw, ph, pw, dh, dw, oh_, ow_)
    tab = _row_table(cg, groups, tpl, off, nph, plane, ck)
    w2 = w.reshape(f_, ck)
    wpk = _pack_weights(w2, groups, False)
    y = np.empty((n_, f_, oh_, ow_), x.dtype)
    chunk = (n_ + nchunks - 1) // nchunks
    for t in prange(nchunks):
        xpf, xp = _rows_with_slack(c_ * nph, plane, x)
        yw = np.empty((fg, pwide), x.dtype)
        tile = np.empty((MR, tile_cols(y)), x.dtype)
        for n in range(t * chunk, min(n_, (t + 1) * chunk)):
            _pad_phases(x[n], ph, pw, sh, sw, hq, wq, xp)
            for g in range(groups):
                # y_wide = w_g @ col_wide, col_wide's rows read in place
                for j0 in range(0, pwide, NC):
                    nc = min(NC, pwide - j0)
                    for k0 in range(0, ck, KC):
                        kc = min(KC, ck - k0)
                        kernel_block_bt(wpk[g], a_offset(fg, k0), fg, kc, xpf, tab[g], k0, j0, nc, yw, j0, k0 > 0, tile)
                for fi in range(fg):
                    f = g * fg + fi
                    bv = b[f]
                    for i in range(oh_):
                        dst = y[n, f, i]
                        src = yw[fi, i * wq :]
                        for q in range(ow_):
                            dst[q] = src[q] + bv
    return y


@links_gemm("kernel_block_at", "kernel_block_bt", "pack_a_rows_into", "pack_b")
@jit(parallel=True)
def _conv2d_backward_wgemm(dy, x, w, sh, sw, ph, pw, dh, dw, groups, nchunks, need_dx):
    n_, f_, oh_, ow_ = dy.shape
    _, c_, h_, w_ = x.shape
    _, cg, kh_, kw_ = w.shape
    fg = f_ // groups
    kk = kh_ * kw_
    ck = cg * kk
    p_ = oh_ * ow_
    nph, hq, wq, plane, pwide, tpl, off = _phase_grid(h_, w_, kh_, kw_, sh, sw, ph, pw, dh, dw, oh_, ow_)
    mpan = (ck + MR - 1) // MR
    tab = _row_table(cg, groups, tpl, off, nph, plane, mpan * MR)
    dtab = np.arange(fg) * pwide  # rows of dy_wide
    w2 = w.reshape(f_, ck)
    wtpk = _pack_weights(w2, groups, True)
    nkb = (fg + KC - 1) // KC
    dx = np.empty((n_ if need_dx else 0, c_, h_, w_), dy.dtype)
    # Per-chunk partials, summed in chunk order at the end: race-free and
    # independent of the thread count. dw is summed transposed, dw_g^T =
    # col_wide @ dy_wide^T, so that the large operand (the im2col matrix) is
    # the one read in place and only dy_wide (Fg rows) is packed.
    part_wt = np.zeros((nchunks, groups, ck, fg), dy.dtype)
    part_b = np.zeros((nchunks, f_), dy.dtype)
    chunk = (n_ + nchunks - 1) // nchunks
    # K (the grid positions) of dw in near-equal blocks: a short last block
    # costs a full pass of C loads and stores for little work.
    nkw = (pwide + KC - 1) // KC
    kbw = (pwide + nkw - 1) // nkw
    for t in prange(nchunks):
        xpf, xp = _rows_with_slack(c_ * nph, plane, dy)
        dywf, dyw = _rows_with_slack(fg, pwide, dy)  # junk columns stay zero
        dcol = np.empty((MR, min(NC, pwide)), dy.dtype)
        dxp = np.empty((cg * nph if need_dx else 0, plane), dy.dtype)
        bp = b_buffer(kbw, fg, dy)
        tile = np.empty((MR, tile_cols(dy)), dy.dtype)
        for n in range(t * chunk, min(n_, (t + 1) * chunk)):
            _pad_phases(x[n], ph, pw, sh, sw, hq, wq, xp)
            for g in range(groups):
                for fi in range(fg):
                    for i in range(oh_):
                        _copy_row(dyw[fi, i * wq :], dy[n, g * fg + fi, i], ow_)
                # dw_g^T += col_wide @ dy_wide^T
                for k0 in range(0, pwide, kbw):
                    kc = min(kbw, pwide - k0)
                    pack_b(dyw.T, k0, kc, 0, fg, bp)
                    kernel_block_at(xpf, tab[g], k0, ck, kc, bp, fg, part_wt[t, g], 0, True, tile)
                if not need_dx:
                    continue
                # dx: dcol = w_g^T @ dy_wide, MR rows at a time, each row
                # added at once (while in L1) into its phase plane at its
                # shift; dcol's junk columns are zero.
                dxp[:] = 0
                for j0 in range(0, pwide, NC):
                    nc = min(NC, pwide - j0)
                    for ip in range(mpan):
                        rows = min(MR, ck - ip * MR)
                        for kbi in range(nkb):
                            kc = min(KC, fg - kbi * KC)
                            a_off = a_offset(ck, kbi * KC) + ip * MR * kc
                            kernel_block_bt(wtpk[g], a_off, rows, kc, dywf, dtab, kbi * KC, j0, nc, dcol, 0, kbi > 0, tile)
                        for r in range(rows):
                            row = ip * MR + r
                            c = row // kk
                            k = row - c * kk
                            dst = dxp[c * nph + tpl[k], off[k] + j0 :]
                            src = dcol[r]
                            for q in range(nc):
                                dst[q] += src[q]
                _unpad_phases(dxp, ph, pw, sh, sw, hq, wq, dx[n, g * cg : (g + 1) * cg])
            for f in range(f_):
                part_b[t, f] += _dot_sum(dy[n, f].ravel(), p_)
    # chunk order, in the transposed layout (contiguous adds), then transposed once
    total = part_wt[0].copy()
    db = part_b[0].copy()
    for k in range(1, nchunks):
        total += part_wt[k]
        db += part_b[k]
    dw2 = np.empty((f_, ck), dy.dtype)
    for g in range(groups):
        dw2[g * fg : (g + 1) * fg] = total[g].T
    return dx, dw2.reshape(w.shape), db


# --- validating wrappers ------------------------------------------------------------


def _use_direct(cg, fg, sh, sw, taps=None, positions=None):
    """The direct wide-grid loops for few channels per group at stride 1
    (measured: at stride 2 the GEMM won even for 3 or 8 input channels), when
    there are also fewer than ``_GEMM_MIN_FG`` filters per group or, for the
    backward pass (``taps`` = Cg*KH*KW and ``positions`` = OH*OW given), few
    taps (:data:`_BACKWARD_GEMM_MIN_TAPS`)."""
    if cg > _DIRECT_MAX_CG or sh != 1 or sw != 1:
        return False
    if fg < _GEMM_MIN_FG:
        return True
    if taps is None:
        return False
    few, some, plane = _BACKWARD_GEMM_MIN_TAPS
    return taps < few or (taps < some and positions < plane)


def _geometry(fn, x, w, stride, pad, dilation, groups):
    """Check hyperparameters against ``x`` and ``w``; return them with OH, OW."""
    sh, sw = v.int_pair(fn, "stride", stride, minimum=1)
    ph, pw = v.int_pair(fn, "pad", pad, minimum=0)
    dh, dw = v.int_pair(fn, "dilation", dilation, minimum=1)
    groups = v.int_param(fn, "groups", groups, minimum=1)
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    if c % groups:
        raise ValueError(f"{fn}: groups={groups} must divide the C={c} input channels of x")
    if f % groups:
        raise ValueError(f"{fn}: groups={groups} must divide the F={f} filters of w")
    v.shape(fn, "w", w, (f, c // groups, None, None), f"C/groups={c // groups} input channels per filter for x with C={c}, groups={groups}")
    if kh < 1 or kw < 1:
        raise ValueError(f"{fn}: w must have a non-empty kernel, got shape {w.shape}")
    ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if h + 2 * ph < ekh or wd + 2 * pw < ekw:
        raise ValueError(
            f"{fn}: the kernel spans {ekh}x{ekw} (with dilation {dh}x{dw}), larger than "
            f"the padded input {h + 2 * ph}x{wd + 2 * pw}"
        )
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(wd, kw, sw, pw, dw)
    v.output_size(fn, (n, f, oh, ow), x.dtype, "stride, pad and dilation")
    v.output_size(fn, (c, h + 2 * ph, wd + 2 * pw), x.dtype, "pad")  # a padded sample
    # With one output row (column) the stride never multiplies anything: take
    # 1, so that the GEMM's stride phases (sh*sw planes of ceil(Hp/sh) x
    # ceil(Wp/sw)) stay within twice the padded plane in each direction.
    sh = 1 if oh == 1 else sh
    sw = 1 if ow == 1 else sw
    return (sh, sw, ph, pw, dh, dw, groups), oh, ow


@kernel_op
def conv2d_forward(x, w, b, stride=1, pad=0, dilation=1, groups=1):
    """Convolution (cross-correlation) forward pass, as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    w : ndarray, shape (F, C/groups, KH, KW)
    b : ndarray, shape (F,), or None
    stride, pad, dilation : int or (int, int)
        ``(sh, sw)`` >= 1, ``(ph, pw)`` >= 0 (zero padding), ``(dh, dw)`` >= 1.
    groups : int
        Divides C and F; filter ``f`` sees input channels
        ``g*C/groups .. (g+1)*C/groups - 1`` with ``g = f // (F/groups)``.

    Returns
    -------
    y : ndarray, shape (N, F, OH, OW)
        ``y[n, f, oh, ow] = b[f] + sum_{c, i, j} w[f, c, i, j] *
        x[n, g*C/groups + c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]``, with
        ``OH = (H + 2ph - dh(KH-1) - 1) // sh + 1`` and likewise OW.
    """
    fn = "conv2d_forward"
    x = v.float_array(fn, "x", x, 4)
    w = v.float_array(fn, "w", w, 4)
    if b is None:
        b = np.zeros(w.shape[0], w.dtype)
    b = v.float_array(fn, "b", b, 1)
    v.same_dtype(fn, x=x, w=w, b=b)
    hp, oh, ow = _geometry(fn, x, w, stride, pad, dilation, groups)
    v.shape(fn, "b", b, (w.shape[0],), f"F={w.shape[0]} from w")
    sh, sw, ph, pw, dh, dw, groups = hp
    if _use_direct(w.shape[1], w.shape[0] // groups, sh, sw):
        plane = (x.shape[2] + 2 * ph) * (x.shape[3] + 2 * pw)
        spb = _block_samples(x.shape[0], plane, _DIRECT_CHUNKS)
        return _conv2d_forward_wide(x, w, b, ph, pw, dh, dw, groups, oh, ow, spb)
    nchunks = max(1, min(x.shape[0], _CHUNKS))
    return _conv2d_forward_wgemm(x, w, b, *hp, oh, ow, nchunks)


@kernel_op
def conv2d_backward(dy, x, w, stride=1, pad=0, dilation=1, groups=1, *, need_dx=True):
    """Convolution backward pass: gradients with respect to ``x``, ``w`` and ``b``.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OH, OW)
        Gradient of the loss with respect to the output ``y`` of
        :func:`conv2d_forward` called with the same arguments.
    x, w, stride, pad, dilation, groups
        As in :func:`conv2d_forward`.
    need_dx : bool, keyword-only
        ``False`` skips ``dx`` (returned as ``None``): a network's first layer,
        whose input is data, needs only ``dw`` and ``db``.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W), or None when ``need_dx`` is False
        ``dx[n, c, ih, iw] = sum dy[n, f, oh, ow] * w[f, c - g*C/groups, i, j]``
        over the ``(f, oh, ow, i, j)`` whose tap reads ``x[n, c, ih, iw]``.
    dw : ndarray, shape (F, C/groups, KH, KW)
        ``dw[f, c, i, j] = sum_{n, oh, ow} dy[n, f, oh, ow] *
        x[n, g*C/groups + c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]``.
    db : ndarray, shape (F,)
        ``db[f] = sum_{n, oh, ow} dy[n, f, oh, ow]``.
    """
    fn = "conv2d_backward"
    dy = v.float_array(fn, "dy", dy, 4)
    x = v.float_array(fn, "x", x, 4)
    w = v.float_array(fn, "w", w, 4)
    v.same_dtype(fn, dy=dy, x=x, w=w)
    hp, oh, ow = _geometry(fn, x, w, stride, pad, dilation, groups)
    sh, sw, ph, pw, dh, dw, groups = hp
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    v.shape(fn, "dy", dy, (n, f, oh, ow), "(N, F, OH, OW) from x, w and the geometry")
    need_dx = v.bool_param(fn, "need_dx", need_dx)
    if n == 0:
        return (np.zeros_like(x) if need_dx else None), np.zeros_like(w), np.zeros(f, w.dtype)
    if _use_direct(cg, f // groups, sh, sw, cg * kh * kw, oh * ow):
        nchunks = min(n, _DIRECT_CHUNKS)
        spb = _block_samples(-(-n // nchunks), (h + 2 * ph) * (wd + 2 * pw), 1)
        dx, dw_, db = _conv2d_backward_wide(dy, x, w, ph, pw, dh, dw, groups, nchunks, need_dx, spb)
    else:
        dx, dw_, db = _conv2d_backward_wgemm(dy, x, w, *hp, min(n, _CHUNKS), need_dx)
    return (dx if need_dx else None), dw_, db
