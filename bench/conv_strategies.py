"""Time the convolution's two strategies against each other on registry cases.

The kernels pick per shape (``numbanet.kernels.conv._use_direct``): the direct
wide-grid loops for few input channels *and* few filters per group at stride
1, the GEMM on the (phase-split) padded planes otherwise. This script forces
each strategy in turn (``numbanet.kernels.conv.forced_strategy``) and times
the forward pass, the backward pass and the backward pass without dx,
interleaved so that load from other processes hits both alike; it is how
``DIRECT_MAX_CG`` and ``GEMM_MIN_FG`` (``numbanet.kernels._tunables``) were
chosen::

    python -m numbanet.bench.conv_strategies                  # every conv case
    python -m numbanet.bench.conv_strategies conv_mnist conv_cifar_stem

float32, all of numbanet's threads; minima (and medians) in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics

from numbanet.kernels import conv as kconv
from numbanet.kernels.conv import forced_strategy as forced

from .registry import cases, get
from .timing import call_time


def _workloads(inp):
    x, w, b, dy = inp["x"], inp["w"], inp["b"], inp["dy"]
    hp = dict(stride=inp["stride"], pad=inp["pad"], groups=inp["groups"])
    return {
        "forward": lambda: kconv.conv2d_forward(x, w, b, **hp),
        "backward": lambda: kconv.conv2d_backward(dy, x, w, **hp),
        "backward, no dx": lambda: kconv.conv2d_backward(dy, x, w, need_dx=False, **hp),
    }


def compare(name, repeat=7):
    """{(pass, strategy): [seconds, ...]} for one conv case."""
    inp = get(name).inputs("float32")
    strategies = ["direct", "gemm"] if inp["stride"] == 1 else ["gemm"]  # direct is stride 1 only
    runs = _workloads(inp)
    times = {(p, s): [] for p in runs for s in strategies}
    for s in strategies:  # warm-up: compile or load every kernel
        with forced(s):
            for fn in runs.values():
                fn()
    for _ in range(repeat):
        for p, fn in runs.items():
            for s in strategies:
                with forced(s):
                    times[p, s].append(call_time(fn))
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", help="conv case names (default: every conv case)")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    names = args.cases or [c.name for c in cases("conv_*")]
    print(f"{'case':16s} {'pass':16s} {'strategy':8s} {'min ms':>8s} {'median ms':>10s}")
    for name in names:
        for (p, s), ts in compare(name, args.repeat).items():
            print(f"{name:16s} {p:16s} {s:8s} {min(ts) * 1e3:8.3f} {statistics.median(ts) * 1e3:10.3f}")


if __name__ == "__main__":
    main()
