"""Direct convolution kernels on the wide grid (stride 1, few channels per
group): no column buffer, no GEMM.

With stride 1 the taps of a plane are plain shifts of one another once the
input is zero-padded to (Hp, Wp) and flattened: the output computed on a grid
of width Wp (OW valid columns, Wp - OW junk ones, cropped at the end) gets
``y_wide[q] += w[tap] * x_pad_flat[off[tap] + q]`` with
``off = i*dh*Wp + j*dw``: one long contiguous multiply-add per tap, which
vectorises fully, up to eight taps per pass (:func:`_axpy_taps`). Several
samples' padded planes lie end to end on one grid, so small images still give
long loops. dx is the same full correlation of dy padded onto that grid, dw a
set of dot products. One parallel region per call: tasks are blocks of
samples (forward) or batch chunks (backward), whose count the wrapper fixes
(:mod:`.conv`), so the summation order never depends on the threads.

Kernels: ``_conv2d_forward_direct``, ``_conv2d_backward_direct``; the public
wrappers and the strategy choice are in :mod:`numbanet.kernels.conv`.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._config import jit
from ._conv_grid import _copy_row, _dot_sum, _phase_taps


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


@jit(external=True)
def _conv2d_forward_direct_block(x, wf, b, rows, offs, y, n0, s_, ph, pw, groups):
    """Samples ``n0 .. n0 + s_ - 1`` of :func:`_conv2d_forward_direct`, their
    padded planes end to end (one task of its parallel loop; an external
    symbol, see ``_extcall``)."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    f_, oh_, ow_ = y.shape[1], y.shape[2], y.shape[3]
    cg = c_ // groups
    fg = f_ // groups
    wp = w_ + 2 * pw
    plane = (h_ + 2 * ph) * wp
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


@jit(parallel=True)
def _conv2d_forward_direct(x, w, b, ph, pw, dh, dw, groups, oh_, ow_, spb):
    n_, c_, h_, w_ = x.shape
    f_, cg, kh_, kw_ = w.shape
    wp = w_ + 2 * pw
    kk = kh_ * kw_
    off = _phase_taps(kh_, kw_, np.int64(1), np.int64(1), dh, dw, wp)[1]
    wf = w.reshape(f_, cg * kk)
    rows, offs = _flat_taps(cg, off)
    y = np.empty((n_, f_, oh_, ow_), x.dtype)
    # One task per block of `spb` samples whose padded planes lie end to end:
    # every tap is one shift over the whole block (the rows between samples
    # are junk, never copied out). A single parallel region: under load from
    # other processes every extra region end is a barrier that can stall.
    for blk in prange((n_ + spb - 1) // spb):
        n0 = np.int64(blk) * spb
        _conv2d_forward_direct_block(x, wf, b, rows, offs, y, n0, min(spb, n_ - n0), ph, pw, groups)
    return y


@jit(external=True)
def _conv2d_backward_direct_samples(dy, x, wc, rows, offs, rows_dx, offs_dx, dx, pw_k, pb_k, lo, hi,
                                    ph, pw, groups, front, spb, need_dx):
    """Samples ``lo .. hi - 1`` of :func:`_conv2d_backward_direct` into one
    chunk's partials ``pw_k`` (F, Cg*KH*KW) and ``pb_k`` (F,) (one task of its
    parallel loop; an external symbol, see ``_extcall``)."""
    f_, oh_, ow_ = dy.shape[1], dy.shape[2], dy.shape[3]
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    cg = c_ // groups
    fg = f_ // groups
    ntaps = pw_k.shape[1]
    wp = w_ + 2 * pw
    plane = (h_ + 2 * ph) * wp
    xp = np.empty((c_, spb * plane), dy.dtype)
    dyw = np.empty((f_, front + spb * plane), dy.dtype)
    acc = np.empty(spb * plane, dy.dtype)
    for n0 in range(lo, hi, spb):
        s_ = min(spb, hi - n0)
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
            pb_k[f] += _dot_sum(d, length)  # junk columns are zero
            # dw: dot products of dy_wide with the shifted input planes,
            # four taps per sweep sharing each load of dy.
            pw_f = pw_k[f]
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


@jit(parallel=True)
def _conv2d_backward_direct(dy, x, w, ph, pw, dh, dw, groups, nchunks, need_dx, spb):
    n_, f_, oh_, ow_ = dy.shape
    _, c_, h_, w_ = x.shape
    _, cg, kh_, kw_ = w.shape
    fg = f_ // groups
    kk = kh_ * kw_
    ntaps = cg * kk
    wp = w_ + 2 * pw
    plane = (h_ + 2 * ph) * wp
    off = _phase_taps(kh_, kw_, np.int64(1), np.int64(1), dh, dw, wp)[1]
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
        lo = np.int64(k) * chunk
        _conv2d_backward_direct_samples(dy, x, wc, rows, offs, rows_dx, offs_dx, dx, part_w[k], part_b[k], lo,
                                        min(n_, lo + chunk), ph, pw, groups, front, spb, need_dx)
    dwt, db = _sum_chunks(part_w, part_b)
    return dx, dwt.reshape(w.shape), db
