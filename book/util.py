"""The book's utilities (``common/util.py``): im2col/col2im, output sizes,
curve smoothing and dataset shuffling, with the book's signatures and
results.

``im2col``/``col2im`` are :func:`numbanet.reference.conv.im2col` /
:func:`~numbanet.reference.conv.col2im` (the book's layout; numbanet's own
convolution layers do not build these matrices). Unlike the book, which
always returns float64, they keep a float32 input float32; other dtypes
(integers, uint8, bool, float16) give float64 as in the book.
"""

from __future__ import annotations

import numpy as np

from numbanet.reference import conv as _conv

__all__ = ["smooth_curve", "shuffle_dataset", "conv_output_size", "im2col", "col2im"]

_WINDOW = 11


def smooth_curve(x):
    """Smooth a loss curve for plotting: a normalised Kaiser window
    (length 11, beta 2) slid over ``x``.

    The ends are extended by mirroring as the book does: on the left the 10
    values after the first one (``x[10], ..., x[1]``), on the right the last
    10 values including the last (``x[-1], ..., x[-10]``). The result has
    ``len(x)`` values for ``len(x) >= 11``.

    Parameters
    ----------
    x : sequence of float

    Returns
    -------
    ndarray, float64
    """
    x = np.asarray(x)
    n = _WINDOW
    padded = np.concatenate([x[n - 1 : 0 : -1], x, x[-1 : -n : -1]])
    w = np.kaiser(n, 2)
    y = np.convolve(w / w.sum(), padded, mode="valid")
    return y[5 : len(y) - 5]


def shuffle_dataset(x, t):
    """Shuffle samples and labels together along the first axis.

    Draws one ``np.random.permutation(len(x))`` from NumPy's global random
    state, as the book does, so a seeded script shuffles the same way.

    Parameters
    ----------
    x : ndarray (N, ...)
        Training data (the book's 2-D or 4-D arrays; any rank works here).
    t : ndarray (N, ...)
        Labels.

    Returns
    -------
    x, t : ndarray
        Shuffled copies.
    """
    permutation = np.random.permutation(x.shape[0])
    return x[permutation], t[permutation]


def conv_output_size(input_size, filter_size, stride=1, pad=0):
    """``(input_size + 2*pad - filter_size) / stride + 1``, with true division
    as in the book (a float; not floored)."""
    return (input_size + 2 * pad - filter_size) / stride + 1


def _float(a):
    a = np.asarray(a)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """Unfold image patches into rows.

    Parameters
    ----------
    input_data : ndarray (N, C, H, W)
    filter_h, filter_w : int
    stride, pad : int

    Returns
    -------
    col : ndarray (N * OH * OW, C * filter_h * filter_w)
        ``col[(n*OH + i)*OW + j, (c*filter_h + ky)*filter_w + kx] =
        xp[n, c, i*stride + ky, j*stride + kx]`` with ``xp`` the input
        zero-padded by ``pad`` on each side, ``OH = (H + 2*pad - filter_h)
        // stride + 1`` and ``OW`` likewise.
    """
    return _conv.im2col(_float(input_data), filter_h, filter_w, stride, pad)


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """Fold rows back into images, summing overlapping patches (the
    adjoint of :func:`im2col`).

    Parameters
    ----------
    col : ndarray (N * OH * OW, C * filter_h * filter_w)
    input_shape : tuple (N, C, H, W)
    filter_h, filter_w : int
    stride, pad : int

    Returns
    -------
    ndarray (N, C, H, W)
        ``img[n, c, y, x]`` is the sum of every ``col`` entry that
        :func:`im2col` would read from ``xp[n, c, y + pad, x + pad]``.
    """
    return _conv.col2im(_float(col), tuple(input_shape), filter_h, filter_w, stride, pad)
