"""2-D convolution (cross-correlation), forward and backward: the public
functions, the geometry checks and the choice of strategy.

Two strategies, chosen per shape by :func:`_use_direct` from the thresholds
in :mod:`numbanet.kernels._tunables` (``DIRECT_MAX_CG``, ``GEMM_MIN_FG``,
``BACKWARD_GEMM_MIN_TAPS``):

* **direct** (:mod:`._conv_direct`; few input channels and filters per group,
  stride 1: depthwise convolution, narrow first layers). No column buffer:
  the samples' zero-padded planes lie end to end on a "wide grid" where every
  kernel tap is one long contiguous multiply-add.
* **gemm** (:mod:`._conv_gemm`; many input channels or filters per group, any
  stride). The padded planes are split into their stride phases, on whose
  grid every row of the im2col matrix is a contiguous run of one phase plane;
  numbanet's GEMM reads those runs in place, so no column matrix is built.

:func:`forced_strategy` overrides the choice (the tests check both strategies
on every shape; ``python -m numbanet.bench.conv_strategies`` times them).

Geometry: ``y[n, f, oh, ow] = b[f] + sum_{c, i, j} w[f, c, i, j] *
x[n, g*Cg + c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]`` (taps outside the input
read zero), ``g = f // (F/groups)``, ``Cg = C/groups``,
``OH = (H + 2ph - dh(KH-1) - 1) // sh + 1`` (likewise OW;
:func:`numbanet.reference.geometry.out_size`).

Threads: a call with one parallel task (a batch of one, or a batch that fits
one block of the direct loops) or fewer than ``CONV_PARALLEL_MIN_MACS``
multiply-adds runs its kernel with one thread
(:func:`numbanet.kernels._threads.on_calling_thread`), on the calling thread:
waking the pool costs more than such a convolution (a gradient check makes
thousands of them). Same kernel, same chunks, so the same bits.

Determinism: every output element (of y, dx, dw, db) is written by one task,
or summed from per-chunk partials in a fixed order (``CONV_CHUNKS`` /
``CONV_DIRECT_CHUNKS`` chunks, fixed numbers), so results are bitwise
identical from run to run whatever the thread scheduling.
"""

from __future__ import annotations

import contextlib

import numpy as np

from numbanet.reference.geometry import out_size

from . import _tunables as T
from . import validate as v
from ._conv_direct import _conv2d_backward_direct, _conv2d_forward_direct
from ._conv_gemm import _conv2d_backward_gemm, _conv2d_forward_gemm
from ._threads import kernel_op, on_calling_thread

__all__ = ["conv2d_forward", "conv2d_backward"]

#: The strategies :func:`forced_strategy` accepts.
STRATEGIES = ("direct", "gemm")

#: The strategy every call takes (where it applies), or None: the thresholds decide.
_forced = None


@contextlib.contextmanager
def forced_strategy(strategy):
    """Within the block, every conv call takes ``strategy`` (``"direct"`` or
    ``"gemm"``) wherever it applies: direct is stride 1 only, so a strided
    call takes the GEMM whatever is forced. Process-wide, not thread-safe:
    for tests and measurements."""
    global _forced
    if strategy not in STRATEGIES:
        raise ValueError(f"forced_strategy: strategy must be one of {STRATEGIES}, got {strategy!r}")
    old, _forced = _forced, strategy
    try:
        yield
    finally:
        _forced = old


def _use_direct(cg, fg, sh, sw, taps=None, positions=None):
    """The direct wide-grid loops for few channels per group at stride 1
    (measured: at stride 2 the GEMM won even for 3 or 8 input channels), when
    there are also fewer than ``GEMM_MIN_FG`` filters per group or, for the
    backward pass (``taps`` = Cg*KH*KW and ``positions`` = OH*OW given), few
    taps (``BACKWARD_GEMM_MIN_TAPS``); the thresholds are in
    :mod:`._tunables`. :func:`forced_strategy` overrides the choice."""
    if sh != 1 or sw != 1:
        return False
    if _forced is not None:
        return _forced == "direct"
    if cg > T.DIRECT_MAX_CG:
        return False
    if fg < T.GEMM_MIN_FG:
        return True
    if taps is None:
        return False
    few, some, plane = T.BACKWARD_GEMM_MIN_TAPS
    return taps < few or (taps < some and positions < plane)


def _transposed_dx(cg):
    """Whether the GEMM strategy's stride-1 dx is the transposed convolution
    (a product with Cg rows, :mod:`._conv_gemm`) rather than col2im (Cg*KH*KW
    rows): from ``DX_TRANSPOSED_MIN_CG`` input channels per group
    (:mod:`._tunables`), below which the micro-kernel's rows run mostly
    empty."""
    return cg >= T.DX_TRANSPOSED_MIN_CG


def _block_samples(n, plane, blocks):
    """Samples per block of the wide grid: enough to make each long loop a few
    thousand elements (small images gain most: an 8x8 image alone gives
    loops of 78), at most ``ceil(n / blocks)`` so the threads get work."""
    return max(1, min(-(-n // blocks), 4096 // plane))


def _serial(tasks, macs):
    """Whether a call runs on the calling thread: one task, or too little work
    (``CONV_PARALLEL_MIN_MACS``) to pay for waking the pool."""
    return tasks <= 1 or macs < T.CONV_PARALLEL_MIN_MACS


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
    if cg != c // groups:
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
    if not (w.dtype is x.dtype and b.dtype is x.dtype):  # identity first: cheap
        v.same_dtype(fn, x=x, w=w, b=b)
    hp, oh, ow = _geometry(fn, x, w, stride, pad, dilation, groups)
    if b.shape != (w.shape[0],):  # messages are formatted only on failure: this runs per call
        v.shape(fn, "b", b, (w.shape[0],), f"F={w.shape[0]} from w")
    sh, sw, ph, pw, dh, dw, groups = hp
    n = x.shape[0]
    f, cg, kh, kw = w.shape
    macs = n * f * oh * ow * cg * kh * kw
    if _use_direct(cg, f // groups, sh, sw):
        plane = (x.shape[2] + 2 * ph) * (x.shape[3] + 2 * pw)
        spb = _block_samples(n, plane, T.CONV_DIRECT_CHUNKS)
        tasks = -(-n // spb)
        kernel, args = _conv2d_forward_direct, (x, w, b, ph, pw, dh, dw, groups, oh, ow, spb)
    else:
        tasks = max(1, min(n, T.CONV_CHUNKS))
        kernel, args = _conv2d_forward_gemm, (x, w, b, *hp, oh, ow, tasks)
    if _serial(tasks, macs):
        return on_calling_thread(kernel, *args)
    return kernel(*args)


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
    if not (x.dtype is dy.dtype and w.dtype is dy.dtype):
        v.same_dtype(fn, dy=dy, x=x, w=w)
    hp, oh, ow = _geometry(fn, x, w, stride, pad, dilation, groups)
    sh, sw, ph, pw, dh, dw, groups = hp
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    if dy.shape != (n, f, oh, ow):
        v.shape(fn, "dy", dy, (n, f, oh, ow), "(N, F, OH, OW) from x, w and the geometry")
    need_dx = v.bool_param(fn, "need_dx", need_dx)
    if n == 0:
        return (np.zeros_like(x) if need_dx else None), np.zeros_like(w), np.zeros(f, w.dtype)
    # the backward pass does the forward's multiply-adds once for dw and once more for dx
    macs = n * f * oh * ow * cg * kh * kw * (2 if need_dx else 1)
    if _use_direct(cg, f // groups, sh, sw, cg * kh * kw, oh * ow):
        nchunks = min(n, T.CONV_DIRECT_CHUNKS)
        spb = _block_samples(-(-n // nchunks), (h + 2 * ph) * (wd + 2 * pw), 1)
        kernel, args = _conv2d_backward_direct, (dy, x, w, ph, pw, dh, dw, groups, nchunks, need_dx, spb)
    else:
        nchunks = min(n, T.CONV_CHUNKS)
        kernel, args = _conv2d_backward_gemm, (dy, x, w, *hp, nchunks, need_dx, _transposed_dx(cg))
    if _serial(nchunks, macs):
        dx, dw_, db = on_calling_thread(kernel, *args)
    else:
        dx, dw_, db = kernel(*args)
    return (dx if need_dx else None), dw_, db
