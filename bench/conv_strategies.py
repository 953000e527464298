"""Measure the thread/BLAS strategies for the im2col + GEMM convolution.

Forward pass of a registry case (default ``conv_mid``), float32, all threads::

    python -m numbanet.bench.conv_strategies [case] [repeats]

* ``A`` the kernel as it is: ``prange`` over batch chunks, each task its own
  buffers and numbanet's serial GEMM (``kernels/_gemm.py``; it used to be
  im2col + single-threaded BLAS, which is what this script first compared);
* ``B`` samples in sequence, one column buffer, multi-threaded BLAS (SciPy's,
  which ``np.dot`` inside ``@njit`` calls);
* ``C`` like B but ``S`` samples' columns side by side in one larger GEMM.

Kernel, B, C and PyTorch run interleaved; medians and minima are printed.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
from numba import njit

import numbanet.kernels as kernels
from numbanet.kernels.conv import _im2col_plane

from .registry import get


@njit(nogil=True, cache=False)
def _forward_serial(x, w, b, s, p, oh_, ow_, batch):
    n_, c_, h_, w_ = x.shape
    f_, cg, kh_, kw_ = w.shape
    kk = kh_ * kw_
    p_ = oh_ * ow_
    w2 = w.reshape(f_, cg * kk)
    y = np.empty((n_, f_, p_), x.dtype)
    col = np.empty((cg * kk, batch * p_), x.dtype)
    out = np.empty((f_, batch * p_), x.dtype)
    for n0 in range(0, n_, batch):
        nb = min(batch, n_ - n0)
        if nb == batch and batch == 1:
            for cc in range(cg):
                _im2col_plane(x[n0, cc], col, cc * kk, kh_, kw_, s, s, p, p, 1, 1, oh_, ow_)
            np.dot(w2, col, y[n0])
            continue
        cv = col.reshape(cg * kk, batch, p_)
        tmp = np.empty((cg * kk, p_), x.dtype)
        for i in range(nb):
            for cc in range(cg):
                _im2col_plane(x[n0 + i, cc], tmp, cc * kk, kh_, kw_, s, s, p, p, 1, 1, oh_, ow_)
            cv[:, i, :] = tmp
        np.dot(w2, col, out)
        ov = out.reshape(f_, batch, p_)
        for i in range(nb):
            y[n0 + i] = ov[:, i, :]
    for n in range(n_):
        for f in range(f_):
            y[n, f] += b[f]
    return y


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    name = argv[0] if argv else "conv_mid"
    reps = int(argv[1]) if len(argv) > 1 else 7
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(kernels.get_num_threads())
    case = get(name)
    inp = case.inputs("float32")
    x, w, b, s, p = inp["x"], inp["w"], inp["b"], inp["stride"], inp["pad"]
    oh = (x.shape[2] + 2 * p - w.shape[2]) // s + 1
    ow = (x.shape[3] + 2 * p - w.shape[3]) // s + 1
    xt, wt, bt = (torch.from_numpy(a) for a in (x, w, b))
    runs = {
        "A kernel (prange chunks, own GEMM)": lambda: kernels.conv2d_forward(x, w, b, s, p),
        "B serial samples, BLAS threads": lambda: _forward_serial(x, w, b, s, p, oh, ow, 1),
        "C serial, 4 samples per GEMM": lambda: _forward_serial(x, w, b, s, p, oh, ow, 4),
        "torch F.conv2d": lambda: F.conv2d(xt, wt, bt, stride=s, padding=p),
    }
    ref = kernels.conv2d_forward(x, w, b, s, p)
    times = {k: [] for k in runs}
    for k, fn in runs.items():
        got = np.asarray(fn())
        assert np.abs(got.reshape(ref.shape) - ref).max() <= 1e-3 * np.abs(ref).max(), k
    for _ in range(reps):
        for k, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    print(f"{name} forward, float32, {kernels.get_num_threads()} threads, {reps} interleaved repeats")
    for k, ts in times.items():
        print(f"  {k:42s} median {statistics.median(ts) * 1e3:8.2f} ms   min {min(ts) * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
