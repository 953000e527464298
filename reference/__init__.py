"""Pure-NumPy reference implementations of every numbanet kernel.

Same public names and signatures as :mod:`numbanet.kernels`; written for
clarity in the style of "Deep Learning from Scratch" (im2col/col2im for
convolution), keeping the input dtype. No Numba here: the tests check the
kernels against these functions. Unlike the kernels, these do not validate
their arguments, except that conv and pooling raise ``ValueError`` where there
is no output (the window is larger than the padded input), as the kernels do.
"""

from .activation import relu_backward, relu_forward, sigmoid_backward, sigmoid_forward
from .affine import affine_backward, affine_forward
from .batchnorm import batchnorm_backward, batchnorm_forward
from .conv import conv2d_backward, conv2d_forward
from .loss import softmax_cross_entropy, softmax_cross_entropy_backward
from .optim import (
    adagrad_step,
    adagrad_step_foreach,
    adam_step,
    adam_step_foreach,
    adamw_step,
    all_finite,
    book_adam_step,
    book_adam_step_foreach,
    book_momentum_step,
    book_momentum_step_foreach,
    book_nesterov_step,
    book_nesterov_step_foreach,
    rmsprop_step,
    rmsprop_step_foreach,
    sgd_step,
    sgd_step_foreach,
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
    "sgd_step_foreach",
    "adagrad_step",
    "adagrad_step_foreach",
    "rmsprop_step",
    "rmsprop_step_foreach",
    "adam_step",
    "adam_step_foreach",
    "adamw_step",
    "all_finite",
    "book_momentum_step",
    "book_momentum_step_foreach",
    "book_nesterov_step",
    "book_nesterov_step_foreach",
    "book_adam_step",
    "book_adam_step_foreach",
    "conv2d_forward",
    "conv2d_backward",
    "maxpool2d_forward",
    "maxpool2d_backward",
    "avgpool2d_forward",
    "avgpool2d_backward",
]
