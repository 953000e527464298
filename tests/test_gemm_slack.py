"""The GEMM's in-place variants read past a row's end on purpose, and
``NUMBA_BOUNDSCHECK`` cannot see it: the micro-kernels are LLVM IR reading
through raw pointers. So the reads are checked against a guard page here.

:func:`~numbanet.kernels._gemm.kernel_block_bt` reads B's rows in place; a
ragged last tile loads a whole ``NR``-wide vector row, up to ``NR - 1``
elements past the row's end, and the convolution allocates ``tile_cols``
(= ``NR``) elements of slack after its planes for that
(:func:`numbanet.kernels._conv_gemm._rows_with_slack`). The probe puts the buffer's
end, slack included, right before a page that may not be read: a read past
the slack kills the process with SIGSEGV. ``kernel_block_at`` reads A's rows
in place with no slack at all.
"""

import subprocess
import sys

import numpy as np

from numbanet.kernels import _gemm
from numbanet.kernels import _conv_gemm

_PROBE = r"""
import ctypes, mmap, sys
import numpy as np
from numbanet.kernels import _gemm
from numbanet.kernels._gemm import MR, nr

page = mmap.PAGESIZE
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def guarded(count, dt):
    # count elements of dt ending exactly where an unreadable page starts
    nbytes = count * np.dtype(dt).itemsize
    pages = -(-nbytes // page)
    buf = mmap.mmap(-1, (pages + 1) * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    assert libc.mprotect(base + pages * page, page, 0) == 0, ctypes.get_errno()
    whole = np.frombuffer(buf, dt, count=pages * page // np.dtype(dt).itemsize)
    return whole[whole.size - count:]


rng = np.random.default_rng(0)
worst = 0.0
for dt in (np.float32, np.float64):
    nr_ = nr(np.dtype(dt).itemsize)
    for m, kc, nc in [(1, 1, 1), (MR + 1, 7, nr_ + 1), (19, 40, 2 * nr_ - 1), (5, 3, 70)]:
        a = rng.standard_normal((m, kc)).astype(dt)
        b = rng.standard_normal((kc, nc)).astype(dt)
        want = a.astype(np.float64) @ b
        tile = np.empty((MR, nr_), dt)
        # B in place: kc rows of nc end to end, then exactly the slack the conv allocates
        flat = guarded(kc * nc + nr_, dt)
        flat[: kc * nc] = b.ravel()
        flat[kc * nc:] = np.nan
        c = np.zeros((m, nc), dt)
        _gemm.kernel_block_bt(_gemm.pack_a(a), 0, m, kc, flat, np.arange(kc) * nc, 0, 0, nc, c, 0, False, tile)
        worst = max(worst, float(np.abs(c - want).max() / max(1.0, np.abs(want).max())))
        # A in place: m rows of kc end to end, no slack at all
        flat = guarded(m * kc, dt)
        flat[:] = a.ravel()
        atab = np.zeros(-(-m // MR) * MR, np.int64)
        atab[:m] = np.arange(m) * kc
        bp = _gemm.b_buffer(kc, nc, b)
        _gemm.pack_b(b, 0, kc, 0, nc, bp)
        c = np.zeros((m, nc), dt)
        _gemm.kernel_block_at(flat, atab, 0, m, kc, bp, nc, c, 0, False, tile)
        worst = max(worst, float(np.abs(c - want).max() / max(1.0, np.abs(want).max())))
print(worst)
"""


def test_in_place_reads_stay_inside_the_slack():
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode} (-11: read past the slack)\n{proc.stderr[-3000:]}"
    assert float(proc.stdout.split()[-1]) < 1e-5  # and the products are right


def test_conv_allocates_that_slack():
    for dt in (np.float32, np.float64):
        like = np.zeros(1, dt)
        flat, rows = _conv_gemm._rows_with_slack(3, 5, like)
        assert flat.size - rows.size == _gemm.tile_cols(like) == _gemm.nr(like.itemsize)
