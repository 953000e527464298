"""How numbanet's kernels share the cores with BLAS.

Kernels parallelise *around* BLAS calls: a ``prange`` loop splits a matrix
product into row blocks and each task calls ``np.dot`` on its block. Numba's
``np.dot`` calls SciPy's OpenBLAS, which by default starts a thread pool of its
own; two pools that each spin-wait for work on 2 cores slow a 100x784x100
product from 0.1 ms to 8 ms. So on first use numbanet sets SciPy's OpenBLAS
(the copy Numba calls; NumPy's own BLAS is a different library and is left
alone) to one thread, and Numba's thread count is the one knob.
"""

from __future__ import annotations

_configured = False


def single_threaded_blas() -> None:
    """Limit the BLAS that Numba calls to one thread (once per process)."""
    global _configured
    if _configured:
        return
    _configured = True
    import scipy.linalg.cython_blas  # noqa: F401  loads the library Numba binds to
    from threadpoolctl import ThreadpoolController

    for lib in ThreadpoolController().lib_controllers:
        if lib.user_api == "blas" and "scipy" in lib.filepath and "numpy" not in lib.filepath:
            lib.set_num_threads(1)
