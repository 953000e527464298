"""``python -m numbanet.book script.py [args...]``: run one of the book's
scripts unchanged, with ``common`` (and ``dataset.mnist`` and the chapter
networks) mapped to :mod:`numbanet.book`. See :func:`numbanet.book.run_script`."""

from __future__ import annotations

import argparse
import sys

from ._run import run_script


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m numbanet.book",
        description="Run a script of 'Deep Learning from Scratch' with its `common` package mapped to numbanet.book.",
    )
    p.add_argument("--book-networks", action="store_true",
                   help="use the chapter networks (two_layer_net.py, ...) found beside the script instead of numbanet.book's")
    p.add_argument("script", help="path of the book's script, e.g. ch07/train_convnet.py")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    a = p.parse_args(argv)
    run_script(a.script, a.args, networks=not a.book_networks)


if __name__ == "__main__":
    sys.exit(main())
