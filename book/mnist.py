"""The book's ``load_mnist`` (``dataset/mnist.py``), from local files.

:func:`load_mnist` has the book's signature, return structure and dtypes. It
reads, from one folder,

- the book's converted ``mnist.pkl`` (through the restricted unpickler of
  :mod:`numbanet.book._pickle`), or
- the four original IDX files ``train-images-idx3-ubyte.gz``,
  ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
  ``t10k-labels-idx1-ubyte.gz`` (or the same names without ``.gz``).

The folder is the ``data_dir`` argument, else the environment variable
``NUMBANET_MNIST_DIR``, else ``~/.numbanet/mnist``. Nothing is downloaded
unless asked: :func:`download_mnist` fetches the four files and checks their
SHA-256. :func:`write_standin_mnist` writes a *stand-in* (scikit-learn's 8x8
digits upscaled to 28x28, not MNIST) in the same format, for tests and for
machines without MNIST.

Command line::

    python -m numbanet.book.mnist download DIR      # the real files, checked
    python -m numbanet.book.mnist standin DIR [--train N] [--test N]
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from numbanet.nets.data import load_digits, read_idx

from . import _pickle

__all__ = ["load_mnist", "download_mnist", "write_standin_mnist", "mnist_dir", "FILES", "SHA256", "MNIST_URL",
           "ENV_VAR"]

#: The book's dataset keys -> the original file names.
FILES = {
    "train_img": "train-images-idx3-ubyte.gz",
    "train_label": "train-labels-idx1-ubyte.gz",
    "test_img": "t10k-images-idx3-ubyte.gz",
    "test_label": "t10k-labels-idx1-ubyte.gz",
}

#: SHA-256 of the original MNIST files (9912422, 28881, 1648877 and 4542
#: bytes), as the same values appear in the download code of several
#: independent public projects (for the original site and the book's mirror).
#: They were not checked against the files themselves: MNIST cannot be
#: downloaded where numbanet is developed.
SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

#: The mirror the book downloads from (the original site is
#: http://yann.lecun.com/exdb/mnist/).
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"

#: Environment variable naming the MNIST folder.
ENV_VAR = "NUMBANET_MNIST_DIR"

#: The folder used when neither an argument nor the environment names one.
DEFAULT_DIR = Path("~") / ".numbanet" / "mnist"

#: Written beside the files of a stand-in (see :func:`write_standin_mnist`).
STANDIN_MARKER = "STANDIN-NOT-MNIST.txt"

_PICKLE = "mnist.pkl"
_SIDE = 28


def mnist_dir(data_dir=None) -> Path:
    """The MNIST folder: ``data_dir``, else ``$NUMBANET_MNIST_DIR``, else
    ``~/.numbanet/mnist``."""
    if data_dir is not None:
        return Path(os.fspath(data_dir)).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return DEFAULT_DIR.expanduser()


def _missing_message(folder: Path, data_dir, missing) -> str:
    if data_dir is not None:
        source = "the data_dir argument"
    elif os.environ.get(ENV_VAR):
        source = f"${ENV_VAR}"
    else:
        source = f"the default (no data_dir argument, ${ENV_VAR} unset)"
    return (
        f"load_mnist: MNIST not found in {folder} ({source}); missing {', '.join(missing)}. "
        f"Put the book's {_PICKLE} or the four original files {', '.join(FILES.values())} "
        f"(gzipped or not) there, or name their folder with load_mnist(..., data_dir=DIR) or the "
        f"environment variable {ENV_VAR}. The files come from http://yann.lecun.com/exdb/mnist/ "
        f"(the book downloads them from its mirror {MNIST_URL}); "
        f"numbanet.book.mnist.download_mnist(DIR) fetches them and checks their SHA-256 "
        f"(python -m numbanet.book.mnist download DIR)."
    )


def _idx_file(folder: Path, name: str):
    for candidate in (folder / name, folder / name[: -len(".gz")]):
        if candidate.is_file():
            return candidate
    return None


def _read_dataset(folder: Path, data_dir) -> dict:
    """The book's dataset dict: ``train_img``/``test_img`` uint8 (N, 784),
    ``train_label``/``test_label`` uint8 (N,)."""
    pkl = folder / _PICKLE
    if pkl.is_file():
        dataset = _pickle.load(pkl)
        if not isinstance(dataset, dict) or not set(FILES) <= set(dataset):
            raise ValueError(f"load_mnist: {pkl} must hold a dict with keys {sorted(FILES)}")
        source = {key: pkl for key in FILES}
    else:
        paths = {key: _idx_file(folder, name) for key, name in FILES.items()}
        missing = [FILES[key] for key, p in paths.items() if p is None]
        if missing:
            raise FileNotFoundError(_missing_message(folder, data_dir, missing))
        dataset = {key: read_idx(p) for key, p in paths.items()}
        source = paths
    for which in ("train", "test"):
        img, lab = dataset[f"{which}_img"], dataset[f"{which}_label"]
        if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim in (2, 3)
                and img.shape[0] and img[0].size == _SIDE * _SIDE):
            raise ValueError(f"load_mnist: {source[f'{which}_img']}: images must be uint8 of shape (N, 28, 28) "
                             f"or (N, 784), got {getattr(img, 'dtype', type(img))} {getattr(img, 'shape', '')}")
        if not (isinstance(lab, np.ndarray) and lab.dtype == np.uint8 and lab.shape == img.shape[:1]):
            raise ValueError(f"load_mnist: {source[f'{which}_label']}: labels must be uint8 of shape "
                             f"({img.shape[0]},), got {getattr(lab, 'dtype', type(lab))} {getattr(lab, 'shape', '')}")
        dataset[f"{which}_img"] = img.reshape(-1, _SIDE * _SIDE)
    return dataset


def load_mnist(normalize=True, flatten=True, one_hot_label=False, *, data_dir=None):
    """MNIST as the book loads it.

    Parameters
    ----------
    normalize : bool
        Scale the pixels to [0, 1] as float32 (``x / 255``); otherwise uint8.
    flatten : bool
        Images as (N, 784); otherwise (N, 1, 28, 28).
    one_hot_label : bool
        Labels as float64 one-hot rows (N, 10); otherwise uint8 (N,).
    data_dir : str or Path, optional
        The folder of ``mnist.pkl`` or the four IDX files; defaults to
        ``$NUMBANET_MNIST_DIR``, else ``~/.numbanet/mnist`` (see
        :func:`mnist_dir`).

    Returns
    -------
    (x_train, t_train), (x_test, t_test)

    Raises
    ------
    FileNotFoundError
        The files are not there; the message says where to put them and where
        they come from.
    """
    folder = mnist_dir(data_dir)
    dataset = _read_dataset(folder, data_dir)
    out = []
    for which in ("train", "test"):
        x, t = dataset[f"{which}_img"], dataset[f"{which}_label"]
        if normalize:
            x = x.astype(np.float32)
            x /= np.float32(255.0)
        if one_hot_label:
            t = np.eye(10)[t]
        if not flatten:
            x = x.reshape(-1, 1, _SIDE, _SIDE)
        out.append((x, t))
    return tuple(out)


# --- download -----------------------------------------------------------------------


class ChecksumError(ValueError):
    """A downloaded file does not have the expected SHA-256."""


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_mnist(dest=None, base_url=MNIST_URL, *, sha256=None, timeout=60.0, quiet=False) -> Path:
    """Download the four MNIST files into ``dest`` and check their SHA-256.

    Only called explicitly: nothing in numbanet downloads on its own. A file
    already in ``dest`` with the right checksum is kept. Each file is written
    to a temporary file in ``dest`` and renamed into place only once its
    checksum matches, so a failed or corrupted download leaves no file
    behind.

    Parameters
    ----------
    dest : str or Path, optional
        The folder (created if needed); defaults to :func:`mnist_dir`.
    base_url : str
        Where the files are, ``base_url + file name``; the book's mirror by
        default.
    sha256 : dict, optional
        File name -> expected hex SHA-256; :data:`SHA256` (the real files) by
        default.
    timeout : float
        Seconds per connection attempt.
    quiet : bool
        Do not print progress lines.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    ChecksumError
        A file's SHA-256 differs from the expected one (the file is deleted).
    urllib.error.URLError
        A file could not be fetched.
    """
    sha256 = SHA256 if sha256 is None else sha256
    dest = mnist_dir(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES.values():
        want = sha256[name].lower()
        final = dest / name
        if final.is_file() and _sha256_file(final) == want:
            continue
        url = base_url.rstrip("/") + "/" + name
        if not quiet:
            print(f"Downloading {url} ...")
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest)
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                for block in iter(lambda: response.read(1 << 20), b""):
                    h.update(block)
                    out.write(block)
            got = h.hexdigest()
            if got != want:
                raise ChecksumError(f"download_mnist: {url} has SHA-256 {got}, expected {want}; not saved")
            os.replace(tmp, final)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return dest


# --- a stand-in ----------------------------------------------------------------------


def _write_idx(path: Path, a: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file."""
    header = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in a.shape)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header)
        f.write(np.ascontiguousarray(a, np.uint8).tobytes())


def _standin_images(x, n, rng):
    """``n`` 28x28 uint8 images from the 8x8 digits ``x`` (values k/16): each
    pixel repeated 3x3 (24x24), framed by 2 pixels, then shifted by up to 2
    pixels each way."""
    base = np.rint(x[:, 0] * 255.0).astype(np.uint8).repeat(3, axis=1).repeat(3, axis=2)
    base = np.pad(base, ((0, 0), (2, 2), (2, 2)))
    idx = np.resize(rng.permutation(len(x)), n)
    shift = rng.integers(-2, 3, size=(n, 2))
    out = base[idx]
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            sel = (shift[:, 0] == dy) & (shift[:, 1] == dx)
            out[sel] = np.roll(out[sel], (dy, dx), axis=(1, 2))
    return out, idx


def write_standin_mnist(dest, n_train=60000, n_test=10000, seed=0) -> Path:
    """Write a **stand-in for MNIST** (not MNIST) in MNIST's file format.

    scikit-learn's 8x8 handwritten digits (1797 images, bundled with
    scikit-learn) are split per class into training and test digits (80/20),
    upscaled to 28x28 uint8 (each pixel 3x3, 2-pixel frame, random shifts of
    up to 2 pixels) and repeated to ``n_train`` and ``n_test`` images. The
    four IDX ``.gz`` files get MNIST's names, so :func:`load_mnist` and the
    book's scripts read them as they would MNIST; a file
    ``STANDIN-NOT-MNIST.txt`` beside them says what they are. Accuracies on
    the stand-in are not MNIST's.

    Parameters
    ----------
    dest : str or Path
        The folder (created if needed).
    n_train, n_test : int >= 1
    seed : int
        Fixes the split, the order and the shifts.

    Returns
    -------
    Path
        ``dest``.
    """
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"write_standin_mnist: {name} must be an int >= 1, got {n!r}")
    dest = Path(os.fspath(dest)).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    (x_tr, t_tr), (x_te, t_te) = load_digits(test_fraction=0.2, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed)
    arrays = {}
    for which, x, t, n in (("train", x_tr, t_tr, n_train), ("test", x_te, t_te, n_test)):
        img, idx = _standin_images(x, int(n), rng)
        arrays[f"{which}_img"], arrays[f"{which}_label"] = img, t[idx].astype(np.uint8)
    for key, name in FILES.items():
        _write_idx(dest / name, arrays[key])
    (dest / STANDIN_MARKER).write_text(
        "These files are a stand-in for MNIST, written by numbanet.book.mnist.write_standin_mnist: "
        f"scikit-learn's 8x8 digits upscaled to 28x28 (seed={seed}, {n_train} training and {n_test} test "
        "images). They are not MNIST; results on them are not MNIST's.\n"
    )
    return dest


def _main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(prog="python -m numbanet.book.mnist", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("download", help="download the four MNIST files and check their SHA-256")
    d.add_argument("dir", nargs="?", default=None)
    d.add_argument("--base-url", default=MNIST_URL)
    s = sub.add_parser("standin", help="write a stand-in (sklearn digits upscaled; not MNIST)")
    s.add_argument("dir")
    s.add_argument("--train", type=int, default=60000)
    s.add_argument("--test", type=int, default=10000)
    s.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.cmd == "download":
        print(download_mnist(args.dir, args.base_url))
    else:
        print(write_standin_mnist(args.dir, args.train, args.test, args.seed))


if __name__ == "__main__":
    _main()
