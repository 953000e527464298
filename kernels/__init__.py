"""Numba-compiled deep-learning kernels.

Every public function validates its arguments and then calls private
``@njit`` kernels named after it: ``_<op>``, or ``_<op>_<strategy>`` where
the op chooses between strategies (``_conv2d_forward_direct`` and
``_conv2d_forward_gemm``); ops that differ only in their arguments share one
(``adamw_step`` runs ``_adam_step``). ARCHITECTURE.md maps every op to its
files. Kernels compile lazily on first call and are cached on disk (see
:mod:`numbanet.kernels._config`).
The pure-NumPy :mod:`numbanet.reference` has the same public names and
signatures.

Threads: :func:`set_num_threads` / :func:`get_num_threads` or the environment
variable ``NUMBANET_NUM_THREADS`` (see :mod:`numbanet.kernels._threads`).
Ahead-of-time compilation: :func:`warmup` (or the ``numbanet-warmup`` command).

Importing this package imports neither Numba nor NumPy: each op's module
(and Numba with it) is imported on first use of one of its names, so a
program pays for what it calls (``import numbanet.kernels`` takes milliseconds,
``import numba`` about 0.2 s).
"""

from importlib import import_module as _import_module

#: Public name -> the module that defines it.
_WHERE = {
    "affine_forward": "affine",
    "affine_backward": "affine",
    "batchnorm_forward": "batchnorm",
    "batchnorm_backward": "batchnorm",
    "relu_forward": "activation",
    "relu_backward": "activation",
    "sigmoid_forward": "activation",
    "sigmoid_backward": "activation",
    "softmax_cross_entropy": "loss",
    "softmax_cross_entropy_backward": "loss",
    "sgd_step": "optim",
    "sgd_step_foreach": "optim",
    "adagrad_step": "optim",
    "adagrad_step_foreach": "optim",
    "rmsprop_step": "optim",
    "rmsprop_step_foreach": "optim",
    "adam_step": "optim",
    "adam_step_foreach": "optim",
    "adamw_step": "optim",
    "all_finite": "optim",
    "book_momentum_step": "optim",
    "book_momentum_step_foreach": "optim",
    "book_nesterov_step": "optim",
    "book_nesterov_step_foreach": "optim",
    "book_adam_step": "optim",
    "book_adam_step_foreach": "optim",
    "conv2d_forward": "conv",
    "conv2d_backward": "conv",
    "maxpool2d_forward": "pool",
    "maxpool2d_backward": "pool",
    "avgpool2d_forward": "pool",
    "avgpool2d_backward": "pool",
    # Utilities, not kernel ops: every other name in ``__all__`` is an op and
    # needs an entry in ``_examples.EXAMPLES`` (a test checks).
    "set_num_threads": "_threads",
    "get_num_threads": "_threads",
    "warmup": "_warmup",
}

UTILITIES = ("set_num_threads", "get_num_threads", "warmup")

__all__ = list(_WHERE)

#: The modules holding ops, for code that needs them all imported.
OP_MODULES = tuple(sorted({m for m in _WHERE.values() if not m.startswith("_")}))


def _is_submodule(name):
    from importlib.util import find_spec

    return not name.startswith("__") and find_spec(f"{__name__}.{name}") is not None


def __getattr__(name):
    mod = _WHERE.get(name)
    if mod is not None:
        value = getattr(_import_module(f".{mod}", __name__), name)
    elif name in OP_MODULES or _is_submodule(name):
        # a submodule (``K._threads``, ``K.validate``) as attribute, as it was
        # when this package imported its modules eagerly
        value = _import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # found once; later lookups are plain attribute reads
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(OP_MODULES))
