"""Datasets from local files only (nothing is downloaded).

Both loaders return ``(x_train, t_train), (x_test, t_test)`` with images as
NCHW arrays scaled to [0, 1] and labels as int64 class indices.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np


def _stratified_split(labels, test_fraction, seed):
    """Indices (train, test): each class contributes round(fraction * count)
    test samples, drawn with a seeded Generator (independent of scikit-learn)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        idx = idx[rng.permutation(len(idx))]
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train = np.concatenate(train)
    test = np.concatenate(test)
    # Mix the classes (the split itself is fixed by the seed).
    return train[rng.permutation(len(train))], test[rng.permutation(len(test))]


def load_digits(test_fraction=0.2, seed=0, dtype=np.float32):
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, no download).

    Returns
    -------
    (x_train, t_train), (x_test, t_test)
        ``x`` of shape (N, 1, 8, 8) in [0, 1] (pixel values 0..16 divided by
        16), ``t`` int64 labels 0..9. The split is stratified per class and
        fixed by ``seed``: with the defaults 1438 training and 359 test images.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"load_digits: test_fraction must lie in (0, 1), got {test_fraction}")
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_digits needs scikit-learn, which bundles the digits data: "
            "pip install scikit-learn  (or pip install 'numbanet[data]')"
        ) from None
    d = _sk_load_digits()
    x = (d.images / 16.0).astype(dtype).reshape(-1, 1, 8, 8)
    t = d.target.astype(np.int64)
    tr, te = _stratified_split(t, test_fraction, seed)
    return (x[tr], t[tr]), (x[te], t[te])


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read one IDX file (as MNIST is distributed), gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"read_idx: {path} is not an IDX file (bad magic number)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"read_idx: {path} has unknown IDX data type 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"read_idx: {path} is truncated (header)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dt = np.dtype(_IDX_DTYPES[code])
    need = int(np.prod(shape)) * dt.itemsize
    if len(data) - header != need:
        raise ValueError(
            f"read_idx: {path} should hold {need} bytes of data for shape {shape}, has {len(data) - header}"
        )
    return np.frombuffer(data, dt, offset=header).reshape(shape).astype(dt.newbyteorder("="))


def _find(folder: Path, prefix: str, kind: str) -> Path:
    hits = sorted(
        p for p in folder.iterdir()
        if p.name.startswith(prefix) and kind in p.name.replace(".", "-")
    )
    if not hits:
        raise FileNotFoundError(f"load_mnist: no {prefix}*{kind}* file in {folder}")
    return hits[0]


def _images(x, dtype):
    x = np.asarray(x)
    if x.ndim == 2:  # flattened (N, 784)
        side = int(round(np.sqrt(x.shape[1])))
        x = x.reshape(len(x), side, side)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"load_mnist: images must be (N, H, W), (N, C, H, W) or (N, H*W), got {x.shape}")
    if np.issubdtype(x.dtype, np.integer):  # bytes 0..255
        return x.astype(dtype) / dtype(255)
    return x.astype(dtype)


def load_mnist(path, dtype=np.float32):
    """MNIST (or Fashion-MNIST) from files the user already has.

    Parameters
    ----------
    path : str or Path
        A folder with the four IDX files (``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
        ``t10k-labels-idx1-ubyte``, optionally ``.gz``), or a ``.npz`` with
        ``x_train``, ``t_train`` (or ``y_train``), ``x_test``, ``t_test`` (or
        ``y_test``).

    Returns
    -------
    (x_train, t_train), (x_test, t_test)
        Images (N, 1, 28, 28) in [0, 1] as ``dtype`` (bytes divided by 255),
        int64 labels.
    """
    path = Path(os.fspath(path))
    dtype = np.dtype(dtype).type
    if path.is_dir():
        arrays = [
            read_idx(_find(path, "train", "images-idx3")),
            read_idx(_find(path, "train", "labels-idx1")),
            read_idx(_find(path, "t10k", "images-idx3")),
            read_idx(_find(path, "t10k", "labels-idx1")),
        ]
    elif path.suffix == ".npz":
        with np.load(path) as d:
            def get(*names):
                for name in names:
                    if name in d.files:
                        return d[name]
                raise KeyError(f"load_mnist: {path} has none of {names} (has {d.files})")

            arrays = [get("x_train"), get("t_train", "y_train"), get("x_test"), get("t_test", "y_test")]
    elif not path.exists():
        raise FileNotFoundError(f"load_mnist: {path} does not exist")
    else:
        raise ValueError(f"load_mnist: {path} must be a folder of IDX files or a .npz file")
    x_tr, t_tr, x_te, t_te = arrays
    for x, t, which in ((x_tr, t_tr, "train"), (x_te, t_te, "test")):
        if len(x) != len(t):
            raise ValueError(f"load_mnist: {which} has {len(x)} images but {len(t)} labels")
    return (
        (_images(x_tr, dtype), np.asarray(t_tr).astype(np.int64)),
        (_images(x_te, dtype), np.asarray(t_te).astype(np.int64)),
    )
