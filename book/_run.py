"""Run the book's scripts unchanged on numbanet.book.

The book's scripts import ``common.*`` (its layers, networks, optimizers...),
``dataset.mnist`` and the chapter networks (``two_layer_net``,
``simple_convnet``, ``deep_convnet``) from the script's folder.
:func:`install` registers those names as aliases of the modules of
:mod:`numbanet.book` in ``sys.modules``, so an ``import`` of any of them gets
numbanet's module. :func:`run_script` then runs a script as ``__main__``, as
``python script.py`` would (script folder as the working directory and first
import path, ``sys.argv`` set).
"""

from __future__ import annotations

import importlib
import os
import runpy
import sys

#: alias -> module of numbanet.book it stands for
ALIASES = {
    "common": "numbanet.book",
    "common.functions": "numbanet.book.functions",
    "common.gradient": "numbanet.book.gradient",
    "common.layers": "numbanet.book.layers",
    "common.multi_layer_net": "numbanet.book.multi_layer_net",
    "common.multi_layer_net_extend": "numbanet.book.multi_layer_net_extend",
    "common.optimizer": "numbanet.book.optimizer",
    "common.trainer": "numbanet.book.trainer",
    "common.util": "numbanet.book.util",
    "dataset": "numbanet.book",
    "dataset.mnist": "numbanet.book.mnist",
    "two_layer_net": "numbanet.book.two_layer_net",
    "simple_convnet": "numbanet.book.simple_convnet",
    "deep_convnet": "numbanet.book.deep_convnet",
}


def install(networks=True):
    """Make ``import common.layers`` (etc.) give :mod:`numbanet.book`'s modules.

    Parameters
    ----------
    networks : bool
        Also alias the chapter modules ``two_layer_net``, ``simple_convnet``
        and ``deep_convnet`` (the book keeps them beside its scripts), so that
        a script's ``from simple_convnet import SimpleConvNet`` gets
        numbanet's network. With False those come from the script's folder
        (the book's files, then running on numbanet's layers).

    Returns
    -------
    dict
        The aliases registered, name -> module. Idempotent; an alias already
        in ``sys.modules`` (e.g. the book's own ``common`` imported before)
        is replaced.
    """
    chapter = {"two_layer_net", "simple_convnet", "deep_convnet"}
    done = {}
    for alias, target in ALIASES.items():
        if alias in chapter and not networks:
            continue
        module = importlib.import_module(target)
        sys.modules[alias] = module
        done[alias] = module
    return done


def run_script(path, argv=(), networks=True):
    """Run the book's script ``path`` as ``__main__`` on :mod:`numbanet.book`.

    As ``python path argv...`` would, after :func:`install`: the working
    directory becomes the script's folder (the book opens ``params.pkl`` and
    friends relative to it), the folder goes first on the import path in
    place of the runner's own entry (so a script still finds helper modules
    beside it, e.g. ch05's ``layer_naive``), and ``sys.argv`` is
    ``[path, *argv]``. The working directory is restored afterwards.

    Returns the script's globals.
    """
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"run_script: no script at {path!r}")
    install(networks=networks)
    folder = os.path.dirname(path)
    old_cwd, old_argv, old_path0 = os.getcwd(), sys.argv, sys.path[0] if sys.path else None
    sys.argv = [path, *argv]
    # What the interpreter does for `python script.py` (as pdb and cProfile do).
    if sys.path:
        sys.path[0] = folder
    else:
        sys.path.insert(0, folder)
    os.chdir(folder)
    try:
        return runpy.run_path(path, run_name="__main__")
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv
        if old_path0 is not None and sys.path and sys.path[0] == folder:
            sys.path[0] = old_path0
