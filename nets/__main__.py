"""``python -m numbanet.nets``: the training command (see :mod:`numbanet.nets.train`)."""

import sys

from .train import main

sys.exit(main())
