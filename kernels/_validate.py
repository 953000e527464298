"""Old name of :mod:`numbanet.kernels.validate`, kept while branches that
import it are merged; new code imports ``validate``."""

from .validate import *  # noqa: F401,F403
from .validate import FLOAT_DTYPES, _memory_bytes  # noqa: F401
