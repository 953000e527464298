"""Convolution as a GEMM on the stride-phase planes (many channels per
group, any stride): no im2col matrix is built.

Split each zero-padded plane into its sh*sw stride phases (P[a, b][u, v] =
x_pad[u*sh + a, v*sw + b], each of Hq x Wq = ceil(Hp/sh) x ceil(Wp/sw)) and
flatten them: output (oh, ow) on the grid q = oh*Wq + ow reads tap (i, j) at
one fixed phase and shift, so row (c, i, j) of the im2col matrix on that grid
is a contiguous run of one phase plane (Pw = (OH - 1)*Wq + OW long). The GEMM
(:mod:`numbanet.kernels._gemm`, numbanet's register-blocked product with a
micro-kernel per ISA family, through the external symbols of
:mod:`._gemm_ext`) reads those runs in place (``kernel_block_bt`` /
``kernel_block_at``): no im2col buffer, no packing of the large operand, and
col2im is one contiguous add per row. The Wq - OW junk columns per output row
cost (Wq - OW) / Wq extra work and are cropped (forward) or zero (dy on the
grid, backward). With stride 1 there is one phase: the padded planes
themselves.

The GEMM runs serially inside each batch-chunk task, with the weights packed
once per call; the extra memory is one sample's phase planes and small
buffers per task. dw and db are summed from per-chunk partials in chunk
order, so the result never depends on the threads.

Kernels: ``_conv2d_forward_gemm``, ``_conv2d_backward_gemm`` (each declares
the GEMM symbols it calls with ``@links_gemm``); the public wrappers and the
strategy choice are in :mod:`numbanet.kernels.conv`.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._config import jit
from ._conv_grid import _copy_row, _dot_sum, _phase_taps
from ._gemm import KC, MR, NC, a_offset, b_buffer, tile_cols
from ._gemm_ext import kernel_block_at, kernel_block_bt, links_gemm, pack_a_rows_into, pack_b


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


@links_gemm("kernel_block_bt")
@jit(external=True)
def _conv2d_forward_gemm_samples(x, b, wpk, tab, y, lo, hi, sh, sw, ph, pw, groups, ck, nph, hq, wq, plane, pwide):
    """Samples ``lo .. hi - 1`` of :func:`_conv2d_forward_gemm` (one task of
    its parallel loop; an external symbol, so the kernel's parallel loop holds
    a call instead of this code, see ``_extcall``)."""
    c_ = x.shape[1]
    f_, oh_, ow_ = y.shape[1], y.shape[2], y.shape[3]
    fg = f_ // groups
    xpf, xp = _rows_with_slack(c_ * nph, plane, x)
    yw = np.empty((fg, pwide), x.dtype)
    tile = np.empty((MR, tile_cols(y)), x.dtype)
    for n in range(lo, hi):
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


@links_gemm("pack_a_rows_into")
@jit(parallel=True)
def _conv2d_forward_gemm(x, w, b, sh, sw, ph, pw, dh, dw, groups, oh_, ow_, nchunks):
    n_, c_, h_, w_ = x.shape
    f_, cg, kh_, kw_ = w.shape
    ck = cg * kh_ * kw_
    nph, hq, wq, plane, pwide, tpl, off = _phase_grid(h_, w_, kh_, kw_, sh, sw, ph, pw, dh, dw, oh_, ow_)
    tab = _row_table(cg, groups, tpl, off, nph, plane, ck)
    w2 = w.reshape(f_, ck)
    wpk = _pack_weights(w2, groups, np.bool_(False))
    y = np.empty((n_, f_, oh_, ow_), x.dtype)
    chunk = (n_ + nchunks - 1) // nchunks
    for t in prange(nchunks):
        lo = np.int64(t) * chunk
        _conv2d_forward_gemm_samples(x, b, wpk, tab, y, lo, min(n_, lo + chunk), sh, sw, ph, pw, groups, ck,
                                     nph, hq, wq, plane, pwide)
    return y


@links_gemm("kernel_block_at", "kernel_block_bt", "pack_b")
@jit(external=True)
def _conv2d_backward_gemm_samples(dy, x, wtpk, tab, dtab, tpl, off, dx, part_wt, part_b, lo, hi,
                                  sh, sw, ph, pw, groups, nph, hq, wq, plane, pwide, kbw, need_dx):
    """Samples ``lo .. hi - 1`` of :func:`_conv2d_backward_gemm` into one
    chunk's partials ``part_wt`` (groups, CK, Fg) and ``part_b`` (F,) (one
    task of its parallel loop; an external symbol, see ``_extcall``)."""
    f_, oh_, ow_ = dy.shape[1], dy.shape[2], dy.shape[3]
    c_ = x.shape[1]
    cg = c_ // groups
    fg = f_ // groups
    ck = part_wt.shape[1]
    kk = ck // cg
    p_ = oh_ * ow_
    mpan = (ck + MR - 1) // MR
    nkb = (fg + KC - 1) // KC
    xpf, xp = _rows_with_slack(c_ * nph, plane, dy)
    dywf, dyw = _rows_with_slack(fg, pwide, dy)  # junk columns stay zero
    dcol = np.empty((MR, min(NC, pwide)), dy.dtype)
    dxp = np.empty((cg * nph if need_dx else 0, plane), dy.dtype)
    bp = b_buffer(kbw, fg, dy)
    tile = np.empty((MR, tile_cols(dy)), dy.dtype)
    for n in range(lo, hi):
        _pad_phases(x[n], ph, pw, sh, sw, hq, wq, xp)
        for g in range(groups):
            for fi in range(fg):
                for i in range(oh_):
                    _copy_row(dyw[fi, i * wq :], dy[n, g * fg + fi, i], ow_)
            # dw_g^T += col_wide @ dy_wide^T
            for k0 in range(0, pwide, kbw):
                kc = min(kbw, pwide - k0)
                pack_b(dyw.T, k0, kc, 0, fg, bp)
                kernel_block_at(xpf, tab[g], k0, ck, kc, bp, fg, part_wt[g], 0, True, tile)
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
            part_b[f] += _dot_sum(dy[n, f].ravel(), p_)


@links_gemm("pack_a_rows_into")
@jit(parallel=True)
def _conv2d_backward_gemm(dy, x, w, sh, sw, ph, pw, dh, dw, groups, nchunks, need_dx):
    n_, f_, oh_, ow_ = dy.shape
    _, c_, h_, w_ = x.shape
    _, cg, kh_, kw_ = w.shape
    fg = f_ // groups
    kk = kh_ * kw_
    ck = cg * kk
    nph, hq, wq, plane, pwide, tpl, off = _phase_grid(h_, w_, kh_, kw_, sh, sw, ph, pw, dh, dw, oh_, ow_)
    mpan = (ck + MR - 1) // MR
    tab = _row_table(cg, groups, tpl, off, nph, plane, mpan * MR)
    dtab = np.empty(fg, np.int64)  # rows of dy_wide
    for fi in range(fg):
        dtab[fi] = fi * pwide
    w2 = w.reshape(f_, ck)
    wtpk = _pack_weights(w2, groups, np.bool_(True))
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
        lo = np.int64(t) * chunk
        _conv2d_backward_gemm_samples(dy, x, wtpk, tab, dtab, tpl, off, dx, part_wt[t], part_b[t], lo,
                                      min(n_, lo + chunk), sh, sw, ph, pw, groups, nph, hq, wq, plane, pwide,
                                      kbw, need_dx)
    # chunk order, in the transposed layout (contiguous adds), then transposed
    # once. Loops, not `total += part_wt[k]`: an array expression in a
    # parallel kernel compiles as a function of its own (see _config.jit).
    total = part_wt[0].copy()
    db = part_b[0].copy()
    flat = total.reshape(total.size)
    for k in range(1, nchunks):
        part = part_wt[k].reshape(total.size)
        for i in range(flat.size):
            flat[i] += part[i]
        for f in range(f_):
            db[f] += part_b[k, f]
    dw2 = np.empty((f_, ck), dy.dtype)
    for g in range(groups):
        # a loop, not dw2[rows] = total[g].T: in a parallel kernel that slice
        # assignment is a parallel loop of its own, one more gufunc to compile
        # (see _config.jit)
        tg = total[g]
        for fi in range(fg):
            row = dw2[g * fg + fi]
            for r in range(ck):
                row[r] = tg[r, fi]
    return dx, dw2.reshape(w.shape), db
