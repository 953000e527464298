"""Registry cases for the book's networks on :mod:`numbanet.book`: one full
training step, ``network.gradient`` + ``optimizer.update``, batch 100.

- ``train_step_book_simpleconvnet``: ch07 SimpleConvNet (30 5x5 filters on
  1x28x28, hidden 100), the book's Adam (lr 0.001), as ``train_convnet.py``;
- ``train_step_book_deepconvnet``: ch08 DeepConvNet (the book's defaults),
  Adam (lr 0.001), as ``train_deepnet.py``; dropout masks come from
  ``np.random``, reseeded at every step so both sides draw the same;
- ``train_step_book_multilayerextend``: MultiLayerNetExtend 784-5x100-10
  with batch normalization, SGD (lr 0.01), as ``batch_norm_test.py``;
- ``train_step_book_twolayer``: TwoLayerNet 784-50-10, SGD (lr 0.1), as
  ``train_neuralnet.py``.

The dtype of a case is that of the parameters, set through the speed switch
``numbanet.book.config.dtype``: float64 is the book's own run, float32 the
switch. The images are float32 in both, as the book's ``load_mnist`` returns
them, and the labels uint8 class indices. The initial weights come from the
networks' own initialisation under ``np.random.seed``.

Kernel side: :mod:`numbanet.book` as it is. Reference side: the same
networks and optimizers built with ``backend=numbanet.reference``, their
NumPy twins: the book's algorithm, layer by layer (im2col convolution, as
the book; the first layer's unused input gradient computed, as the book,
where numbanet.book skips it). A call returns the loss of the step and the
updated parameters.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np

from .registry import Case, register

#: seed of np.random for the weight initialisation and the dropout masks
SEED = 1234

#: The book's code works on process-wide state: np.random's global generator
#: (weight initialisation, DeepConvNet's dropout masks) and
#: ``config.dtype``. A set-up, and a step that reseeds and draws, hold this
#: lock, so cases called from several Python threads at once give the serial
#: results. (Which ops a network computes with is its own ``backend``, not
#: process state.)
_GLOBAL_STATE = threading.RLock()


@contextmanager
def _param_dtype(dtype):
    from numbanet.book import config

    with _GLOBAL_STATE:
        saved = config.dtype
        config.dtype = np.dtype(dtype).name
        try:
            yield
        finally:
            config.dtype = saved


def _inputs(shape, classes=10, n=100):
    def make(dtype, rng):
        return {
            "x": rng.random((n, *shape)).astype(np.float32),
            "t": rng.integers(0, classes, n).astype(np.uint8),
            "dtype": np.dtype(dtype).name,
        }

    return make


def _net(name, backend):
    if name == "simpleconvnet":
        from numbanet.book.simple_convnet import SimpleConvNet

        return SimpleConvNet(backend=backend), "Adam", {"lr": 0.001}
    if name == "deepconvnet":
        from numbanet.book.deep_convnet import DeepConvNet

        return DeepConvNet(backend=backend), "Adam", {"lr": 0.001}
    if name == "multilayerextend":
        from numbanet.book.multi_layer_net_extend import MultiLayerNetExtend

        return MultiLayerNetExtend(784, [100] * 5, 10, use_batchnorm=True, backend=backend), "SGD", {"lr": 0.01}
    from numbanet.book.two_layer_net import TwoLayerNet

    return TwoLayerNet(784, 50, 10, backend=backend), "SGD", {"lr": 0.1}


def _bind_for(name, reseed):
    def bind(impl, inp):
        from numbanet import kernels
        from numbanet.book import optimizer as book_optimizer

        with _param_dtype(inp["dtype"]):
            np.random.seed(SEED)
            net, opt_name, opt_kw = _net(name, impl)
        opt = getattr(book_optimizer, opt_name)(**opt_kw, backend=impl)
        # numbanet.book skips the unused input gradient of the first layer;
        # the book's algorithm computes it.
        net.skip_first_dx = impl is kernels
        loss_layer = net.lastLayer if hasattr(net, "lastLayer") else net.last_layer
        x, t = inp["x"], inp["t"]
        # Biases feeding a batch norm get a gradient that is 0 in exact
        # arithmetic (the normalisation removes any shift), so only rounding
        # noise moves them: not compared.
        hidden_b = {f"b{i}" for i in range(1, len(getattr(net, "hidden_size_list", [])) + 1)}
        shown = [k for k in net.params if not (getattr(net, "use_batchnorm", False) and k in hidden_b)]

        def step():
            grads = net.gradient(x, t)
            opt.update(net.params, grads)
            return loss_layer.loss, {k: net.params[k] for k in shown}

        if not reseed:
            return step

        def run():
            with _GLOBAL_STATE:
                np.random.seed(SEED)
                return step()

        return run

    return bind


for _name, (_shape, _reseed, _params, _desc) in {
    "simpleconvnet": ((1, 28, 28), False, {"N": 100, "input": (1, 28, 28), "filters": (30, 5, 5), "hidden": 100, "opt": "Adam"},
                      "ch07 SimpleConvNet (30 5x5, 28x28, hidden 100), batch 100: gradient + book Adam update"),
    "deepconvnet": ((1, 28, 28), True, {"N": 100, "input": (1, 28, 28), "convs": "16,16,32,32,64,64 3x3", "hidden": 50, "opt": "Adam"},
                    "ch08 DeepConvNet (book defaults), batch 100: gradient + book Adam update"),
    "multilayerextend": ((784,), False, {"N": 100, "sizes": "784-5x100-10", "batchnorm": True, "opt": "SGD"},
                         "MultiLayerNetExtend 784-5x100-10 with batch norm, batch 100: gradient + book SGD update"),
    "twolayer": ((784,), False, {"N": 100, "sizes": "784-50-10", "opt": "SGD"},
                 "TwoLayerNet 784-50-10, batch 100: gradient + book SGD update"),
}.items():
    register(
        Case(
            name=f"train_step_book_{_name}",
            group="train_book",
            params=_params,
            make_inputs=_inputs(_shape),
            bind=_bind_for(_name, _reseed),
            # Adam's first step moves each weight by about lr * sign(g); SGD's
            # by lr * g: the parameters agree to the loss's rounding.
            tol={"float32": 1e-3, "float64": 1e-10},
            description=_desc,
        )
    )
