"""The book's ``common`` package on numbanet's kernels.

A drop-in for the ``common`` package (and the chapter networks) of the book
"Deep Learning from Scratch" (O'Reilly Japan; code at
oreilly-japan/deep-learning-from-scratch): the same module names, public names,
signatures, defaults, attributes and semantics, so the book's scripts run
unchanged with ``common`` mapped to ``numbanet.book``. Where the book's math
and the modern (PyTorch) math disagree, this package follows the book;
:mod:`numbanet.layers` and :mod:`numbanet.optimizers` keep the modern,
torch-exact behaviour.
"""
