"""Numba-compiled deep-learning kernels.

Every public function validates its arguments and then calls a private
``@njit`` kernel of the same name with a leading underscore. Kernels compile
lazily on first call and are cached on disk (see :mod:`numbanet.kernels._config`).
The pure-NumPy :mod:`numbanet.reference` has the same public names and
signatures.

Threads: :func:`set_num_threads` / :func:`get_num_threads` or the environment
variable ``NUMBANET_NUM_THREADS`` (see :mod:`numbanet.kernels._threads`).
Ahead-of-time compilation: :func:`warmup`.
"""

from .activation import relu_backward, relu_forward, sigmoid_backward, sigmoid_forward
from .affine import affine_backward, affine_forward
from .batchnorm import batchnorm_backward, batchnorm_forward
from .conv import conv2d_backward, conv2d_forward
from .loss import softmax_cross_entropy, softmax_cross_entropy_backward
from .optim import (
    adagrad_step,
    adam_step,
    adamw_step,
    all_finite,
    book_adam_step,
    book_momentum_step,
    book_nesterov_step,
    rmsprop_step,
    sgd_step,
)
from .pool import avgpool2d_backward, avgpool2d_forward, maxpool2d_backward, maxpool2d_forward

__all__ = [
    "affine_forward",
    "affine_backward",
    "batchnorm_forward",
    "batchnorm_backward",
    "relu_forward",
    "relu_backward",
    "sigmoid_forward",
    "sigmoid_backward",
    "softmax_cross_entropy",
    "softmax_cross_entropy_backward",
    "sgd_step",
    "adagrad_step",
    "rmsprop_step",
    "adam_step",
    "adamw_step",
    "all_finite",
    "book_momentum_step",
    "book_nesterov_step",
    "book_adam_step",
    "conv2d_forward",
    "conv2d_backward",
    "maxpool2d_forward",
    "maxpool2d_backward",
    "avgpool2d_forward",
    "avgpool2d_backward",
]

# Utilities, not kernel ops: every other name in ``__all__`` is an op and needs
# an entry in ``_examples.EXAMPLES`` (a test checks).
from ._threads import get_num_threads, set_num_threads  # noqa: E402
from ._warmup import warmup  # noqa: E402

UTILITIES = ("set_num_threads", "get_num_threads", "warmup")
__all__ += UTILITIES
