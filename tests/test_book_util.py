"""numbanet.book.util: the book's im2col/col2im layout (against a twin written
from the index formula), conv_output_size, smooth_curve and shuffle_dataset
(its use of NumPy's global random state)."""

import numpy as np
import pytest

from numbanet.book import util

# (N, C, H, W), filter_h, filter_w, stride, pad
CONV_CASES = [
    ((1, 1, 4, 4), 2, 2, 1, 0),
    ((2, 3, 7, 6), 3, 2, 1, 0),
    ((2, 3, 7, 6), 3, 3, 2, 1),
    ((3, 2, 5, 5), 2, 2, 2, 0),
    ((2, 2, 6, 7), 3, 2, 3, 2),
    ((1, 1, 9, 8), 5, 5, 1, 2),
    ((2, 1, 5, 4), 1, 1, 2, 0),
    ((1, 2, 3, 3), 3, 3, 1, 0),
]


def _out(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def _taps(shape, fh, fw, stride, pad):
    """Every (row, column) of the col matrix with the input pixel it holds,
    ``(row, col, (n, c, y, x))``, skipping taps in the zero padding."""
    n, c, h, w = shape
    oh, ow = _out(h, fh, stride, pad), _out(w, fw, stride, pad)
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                for ch in range(c):
                    for ky in range(fh):
                        for kx in range(fw):
                            y, xx = i * stride + ky - pad, j * stride + kx - pad
                            if 0 <= y < h and 0 <= xx < w:
                                yield (b * oh + i) * ow + j, (ch * fh + ky) * fw + kx, (b, ch, y, xx)


def im2col_twin(x, fh, fw, stride, pad):
    """col[(n*OH + i)*OW + j, (c*fh + ky)*fw + kx] = xpad[n, c, i*stride + ky, j*stride + kx]."""
    n, c, h, w = x.shape
    col = np.zeros((n * _out(h, fh, stride, pad) * _out(w, fw, stride, pad), c * fh * fw))
    for r, k, pix in _taps(x.shape, fh, fw, stride, pad):
        col[r, k] = x[pix]
    return col


def col2im_twin(col, shape, fh, fw, stride, pad):
    """The adjoint: every col entry added to the pixel im2col read it from
    (entries from the zero padding dropped)."""
    img = np.zeros(shape)
    for r, k, pix in _taps(shape, fh, fw, stride, pad):
        img[pix] += col[r, k]
    return img


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_im2col_col2im_layout(case, dtype):
    shape, fh, fw, stride, pad = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    col = util.im2col(x, fh, fw, stride, pad)
    assert col.dtype == dtype
    want = im2col_twin(x, fh, fw, stride, pad)
    assert col.shape == want.shape
    np.testing.assert_array_equal(col, want.astype(dtype))
    # Defaults stride=1, pad=0 as in the book.
    if stride == 1 and pad == 0:
        np.testing.assert_array_equal(util.im2col(x, fh, fw), col)
    dcol = rng.standard_normal(col.shape).astype(dtype)
    img = util.col2im(dcol, shape, fh, fw, stride, pad)
    assert img.shape == shape and img.dtype == dtype
    np.testing.assert_allclose(img, col2im_twin(dcol.astype(np.float64), shape, fh, fw, stride, pad),
                               rtol=1e-6 if dtype == np.float32 else 1e-14, atol=1e-6 if dtype == np.float32 else 0)


def test_im2col_integer_input_is_float64_as_in_the_book():
    x = np.arange(2 * 1 * 4 * 4, dtype=np.uint8).reshape(2, 1, 4, 4)
    col = util.im2col(x, 2, 2)
    assert col.dtype == np.float64
    np.testing.assert_array_equal(col, im2col_twin(x, 2, 2, 1, 0))
    assert util.col2im(col.astype(np.int64), x.shape, 2, 2).dtype == np.float64


def test_conv_output_size_is_true_division():
    assert util.conv_output_size(28, 5) == 24.0
    assert util.conv_output_size(28, 5, 2, 1) == 13.5
    assert util.conv_output_size(7, 3, stride=2, pad=1) == 4.0
    assert isinstance(util.conv_output_size(28, 5), float)


def smooth_twin(x):
    """Each output k is the Kaiser-weighted (length 11, beta 2, normalised)
    mean of the padded sequence around x[k]: left pad x[10..1], right pad
    x[-1..-10]."""
    x = list(x)
    padded = x[10:0:-1] + x + x[-1:-11:-1]
    w = np.kaiser(11, 2)
    w = w / w.sum()
    full = [sum(w[j] * padded[k + j] for j in range(11)) for k in range(len(padded) - 10)]
    return np.array(full[5:len(full) - 5])


@pytest.mark.parametrize("n", [11, 12, 37, 200])
def test_smooth_curve(n):
    x = list(np.random.default_rng(n).standard_normal(n))
    got = util.smooth_curve(x)
    assert got.shape == (n,) and got.dtype == np.float64
    np.testing.assert_allclose(got, smooth_twin(x), rtol=0, atol=1e-13)
    np.testing.assert_array_equal(util.smooth_curve(np.array(x)), got)
    assert np.allclose(util.smooth_curve([3.0] * n), 3.0)


@pytest.mark.parametrize("shape", [(10, 5), (10, 1, 3, 3), (7, 2, 2)])
def test_shuffle_dataset_draws_one_permutation(shape):
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal(shape), np.arange(shape[0])
    np.random.seed(7)
    xs, ts = util.shuffle_dataset(x, t)
    after = np.random.random()
    np.random.seed(7)
    perm = np.random.permutation(shape[0])
    assert np.random.random() == after, "consumes the global state exactly as one permutation"
    np.testing.assert_array_equal(ts, perm)
    np.testing.assert_array_equal(xs, x[perm])
    assert sorted(ts) == list(range(shape[0]))
