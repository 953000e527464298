"""2-D max and average pooling kernels, forward and backward.

Every task owns one (n, c) plane of the output (forward) or of ``dx``
(backward), so overlapping windows (stride < pool size) need no atomics and
results are bitwise deterministic.

Geometry: window ``(oh, ow)`` covers the taps ``(i, j)``, ``0 <= i < pool_h``,
``0 <= j < pool_w``, reading ``x[n, c, oh*sh - ph + i, ow*sw - pw + j]``;
``OH = (H + 2ph - pool_h) // sh + 1`` (likewise OW); ``stride`` defaults to the
pool size.

Max pooling: padded taps count as ``-inf`` and ties go to the first maximum in
row-major tap order (NaN wins, as in ``np.argmax``).
``argmax`` layout: int64 array of shape (N, C, OH, OW) holding the window-local
flat tap index ``i * pool_w + j`` of each maximum (the same layout as the
book's ``np.argmax`` over im2col rows, which :mod:`numbanet.reference` uses).
A window made only of padding yields ``-inf`` with an index pointing into the
padding, and passes no gradient back.

Average pooling divides by ``pool_h * pool_w`` whether or not taps are padding
(PyTorch's ``count_include_pad=True``).

Threads: each parallel task pools a run of whole (n, c) planes, about
``POOL_TASK_ELEMENTS`` input elements (one task per plane cost about 0.5 us
a task on top of the work: 6400 planes of 9 x 9 took 3.5x the time of one
loop over them); inputs below ``POOL_PARALLEL_MIN`` elements and single
planes are pooled by one loop on the calling thread, no parallel region
(both in :mod:`numbanet.kernels._tunables`; the ``planes`` argument of each
kernel, decided by the wrapper). Each plane is computed by the same code
either way, so the results are bitwise the same.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import prange, types, uint64
from numba.extending import intrinsic, overload

from numbanet.reference.geometry import out_size

from . import _tunables as T
from . import validate as v
from ._threads import kernel_op
from ._config import jit

__all__ = [
    "maxpool2d_forward",
    "maxpool2d_backward",
    "avgpool2d_forward",
    "avgpool2d_backward",
]


def _float_bits(v):
    """The bits of a float32 or float64 scalar as an int32 or int64 (the
    compiled version, below, is a bitcast; this body runs under
    ``NUMBA_DISABLE_JIT=1``)."""
    return v.view(np.int32 if v.dtype.itemsize == 4 else np.int64)


@intrinsic
def _bitcast_float(typingctx, v):
    if v == types.float32:
        return types.int32(v), lambda context, builder, sig, args: builder.bitcast(args[0], ir.IntType(32))
    if v == types.float64:
        return types.int64(v), lambda context, builder, sig, args: builder.bitcast(args[0], ir.IntType(64))
    return None


@overload(_float_bits)
def _float_bits_ol(v):
    return lambda v: _bitcast_float(v)


def _as_bits(a):
    """A float32/float64 array viewed as int32/int64 (same memory)."""
    return a.view(np.int32 if a.dtype.itemsize == 4 else np.int64)


@overload(_as_bits)
def _as_bits_ol(a):
    if a.dtype == types.float32:
        return lambda a: a.view(np.int32)
    if a.dtype == types.float64:
        return lambda a: a.view(np.int64)
    return None


@jit()
def _max_2x2_stride2_row(xf, r0, r1, yf, af, o, ow_lo, ow_hi):
    """Row of 2x2, stride-2 windows lying inside the input: rows ``r0`` and
    ``r1 = r0 + W`` of flat ``xf`` starting at their first tap, outputs at flat
    ``o``. The stride is a constant and the offsets unsigned (no negative-index
    wraparound).

    Without branches: the book's rows are 4-14 windows, too short for LLVM's
    vectoriser, and on real data which tap wins is unpredictable, so the
    tap-by-tap rule of :func:`_max_window` ran at about 25 ns a window
    (mispredicted branches; 100 x 16 x 28 x 28 float64 in 8 ms on one Zen 3
    core). Here the maximum is a tournament, the pairs (a, b) and (c, d) and
    then their winners, each by that rule: the first NaN wins, else the first
    of the largest, so the tournament picks the sequential rule's tap (a NaN
    in a pair comes first in tap order; between two numbers the earlier wins
    ties). Its tap is then the first whose bits are the maximum's bits (the
    same value and sign of zero, or the same NaN), found with integer
    arithmetic: 3-4x faster."""
    for ow in range(ow_lo, ow_hi):
        w0 = uint64(2) * uint64(ow - ow_lo)
        a = xf[r0 + w0]
        b = xf[r0 + w0 + uint64(1)]
        c = xf[r1 + w0]
        d = xf[r1 + w0 + uint64(1)]
        # `&` rather than `and`: no branch
        w1 = b if (a == a) & (not (b <= a)) else a
        w2 = d if (c == c) & (not (d <= c)) else c
        best = w2 if (w1 == w1) & (not (w2 <= w1)) else w1
        yf[o + uint64(ow)] = best
        bits = _float_bits(best)
        not_a = np.int64(_float_bits(a) != bits)
        not_b = np.int64(_float_bits(b) != bits)
        not_c = np.int64(_float_bits(c) != bits)
        af[o + uint64(ow)] = not_a * (1 + not_b * (1 + not_c))


@jit()
def _max_window(xp, h0, w0, pool_h, pool_w):
    """Maximum and its tap index over one window, which may reach into the
    padding: padded taps are -inf, and a strictly larger value or the first
    NaN replaces the best so far (np.argmax semantics; a NaN once taken stays)."""
    h_, w_ = xp.shape
    ninf = xp.dtype.type(-np.inf)
    best = ninf
    k = 0
    first = True
    for i in range(pool_h):
        ih = h0 + i
        inside_h = 0 <= ih < h_
        for j in range(pool_w):
            iw = w0 + j
            val = ninf
            if inside_h and 0 <= iw < w_:
                val = xp[ih, iw]
            if first or (best == best and not (val <= best)):
                best = val
                k = i * pool_w + j
                first = False
    return best, k


@jit()
def _max_row(xf, r0, w_, sw, pool_h, pool_w, yf, af, o, n):
    """Row of ``n`` windows of any size and stride lying inside the input:
    window ``q``'s tap ``(i, j)`` is ``xf[r0 + i * w_ + j + q * sw]`` (flat
    ``x``), its maximum and tap go to ``yf[o + q]`` and ``af[o + q]``.
    Offsets unsigned (no negative-index wraparound).

    Tap by tap over the whole row, each tap a branch-free pass over the
    windows (a select by the rule of :func:`_max_window`: the first NaN
    wins, else the first of the largest), so LLVM vectorises across windows
    and nothing depends on which tap wins. Window by window, with a branch
    per tap, 3x3 windows took 57 ns each (32 x 64 x 32 x 32 float32, stride
    2, one Zen 3 core), mispredicted branches on real data."""
    for q in range(n):  # tap (0, 0) starts every window
        yf[o + q] = xf[r0 + q * sw]
        af[o + q] = 0
    for i in range(pool_h):
        for j in range(pool_w):
            tap = i * pool_w + j
            if tap == 0:
                continue
            base = r0 + uint64(i) * w_ + uint64(j)
            # stride 1 as a constant: LLVM vectorises the loop only with a
            # known stride
            if sw == 1:
                _max_tap(xf, base, uint64(1), yf, af, o, n, tap)
            else:
                _max_tap(xf, base, sw, yf, af, o, n, tap)


@jit(inline=True)
def _max_tap(xf, base, sw, yf, af, o, n, tap):
    """One tap's pass of :func:`_max_row` over its ``n`` windows."""
    for q in range(n):
        val = xf[base + q * sw]
        best = yf[o + q]
        # `&` rather than `and`: no branch
        take = (best == best) & (not (val <= best))
        yf[o + q] = val if take else best
        af[o + q] = tap if take else af[o + q]


@jit()
def _inner_range(out_size, stride, pad, pool, size):
    """Output positions ``[lo, hi)`` whose windows lie inside ``[0, size)``."""
    lo = min(out_size, (pad + stride - 1) // stride)
    hi = max(lo, min(out_size, (size + pad - pool) // stride + 1))
    return lo, hi


@jit(inline=True)
def _tasks(planes, total):
    """How many tasks pool ``total`` planes, ``planes`` a task."""
    return (total + planes - 1) // planes


@jit(inline=True)
def _task_planes(t, planes, total):
    """The planes ``[lo, hi)`` of task ``t`` (int64 bounds: one signature
    of the per-plane helpers, see ``_config.jit``)."""
    lo = np.int64(t) * planes
    return lo, min(total, lo + planes)


@jit(external=True)
def _maxpool2d_forward_planes(x, y, arg, pool_h, pool_w, sh, sw, ph, pw, lo, hi):
    """Max pooling of the flat (n, c) planes ``lo .. hi - 1`` into ``y`` and ``arg``."""
    n_, c_, h_, w_ = x.shape
    oh_, ow_ = y.shape[2], y.shape[3]
    xf = x.ravel()
    yf = y.ravel()
    af = arg.ravel()
    fast = pool_h == 2 and pool_w == 2 and sh == 2 and sw == 2
    oh_lo, oh_hi = _inner_range(oh_, sh, ph, pool_h, h_)
    ow_lo, ow_hi = _inner_range(ow_, sw, pw, pool_w, w_)
    for t in range(lo, hi):
        n = t // c_
        c = t - n * c_
        xp = x[n, c]
        yp = y[n, c]
        ap = arg[n, c]
        for oh in range(oh_):
            h0 = oh * sh - ph
            lo_w, hi_w = 0, 0  # windows [lo_w, hi_w) lie inside the input: done by rows
            if oh_lo <= oh < oh_hi and ow_lo < ow_hi:
                lo_w, hi_w = ow_lo, ow_hi
                r0 = uint64((t * h_ + h0) * w_ + ow_lo * sw - pw)
                if fast:
                    _max_2x2_stride2_row(xf, r0, r0 + uint64(w_), yf, af,
                                         uint64((t * oh_ + oh) * ow_), lo_w, hi_w)
                else:
                    _max_row(xf, r0, uint64(w_), uint64(sw), pool_h, pool_w, yf, af,
                             uint64((t * oh_ + oh) * ow_ + lo_w), uint64(hi_w - lo_w))
            for ow in range(ow_):
                if not lo_w <= ow < hi_w:
                    yp[oh, ow], ap[oh, ow] = _max_window(xp, h0, ow * sw - pw, pool_h, pool_w)


@jit(parallel=True)
def _maxpool2d_forward(x, pool_h, pool_w, sh, sw, ph, pw, oh_, ow_, planes):
    n_, c_ = x.shape[0], x.shape[1]
    y = np.empty((n_, c_, oh_, ow_), x.dtype)
    arg = np.empty((n_, c_, oh_, ow_), np.int64)
    total = n_ * c_
    if planes >= total:
        _maxpool2d_forward_planes(x, y, arg, pool_h, pool_w, sh, sw, ph, pw, np.int64(0), total)
    else:
        for t in prange(_tasks(planes, total)):
            lo, hi = _task_planes(t, planes, total)
            _maxpool2d_forward_planes(x, y, arg, pool_h, pool_w, sh, sw, ph, pw, lo, hi)
    return y, arg


@jit()
def _unpool_2x2_stride2_row(di, r0, r1, dyi, af, o, ow_):
    """Write both input rows under a row of 2x2, stride-2 windows (no
    padding): each window's ``dy`` to its argmax tap, zeros to the other three.
    ``di`` and ``dyi`` are ``dx`` and ``dy`` as integers (:func:`_as_bits`):
    a value or zero is its bits masked, so the loop has no select on floats,
    which LLVM turned into mispredicted branches on these short rows (about
    4x slower). Returns how many argmax entries were outside ``[0, 4)``;
    those windows get zeros. The windows tile the rows, so every element is
    written once and ``dx`` needs no zero fill first. The loop runs over
    input columns (unit stride stores)."""
    it = dyi.dtype.type
    for w in range(2 * ow_):
        ow = uint64(w >> 1)
        k = af[o + ow]
        g = dyi[o + ow]
        j = w & 1
        di[r0 + uint64(w)] = g & -it(k == j)
        di[r1 + uint64(w)] = g & -it(k == j + 2)
    bad = 0
    for ow in range(ow_):
        k = af[o + uint64(ow)]
        bad += (k < 0) | (k > 3)
    return bad


@jit(external=True)
def _maxpool2d_backward_2x2_planes(dy, arg, dx, bad, lo, hi):
    """2x2, stride-2, unpadded windows: ``dx`` of the flat (n, c) planes
    ``lo .. hi - 1`` (every element written), the number of argmax entries
    outside ``[0, 4)`` of plane ``t`` in ``bad[t]``."""
    n_, c_, oh_, ow_ = dy.shape
    h_, w_ = dx.shape[2], dx.shape[3]
    di = _as_bits(dx.ravel())
    dyi = _as_bits(dy.ravel())
    af = arg.ravel()
    for t in range(lo, hi):
        dxp = dx[t // c_, t % c_]
        count = 0
        for oh in range(oh_):
            r0 = uint64((t * h_ + 2 * oh) * w_)
            count += _unpool_2x2_stride2_row(di, r0, r0 + uint64(w_), dyi, af,
                                             uint64((t * oh_ + oh) * ow_), ow_)
        bad[t] = count
        # what no window covers: an odd last column and an odd last row
        dxp[:2 * oh_, 2 * ow_:] = 0
        dxp[2 * oh_:, :] = 0


@jit(external=True)
def _maxpool2d_backward_planes(dy, arg, dx, bad, pool_h, pool_w, sh, sw, ph, pw, lo, hi):
    """Any geometry: zero the flat (n, c) planes ``lo .. hi - 1`` of ``dx``
    and add ``dy`` at the argmax taps; entries outside ``[0, pool_h *
    pool_w)`` pass nothing and are counted, plane ``t``'s in ``bad[t]``."""
    n_, c_, oh_, ow_ = dy.shape
    h_, w_ = dx.shape[2], dx.shape[3]
    size = pool_h * pool_w
    for t in range(lo, hi):
        n = t // c_
        c = t - n * c_
        dxp = dx[n, c]
        dyp = dy[n, c]
        ap = arg[n, c]
        dxp[:] = 0
        count = 0
        for oh in range(oh_):
            for ow in range(ow_):
                k = ap[oh, ow]
                if k < 0 or k >= size:
                    count += 1
                    continue
                i = k // pool_w
                ih = oh * sh - ph + i
                iw = ow * sw - pw + (k - i * pool_w)
                if 0 <= ih < h_ and 0 <= iw < w_:
                    dxp[ih, iw] += dyp[oh, ow]
        bad[t] = count


@jit()
def _total(counts):
    """Sum of an int array, in a plain loop: ``counts.sum()`` in a parallel
    kernel would start a parallel region (a parfor reduction) even when the
    kernel runs serially, as ``np.zeros`` would (a parallel fill); so the
    kernels below allocate with ``np.empty`` and the per-plane helpers write
    every element."""
    total = 0
    for i in range(counts.size):
        total += counts[i]
    return total


@jit(parallel=True)
def _maxpool2d_backward(dy, arg, h_, w_, pool_h, pool_w, sh, sw, ph, pw, planes):
    n_, c_ = dy.shape[0], dy.shape[1]
    total = n_ * c_
    bad = np.empty(total, np.int64)
    dx = np.empty((n_, c_, h_, w_), dy.dtype)
    if pool_h == 2 and pool_w == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
        if planes >= total:
            _maxpool2d_backward_2x2_planes(dy, arg, dx, bad, np.int64(0), total)
        else:
            for t in prange(_tasks(planes, total)):
                lo, hi = _task_planes(t, planes, total)
                _maxpool2d_backward_2x2_planes(dy, arg, dx, bad, lo, hi)
    elif planes >= total:
        _maxpool2d_backward_planes(dy, arg, dx, bad, pool_h, pool_w, sh, sw, ph, pw, np.int64(0), total)
    else:
        for t in prange(_tasks(planes, total)):
            lo, hi = _task_planes(t, planes, total)
            _maxpool2d_backward_planes(dy, arg, dx, bad, pool_h, pool_w, sh, sw, ph, pw, lo, hi)
    return dx, _total(bad)


@jit()
def _window(o, stride, pad, pool, size):
    """Start of output position ``o``'s window in the input, and the range of
    window offsets ``[lo, hi)`` that fall inside the unpadded input."""
    start = o * stride - pad
    return start, max(0, -start), min(pool, size - start)


@jit(external=True)
def _avgpool2d_forward_planes(x, y, pool_h, pool_w, sh, sw, ph, pw, lo, hi):
    """Average pooling of the flat (n, c) planes ``lo .. hi - 1`` into ``y``."""
    n_, c_, h_, w_ = x.shape
    oh_, ow_ = y.shape[2], y.shape[3]
    div = x.dtype.type(pool_h * pool_w)
    for t in range(lo, hi):
        n = t // c_
        c = t - n * c_
        xp = x[n, c]
        yp = y[n, c]
        for oh in range(oh_):
            h0, i0, i1 = _window(oh, sh, ph, pool_h, h_)
            for ow in range(ow_):
                w0, j0, j1 = _window(ow, sw, pw, pool_w, w_)
                s = x.dtype.type(0)
                for i in range(i0, i1):
                    for j in range(j0, j1):
                        s += xp[h0 + i, w0 + j]
                yp[oh, ow] = s / div


@jit(parallel=True)
def _avgpool2d_forward(x, pool_h, pool_w, sh, sw, ph, pw, oh_, ow_, planes):
    n_, c_ = x.shape[0], x.shape[1]
    y = np.empty((n_, c_, oh_, ow_), x.dtype)
    total = n_ * c_
    if planes >= total:
        _avgpool2d_forward_planes(x, y, pool_h, pool_w, sh, sw, ph, pw, np.int64(0), total)
    else:
        for t in prange(_tasks(planes, total)):
            lo, hi = _task_planes(t, planes, total)
            _avgpool2d_forward_planes(x, y, pool_h, pool_w, sh, sw, ph, pw, lo, hi)
    return y


@jit(external=True)
def _avgpool2d_backward_planes(dy, dx, pool_h, pool_w, sh, sw, ph, pw, lo, hi):
    """Zero the flat (n, c) planes ``lo .. hi - 1`` of ``dx`` and spread
    ``dy / (pool_h * pool_w)`` over their windows."""
    n_, c_, oh_, ow_ = dy.shape
    h_, w_ = dx.shape[2], dx.shape[3]
    div = dy.dtype.type(pool_h * pool_w)
    for t in range(lo, hi):
        n = t // c_
        c = t - n * c_
        dxp = dx[n, c]
        dyp = dy[n, c]
        dxp[:] = 0
        for oh in range(oh_):
            h0, i0, i1 = _window(oh, sh, ph, pool_h, h_)
            for ow in range(ow_):
                w0, j0, j1 = _window(ow, sw, pw, pool_w, w_)
                g = dyp[oh, ow] / div
                for i in range(i0, i1):
                    for j in range(j0, j1):
                        dxp[h0 + i, w0 + j] += g


@jit(parallel=True)
def _avgpool2d_backward(dy, h_, w_, pool_h, pool_w, sh, sw, ph, pw, planes):
    n_, c_ = dy.shape[0], dy.shape[1]
    dx = np.empty((n_, c_, h_, w_), dy.dtype)
    total = n_ * c_
    if planes >= total:
        _avgpool2d_backward_planes(dy, dx, pool_h, pool_w, sh, sw, ph, pw, np.int64(0), total)
    else:
        for t in prange(_tasks(planes, total)):
            lo, hi = _task_planes(t, planes, total)
            _avgpool2d_backward_planes(dy, dx, pool_h, pool_w, sh, sw, ph, pw, lo, hi)
    return dx


# --- validating wrappers ------------------------------------------------------------


def _geometry(fn, x_shape, pool_h, pool_w, stride, pad):
    """Check the pooling hyperparameters; return ``(sh, sw, ph, pw), OH, OW``."""
    pool_h = v.int_param(fn, "pool_h", pool_h, minimum=1)
    pool_w = v.int_param(fn, "pool_w", pool_w, minimum=1)
    if stride is None:
        sh, sw = pool_h, pool_w
    else:
        sh, sw = v.int_pair(fn, "stride", stride, minimum=1)
    ph, pw = v.int_pair(fn, "pad", pad, minimum=0)
    _, _, h, w = x_shape
    if h + 2 * ph < pool_h or w + 2 * pw < pool_w:
        raise ValueError(
            f"{fn}: the {pool_h}x{pool_w} pool is larger than the padded input {h + 2 * ph}x{w + 2 * pw}"
        )
    oh, ow = out_size(h, pool_h, sh, ph), out_size(w, pool_w, sw, pw)
    # float64 and int64 argmax: the largest output any pooling op allocates.
    v.output_size(fn, (x_shape[0], x_shape[1], oh, ow), np.float64, "pool_h, pool_w, stride and pad")
    return pool_h, pool_w, (sh, sw, ph, pw), oh, ow


def _planes_per_task(x_shape):
    """How many (n, c) planes each task pools (the kernels' ``planes``): all
    of them, on the calling thread, for one plane or fewer than
    ``POOL_PARALLEL_MIN`` input elements; else ``POOL_TASK_ELEMENTS`` input
    elements' worth, at least one plane."""
    n, c, h, w = x_shape
    if n * c <= 1 or n * c * h * w < T.POOL_PARALLEL_MIN:
        return max(n * c, 1)
    return max(1, T.POOL_TASK_ELEMENTS // max(h * w, 1))


def _x_shape(fn, x_shape):
    if type(x_shape) is tuple and len(x_shape) == 4:  # an ndarray's .shape: no per-entry calls
        n, c, h, w = x_shape
        if type(n) is int and type(c) is int and type(h) is int and type(w) is int:
            if 0 <= min(x_shape) and max(x_shape) < 2**62:
                return x_shape
    try:
        shp = tuple(x_shape)
    except TypeError:
        raise TypeError(f"{fn}: x_shape must be a tuple (N, C, H, W), got {x_shape!r}") from None
    if len(shp) != 4:
        raise ValueError(f"{fn}: x_shape must be (N, C, H, W), got {shp!r}")
    return tuple(v.int_param(fn, f"x_shape[{i}]", s, minimum=0) for i, s in enumerate(shp))


@kernel_op
def maxpool2d_forward(x, pool_h, pool_w, stride=None, pad=0):
    """Max pooling forward pass.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    pool_h, pool_w : int
        Window size.
    stride : int or (int, int), optional
        Defaults to ``(pool_h, pool_w)``.
    pad : int or (int, int)
        Implicit ``-inf`` padding on each side.

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)
        ``y[n, c, oh, ow] = max_{i, j} x_pad[n, c, oh*sh + i, ow*sw + j]``.
    argmax : ndarray of int64, shape (N, C, OH, OW)
        Window-local index ``i * pool_w + j`` of the (first) maximum; see the
        module docstring.
    """
    fn = "maxpool2d_forward"
    x = v.float_array(fn, "x", x, 4)
    pool_h, pool_w, hp, oh, ow = _geometry(fn, x.shape, pool_h, pool_w, stride, pad)
    return _maxpool2d_forward(x, pool_h, pool_w, *hp, oh, ow, _planes_per_task(x.shape))


@kernel_op
def maxpool2d_backward(dy, argmax, x_shape, pool_h, pool_w, stride=None, pad=0):
    """Max pooling backward pass: ``dy`` goes to the tap recorded in ``argmax``.

    Parameters
    ----------
    dy : ndarray, shape (N, C, OH, OW)
    argmax : integer ndarray, shape (N, C, OH, OW)
        As returned by :func:`maxpool2d_forward`; entries in ``[0, pool_h*pool_w)``.
    x_shape : tuple (N, C, H, W)
    pool_h, pool_w, stride, pad
        As in :func:`maxpool2d_forward`.

    Returns
    -------
    dx : ndarray, shape x_shape
        ``dx[n, c, ih, iw] = sum of dy[n, c, oh, ow]`` over the windows whose
        maximum is the tap at ``(ih, iw)``.
    """
    fn = "maxpool2d_backward"
    x_shape = _x_shape(fn, x_shape)
    dy = v.float_array(fn, "dy", dy, 4)
    pool_h, pool_w, hp, oh, ow = _geometry(fn, x_shape, pool_h, pool_w, stride, pad)
    n, c, h, w = x_shape
    if dy.shape != (n, c, oh, ow):
        v.shape(fn, "dy", dy, (n, c, oh, ow), "(N, C, OH, OW) from x_shape and the pooling geometry")
    if not isinstance(argmax, np.ndarray) or not (argmax.dtype == np.int64 or np.issubdtype(argmax.dtype, np.integer)):
        got = argmax.dtype if isinstance(argmax, np.ndarray) else type(argmax).__name__
        raise TypeError(f"{fn}: argmax must be an integer array from maxpool2d_forward, got {got}")
    if argmax.shape != dy.shape:
        v.shape(fn, "argmax", argmax, dy.shape, "the shape of dy")
    argmax = np.ascontiguousarray(argmax, dtype=np.int64)
    if not argmax.flags.writeable:
        # as v.float_array does: a read-only argmax would compile (and cache) a
        # read-only specialisation of the kernel, which warm-up cannot foresee
        argmax = argmax.copy()
    dx, bad = _maxpool2d_backward(dy, argmax, h, w, pool_h, pool_w, *hp, _planes_per_task(x_shape))
    if bad:
        raise ValueError(f"{fn}: argmax must hold window indices in [0, {pool_h * pool_w}), found {bad} outside")
    return dx


@kernel_op
def avgpool2d_forward(x, pool_h, pool_w, stride=None, pad=0):
    """Average pooling forward pass.

    Returns ``y`` (N, C, OH, OW) with ``y[n, c, oh, ow] = sum_{i, j}
    x_pad[n, c, oh*sh + i, ow*sw + j] / (pool_h * pool_w)`` (zero padding,
    counted in the divisor). Arguments as in :func:`maxpool2d_forward`.
    """
    fn = "avgpool2d_forward"
    x = v.float_array(fn, "x", x, 4)
    pool_h, pool_w, hp, oh, ow = _geometry(fn, x.shape, pool_h, pool_w, stride, pad)
    return _avgpool2d_forward(x, pool_h, pool_w, *hp, oh, ow, _planes_per_task(x.shape))


@kernel_op
def avgpool2d_backward(dy, x_shape, pool_h, pool_w, stride=None, pad=0):
    """Average pooling backward pass.

    Returns ``dx`` of shape ``x_shape``: each ``dy[n, c, oh, ow] / (pool_h *
    pool_w)`` added to every non-padding tap of its window.
    """
    fn = "avgpool2d_backward"
    x_shape = _x_shape(fn, x_shape)
    dy = v.float_array(fn, "dy", dy, 4)
    pool_h, pool_w, hp, oh, ow = _geometry(fn, x_shape, pool_h, pool_w, stride, pad)
    n, c, h, w = x_shape
    if dy.shape != (n, c, oh, ow):
        v.shape(fn, "dy", dy, (n, c, oh, ow), "(N, C, OH, OW) from x_shape and the pooling geometry")
    return _avgpool2d_backward(dy, h, w, pool_h, pool_w, *hp, _planes_per_task(x_shape))
