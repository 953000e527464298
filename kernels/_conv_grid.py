"""The wide grid both convolution strategies compute on: every kernel tap as
a shift of a flattened (phase) plane, and the small loops they share.

On a grid of width ``wq`` (the padded width Wp at stride 1, the phase planes'
width ceil(Wp/sw) otherwise), output ``(oh, ow)`` sits at ``q = oh*wq + ow``
and tap ``(i, j)`` reads one phase plane at one fixed offset
(:func:`_phase_taps`), so each tap is one long contiguous loop instead of OH
short rows. The ``wq - OW`` junk columns per output row are computed and
cropped (or kept zero). Used by :mod:`._conv_direct` and :mod:`._conv_gemm`
(both list this file in ``_config.DEPENDENCIES``).
"""

from __future__ import annotations

import numpy as np

from ._config import jit


@jit()
def _copy_row(dst, src, length):
    # Indexing by the bare loop variable spares Numba's negative-index
    # wraparound test, which would keep the loop from vectorising; hence the
    # slices the callers pass (here and in both strategies' files).
    for q in range(length):
        dst[q] = src[q]


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
    (:func:`._conv_gemm._pad_phases`): on the grid ``q = oh*wq + ow`` every tap is a
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
