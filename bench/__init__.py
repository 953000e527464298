"""Benchmarks: the case registry, the pytest-benchmark suite and the
``numbanet-bench`` comparison command (kernel vs reference vs PyTorch)."""

from .registry import Case, cases, compare_outputs, get, register

__all__ = ["Case", "cases", "get", "register", "compare_outputs"]
