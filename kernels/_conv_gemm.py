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
``kernel_block_at``): no im2col buffer, no packing of the large operand. The
Wq - OW junk columns per output row cost (Wq - OW) / Wq extra work and are
cropped (forward) or zero (dy on the grid, backward). With stride 1 there is
one phase, the padded planes themselves, whose rows share their padding
(Wq = W + pw, :func:`_phase_grid`).

The three products: forward ``y_g = w_g @ col`` (M = Fg, K = Cg*KH*KW);
``dw_g^T += col @ dy_g^T`` per sample (K = the grid positions); and dx. At
stride 1, dx is the transposed convolution, one more product of the forward
kind, ``dx_g = wc_g @ dycol`` (M = Cg, K = Fg*KH*KW) whose rows are runs of
dy's zero-margined planes (:func:`_dy_plane`), straight onto dx's grid.
With a column stride above 1 the same holds per stride phase: each phase of
dx is a transposed convolution with the taps of that phase
(:func:`_dx_phases`), K = Fg times its taps. Otherwise (few channels, or a
row stride only) ``dcol = w_g^T @ dy_g`` (K = Fg) is added row by row into
the phase planes (col2im), then unpadded. The transposed forms do the same
multiply-adds with a longer K (128 filters: 1152 instead of 128 at stride
1, so fewer loads and stores of C per multiply-add) and no col2im pass:
conv_deep's dx went from 37 to 32 ms, conv_mid's from about 100 to 65 ms
(1 thread, process CPU, shared Zen 3); conv_strided's from 4.1 to 3.3-3.4 ms
(2 threads, Zen 5, 2026-12-02, best of 15 of a script timing backward with
and without dx; dx is 604M multiply-adds).

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


# External (called once per sample): linked into each caller instead, it was
# optimised again in the caller's module into other, slower code (5.4 KB
# against 3.3 KB alone), and which copy ran depended on whether the process
# compiled the kernel or loaded it from the cache. conv_strided's forward pass,
# 1 thread, cache-loaded, Xeon: 12.4-12.9 -> 11.4-11.8 ms (5 alternations).
@jit(external=True)
def _pad_phases(xn, ph, pw, sh, sw, hq, wq, out):
    """The zero-padded planes of one sample ``xn`` (C, H, W) split into their
    ``sh*sw`` stride phases: ``out[c*sh*sw + a*sw + b, u*wq + v] =
    x_pad[c, u*sh + a, v*sw + b]``, zero in the padding and beyond its edge.
    With stride 1 this is just the padded, flattened planes, their rows
    sharing their padding (:func:`_phase_grid`). Writes the values only:
    ``out`` must be zero elsewhere, as a buffer from :func:`_rows_with_slack`
    is, and stays so from sample to sample (same geometry, same positions
    written), which spares a memset of the planes per sample (conv_deep's x
    and dy planes: 320 KB a sample)."""
    c_, h_, w_ = xn.shape
    if sw == 2:
        lo0, hi0 = _valid_range(-pw, 2, w_, wq)
        lo1, hi1 = _valid_range(1 - pw, 2, w_, wq)
        if hi0 - lo0 == hi1 - lo1:
            _pad_column_pairs(xn, ph, pw, sh, hq, wq, out, lo0, lo1, hi0 - lo0)
            return
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
def _pad_column_pairs(xn, ph, pw, sh, hq, wq, out, lo0, lo1, n):
    """:func:`_pad_phases` for column stride 2 when both column phases take
    ``n`` values of a row: their first source columns are adjacent (the first
    even and the first odd column inside the padding), so one pass reads a
    row's ``2n`` values in order and deals them out in pairs. The two
    strided passes (one per phase) it replaces took 30 us for conv_strided's
    64 x 32 x 32 sample, this 17 us (Xeon, one thread, warm loop)."""
    c_, h_ = xn.shape[0], xn.shape[1]
    s0, s1 = lo0 * 2 - pw, lo1 * 2 + 1 - pw
    # phase "e" starts on the lower source column, "o" one column later
    if s0 < s1:
        first, le, be, lo_, bo = s0, lo0, 0, lo1, 1
    else:
        first, le, be, lo_, bo = s1, lo1, 1, lo0, 0
    for a in range(sh):
        ulo, uhi = _valid_range(a - ph, sh, h_, hq)
        for c in range(c_):
            pe = out[(c * sh + a) * 2 + be]
            po = out[(c * sh + a) * 2 + bo]
            for u in range(ulo, uhi):
                src = xn[c, u * sh + a - ph, first:]
                de = pe[u * wq + le :]
                do = po[u * wq + lo_ :]
                for q in range(n):
                    de[q] = src[2 * q]
                    do[q] = src[2 * q + 1]


@jit(external=True)  # once per sample and group, as _pad_phases
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
    every tap's phase and offset (:func:`_phase_taps`).

    With column stride 1 the rows share their padding: row ``u`` holds its
    ``pw`` left zeros and its W values at ``u*wq .. u*wq + pw + W``, and the
    next row's left zeros serve as its right padding, so ``wq = W + pw``
    instead of ``W + 2pw`` (at least OW, so that an output row fits in a grid
    row; ``pw`` more zeros after the last row end the plane). A tap reading
    right of the row, ``x_pad[u, pw + W + e]`` with ``e < pw``, lands on
    ``u*wq + pw + W + e = (u + 1)*wq + e``: a left zero of the next row. Each
    grid row then has ``wq - OW = KW - 1 - pw`` junk columns (3x3, pad 1: one
    instead of two; pad 2: none), junk the three products compute and drop
    (16x16 planes: 271 grid positions for 256 outputs instead of 286; 8x8:
    71 instead of 78)."""
    hq = (h_ + 2 * ph + sh - 1) // sh
    if sw == 1:
        wq = max(w_ + pw, ow_)
        plane = hq * wq + pw
    else:
        wq = (w_ + 2 * pw + sw - 1) // sw
        plane = hq * wq
    tpl, off = _phase_taps(kh_, kw_, sh, sw, dh, dw, wq)
    return sh * sw, hq, wq, plane, (oh_ - 1) * wq + ow_, tpl, off


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


#: Rows of dw^T per task when the backward pass sums its partials: enough
#: work per task to hide the task's start (32 rows of 128 filters, 8 chunks:
#: 32K adds), small enough that conv_deep's 1152 rows make 36 tasks. Not
#: measured against other values; any value gives the same bits (each row is
#: summed in chunk order by one task). Kept beside the kernel it sizes.
_SUM_ROWS = 32


@jit()
def _chunk_start(n_, nchunks, t):
    """First sample of batch chunk ``t``: the chunks differ by at most one
    sample (100 samples in 8 chunks: 12 or 13 each, 50 per thread at 2
    threads; ceil-sized chunks gave 13 x 7 + 9, 52 against 48)."""
    return np.int64(t) * n_ // nchunks  # prange's index may be unsigned


@jit()
def _dy_plane(kh_, kw_, sh, sw, ph, pw, dh, dw, oh_, h_, wq):
    """Where the backward pass puts each sample's dy: on zero planes of the
    grid's width ``wq``, dy[f, r, s] at ``(a0 + r)*wq + b0 + s``. Returns
    ``(a0, b0, plane)``.

    At stride 1 the zero margins (``a0`` rows above, ``b0`` columns left,
    rows below, and the next row's left zeros on the right, as in
    :func:`_phase_grid`) are those of the transposed convolution: dx_pad[u, v]
    = sum_{f,i,j} w[f, c, i, j] * dy[u - i*dh, v - j*dw], so dx at (y, z) on a
    grid of width ``wq`` reads tap (f, i, j) at the fixed shift ``(ph - i*dh +
    a0)*wq + pw - j*dw + b0`` (:func:`_dx_taps`), zero wherever dy has no
    value: dx is a GEMM with K = Fg*KH*KW reading dy's plane in place, like
    the forward pass. With a column stride above 1 they are those of
    :func:`_dx_phases` (the same reasoning per stride phase); with row stride
    only (``sw = 1``, rows sharing their padding) ``a0 = b0 = 0``. Either way the run of
    ``pwide`` from ``a0*wq + b0`` is dy on the forward grid, junk columns
    zero (``b0 + OW <= wq``), which dw reads."""
    if sh == 1 and sw == 1:
        a0 = max(0, (kh_ - 1) * dh - ph)
        b0 = max(0, (kw_ - 1) * dw - pw)
        return a0, b0, (a0 + max(oh_, h_ + ph) + 1) * wq
    if sw > 1:
        # The margins of the phase-by-phase transposed convolution
        # (_dx_phases): tap (i, j) reads dy (i*dh)//sh rows up and
        # (j*dw)//sw columns left of the phase grid's position. They always
        # fit the grid's width: b0 + OW <= ceil(Wp/sw) = wq. Rows to the
        # phase planes' height, plus one for the reads that run on into the
        # next row's left margin.
        a0 = (kh_ - 1) * dh // sh
        b0 = (kw_ - 1) * dw // sw
        return a0, b0, (a0 + (h_ + 2 * ph + sh - 1) // sh + 1) * wq
    return 0, 0, (oh_ + 1) * wq


@jit()
def _dx_taps(kh_, kw_, ph, pw, dh, dw, a0, b0, wq, fg, groups, dplane):
    """Row table of stride 1's dx GEMM: row ``fi*KK + t`` of group ``g``'s
    K (filter ``g*Fg + fi``, tap ``t = i*KW + j``) starts at
    ``(g*Fg + fi)*dplane + (ph - i*dh + a0)*wq + pw - j*dw + b0`` of the flat
    dy planes (:func:`_dy_plane`)."""
    kk = kh_ * kw_
    tab = np.empty((groups, fg * kk), np.int64)
    for g in range(groups):
        for fi in range(fg):
            for i in range(kh_):
                for j in range(kw_):
                    tab[g, fi * kk + i * kw_ + j] = (g * fg + fi) * dplane + (ph - i * dh + a0) * wq + pw - j * dw + b0
    return tab


@jit()
def _weights_by_channel(w, groups):
    """``wc[c, fi*KK + t] = w[g*Fg + fi, c - g*Cg, t]`` with ``g = c // Cg``:
    the weights input channel ``c`` sees, the A operand of stride 1's dx."""
    f_, cg, kh_, kw_ = w.shape
    fg = f_ // groups
    kk = kh_ * kw_
    wr = w.reshape(f_, cg, kk)
    wc = np.empty((cg * groups, fg * kk), w.dtype)
    for c in range(cg * groups):
        g = c // cg
        for fi in range(fg):
            for k in range(kk):
                wc[c, fi * kk + k] = wr[g * fg + fi, c - g * cg, k]
    return wc


@links_gemm("pack_a_rows_into")
@jit(external=True)
def _dx_phases(w, groups, tpl, off, sh, sw, ph, pw, h_, w_, hq, wq, a0, b0, dplane, pstart, xtab, wcpk):
    """The strided dx as one transposed convolution per stride phase.

    dx_pad at ``(U*sh + a, V*sw + b)`` (phase ``(a, b)``, position ``(U, V)``
    of its plane) gathers exactly the taps ``(i, j)`` with ``i*dh % sh = a``
    and ``j*dw % sw = b`` (the tap's forward phase ``tpl``, from
    :func:`_phase_taps`):

        dxp_ab[c, U, V] = sum_{f, (i, j) of phase ab} w[f, c, i, j]
                          * dy[f, U - (i*dh)//sh, V - (j*dw)//sw]

    On the phase grid of width ``wq`` that is a GEMM per phase and group,
    ``dx_ab = wc_ab @ dycol_ab`` (M = Cg, K = Fg * taps of the phase), whose
    B rows are runs of dy's zero-margined planes (:func:`_dy_plane`) at a
    fixed shift per tap (its forward offset ``off`` on the grid, taken
    back): the stride-1 form (:func:`_dx_taps`) phase by phase.
    Same multiply-adds as ``dcol = w_g^T @ dy`` and col2im, with K up to
    Fg*KH*KW/(sh*sw) long instead of Fg, and no adds into phase planes
    (conv_strided's dx ran at 60% of the GEMM's peak in that form).

    Fills ``pstart`` (the phases' first taps in phase order, ``sh*sw + 1``
    long, zeroed), ``xtab`` (groups, Fg*KH*KW): phase ``p``'s B rows from
    ``Fg*pstart[p]``, row ``fi*T + tt`` for filter ``fi`` and the phase's
    ``tt``-th tap, starting where phase position ``(ulo, vlo)`` (the first
    real dx row and column of the phase) reads; and ``wcpk`` (groups, ...):
    phase ``p``'s packed A from ``ceil(Cg/MR)*MR*Fg*pstart[p]``. An
    external symbol (``_extcall``): the parallel kernel holds a call, not
    this code (1 s of the kernel's compile time with both helpers linked)."""
    f_, cg, kh_, kw_ = w.shape
    fg = f_ // groups
    kk = kh_ * kw_
    nph = sh * sw
    for t in range(kk):
        pstart[tpl[t] + 1] += 1
    for p in range(nph):
        pstart[p + 1] += pstart[p]
    order = np.empty(kk, np.int64)  # taps in phase order
    fill = pstart[:nph].copy()
    for t in range(kk):
        order[fill[tpl[t]]] = t
        fill[tpl[t]] += 1
    wr = w.reshape(f_, cg, kk)
    cpad = (cg + MR - 1) // MR * MR
    for p in range(nph):
        taps = pstart[p + 1] - pstart[p]
        if taps == 0:
            continue
        a = p // sw
        bb = p - a * sw
        ulo = _valid_range(a - ph, sh, h_, hq)[0]
        vlo = _valid_range(bb - pw, sw, w_, wq)[0]
        wcp = np.empty((cg * groups, fg * taps), w.dtype)
        for g in range(groups):
            for fi in range(fg):
                for tt in range(taps):
                    t = order[pstart[p] + tt]
                    xtab[g, fg * pstart[p] + fi * taps + tt] = ((g * fg + fi) * dplane + (a0 + ulo) * wq + b0 + vlo
                                                                - off[t])
                    for c in range(cg):
                        wcp[g * cg + c, fi * taps + tt] = wr[g * fg + fi, c, t]
        pk = _pack_weights(wcp, groups, np.bool_(False))
        o = cpad * fg * pstart[p]
        # a loop, not a slice assignment: that one's shape-mismatch error
        # (formatted with the shapes) cost 2 s of compile time
        for g in range(groups):
            for e in range(pk.shape[1]):
                wcpk[g, o + e] = pk[g, e]


@links_gemm("kernel_block_bt")
@jit()
def _product_on_grid(apk, m_, k_, b, btab, ncols, c, tile):
    """``c[:, :ncols] = A @ B`` in NC x KC blocks: A (``m_`` x ``k_``) packed
    by :func:`_pack_weights`, B's row ``k`` read in place at ``b[btab[k]:]``
    (a run of a plane). The forward pass (A the weights, B the im2col rows)
    and stride 1's dx (A the weights by channel, B the transposed taps)."""
    for j0 in range(0, ncols, NC):
        nc = min(NC, ncols - j0)
        for k0 in range(0, k_, KC):
            kc = min(KC, k_ - k0)
            kernel_block_bt(apk, a_offset(m_, k0), m_, kc, b, btab, k0, j0, nc, c, j0, k0 > 0, tile)


@links_gemm("kernel_block_bt")
@jit(external=True)
def _dx_phases_product(dxg, pstart, apk, btab, dyzf, dxw, tile, sh, sw, ph, pw, hq, wq, fg):
    """One sample's and group's dx, ``dxg`` (Cg, H, W), from the products of
    :func:`_dx_phases`: phase ``p``'s over the rows and columns of its grid
    that hold real dx positions (from ``(ulo, vlo)``) into ``dxw[p]``, then
    every dx row gathered from its phases' rows. ``dxw`` (phases, Cg, Hq*Wq)
    starts zeroed, and a phase without taps (stride beyond the kernel's
    reach) is never written: its dx positions read zeros. An external
    symbol, as :func:`_dx_phases`."""
    cg, h_, w_ = dxg.shape
    cpad = (cg + MR - 1) // MR * MR
    for p in range(sh * sw):
        taps = pstart[p + 1] - pstart[p]
        a = p // sw
        bb = p - a * sw
        ulo, uhi = _valid_range(a - ph, sh, h_, hq)
        vlo, vhi = _valid_range(bb - pw, sw, w_, wq)
        if taps > 0 and ulo < uhi and vlo < vhi:
            _product_on_grid(apk[cpad * fg * pstart[p] :], cg, fg * taps, dyzf, btab[fg * pstart[p] :],
                             (uhi - 1 - ulo) * wq + vhi - vlo, dxw[p], tile)
    # Gather: where each dx row's values start in dxw (flat), per column
    # phase; worked out once per row, not per channel: the rows are short
    # (conv_strided: 32 values), so per-row set-up costs as much as the copy.
    hw = dxw.shape[2]
    src = dxw.reshape(dxw.size)
    dst = dxg.reshape(dxg.size)
    start = np.empty((h_, sw), np.int64)
    first = np.empty(sw, np.int64)  # first dx column of each column phase
    for y in range(h_):
        a = (y + ph) % sh
        r0 = ((y + ph) // sh - _valid_range(a - ph, sh, h_, hq)[0]) * wq
        for bb in range(sw):
            vlo = _valid_range(bb - pw, sw, w_, wq)[0]
            first[bb] = vlo * sw + bb - pw
            start[y, bb] = (a * sw + bb) * cg * hw + r0
    last = np.empty(cg * h_ if sw == 2 and w_ % 2 else 0, dxg.dtype)
    for c in range(cg):
        for y in range(h_):
            d0 = (c * h_ + y) * w_
            if sw == 2:
                # Both column phases in one loop, stores in order: dx[y, z]
                # for z = 2q + first[b] comes from phase b's V = vlo + q.
                e = start[y, 0] + c * hw
                o = start[y, 1] + c * hw
                if first[0] == 1:
                    e, o = o, e
                half = w_ // 2
                # Views indexed by the bare loop variable: no wraparound test
                # per access (flat offsets: 4x slower). An odd width's last
                # column is written in a pass of its own: its store in this
                # loop made the row 5x slower.
                row = dst[d0 : d0 + w_]
                ev = src[e : e + half]
                od = src[o : o + half]
                for q in range(half):
                    row[2 * q] = ev[q]
                    row[2 * q + 1] = od[q]
                if w_ % 2:
                    last[c * h_ + y] = src[e + half]
            else:
                for bb in range(sw):
                    cnt = (w_ - first[bb] + sw - 1) // sw
                    if cnt > 0:
                        row = dst[d0 + first[bb] : d0 + w_]
                        ph_row = src[start[y, bb] + c * hw :]
                        for q in range(cnt):
                            row[q * sw] = ph_row[q]
    for r in range(last.size):
        dst[r * w_ + w_ - 1] = last[r]


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
            _product_on_grid(wpk[g], fg, ck, xpf, tab[g], pwide, yw, tile)
            for fi in range(fg):
                f = g * fg + fi
                bv = b[f]
                for i in range(oh_):
                    dst = y[n, f, i]
                    src = yw[fi, i * wq :]
                    for q in range(ow_):
                        dst[q] = src[q] + bv


@links_gemm("kernel_block_bt", "pack_a_rows_into")
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
    for t in prange(nchunks):
        t0 = np.int64(t)  # prange's index is uint64, t + 1 int64: one _chunk_start for both
        _conv2d_forward_gemm_samples(x, b, wpk, tab, y, _chunk_start(n_, nchunks, t0), _chunk_start(n_, nchunks, t0 + 1),
                                     sh, sw, ph, pw, groups, ck, nph, hq, wq, plane, pwide)
    return y


@links_gemm("kernel_block_at", "kernel_block_bt", "pack_b")
@jit(external=True)
def _conv2d_backward_gemm_samples(dy, x, wtpk, wcpk, tab, dtab, xtab, pstart, tpl, off, dx, part_wt, part_b, lo, hi,
                                  sh, sw, ph, pw, groups, nph, hq, wq, plane, pwide, kbw, a0, b0, dplane, need_dx, unit,
                                  phased):
    """Samples ``lo .. hi - 1`` of :func:`_conv2d_backward_gemm` into one
    chunk's partials ``part_wt`` (groups, CK, Fg; its first product stores,
    the others add) and ``part_b`` (F,) (one task of its parallel loop; an
    external symbol, see ``_extcall``); dx as the transposed convolution at
    stride 1 (``unit``) or one per stride phase (``phased``,
    :func:`_dx_phases`), else as col2im."""
    f_, oh_, ow_ = dy.shape[1], dy.shape[2], dy.shape[3]
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    cg = c_ // groups
    fg = f_ // groups
    ck = part_wt.shape[1]
    kk = ck // cg
    p_ = oh_ * ow_
    mpan = (ck + MR - 1) // MR
    nkb = (fg + KC - 1) // KC
    fk = fg * kk
    pwx = (h_ - 1) * wq + w_ if unit else 0
    s0 = a0 * wq + b0
    xpf, xp = _rows_with_slack(c_ * nph, plane, dy)
    dyzf, dyz = _rows_with_slack(f_, dplane, dy)
    dyv = dyz[:, s0 : s0 + pwide]  # dy on the forward grid, junk columns zero
    ncx = min(NC, pwide) if need_dx and not unit and not phased else 0
    dcol = np.empty((MR, ncx), dy.dtype)
    dxp = np.empty((cg * nph if ncx else 0, plane), dy.dtype)
    dxw = np.empty((cg if need_dx and unit else 0, pwx), dy.dtype)
    dxp3 = np.zeros((nph if need_dx and phased else 0, cg, hq * wq), dy.dtype)
    bp = b_buffer(kbw, fg, dcol)  # a 2-D array of dy's dtype: the GEMM's own b_buffer signature
    tile = np.empty((MR, tile_cols(dy)), dy.dtype)
    for n in range(lo, hi):
        _pad_phases(x[n], ph, pw, sh, sw, hq, wq, xp)
        # strides as int64, not literal 1s: one compiled _pad_phases for both calls
        _pad_phases(dy[n], a0, b0, np.int64(1), np.int64(1), dplane // wq, wq, dyz)
        for g in range(groups):
            # dw_g^T (+)= col_wide @ dy_wide^T
            for k0 in range(0, pwide, kbw):
                kc = min(kbw, pwide - k0)
                pack_b(dyv.T, k0, kc, g * fg, fg, bp)
                kernel_block_at(xpf, tab[g], k0, ck, kc, bp, fg, part_wt[g], 0, n > lo or k0 > 0, tile)
            if not need_dx:
                continue
            if unit:
                # dx_g on the grid = wc_g @ dycol, dycol's rows read in place
                # from dy's planes; then cropped
                _product_on_grid(wcpk[g], cg, fk, dyzf, xtab[g], pwx, dxw, tile)
                for c in range(cg):
                    for i in range(h_):
                        _copy_row(dx[n, g * cg + c, i], dxw[c, i * wq :], w_)
                continue
            if phased:
                _dx_phases_product(dx[n, g * cg : (g + 1) * cg], pstart, wcpk[g], xtab[g], dyzf, dxp3, tile,
                                   sh, sw, ph, pw, hq, wq, fg)
                continue
            # dx: dcol = w_g^T @ dy_wide, MR rows at a time, each row added
            # at once (while in L1) into its phase plane at its shift; dcol's
            # junk columns are zero.
            dxp[:] = 0
            for j0 in range(0, pwide, NC):
                nc = min(NC, pwide - j0)
                for ip in range(mpan):
                    rows = min(MR, ck - ip * MR)
                    for kbi in range(nkb):
                        kc = min(KC, fg - kbi * KC)
                        a_off = a_offset(ck, kbi * KC) + ip * MR * kc
                        kernel_block_bt(wtpk[g], a_off, rows, kc, dyzf, dtab[g], kbi * KC, j0, nc, dcol, 0, kbi > 0, tile)
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


@links_gemm("kernel_block_at", "kernel_block_bt", "pack_a_rows_into", "pack_b")
@jit(parallel=True)
def _conv2d_backward_gemm(dy, x, w, sh, sw, ph, pw, dh, dw, groups, nchunks, need_dx, transposed_dx):
    n_, f_, oh_, ow_ = dy.shape
    _, c_, h_, w_ = x.shape
    _, cg, kh_, kw_ = w.shape
    fg = f_ // groups
    kk = kh_ * kw_
    ck = cg * kk
    nph, hq, wq, plane, pwide, tpl, off = _phase_grid(h_, w_, kh_, kw_, sh, sw, ph, pw, dh, dw, oh_, ow_)
    mpan = (ck + MR - 1) // MR
    tab = _row_table(cg, groups, tpl, off, nph, plane, mpan * MR)
    a0, b0, dplane = _dy_plane(kh_, kw_, sh, sw, ph, pw, dh, dw, oh_, h_, wq)
    # dx: at stride 1, where the wrapper chose it (enough input channels to
    # fill the micro-kernel's rows: conv._transposed_dx), a GEMM over K =
    # Fg*KK reading dy's planes in place (the transposed convolution,
    # _dy_plane), straight onto dx's grid; otherwise dcol = w_g^T @ dy_wide
    # (K = Fg) added tap by tap into the phase planes (col2im). The unused
    # operands are empty.
    unit = transposed_dx and sh == 1 and sw == 1
    phased = transposed_dx and sw > 1
    pstart = np.zeros(nph + 1, np.int64)
    if unit and need_dx:
        xtab = _dx_taps(kh_, kw_, ph, pw, dh, dw, a0, b0, wq, fg, groups, dplane)
        wcpk = _pack_weights(_weights_by_channel(w, groups), groups, np.bool_(False))
        wtpk = np.empty((groups, 0), dy.dtype)
    elif phased and need_dx:
        xtab = np.zeros((groups, fg * kk), np.int64)
        wcpk = np.empty((groups, (cg + MR - 1) // MR * MR * fg * kk), dy.dtype)
        _dx_phases(w, groups, tpl, off, sh, sw, ph, pw, h_, w_, hq, wq, a0, b0, dplane, pstart, xtab, wcpk)
        wtpk = np.empty((groups, 0), dy.dtype)
    else:
        xtab = np.empty((groups, 0), np.int64)
        wcpk = np.empty((groups, 0), dy.dtype)
        wtpk = _pack_weights(w.reshape(f_, ck), groups, np.bool_(True)) if need_dx else np.empty((groups, 0), dy.dtype)
    dtab = np.empty((groups, fg), np.int64)  # rows of dy on the forward grid
    for g in range(groups):
        for fi in range(fg):
            dtab[g, fi] = (g * fg + fi) * dplane + a0 * wq + b0
    dx = np.empty((n_ if need_dx else 0, c_, h_, w_), dy.dtype)
    # Per-chunk partials, summed in chunk order at the end: race-free and
    # independent of the thread count. dw is summed transposed, dw_g^T =
    # col_wide @ dy_wide^T, so that the large operand (the im2col matrix) is
    # the one read in place and only dy_wide (Fg rows) is packed. Not zeroed:
    # each chunk's first product stores (a serial memset of 4.7 MB for
    # conv_deep, while the other threads waited).
    part_wt = np.empty((nchunks, groups, ck, fg), dy.dtype)
    part_b = np.zeros((nchunks, f_), dy.dtype)
    # K (the grid positions) of dw in near-equal blocks: a short last block
    # costs a full pass of C loads and stores for little work.
    nkw = (pwide + KC - 1) // KC
    kbw = (pwide + nkw - 1) // nkw
    for t in prange(nchunks):
        t0 = np.int64(t)
        _conv2d_backward_gemm_samples(dy, x, wtpk, wcpk, tab, dtab, xtab, pstart, tpl, off, dx, part_wt[t], part_b[t],
                                      _chunk_start(n_, nchunks, t0), _chunk_start(n_, nchunks, t0 + 1), sh, sw, ph, pw,
                                      groups, nph, hq, wq, plane, pwide, kbw, a0, b0, dplane, need_dx, unit, phased)
    db = np.empty(f_, dy.dtype)
    for f in range(f_):
        s = part_b[0, f]
        for k in range(1, nchunks):
            s += part_b[k, f]
        db[f] = s
    # dw: the partials summed in chunk order (contiguous adds of dw^T's rows)
    # and transposed, blocks of rows of dw^T in parallel: serial, this tail
    # took 1-1.5 ms of conv_deep's 30 ms backward at 2 threads while the
    # other thread waited. Each block writes its own columns of dw.
    dw2 = np.empty((f_, ck), dy.dtype)
    nrt = groups * ck
    for rb in prange((nrt + _SUM_ROWS - 1) // _SUM_ROWS):
        acc = np.empty(fg, dy.dtype)
        for rr in range(rb * _SUM_ROWS, min(nrt, (rb + 1) * _SUM_ROWS)):
            g = rr // ck
            r = rr - g * ck
            first = part_wt[0, g, r]
            for fi in range(fg):
                acc[fi] = first[fi]
            for k in range(1, nchunks):
                part = part_wt[k, g, r]
                for fi in range(fg):
                    acc[fi] += part[fi]
            for fi in range(fg):
                dw2[g * fg + fi, r] = acc[fi]
    return dx, dw2.reshape(w.shape), db
