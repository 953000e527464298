"""Softmax cross-entropy (pure NumPy)."""

import numpy as np


def _targets(labels, n, k, dtype):
    labels = np.asarray(labels)
    if labels.ndim == 1:
        t = np.zeros((n, k), dtype)
        t[np.arange(n), labels] = 1
        return t
    return labels.astype(dtype, copy=False)


def softmax_cross_entropy(logits, labels):
    """Return ``(mean cross-entropy, softmax probabilities)``.

    Uses the log-sum-exp form ``-log p_k = log(sum_j exp(x_j - m)) - (x_k - m)``.
    """
    n, k = logits.shape
    shifted = logits - logits.max(axis=1, keepdims=True)
    exps = np.exp(shifted)
    sums = exps.sum(axis=1, keepdims=True)
    probs = exps / sums
    t = _targets(labels, n, k, logits.dtype)
    neg_logp = np.log(sums) - shifted
    with np.errstate(invalid="ignore"):  # 0 * inf in the masked-out branch
        per_row = np.where(t != 0, t * neg_logp, 0).sum(axis=1)
    loss = per_row.mean() if n else np.nan
    return logits.dtype.type(loss), probs


def softmax_cross_entropy_backward(probs, labels):
    """``(probs - onehot(labels)) / N``."""
    n, k = probs.shape
    t = _targets(labels, n, k, probs.dtype)
    return (probs - t) / probs.dtype.type(max(n, 1))
