"""The Pooling layer (layers/pooling.py); the kernels are tested in test_pool.py."""

import pytest

from numbanet.layers import Pooling


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pooling_layer_pads_correctly(K, R, rng, close, dtype, mode):
    x = (rng.standard_normal((3, 4, 9, 8)) - 3).astype(dtype)  # mostly negative
    layers = [Pooling(3, 2, stride=2, pad=1, mode=mode, backend=be) for be in (None, R)]
    outs = [layer.forward(x) for layer in layers]
    close(outs[0], outs[1])
    if mode == "max":
        assert (outs[0] < 0).mean() > 0.9  # the book's zero padding would give zeros here
    dout = rng.standard_normal(outs[0].shape).astype(dtype)
    close(layers[0].backward(dout), layers[1].backward(dout))
    torch = pytest.importorskip("torch")
    op = torch.nn.functional.max_pool2d if mode == "max" else torch.nn.functional.avg_pool2d
    close(outs[0], op(torch.from_numpy(x), (3, 2), 2, 1).numpy())


def test_pooling_layer_bad_mode():
    with pytest.raises(ValueError, match="mode must be 'max' or 'avg'"):
        Pooling(2, 2, mode="min")
