"""The sliding-window output size shared by convolution and pooling.

One formula for every place that needs it: the kernels' wrappers, the
reference, the networks, the benchmark cases and the tests. It lives in the
reference because the reference imports nothing but NumPy (and this module not
even that), so the kernels can use it without the reference loading Numba.
"""

from __future__ import annotations

__all__ = ["out_size"]


def out_size(size: int, k: int, stride: int = 1, pad: int = 0, dilation: int = 1) -> int:
    """Number of window positions along one axis, as PyTorch counts them:
    ``(size + 2*pad - dilation*(k - 1) - 1) // stride + 1``.

    Raises
    ------
    ValueError
        The window (``dilation*(k - 1) + 1`` wide) is larger than the padded
        input ``size + 2*pad``: there is no output, and PyTorch raises too.
    """
    span = dilation * (k - 1) + 1
    if size + 2 * pad < span:
        raise ValueError(
            f"a window spanning {span} (kernel {k}, dilation {dilation}) is larger than "
            f"the padded input {size + 2 * pad} (size {size}, pad {pad})"
        )
    return (size + 2 * pad - span) // stride + 1
