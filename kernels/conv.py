"""2-D convolution (cross-correlation) kernels, forward and backward.

Two strategies, chosen per shape by :func:`_use_direct`:

* **direct** loops (few input channels per group, e.g. the first layer of a
  network or depthwise convolution): no column buffer at all. Every task owns
  one output plane and sweeps the kernel taps over it; the innermost loop runs
  along an output row with the padding bounds hoisted out, so it is a
  branch-free ``y_row += w * x_row`` that LLVM vectorises for stride 1.
* **gemm** (many channels): per sample and group, im2col into one reusable
  ``(C/groups*KH*KW, OH*OW)`` buffer and one BLAS product (``np.dot`` inside
  njit). The column matrix of the whole batch is never built, so the extra
  memory is one sample's columns, not N of them.

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

__all__ = ["conv2d_forward", "conv2d_backward"]

#: Input channels per group up to which the direct loops beat im2col + BLAS.
_DIRECT_MAX_CG = 16

#: Batch chunks for the direct dw/db reduction: a fixed number (not the thread
#: count) so the summation order, hence the result, never depends on threads.
_DW_CHUNKS = 8


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


# --- direct kernels -------------------------------------------------------------


@jit(parallel=True)
def _conv2d_forward_direct(x, w, b, sh, sw, ph, pw, dh, dw, groups, oh_, ow_):
    n_, c_, h_, w_ = x.shape
    f_, cg, kh_, kw_ = w.shape
    fg = f_ // groups
    y = np.empty((n_, f_, oh_, ow_), x.dtype)
    for t in prange(n_ * f_):
        n = t // f_
        f = t - n * f_
        g = f // fg
        yp = y[n, f]
        bv = b[f]
        for i in range(oh_):
            for j in range(ow_):
                yp[i, j] = bv
        for cc in range(cg):
            xp = x[n, g * cg + cc]
            for i in range(kh_):
                off_h = i * dh - ph
                oh_lo, oh_hi = _valid_range(off_h, sh, h_, oh_)
                for j in range(kw_):
                    off_w = j * dw - pw
                    ow_lo, ow_hi = _valid_range(off_w, sw, w_, ow_)
                    wv = w[f, cc, i, j]
                    for oh in range(oh_lo, oh_hi):
                        xr = xp[oh * sh + off_h]
                        yr = yp[oh]
                        for ow in range(ow_lo, ow_hi):
                            yr[ow] += wv * xr[ow * sw + off_w]
    return y


@jit(parallel=True)
def _conv2d_backward_dx_direct(dy, w, x_shape_h, x_shape_w, c_, sh, sw, ph, pw, dh, dw, groups):
    n_, f_, oh_, ow_ = dy.shape
    _, cg, kh_, kw_ = w.shape
    fg = f_ // groups
    h_, w_ = x_shape_h, x_shape_w
    dx = np.zeros((n_, c_, h_, w_), dy.dtype)
    # One task per input plane: the scatter dx[ih, iw] += w * dy[oh, ow] of
    # all filters of the group lands in memory this task alone owns.
    for t in prange(n_ * c_):
        n = t // c_
        c = t - n * c_
        g = c // cg
        cc = c - g * cg
        dxp = dx[n, c]
        for fi in range(fg):
            f = g * fg + fi
            dyp = dy[n, f]
            for i in range(kh_):
                off_h = i * dh - ph
                oh_lo, oh_hi = _valid_range(off_h, sh, h_, oh_)
                for j in range(kw_):
                    off_w = j * dw - pw
                    ow_lo, ow_hi = _valid_range(off_w, sw, w_, ow_)
                    wv = w[f, cc, i, j]
                    for oh in range(oh_lo, oh_hi):
                        dxr = dxp[oh * sh + off_h]
                        dyr = dyp[oh]
                        for ow in range(ow_lo, ow_hi):
                            dxr[ow * sw + off_w] += wv * dyr[ow]
    return dx


@jit(parallel=True)
def _conv2d_backward_dwdb_direct(dy, x, cg, kh_, kw_, sh, sw, ph, pw, dh, dw, groups, nchunks):
    n_, f_, oh_, ow_ = dy.shape
    _, _, h_, w_ = x.shape
    fg = f_ // groups
    kk = kh_ * kw_
    chunk = (n_ + nchunks - 1) // nchunks
    # Partial sums per (filter, batch chunk); the lane buffer keeps the inner
    # loop an element-wise multiply-add (vectorisable without reassociation),
    # reduced once per (sample, tap).
    part_w = np.zeros((f_, nchunks, cg * kk), dy.dtype)
    part_b = np.zeros((f_, nchunks), dy.dtype)
    for t in prange(f_ * nchunks):
        f = t // nchunks
        k = t - f * nchunks
        g = f // fg
        lanes = np.empty(ow_, dy.dtype)
        for n in range(k * chunk, min(n_, (k + 1) * chunk)):
            dyp = dy[n, f]
            lanes[:] = 0
            for oh in range(oh_):
                for ow in range(ow_):
                    lanes[ow] += dyp[oh, ow]
            s = dy.dtype.type(0)
            for ow in range(ow_):
                s += lanes[ow]
            part_b[f, k] += s
            for cc in range(cg):
                xp = x[n, g * cg + cc]
                for i in range(kh_):
                    off_h = i * dh - ph
                    oh_lo, oh_hi = _valid_range(off_h, sh, h_, oh_)
                    for j in range(kw_):
                        off_w = j * dw - pw
                        ow_lo, ow_hi = _valid_range(off_w, sw, w_, ow_)
                        lanes[:] = 0
                        for oh in range(oh_lo, oh_hi):
                            xr = xp[oh * sh + off_h]
                            dyr = dyp[oh]
                            for ow in range(ow_lo, ow_hi):
                                lanes[ow] += dyr[ow] * xr[ow * sw + off_w]
                        s = dy.dtype.type(0)
                        for ow in range(ow_lo, ow_hi):
                            s += lanes[ow]
                        part_w[f, k, (cc * kh_ + i) * kw_ + j] += s
    dwt = np.zeros((f_, cg * kk), dy.dtype)
    db = np.zeros(f_, dy.dtype)
    for f in prange(f_):
        for k in range(nchunks):
            db[f] += part_b[f, k]
            for r in range(cg * kk):
                dwt[f, r] += part_w[f, k, r]
    return dwt.reshape(f_, cg, kh_, kw_), db


# --- im2col + BLAS kernels ----------------------------------------------------------


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
                base = oh * ow_
                if oh < oh_lo or oh >= oh_hi:
                    for ow in range(ow_):
                        cr[base + ow] = zero
                    continue
                xr = xp[oh * sh + off_h]
                for ow in range(ow_lo):
                    cr[base + ow] = zero
                for ow in range(ow_lo, ow_hi):
                    cr[base + ow] = xr[ow * sw + off_w]
                for ow in range(ow_hi, ow_):
                    cr[base + ow] = zero


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
            for oh in range(oh_lo, oh_hi):
                base = oh * ow_
                dxr = dxp[oh * sh + off_h]
                for ow in range(ow_lo, ow_hi):
                    dxr[ow * sw + off_w] += cr[base + ow]


@jit(parallel=True)
def _conv2d_forward_gemm(x, w, b, sh, sw, ph, pw, dh, dw, groups, oh_, ow_):
    n_, c_, h_, w_ = x.shape
    f_, cg, kh_, kw_ = w.shape
    fg = f_ // groups
    kk = kh_ * kw_
    p_ = oh_ * ow_
    y = np.empty((n_, f_, oh_, ow_), x.dtype)
    y3 = y.reshape(n_, f_, p_)
    w2 = w.reshape(f_, cg * kk)
    col = np.empty((cg * kk, p_), x.dtype)
    # Samples in sequence, each product on the (multi-threaded) BLAS; the
    # im2col and bias loops are split over channels.
    for n in range(n_):
        for g in range(groups):
            for cc in prange(cg):
                _im2col_plane(x[n, g * cg + cc], col, cc * kk, kh_, kw_, sh, sw, ph, pw, dh, dw, oh_, ow_)
            np.dot(w2[g * fg : (g + 1) * fg], col, y3[n, g * fg : (g + 1) * fg])
        for f in prange(f_):
            bv = b[f]
            for p in range(p_):
                y3[n, f, p] += bv
    return y


@jit(parallel=True)
def _conv2d_backward_gemm(dy, x, w, sh, sw, ph, pw, dh, dw, groups):
    n_, f_, oh_, ow_ = dy.shape
    _, c_, h_, w_ = x.shape
    _, cg, kh_, kw_ = w.shape
    fg = f_ // groups
    kk = kh_ * kw_
    p_ = oh_ * ow_
    dy3 = dy.reshape(n_, f_, p_)
    w2 = w.reshape(f_, cg * kk)
    w2t = np.ascontiguousarray(w2.T)  # (Cg*KK, F): dcol_g = w2t[:, g] @ dy_g
    dx = np.zeros((n_, c_, h_, w_), dy.dtype)
    dw2 = np.zeros((f_, cg * kk), dy.dtype)
    tmp = np.empty((fg, cg * kk), dy.dtype)
    col = np.empty((cg * kk, p_), dy.dtype)
    dcol = np.empty((cg * kk, p_), dy.dtype)
    wg_t = np.empty((cg * kk, fg), dy.dtype)
    for n in range(n_):
        for g in range(groups):
            for cc in prange(cg):
                _im2col_plane(x[n, g * cg + cc], col, cc * kk, kh_, kw_, sh, sw, ph, pw, dh, dw, oh_, ow_)
            dyg = dy3[n, g * fg : (g + 1) * fg]
            # dw_g += dy_g @ col^T, summed over samples in order.
            np.dot(dyg, col.T, tmp)
            for fi in prange(fg):
                for r in range(cg * kk):
                    dw2[g * fg + fi, r] += tmp[fi, r]
            wg_t[:, :] = w2t[:, g * fg : (g + 1) * fg]
            np.dot(wg_t, dyg, dcol)
            for cc in prange(cg):
                _col2im_plane(dcol, cc * kk, dx[n, g * cg + cc], kh_, kw_, sh, sw, ph, pw, dh, dw, oh_, ow_)
    db = np.zeros(f_, dy.dtype)
    for f in prange(f_):
        s = dy.dtype.type(0)
        for n in range(n_):
            for p in range(p_):
                s += dy3[n, f, p]
        db[f] = s
    return dx, dw2.reshape(w.shape), db


# --- validating wrappers ------------------------------------------------------------


def _use_direct(cg):
    return cg <= _DIRECT_MAX_CG


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
    kernel = _conv2d_forward_direct if _use_direct(w.shape[1]) else _conv2d_forward_gemm
    return kernel(x, w, b, *hp, oh, ow)


def conv2d_backward(dy, x, w, stride=1, pad=0, dilation=1, groups=1):
    """Convolution backward pass: gradients with respect to ``x``, ``w`` and ``b``.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OH, OW)
        Gradient of the loss with respect to the output ``y`` of
        :func:`conv2d_forward` called with the same arguments.
    x, w, stride, pad, dilation, groups
        As in :func:`conv2d_forward`.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
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
    if n == 0:
        return np.zeros_like(x), np.zeros_like(w), np.zeros(f, w.dtype)
    if _use_direct(cg):
        dx = _conv2d_backward_dx_direct(dy, w, h, wd, c, sh, sw, ph, pw, dh, dw, groups)
        dwt, db = _conv2d_backward_dwdb_direct(dy, x, cg, kh, kw, sh, sw, ph, pw, dh, dw, groups, min(n, _DW_CHUNKS))
        return dx, dwt, db
    return _conv2d_backward_gemm(dy, x, w, *hp)
