"""The Flatten layer (layers/flatten.py)."""

from numbanet.layers import Flatten


def test_flatten_roundtrip(rng):
    x = rng.standard_normal((3, 2, 4, 5))
    f = Flatten()
    assert f.forward(x).shape == (3, 40)
    assert f.backward(f.forward(x)).shape == x.shape
