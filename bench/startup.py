"""Start-up costs: import time, cold compile time per kernel, warm-cache first result.

Run ``python -m numbanet.bench.startup`` (``--help`` for options). Every figure
comes from fresh Python processes, so nothing already imported or compiled in
this one counts:

- ``import numbanet.layers``: wall time of the import inside a fresh process
  (best and median of ``--repeat``);
- cold compile: one process with an empty ``NUMBA_CACHE_DIR`` of its own
  compiles each op's kernels (for ``--dtypes``) through
  :func:`numbanet.kernels.warmup`, after one trivial ``@njit`` function has
  paid Numba's one-off compiler start-up (reported separately); wall and CPU
  seconds per op (CPU seconds of the compiling process are the steadier
  figure on a shared machine). The GEMM's external symbols compile with the
  first op that calls them. Then, with ``--processes`` above 1, the wall time
  of ``warmup(processes=N)`` (what ``numbanet-warmup`` runs) from process
  start, into another empty cache;
- first result: wall time from launching a fresh ``python`` to the first
  ``conv2d_forward`` + ``conv2d_backward`` result on the ``conv_mnist`` shapes
  (``affine_forward`` + ``affine_backward`` on ``affine_mnist`` shapes before
  convolution exists), with the cache warmed by a previous process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time

_IMPORT = """
import json, time
t0 = time.perf_counter()
import numbanet.layers
print(json.dumps(time.perf_counter() - t0))
"""

_COLD = """
import json, time
t0 = time.perf_counter()
import numba
import numbanet.kernels as K
from numbanet.kernels._examples import available
t_import = time.perf_counter() - t0

@numba.njit
def _trivial(x):
    return x + 1

t0 = time.perf_counter()
_trivial(1.0)
t_numba = time.perf_counter() - t0
ops = {ops} or list(available())
secs = {{}}
for dtype in {dtypes}:
    for op in ops:
        c0 = time.process_time()
        wall = K.warmup(dtypes=(dtype,), ops=[op], progress=False)[f"{{op}}[{{dtype}}]"]
        secs[f"{{op}}[{{dtype}}]"] = (wall, time.process_time() - c0)
print(json.dumps({{"import": t_import, "numba_first_compile": t_numba, "ops": secs}}))
"""

_COLD_PARALLEL = """
import json, time
t0 = time.perf_counter()
import numbanet.kernels as K
secs = K.warmup(dtypes={dtypes}, ops={ops}, progress=False, processes={processes})
print(json.dumps({{"wall": time.perf_counter() - t0, "jobs": len(secs)}}))
"""

_FIRST_RESULT = """
import time
t0 = time.perf_counter()
import numpy as np
t1 = time.perf_counter()
import numbanet.kernels as K
t_import = time.perf_counter() - t1
rng = np.random.default_rng(0)
if hasattr(K, "conv2d_forward"):
    what = "conv2d_forward + conv2d_backward, x (100, 1, 28, 28), w (30, 1, 5, 5)"
    x = rng.standard_normal((100, 1, 28, 28)).astype(np.float32)
    w = rng.standard_normal((30, 1, 5, 5)).astype(np.float32)
    b = np.zeros(30, np.float32)
    y = K.conv2d_forward(x, w, b)
    out = K.conv2d_backward(np.ones_like(y), x, w)
else:
    what = "affine_forward + affine_backward, x (100, 784), w (784, 100)"
    x = rng.standard_normal((100, 784)).astype(np.float32)
    w = rng.standard_normal((784, 100)).astype(np.float32)
    b = np.zeros(100, np.float32)
    y = K.affine_forward(x, w, b)
    out = K.affine_backward(np.ones_like(y), x, w)
import json
print(json.dumps({{"what": what, "numpy": t1 - t0, "import": t_import, "total_in_process": time.perf_counter() - t0}}))
"""


def _python(code: str, env: dict | None = None) -> tuple[object, float]:
    """Run ``code`` in a fresh interpreter: (its last stdout line as JSON, wall seconds)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBANET_")}
    full_env.update(env or {})
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"subprocess failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def measure_import(repeat: int) -> list[float]:
    return [_python(_IMPORT)[0] for _ in range(repeat)]


def _empty_cache_env(tmp: str) -> dict:
    # An empty cache directory of its own: nothing loads, and the GEMM objects
    # the kernels call are compiled like everything else.
    return {"NUMBA_CACHE_DIR": tmp}


def measure_cold(ops=None, dtypes=("float32",)) -> dict:
    """Per op: (wall, CPU) seconds to compile it into an empty cache, in one process."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="numbanet-cold-") as tmp:
        return _python(_COLD.format(ops=repr(ops), dtypes=repr(tuple(dtypes))), _empty_cache_env(tmp))[0]


def measure_cold_parallel(processes: int, ops=None, dtypes=("float32",)) -> dict:
    """Wall seconds of ``warmup(processes=...)`` into an empty cache, process start included."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="numbanet-cold-") as tmp:
        code = _COLD_PARALLEL.format(ops=repr(ops), dtypes=repr(tuple(dtypes)), processes=processes)
        info, wall = _python(code, _empty_cache_env(tmp))
        return {**info, "process_wall": wall}


def measure_first_result(repeat: int) -> tuple[dict, list[float]]:
    info, _ = _python(_FIRST_RESULT.format())  # fills the cache if it is cold
    walls = []
    for _ in range(repeat):
        info, wall = _python(_FIRST_RESULT.format())
        walls.append(wall)
    return info, walls


def _default_processes() -> int:
    from numbanet.kernels._warmup import default_processes

    return default_processes()


def _summary(xs):
    return f"best {min(xs):.3f} s, median {statistics.median(xs):.3f} s ({len(xs)} runs)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5, help="fresh processes per timing (default 5)")
    p.add_argument("--ops", help="comma-separated ops for the cold-compile table (default: all)")
    p.add_argument("--skip-cold", action="store_true", help="skip the (slow) cold compile table")
    p.add_argument("--dtypes", default="float32", help="comma-separated dtypes for the cold compile (default float32)")
    p.add_argument("--processes", type=int, default=_default_processes(),
                   help="also time the cold compile with warmup(processes=N), if N > 1 (default: the cores)")
    args = p.parse_args(argv)

    print(f"import numbanet.layers: {_summary(measure_import(args.repeat))}")
    info, walls = measure_first_result(args.repeat)
    print(f"first result with a warm cache ({info['what']}):")
    print(f"  process start to result: {_summary(walls)}")
    print(f"  in-process: import numpy {info['numpy']:.3f} s, then import numbanet.kernels {info['import']:.3f} s; "
          f"imports + first call (Numba's import and the cache loads included) {info['total_in_process']:.3f} s")
    if not args.skip_cold:
        ops = args.ops.split(",") if args.ops else None
        for dtype in args.dtypes.split(","):
            cold = measure_cold(ops, (dtype,))
            rows = cold["ops"]
            print(f"cold compile, {dtype}, one process, empty cache (Numba's own first compile "
                  f"{cold['numba_first_compile']:.2f} s not included):")
            print("| op | wall s | CPU s |\n|---|---:|---:|")
            for name, (wall, cpu) in rows.items():
                print(f"| {name.removesuffix(f'[{dtype}]')} | {wall:.2f} | {cpu:.2f} |")
            print(f"| **total** | {sum(w for w, _ in rows.values()):.2f} | {sum(c for _, c in rows.values()):.2f} |")
            if args.processes > 1:
                par = measure_cold_parallel(args.processes, ops, (dtype,))
                print(f"cold compile, {dtype}, `warmup(processes={args.processes})` (numbanet-warmup), "
                      f"process start to all {par['jobs']} jobs loaded: {par['process_wall']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
