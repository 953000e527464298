"""2-D convolution (cross-correlation) kernels, forward and backward.

Three strategies, chosen per shape (:func:`_use_direct`, then the stride):

* **wide grid** (few input channels per group, stride 1: a network's first
  layers, depthwise convolution). No column buffer: the samples' planes are
  zero-padded to (Hp, Wp), flattened and laid end to end, and every kernel tap
  becomes a shift by ``i*dh*Wp + j*dw``; the output is accumulated on a grid of
  width Wp (the Wp - OW extra columns are cropped), so each tap is one long
  contiguous multiply-add, up to eight taps per pass. dx is the same full
  correlation of dy padded onto that grid, dw a set of dot products. One
  parallel region per call (tasks are blocks of samples or batch chunks).
* **wide-grid GEMM** (many channels, stride 1): the same grid, but the taps
  are summed by a matrix product whose packed operand is copied straight from
  the padded planes (row ``(c, i, j)`` of the im2col matrix is the plane
  shifted by ``i*dh*Wp + j*dw``), and col2im is one contiguous add per row.
* **im2col + GEMM** (stride > 1): per sample and group, im2col into one
  reusable ``(C/groups*KH*KW, OH*OW)`` buffer per task.

Both GEMM paths use :mod:`numbanet.kernels._gemm`, numbanet's own AVX-512
register-blocked product, serially inside each batch-chunk task (1.6-1.8x
OpenBLAS's AVX2 kernels per core here), with the weights packed once per call.
The column matrix of the whole batch is never built: the extra memory is one
sample's buffers per task.

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

from . import _validate as v
from ._config import jit
from ._gemm import KC, MR, NC, a_offset, b_buffer, gemm, gemm_packed, kernel_block, pack_a, tile_cols

__all__ = ["conv2d_forward", "conv2d_backward"]

#: Input channels per group up to which the wide-grid loops beat im2col + BLAS
#: (measured: Cg=32, F=64 still about even, conv_mid's Cg=64 clearly not).
_DIRECT_MAX_CG = 16

#: Filters per group from which the *forward* pass takes the wide-grid GEMM
#: even with few input channels: with a full micro-kernel panel of filters it
#: beat the direct loops on every shape measured (MNIST's 1 -> 30 channels 5x5:
#: 0.51 vs 0.72 ms; CIFAR's 3 -> 32: 0.58 vs 0.87 ms; the 8x8 digits: 0.068 vs
#: 0.076 ms), while the backward pass stays faster on the direct loops.
#: Depthwise convolution (one filter per group) stays direct.
_GEMM_MIN_FG = 8

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
def _tap_offsets(kh_, kw_, dh, dw, wp):
    off = np.empty(kh_ * kw_, np.int64)
    for i in range(kh_):
        for j in range(kw_):
            off[i * kw_ + j] = i * dh * wp + j * dw
    return off


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
    off = _tap_offsets(kh_, kw_, dh, dw, wp)
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
    off = _tap_offsets(kh_, kw_, dh, dw, wp)
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


# --- im2col + GEMM kernels (stride > 1, many channels) ------------------------------


@jit()
def _im2col_plane(xp, col, r0, kh_, kw_, sh, sw, ph, pw, dh, dw, oh_, ow_):
    """Rows ``r0 .. r0 + KH*KW`` of ``col`` (K, OH*OW) from one input plane."""
    h_, w_ = xp.shape
    zero = col.dtype.type(0)
    for i in range(kh_):
        off_h = i * dh - ph
        oh_lo, oh_hi = _valid_range(off_h, sh, h_, oh_)
        for j in range(kw_):
            off_w = j * dw - pw
            ow_lo, ow_hi = _valid_range(off_w, sw, w_, ow_)
            cr = col[r0 + i * kw_ + j]
            for oh in range(oh_):
                crow = cr[oh * ow_ : (oh + 1) * ow_]
                if oh < oh_lo or oh >= oh_hi or ow_lo == ow_hi:
                    crow[:] = zero
                    continue
                crow[:ow_lo] = zero
                crow[ow_hi:] = zero
                xs = xp[oh * sh + off_h, ow_lo * sw + off_w :: sw]
                _copy_row(crow[ow_lo:], xs, ow_hi - ow_lo)


@jit()
def _col2im_plane(col, r0, dxp, kh_, kw_, sh, sw, ph, pw, dh, dw, oh_, ow_):
    """Add rows ``r0 .. r0 + KH*KW`` of ``col`` back into one input plane."""
    h_, w_ = dxp.shape
    for i in range(kh_):
        off_h = i * dh - ph
        oh_lo, oh_hi = _valid_range(off_h, sh, h_, oh_)
        for j in range(kw_):
            off_w = j * dw - pw
            ow_lo, ow_hi = _valid_range(off_w, sw, w_, ow_)
            cr = col[r0 + i * kw_ + j]
            if ow_lo == ow_hi:
                continue
            for oh in range(oh_lo, oh_hi):
                crow = cr[oh * ow_ + ow_lo :]
                dxs = dxp[oh * sh + off_h, ow_lo * sw + off_w :: sw]
                for k in range(ow_hi - ow_lo):
                    dxs[k] += crow[k]


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
        out[g] = pack_a(wg.T) if transpose else pack_a(wg)
    return out


@jit()
def _backward_setup(dy, w2, groups, c_, h_, w_, nchunks, need_dx):
    """What both GEMM backward kernels start from: each group's ``w_g^T``
    packed for the dx products, ``dx`` (empty when not needed), the per-chunk
    partial dw and db (summed in chunk order at the end: race-free and
    independent of the thread count) and the samples per chunk."""
    n_ = dy.shape[0]
    wtpk = _pack_weights(w2, groups, True)
    dx = np.empty((n_ if need_dx else 0, c_, h_, w_), dy.dtype)
    part_w = np.zeros((nchunks, w2.shape[0], w2.shape[1]), dy.dtype)
    part_b = np.zeros((nchunks, w2.shape[0]), dy.dtype)
    return wtpk, dx, part_w, part_b, (n_ + nchunks - 1) // nchunks


@jit(parallel=True)
def _conv2d_forward_gemm(x, w, b, sh, sw, ph, pw, dh, dw, groups, oh_, ow_, nchunks):
    n_, c_, h_, w_ = x.shape
    f_, cg, kh_, kw_ = w.shape
    fg = f_ // groups
    kk = kh_ * kw_
    ck = cg * kk
    p_ = oh_ * ow_
    y = np.empty((n_, f_, oh_, ow_), x.dtype)
    y3 = y.reshape(n_, f_, p_)
    w2 = w.reshape(f_, ck)
    wpk = _pack_weights(w2, groups, False)
    chunk = (n_ + nchunks - 1) // nchunks
    # Each task owns a run of samples and one column buffer; the products run
    # serially in the task (numbanet's GEMM): one level of threads only.
    for t in prange(nchunks):
        col = np.empty((ck, p_), x.dtype)
        for n in range(t * chunk, min(n_, (t + 1) * chunk)):
            for g in range(groups):
                for cc in range(cg):
                    _im2col_plane(x[n, g * cg + cc], col, cc * kk, kh_, kw_, sh, sw, ph, pw, dh, dw, oh_, ow_)
                gemm_packed(wpk[g], fg, col, y3[n, g * fg : (g + 1) * fg], False)
            for f in range(f_):
                bv = b[f]
                for p in range(p_):
                    y3[n, f, p] += bv
    return y


@jit(parallel=True)
def _conv2d_backward_gemm(dy, x, w, sh, sw, ph, pw, dh, dw, groups, nchunks, need_dx):
    n_, f_, oh_, ow_ = dy.shape
    _, c_, h_, w_ = x.shape
    _, cg, kh_, kw_ = w.shape
    fg = f_ // groups
    kk = kh_ * kw_
    ck = cg * kk
    p_ = oh_ * ow_
    dy3 = dy.reshape(n_, f_, p_)
    w2 = w.reshape(f_, ck)
    wtpk, dx, part_w, part_b, chunk = _backward_setup(dy, w2, groups, c_, h_, w_, nchunks, need_dx)
    for t in prange(nchunks):
        col = np.empty((ck, p_), dy.dtype)
        dcol = np.empty((ck if need_dx else 0, p_), dy.dtype)
        for n in range(t * chunk, min(n_, (t + 1) * chunk)):
            for g in range(groups):
                for cc in range(cg):
                    _im2col_plane(x[n, g * cg + cc], col, cc * kk, kh_, kw_, sh, sw, ph, pw, dh, dw, oh_, ow_)
                dyg = dy3[n, g * fg : (g + 1) * fg]
                gemm(dyg, col.T, part_w[t, g * fg : (g + 1) * fg], True)
                if not need_dx:
                    continue
                gemm_packed(wtpk[g], ck, dyg, dcol, False)
                dx[n, g * cg : (g + 1) * cg] = 0
                for cc in range(cg):
                    _col2im_plane(dcol, cc * kk, dx[n, g * cg + cc], kh_, kw_, sh, sw, ph, pw, dh, dw, oh_, ow_)
            for f in range(f_):
                part_b[t, f] += _dot_sum(dy3[n, f], p_)
    dw2, db = _sum_chunks(part_w, part_b)
    return dx, dw2.reshape(w.shape), db


# --- GEMM on the wide grid (stride 1, many channels) ---------------------------------
#
# The im2col matrix of a stride-1 convolution, taken on the wide grid, has rows
# that are plain shifts of the padded planes: row (c, i, j) is
# x_pad[c, off(i, j) + q] for q < Pw = (OH - 1) * Wp + OW. So the GEMM's packed
# operand is copied straight from the padded planes, one contiguous run per
# row (no im2col buffer, no per-output-row bookkeeping), and col2im becomes one
# contiguous add per row. The Wp - OW junk columns cost (Wp - OW) / Wp extra
# work and are cropped (forward) or zero (dy on the grid, backward).


@jit()
def _pack_shifted(xp, c0, r0, kc, j0, nc, off, kk, bp):
    """Rows ``r0 .. r0 + kc``, columns ``j0 .. j0 + nc`` of the wide-grid
    im2col matrix of planes ``xp[c0:]``, packed like ``_gemm.pack_b``."""
    nr_ = tile_cols(bp)
    zero = bp.dtype.type(0)
    for t in range(kc):
        r = r0 + t
        c = c0 + r // kk
        src = xp[c, off[r - (r // kk) * kk] + j0 :]
        for js in range(0, nc, nr_):
            dst = bp[(js // nr_) * nr_ * kc + t * nr_ :]
            s2 = src[js:]
            if js + nr_ <= nc:
                for j in range(nr_):
                    dst[j] = s2[j]
            else:
                for j in range(nr_):
                    dst[j] = s2[j] if js + j < nc else zero


@jit()
def _pack_shifted_t(xp, c0, q0, kc, r0, nc, off, kk, ck, bp):
    """The transpose: rows ``q0 .. q0 + kc`` (grid positions), columns
    ``r0 .. r0 + nc`` (taps) of the wide-grid im2col matrix's transpose."""
    nr_ = tile_cols(bp)
    zero = bp.dtype.type(0)
    for js in range(0, nc, nr_):
        base = (js // nr_) * nr_ * kc
        for j in range(nr_):
            dst = bp[base + j :]
            r = r0 + js + j
            if js + j < nc and r < ck:
                src = xp[c0 + r // kk, off[r - (r // kk) * kk] + q0 :]
                for t in range(kc):
                    dst[t * nr_] = src[t]
            else:
                for t in range(kc):
                    dst[t * nr_] = zero


@jit(parallel=True)
def _conv2d_forward_wgemm(x, w, b, ph, pw, dh, dw, groups, oh_, ow_, nchunks):
    n_, c_, h_, w_ = x.shape
    f_, cg, kh_, kw_ = w.shape
    fg = f_ // groups
    kk = kh_ * kw_
    ck = cg * kk
    wp = w_ + 2 * pw
    plane = (h_ + 2 * ph) * wp
    pwide = (oh_ - 1) * wp + ow_
    off = _tap_offsets(kh_, kw_, dh, dw, wp)
    w2 = w.reshape(f_, ck)
    wpk = _pack_weights(w2, groups, False)
    y = np.empty((n_, f_, oh_, ow_), x.dtype)
    chunk = (n_ + nchunks - 1) // nchunks
    for t in prange(nchunks):
        xp = np.empty((c_, plane), x.dtype)
        yw = np.empty((fg, pwide), x.dtype)
        bp = b_buffer(min(KC, ck), min(NC, pwide), y)
        tile = np.empty((MR, tile_cols(y)), x.dtype)
        for n in range(t * chunk, min(n_, (t + 1) * chunk)):
            _pad_block(x[n : n + 1], ph, pw, 0, plane, xp)
            for g in range(groups):
                for j0 in range(0, pwide, NC):
                    nc = min(NC, pwide - j0)
                    for k0 in range(0, ck, KC):
                        kc = min(KC, ck - k0)
                        _pack_shifted(xp, g * cg, k0, kc, j0, nc, off, kk, bp)
                        kernel_block(wpk[g], a_offset(fg, k0), fg, kc, bp, nc, yw, j0, k0 > 0, tile)
                for fi in range(fg):
                    f = g * fg + fi
                    bv = b[f]
                    for i in range(oh_):
                        dst = y[n, f, i]
                        src = yw[fi, i * wp :]
                        for q in range(ow_):
                            dst[q] = src[q] + bv
    return y


@jit(parallel=True)
def _conv2d_backward_wgemm(dy, x, w, ph, pw, dh, dw, groups, nchunks, need_dx):
    n_, f_, oh_, ow_ = dy.shape
    _, c_, h_, w_ = x.shape
    _, cg, kh_, kw_ = w.shape
    fg = f_ // groups
    kk = kh_ * kw_
    ck = cg * kk
    p_ = oh_ * ow_
    wp = w_ + 2 * pw
    plane = (h_ + 2 * ph) * wp
    pwide = (oh_ - 1) * wp + ow_
    off = _tap_offsets(kh_, kw_, dh, dw, wp)
    w2 = w.reshape(f_, ck)
    wtpk, dx, part_w, part_b, chunk = _backward_setup(dy, w2, groups, c_, h_, w_, nchunks, need_dx)
    for t in prange(nchunks):
        xp = np.empty((c_, plane), dy.dtype)
        dyw = np.zeros((fg, pwide), dy.dtype)  # junk columns stay zero
        dcol = np.empty((ck if need_dx else 0, pwide), dy.dtype)
        dxp = np.empty((cg if need_dx else 0, plane), dy.dtype)
        bp = b_buffer(min(KC, pwide), min(NC, ck), dy)
        tile = np.empty((MR, tile_cols(dy)), dy.dtype)
        for n in range(t * chunk, min(n_, (t + 1) * chunk)):
            _pad_block(x[n : n + 1], ph, pw, 0, plane, xp)
            for g in range(groups):
                for fi in range(fg):
                    for i in range(oh_):
                        _copy_row(dyw[fi, i * wp :], dy[n, g * fg + fi, i], ow_)
                # dw_g += dy_wide @ col_wide^T
                dyp = pack_a(dyw)
                pwg = part_w[t, g * fg : (g + 1) * fg]
                for j0 in range(0, ck, NC):
                    nc = min(NC, ck - j0)
                    for k0 in range(0, pwide, KC):
                        kc = min(KC, pwide - k0)
                        _pack_shifted_t(xp, g * cg, k0, kc, j0, nc, off, kk, ck, bp)
                        kernel_block(dyp, a_offset(fg, k0), fg, kc, bp, nc, pwg, j0, True, tile)
                if not need_dx:
                    continue
                # dx: dcol = w_g^T @ dy_wide, each row added back at its shift
                gemm_packed(wtpk[g], ck, dyw, dcol, False)
                dxp[:] = 0
                for r in range(ck):
                    c = r // kk
                    dst = dxp[c, off[r - c * kk] :]
                    src = dcol[r]
                    for q in range(pwide):
                        dst[q] += src[q]
                for c in range(cg):
                    for i in range(h_):
                        _copy_row(dx[n, g * cg + c, i], dxp[c, (i + ph) * wp + pw :], w_)
            for f in range(f_):
                part_b[t, f] += _dot_sum(dy[n, f].ravel(), p_)
    dw2, db = _sum_chunks(part_w, part_b)
    return dx, dw2.reshape(w.shape), db


# --- validating wrappers ------------------------------------------------------------


def _use_direct(cg, sh, sw):
    """The wide-grid loops for few channels per group at stride 1 (measured:
    at stride 2 im2col + BLAS wins even for 3 or 8 input channels)."""
    return cg <= _DIRECT_MAX_CG and sh == sw == 1


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
    oh = (h + 2 * ph - ekh) // sh + 1
    ow = (wd + 2 * pw - ekw) // sw + 1
    if h + 2 * ph < ekh or wd + 2 * pw < ekw:
        raise ValueError(
            f"{fn}: the kernel spans {ekh}x{ekw} (with dilation {dh}x{dw}), larger than "
            f"the padded input {h + 2 * ph}x{wd + 2 * pw}"
        )
    v.output_size(fn, (n, f, oh, ow), x.dtype, "stride, pad and dilation")
    v.output_size(fn, (c, h + 2 * ph, wd + 2 * pw), x.dtype, "pad")  # a padded sample
    return (sh, sw, ph, pw, dh, dw, groups), oh, ow


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
    if _use_direct(w.shape[1], sh, sw) and w.shape[0] // groups < _GEMM_MIN_FG:
        plane = (x.shape[2] + 2 * ph) * (x.shape[3] + 2 * pw)
        spb = _block_samples(x.shape[0], plane, _DIRECT_CHUNKS)
        return _conv2d_forward_wide(x, w, b, ph, pw, dh, dw, groups, oh, ow, spb)
    nchunks = max(1, min(x.shape[0], _CHUNKS))
    if sh == sw == 1:
        return _conv2d_forward_wgemm(x, w, b, ph, pw, dh, dw, groups, oh, ow, nchunks)
    return _conv2d_forward_gemm(x, w, b, *hp, oh, ow, nchunks)


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
    if _use_direct(cg, sh, sw):
        nchunks = min(n, _DIRECT_CHUNKS)
        spb = _block_samples(-(-n // nchunks), (h + 2 * ph) * (wd + 2 * pw), 1)
        dx, dw_, db = _conv2d_backward_wide(dy, x, w, ph, pw, dh, dw, groups, nchunks, need_dx, spb)
    elif sh == sw == 1:
        dx, dw_, db = _conv2d_backward_wgemm(dy, x, w, ph, pw, dh, dw, groups, min(n, _CHUNKS), need_dx)
    else:
        dx, dw_, db = _conv2d_backward_gemm(dy, x, w, *hp, min(n, _CHUNKS), need_dx)
    return (dx if need_dx else None), dw_, db
