"""A restricted unpickler for the book's data files.

The book stores its trained weights (``ch07/params.pkl``,
``ch08/deep_convnet_params.pkl``) and its converted MNIST (``mnist.pkl``) as
pickles of a dict of NumPy arrays. ``pickle.load`` on such a file runs any
callable the file names, so a file from elsewhere can run code. :func:`load`
admits only what those files hold:

- dicts (and ``collections.OrderedDict``), lists, tuples, str, bytes, numbers,
  bools and None (built by pickle opcodes, no globals involved);
- NumPy arrays, dtypes and scalars, through the few NumPy functions that
  rebuild them (the names NumPy 1.x writes, ``numpy.core.*``, and NumPy 2.x,
  ``numpy._core.*``);
- ``_codecs.encode``, ``bytes`` and ``bytearray``, with which protocols 0-4
  store byte strings.

Any other global, and persistent ids, raise :class:`pickle.UnpicklingError`
naming the file and the global, before anything of it is called.
"""

from __future__ import annotations

import collections
import codecs
import os
import pickle

import numpy as np

__all__ = ["load", "ALLOWED_GLOBALS"]

# NumPy's own reconstructors, taken from what NumPy pickles (rather than
# imported by private module paths, which differ between NumPy 1 and 2, and
# numpy.core warns on import under NumPy 2).
_reconstruct = np.zeros(1).__reduce__()[0]
_scalar = np.float64(0).__reduce__()[0]
_frombuffer = np.zeros(2).__reduce_ex__(5)[0]

#: (module, name) -> the object the name stands for.
ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): codecs.encode,
}
for _mod in ("builtins", "__builtin__"):  # protocols 0-2 write Python 2's name
    ALLOWED_GLOBALS[(_mod, "bytes")] = bytes
    ALLOWED_GLOBALS[(_mod, "bytearray")] = bytearray
for _core in ("numpy.core", "numpy._core"):
    ALLOWED_GLOBALS[(f"{_core}.multiarray", "_reconstruct")] = _reconstruct
    ALLOWED_GLOBALS[(f"{_core}.multiarray", "scalar")] = _scalar
    ALLOWED_GLOBALS[(f"{_core}.numeric", "_frombuffer")] = _frombuffer
del _core, _mod


class _Restricted(pickle.Unpickler):
    def __init__(self, file, where):
        super().__init__(file)
        self._where = where

    def find_class(self, module, name):
        obj = ALLOWED_GLOBALS.get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(
                f"{self._where}: forbidden global {module}.{name} in the pickle; numbanet.book loads only "
                "dicts, lists, tuples, NumPy arrays, dtypes and scalars (nothing was called)"
            )
        return obj

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"{self._where}: persistent id {pid!r} in the pickle is not allowed")


def load(path_or_file):
    """Unpickle a file holding only dicts, lists, tuples, NumPy arrays,
    dtypes and scalars.

    Parameters
    ----------
    path_or_file : str, os.PathLike or binary file object

    Returns
    -------
    object
        What the pickle holds.

    Raises
    ------
    pickle.UnpicklingError
        The pickle names any other global (e.g. ``os.system``,
        ``builtins.eval``) or a persistent id; the message names the file and
        the global. Nothing the pickle names is called.
    """
    if isinstance(path_or_file, (str, bytes, os.PathLike)):
        where = os.fsdecode(path_or_file)
        with open(path_or_file, "rb") as f:
            return _Restricted(f, where).load()
    where = getattr(path_or_file, "name", None) or repr(path_or_file)
    return _Restricted(path_or_file, where).load()
