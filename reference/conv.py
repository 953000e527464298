"""Convolution, book style: im2col / col2im and one matrix product per group.

Extended from "Deep Learning from Scratch" for non-square (h, w) stride,
padding and dilation, for grouped convolution, and to keep the input dtype.
Pure NumPy; like the kernels, a window larger than the padded input raises
``ValueError`` (:func:`~numbanet.reference.geometry.out_size`), other
arguments are not validated. The kernels in :mod:`numbanet.kernels` are checked
against these functions.
"""

from __future__ import annotations

import numpy as np

from .geometry import out_size

__all__ = ["conv2d_forward", "conv2d_backward", "im2col", "col2im"]


def _pair(value):
    """``k`` or ``(kh, kw)`` as a pair of Python ints."""
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def im2col(x, kh, kw, stride=1, pad=0, dilation=1, pad_value=0):
    """Unfold sliding windows of ``x`` (N, C, H, W) into rows.

    Returns ``col`` of shape (N*OH*OW, C*KH*KW): row ``(n, oh, ow)`` holds the
    window whose top-left tap is ``x_pad[n, :, oh*sh, ow*sw]``, its columns
    ordered ``(c, i, j)`` and tap ``(i, j)`` reading
    ``x_pad[n, c, oh*sh + i*dh, ow*sw + j*dw]``. Padding is ``pad_value``
    (``-inf`` for max pooling, which the book's version gets wrong).
    """
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(pad), _pair(dilation)
    n, c, h, w = x.shape
    oh = out_size(h, kh, sh, ph, dh)
    ow = out_size(w, kw, sw, pw, dw)
    img = np.pad(x, [(0, 0), (0, 0), (ph, ph), (pw, pw)], "constant", constant_values=pad_value)
    col = np.zeros((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        y0 = i * dh
        y_max = y0 + sh * oh
        for j in range(kw):
            x0 = j * dw
            x_max = x0 + sw * ow
            col[:, :, i, j, :, :] = img[:, :, y0:y_max:sh, x0:x_max:sw]
    # Explicit column count: -1 cannot be inferred when N*OH*OW is 0.
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, c * kh * kw)


def col2im(col, x_shape, kh, kw, stride=1, pad=0, dilation=1):
    """Adjoint of :func:`im2col` (with zero padding): fold rows back, summing overlaps."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(pad), _pair(dilation)
    n, c, h, w = x_shape
    oh = out_size(h, kh, sh, ph, dh)
    ow = out_size(w, kw, sw, pw, dw)
    col = col.reshape(n, oh, ow, c, kh, kw).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((n, c, h + 2 * ph + sh - 1, w + 2 * pw + sw - 1), dtype=col.dtype)
    for i in range(kh):
        y0 = i * dh
        y_max = y0 + sh * oh
        for j in range(kw):
            x0 = j * dw
            x_max = x0 + sw * ow
            img[:, :, y0:y_max:sh, x0:x_max:sw] += col[:, :, i, j, :, :]
    return img[:, :, ph : h + ph, pw : w + pw]


def conv2d_forward(x, w, b, stride=1, pad=0, dilation=1, groups=1):
    """Cross-correlation ``y = conv(x, w) + b`` via im2col.

    ``x`` (N, C, H, W), ``w`` (F, C/groups, KH, KW), ``b`` (F,) or None;
    returns ``y`` (N, F, OH, OW) with
    ``y[n, f, oh, ow] = b[f] + sum_{c, i, j} w[f, c, i, j]
    * x_pad[n, g*C/groups + c, oh*sh + i*dh, ow*sw + j*dw]`` for ``f`` in group ``g``.
    """
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    fg = f // groups
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(pad), _pair(dilation)
    oh = out_size(h, kh, sh, ph, dh)
    ow = out_size(wd, kw, sw, pw, dw)
    col = im2col(x, kh, kw, stride, pad, dilation)  # (N*OH*OW, C*KH*KW), c-major
    k = cg * kh * kw
    out = np.empty((n * oh * ow, f), dtype=x.dtype)
    for g in range(groups):
        col_g = col[:, g * k : (g + 1) * k]
        w_g = w[g * fg : (g + 1) * fg].reshape(fg, -1)
        out[:, g * fg : (g + 1) * fg] = col_g @ w_g.T
    if b is not None:
        out += b
    return out.reshape(n, oh, ow, f).transpose(0, 3, 1, 2).copy()


def conv2d_backward(dy, x, w, stride=1, pad=0, dilation=1, groups=1, *, need_dx=True):
    """Gradients ``(dx, dw, db)`` of :func:`conv2d_forward` given ``dy`` (N, F, OH, OW).

    ``db[f] = sum dy[:, f]``; per group ``g``: ``dw_g = dy_g^T @ col_g`` and
    ``dx = col2im(dy_g @ w_g)``; ``dx`` is ``None`` when ``need_dx`` is False.
    """
    f, cg, kh, kw = w.shape
    fg = f // groups
    k = cg * kh * kw
    dout = dy.transpose(0, 2, 3, 1).reshape(-1, f)
    db = dout.sum(axis=0)
    col = im2col(x, kh, kw, stride, pad, dilation)
    dw = np.empty_like(w)
    dcol = np.empty_like(col)
    for g in range(groups):
        dout_g = dout[:, g * fg : (g + 1) * fg]
        w_g = w[g * fg : (g + 1) * fg].reshape(fg, -1)
        dw[g * fg : (g + 1) * fg] = (dout_g.T @ col[:, g * k : (g + 1) * k]).reshape(fg, cg, kh, kw)
        dcol[:, g * k : (g + 1) * k] = dout_g @ w_g
    if not need_dx:
        return None, dw, db
    dx = col2im(dcol, x.shape, kh, kw, stride, pad, dilation)
    return dx, dw, db
