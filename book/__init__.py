"""The book's ``common`` package on numbanet's kernels.

A drop-in for the ``common`` package (and the chapter networks) of the book
"Deep Learning from Scratch" (O'Reilly Japan; code at
oreilly-japan/deep-learning-from-scratch): the same module names, public names,
signatures, defaults, attributes and semantics, so the book's scripts run
unchanged with ``common`` mapped to ``numbanet.book``. Where the book's math
and the modern (PyTorch) math disagree, this package follows the book;
:mod:`numbanet.layers` and :mod:`numbanet.optimizers` keep the modern,
torch-exact behaviour.

Run a script of the book unchanged::

    python -m numbanet.book path/to/deep-learning-from-scratch/ch07/train_convnet.py

or, in Python, :func:`install` (register ``common``, ``common.layers``, ...,
``dataset.mnist`` and the chapter networks as aliases of this package's
modules) and :func:`run_script`.
"""

from ._run import install, run_script

__all__ = ["install", "run_script"]
