"""``numbanet-bench``: kernel vs reference (vs PyTorch) on the registry cases.

For each case and dtype it prints the reference time, the kernel time, the
speed-up, the max absolute and relative error of kernel against reference and,
when PyTorch is installed, PyTorch's time and our speed ratio. PyTorch runs in
a separate process with the same thread count, after the Numba measurements,
so the two runtimes never compete for the cores.

Usage::

    numbanet-bench                       # all cases, float32
    numbanet-bench --cases 'affine*,softmax_ce' --dtype both --json out.json
    numbanet-bench --isa avx2 --cases 'conv*'  # both sides restricted to AVX2
    python -m numbanet.bench --plot speedups.png

``--isa avx2`` reruns the command in a child process whose environment
restricts both sides to AVX2 + FMA: Numba compiles for ``haswell`` with this
CPU's features minus AVX-512 (``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES``,
hence numbanet's AVX2 micro-kernel) into a cache directory of its own, and
PyTorch runs with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
MKL_ENABLE_INSTRUCTIONS=AVX2`` (its matrix products, ``addmm`` and
``Linear``, go to MKL, which ignores the first two).

The header also gives the GEMM micro-kernel's measured single-core peak
(:mod:`numbanet.bench.gemm_peak`), and the "of peak" column each case's rate
as a fraction of that peak times the thread count.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import numba
import numpy as np

from .registry import cases, compare_outputs
from .timing import first_call, measure


def _parse(argv):
    p = argparse.ArgumentParser(
        prog="numbanet-bench",
        description="Compare numbanet's Numba kernels with the NumPy reference (and PyTorch).",
    )
    p.add_argument("--cases", default=None, help="comma-separated name globs or substrings (default: all)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "both"])
    p.add_argument("--repeat", type=int, default=5, help="timed calls per measurement, at least (default 5)")
    p.add_argument("--budget", type=float, default=1.0, help="seconds per measurement, at most (default 1); fast cases run for at least 0.25 s")
    p.add_argument("--threads", type=int, default=None, help="threads for Numba, BLAS and PyTorch (default: all cores)")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it is installed")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="bar chart of the speed-ups (needs matplotlib)")
    p.add_argument("--cpu-time", action="store_true",
                   help="time calls in process CPU time, not wall time (with --threads 1: robust on a shared machine)")
    p.add_argument("--isa", default="native", choices=["native", "avx2"],
                   help="restrict numbanet and PyTorch to an instruction set (default: what the CPU has)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    if args.budget <= 0:
        p.error("--budget must be > 0")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    return args


#: Marks the child process that runs an ``--isa`` comparison.
_ISA_MARK = "NUMBANET_BENCH_ISA"


def isa_env(isa: str, base=None) -> dict:
    """The environment restricting Numba, PyTorch and NumPy's BLAS to
    ``isa`` (``"avx2"``): Numba's target ``haswell`` with this CPU's features
    minus every AVX-512 (and later) extension, a separate Numba cache
    directory, PyTorch's ATen, oneDNN and MKL dispatch capped at AVX2 (MKL
    runs PyTorch's float matrix products and reads only its own variable:
    without it ``gemm_1024``'s PyTorch side ran MKL's AVX-512 kernels, 12.6
    ms against 18.8 ms with it, one thread, Xeon, 2026-12-02), and
    OpenBLAS's kernels for Haswell (``OPENBLAS_CORETYPE``: the reference
    side's products, e.g. ``gemm_1024``, on the AVX2 kernels issue 13
    compares against; a CPU OpenBLAS knows as SkylakeX or Cooper Lake would
    otherwise run its AVX-512 kernels)."""
    if isa != "avx2":
        raise ValueError(f"unknown isa {isa!r}")
    from llvmlite import binding as ll

    feats = ll.get_host_cpu_features()
    if not (feats.get("avx2") and feats.get("fma")):
        raise SystemExit("numbanet-bench --isa avx2: this CPU has no AVX2 + FMA")
    for k in feats:
        if k.startswith(("avx512", "avx10", "amx", "evex512")):
            feats[k] = False
    env = dict(os.environ if base is None else base)
    cache = env.get("NUMBA_CACHE_DIR")
    env.update({
        "NUMBA_CPU_NAME": "haswell",
        "NUMBA_CPU_FEATURES": feats.flatten(),
        "NUMBA_CACHE_DIR": f"{cache}-{isa}" if cache else os.path.join(tempfile.gettempdir(), f"numbanet-numba-cache-{isa}"),
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "OPENBLAS_CORETYPE": "Haswell",
        _ISA_MARK: isa,
    })
    return env


def _blas_line() -> str:
    """NumPy's BLAS library and the kernels it chose for this CPU (OpenBLAS
    picks them at load time: ``architecture``), as threadpoolctl reports."""
    from threadpoolctl import threadpool_info

    libs = [f"{i.get('internal_api')} {i.get('architecture') or ''}".strip() for i in threadpool_info()
            if i.get("user_api") == "blas"]
    return ", ".join(libs) or "none found"


def _target_line() -> str:
    from numbanet.kernels import _gemm

    triple, cpu, _ = _gemm.numba_target()
    t = _gemm.TILE
    return f"Numba target {cpu} ({triple}), GEMM tile {t.name} {t.mr} x {t.nv} vectors of {t.vector_bytes} B"


def _rate(case, dtype, seconds):
    if case.flops:
        return f"{case.flops / seconds / 1e9:.1f} GFLOP/s"
    if case.nbytes:
        return f"{case.nbytes(np.dtype(dtype)) / seconds / 1e9:.1f} GB/s"
    return ""


def _measure_numba(items, args, bar):
    import numbanet.kernels as kernels
    import numbanet.reference as reference

    results = []
    for case, dtype in items:
        bar.set_description(f"{case.name} {dtype}: compiling")
        rec = {"case": case.name, "group": case.group, "dtype": dtype, "params": dict(case.params)}
        # One draw of the inputs, and an independent copy for the reference:
        # drawing them again cost 5 of the default table's 60 s (the 16M cases).
        inp = case.inputs(dtype)
        ref_inp = copy.deepcopy(inp)
        ker = case.bind(kernels, inp)
        ref = case.bind(reference, ref_inp)
        k_out, rec["kernel_first_call"] = first_call(ker)
        bar.set_description(f"{case.name} {dtype}: reference")
        r_out, _ = first_call(ref)
        rec["max_abs_err"], rec["max_rel_err"] = compare_outputs(k_out, r_out)
        # Each side in a block of its own: in alternating turns OpenBLAS's
        # spinning threads (the reference's products) and Numba's fought over
        # the cores, the book's MultiLayerNetExtend step 6.5x slower on the
        # kernel side (ARCHITECTURE.md, "NumPy's BLAS between kernel calls").
        rec["reference"] = measure(ref, args.repeat, args.budget, cpu_time=args.cpu_time)
        bar.set_description(f"{case.name} {dtype}: kernel")
        rec["kernel"] = measure(ker, args.repeat, args.budget, cpu_time=args.cpu_time)
        rec["speedup"] = rec["reference"]["median"] / rec["kernel"]["median"]
        rec["kernel_rate"] = _rate(case, dtype, rec["kernel"]["median"])
        results.append(rec)
        bar.update()
    return results


def _measure_torch(items, args, threads, bar):
    """Run the PyTorch timings in a child process; yield one record per item."""
    req = {
        "threads": threads,
        "repeat": args.repeat,
        "budget": args.budget,
        "cpu_time": args.cpu_time,
        "items": [[c.name, dt] for c, dt in items],
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "numbanet.bench._torch_worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    proc.stdin.write(json.dumps(req))
    proc.stdin.close()
    for line in proc.stdout:
        rec = json.loads(line)
        bar.set_description(f"torch {rec['case']} {rec['dtype']}")
        bar.update()
        yield rec
    if proc.wait() != 0:
        raise RuntimeError(f"the PyTorch worker failed with exit code {proc.returncode}")


def _fmt_ms(s):
    return f"{s * 1e3:.3f}" if s < 0.01 else f"{s * 1e3:.1f}"


def format_table(results) -> str:
    have_torch = any("torch" in r for r in results)
    head = ["case", "dtype", "reference ms", "kernel ms", "speed-up", "max abs err", "max rel err", "kernel rate", "of peak"]
    if have_torch:
        head += ["torch ms", "torch/kernel"]
    rows = [head]
    for r in results:
        row = [
            r["case"],
            r["dtype"],
            _fmt_ms(r["reference"]["median"]),
            _fmt_ms(r["kernel"]["median"]),
            f"{r['speedup']:.1f}x",
            f"{r['max_abs_err']:.2e}",
            f"{r['max_rel_err']:.2e}",
            r["kernel_rate"],
            f"{r['of_peak']:.0%}" if "of_peak" in r else "",
        ]
        if have_torch:
            t = r.get("torch")
            if t is None:
                row += ["-", "-"]
            elif "error" in t:
                row += ["error", "-"]
            else:
                row += [_fmt_ms(t["median"]), f"{r['vs_torch']:.2f}x"]
        rows.append(row)
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = []
    for k, row in enumerate(rows):
        cells = [str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(results, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'numbanet[plot]'") from None
    labels = [f"{r['case']}\n{r['dtype']}" for r in results]
    x = np.arange(len(results))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(results)), 4.5))
    ax.bar(x - 0.2, [r["speedup"] for r in results], 0.4, label="kernel vs reference")
    if any("vs_torch" in r for r in results):
        ax.bar(x + 0.2, [r.get("vs_torch", np.nan) for r in results], 0.4, label="kernel vs PyTorch")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("speed-up (x, higher is faster)")
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
    ax.legend()
    ax.set_title(f"numbanet kernels, {results[0]['threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _compile_kernels(dtypes, quiet) -> None:
    """On a cold cache, compile every kernel for ``dtypes`` before anything
    is timed, in one worker process per core.

    A cold cache is the first run after an install or an upgrade: compiling
    there takes most of the run, and in worker processes it takes about half
    the wall time on 2 cores of compiling case by case in this process. The
    smallest op tells which it is: whether its kernel came from the cache.
    On a warm cache nothing happens here (each case loads its own kernels;
    loading all of them, or starting workers, would only add seconds).
    """
    from numbanet.kernels import warmup
    from numbanet.kernels._warmup import default_processes, kernels_reached

    warmup(dtypes[:1], ops=["relu_forward"], progress=False)
    if any(d.stats.cache_misses for d in kernels_reached("relu_forward").values()):
        warmup(dtypes, processes=default_processes(), progress=False if quiet or not sys.stderr.isatty() else None)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse(argv)
    if args.isa != "native" and os.environ.get(_ISA_MARK) != args.isa:
        # Numba reads its target at import: run the comparison in a child process
        return subprocess.run([sys.executable, "-m", "numbanet.bench", *argv], env=isa_env(args.isa)).returncode
    selected = cases(args.cases)
    if not selected:
        print(f"numbanet-bench: no case matches {args.cases!r}", file=sys.stderr)
        return 2
    if args.list:
        if args.isa != "native":
            print(f"isa {args.isa}: {_target_line()}")
        for c in selected:
            params = ", ".join(f"{k}={v}" for k, v in c.params.items())
            print(f"{c.name:22s} {c.group:10s} {params}")
        return 0
    dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    items = [(c, dt) for c in selected for dt in dtypes if dt in c.dtypes]
    if not items:
        print(f"numbanet-bench: no case supports dtype {args.dtype}", file=sys.stderr)
        return 2

    from numbanet.kernels import get_num_threads, set_num_threads

    if args.threads is not None:
        set_num_threads(args.threads)
    threads = get_num_threads()
    use_torch = not args.no_torch and importlib.util.find_spec("torch") is not None
    torch_items = [(c, dt) for c, dt in items if c.torch_bind is not None] if use_torch else []

    _compile_kernels(dtypes, args.quiet)

    from .gemm_peak import peak_gflops

    peaks = {dt: peak_gflops(dt) for dt in dtypes}

    from tqdm import tqdm

    with tqdm(
        total=len(items) + len(torch_items),
        disable=args.quiet or not sys.stderr.isatty(),
        file=sys.stderr,
        leave=False,
    ) as bar:
        results = _measure_numba(items, args, bar)
        by_key = {(r["case"], r["dtype"]): r for r in results}
        if torch_items:
            for t in _measure_torch(torch_items, args, threads, bar):
                r = by_key[(t["case"], t["dtype"])]
                r["torch"] = t
                if "median" in t:
                    r["vs_torch"] = t["median"] / r["kernel"]["median"]
    for r in results:
        r["threads"] = threads
        r["isa"] = args.isa
        r["cpu_time"] = args.cpu_time
        r["gemm_peak_gflops"] = peaks[r["dtype"]]
        case = next(c for c, dt in items if c.name == r["case"])
        if case.flops:
            r["of_peak"] = case.flops / r["kernel"]["median"] / 1e9 / (peaks[r["dtype"]] * threads)

    print(f"numbanet-bench: {threads} threads, numba {numba.__version__}, numpy {np.__version__}"
          + (f", torch {results[0]['torch'].get('torch_version')}" if results and "torch" in results[0] else "")
          + ("" if use_torch else " (PyTorch skipped: --no-torch)" if args.no_torch
             else " (PyTorch not installed: no torch columns)"))
    print(f"isa {args.isa}: {_target_line()}"
          + (f"; PyTorch ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY')}"
             f" ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA')}"
             f" MKL_ENABLE_INSTRUCTIONS={os.environ.get('MKL_ENABLE_INSTRUCTIONS')}" if args.isa != "native" else "")
          + f"; NumPy's BLAS: {_blas_line()}")
    print("GEMM micro-kernel peak, 1 core: " + ", ".join(f"{dt} {g:.1f} GFLOP/s" for dt, g in peaks.items()))
    print("speed-up = reference / kernel; torch/kernel > 1 means numbanet is faster. Median "
          + ("process CPU times." if args.cpu_time else "times."))
    print(format_table(results))
    errors = [r for r in results if "error" in r.get("torch", {})]
    for r in errors:
        print(f"torch failed on {r['case']} {r['dtype']}: {r['torch']['error']}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
