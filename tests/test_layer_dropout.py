"""The Dropout layer (layers/dropout.py)."""

import numpy as np
import pytest

from numbanet.layers import Dropout


def test_dropout_inverted_and_seeded(rng):
    x = np.ones((200, 50), np.float32)
    d = Dropout(0.3, seed=42)
    y = d.forward(x, train_flg=True)
    assert y.dtype == np.float32
    assert set(np.unique(y)) == {np.float32(0), np.float32(1 / 0.7)}
    assert abs(y.mean() - 1) < 0.02  # inverted: expectation preserved
    np.testing.assert_array_equal(d.backward(x), y)
    np.testing.assert_array_equal(Dropout(0.3, seed=42).forward(x), y)
    assert d.forward(x, train_flg=False) is x
    np.testing.assert_array_equal(Dropout(0.0).forward(x), x)
    with pytest.raises(ValueError, match="dropout_ratio"):
        Dropout(1.0)
