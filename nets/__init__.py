"""Networks, training loop, data loading and gradient checks."""

from .gradient import numerical_gradient

__all__ = ["numerical_gradient"]
