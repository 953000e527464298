"""``python -m numbanet.book script.py``: the book's imports resolve to
numbanet.book and the script runs as ``python script.py`` would."""

import subprocess
import sys
import textwrap

SCRIPT = """
import os, sys
sys.path.append(os.pardir)  # the book's own line: harmless, the aliases win
import numpy as np
from common.layers import Relu
from common.multi_layer_net import MultiLayerNet
from common.trainer import Trainer
from common.optimizer import SGD
from common.util import im2col
from dataset.mnist import load_mnist
from simple_convnet import SimpleConvNet
from helper import GREETING  # a module beside the script

for obj in (Relu, MultiLayerNet, Trainer, SGD, im2col, load_mnist, SimpleConvNet):
    assert obj.__module__.startswith("numbanet.book"), obj
np.random.seed(0)
net = MultiLayerNet(4, [3], 2)
print(GREETING, os.path.basename(os.getcwd()), sys.argv[1:], __name__, float(net.params["W1"][0, 0]))
"""


def test_runner_maps_the_books_imports(tmp_path):
    folder = tmp_path / "ch99"
    folder.mkdir()
    (folder / "script.py").write_text(textwrap.dedent(SCRIPT))
    (folder / "helper.py").write_text("GREETING = 'hello'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "numbanet.book", str(folder / "script.py"), "a", "--b"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.split()
    assert words[:5] == ["hello", "ch99", "['a',", "'--b']", "__main__"]
    # He init of the book: sqrt(2 / 4) * the first standard normal of seed 0
    assert float(words[5]) == float(0.5**0.5 * 1.764052345967664)
