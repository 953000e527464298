"""Training checkpoints: one file, written atomically, read without pickle.

Format (version 1)
------------------
A checkpoint is a ZIP archive (stored, not compressed) holding

- ``meta.json``: UTF-8 JSON with ``"format": "numbanet-checkpoint"``,
  ``"version": 1`` and everything that is not an array: the training position
  (``epoch``, ``step`` within the epoch, ``iteration``), the configuration it
  is only valid for (number of training samples, batch size, seed, number of
  ranks), the optimizer's class, hyperparameters and step counts, every random
  generator's ``bit_generator.state`` (the shuffling generator as of the
  current epoch's start, each Dropout layer's generator, per rank), the
  per-rank partial sums of the running epoch, and the history. ``"arrays"``
  lists every array entry.
- one ``.npy`` file per array (NumPy's format, read with
  ``allow_pickle=False``): ``params/<name>.npy``, ``optimizer/<name>/<key>.npy``
  and, per rank ``r``, ``rank<r>/buffers/<name>.npy`` (batch norm running
  statistics differ between ranks until the epoch-end average).

ZIP keeps a CRC-32 per entry, so a corrupted or truncated file is detected
when read; :func:`load_checkpoint` then raises :class:`CheckpointError`
naming the file. :func:`save_checkpoint` writes a temporary file in the same
folder, fsyncs it, moves the previous checkpoint to ``<path>.prev`` and
renames the new one into place (then fsyncs the folder), so a crash at any
point leaves at least one complete checkpoint.
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np

FORMAT = "numbanet-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the run."""


def previous_path(path) -> str:
    return os.fspath(path) + ".prev"


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def save_checkpoint(path, meta: dict, arrays: dict[str, np.ndarray], keep_previous=True):
    """Write ``meta`` (JSON-serialisable) and ``arrays`` (name -> ndarray) to
    ``path`` atomically (see the module docstring)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    meta = dict(meta, format=FORMAT, version=VERSION, arrays=sorted(arrays))
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as z:
                z.writestr("meta.json", json.dumps(meta, indent=1))
                for name, a in arrays.items():
                    buf = io.BytesIO()
                    np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
                    z.writestr(name + ".npy", buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and os.path.exists(path):
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
        _fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path):
    """Read a checkpoint; return ``(meta, arrays)``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    CheckpointError
        The file is not a numbanet checkpoint, or is truncated or corrupted
        (the message names the file and what is wrong).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()  # reads every entry, checking its CRC-32
            if bad is not None:
                raise CheckpointError(f"checkpoint {path} is corrupted: entry {bad} fails its CRC check")
            meta = json.loads(z.read("meta.json").decode("utf-8"))
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"checkpoint {path} is not a {FORMAT} file")
            if meta.get("version") != VERSION:
                raise CheckpointError(f"checkpoint {path} has format version {meta.get('version')}, "
                                      f"this numbanet reads version {VERSION}")
            arrays = {}
            for name in meta["arrays"]:
                with z.open(name + ".npy") as f:
                    arrays[name] = np.lib.format.read_array(io.BytesIO(f.read()), allow_pickle=False)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, ValueError, EOFError, OSError,
            UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted and cannot be read "
                              f"({type(e).__name__}: {e})") from e
    return meta, arrays
