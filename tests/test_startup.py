"""Start-up, compilation cache, warm-up and the thread-count knob.

What must hold in a *fresh* process (nothing compiled at import, the
environment variables) runs in a subprocess.
"""

import json
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pytest

import numbanet.kernels as kernels
import numbanet.reference as reference
from numbanet.bench import compare_outputs
from numbanet.kernels._examples import available, examples

EXAMPLES = available()

OPS = sorted(EXAMPLES)

needs_jit = pytest.mark.skipif(numba.config.DISABLE_JIT, reason="inspects compiled dispatchers")


def run_python(code, env=None, timeout=300):
    """Run ``code`` in a fresh interpreter; return its last stdout line as JSON."""
    full_env = {k: val for k, val in os.environ.items() if not k.startswith("NUMBANET_")}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=full_env, timeout=timeout,
    )
    assert proc.returncode == 0, f"subprocess failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- nothing compiles at import; warm-up reaches every kernel -------------------


@needs_jit
def test_import_compiles_nothing_and_starts_no_threads():
    out = run_python(
        """
        import json, sys
        import numbanet.layers, numbanet.optimizers, numbanet.nets, numbanet.kernels
        from numbanet.kernels._warmup import dispatchers
        import numba.np.ufunc.parallel as par
        compiled = {k: [str(s) for s in d.signatures] for k, d in dispatchers().items() if d.signatures}
        print(json.dumps({"n": len(dispatchers()), "compiled": compiled,
                          "threads_launched": bool(par._is_initialized),
                          "threadpoolctl": "threadpoolctl" in sys.modules,
                          "env_read": numbanet.kernels._threads._env_read}))
        """
    )
    assert out["n"] >= len(OPS)
    assert out["compiled"] == {}
    assert not out["threads_launched"]
    assert not out["threadpoolctl"]
    assert not out["env_read"]


def test_importing_the_kernels_package_imports_neither_numba_nor_numpy():
    out = run_python(
        """
        import json, sys
        import numbanet.kernels as K
        before = sorted(m for m in ("numba", "numpy") if m in sys.modules)
        f = K.relu_forward  # first use imports the op's module
        print(json.dumps({"before": before, "after": "numba" in sys.modules,
                          "module": f.__module__, "dir": "conv2d_forward" in dir(K)}))
        """
    )
    assert out == {"before": [], "after": True, "module": "numbanet.kernels.activation", "dir": True}
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        kernels.nonesuch  # noqa: B018


def test_every_kernel_op_has_a_warmup_example():
    ops = set(kernels.__all__) - set(kernels.UTILITIES)
    assert ops == set(EXAMPLES), "add new ops to numbanet/kernels/_examples.py"
    for name in kernels.UTILITIES:
        assert callable(getattr(kernels, name))


@pytest.mark.parametrize("op", OPS)
def test_examples_are_valid_and_match_reference(op, dtype):
    for kw in examples(op, dtype):
        got = getattr(kernels, op)(**kw)
        want = getattr(reference, op)(**kw)
        assert compare_outputs(got, want)[1] <= (1e-5 if dtype == np.float32 else 1e-12)


@needs_jit
def test_warmup_compiles_every_kernel_each_op_reaches():
    out = run_python(
        """
        import json
        import numbanet.kernels as K
        from numbanet.kernels._warmup import kernels_reached
        from numbanet.kernels._examples import available
        secs = K.warmup(dtypes=("float32",), progress=False)
        sigs = {op: {k: [str(s) for s in d.signatures] for k, d in kernels_reached(op).items()}
                for op in available()}
        print(json.dumps({"secs": secs, "sigs": sigs}))
        """
    )
    assert set(out["secs"]) == {f"{op}[float32]" for op in OPS}
    for op, reached in out["sigs"].items():
        assert reached, f"{op}: no @njit kernel found in its wrapper"
        for name, sigs in reached.items():
            # compiled for float32, or (a kernel without float arguments, as
            # the label check) compiled at all
            assert any("float32" in s for s in sigs) or (sigs and all("float" not in s for s in sigs)), (
                f"warmup of {op} did not compile {name}: {sigs}")
            assert not any("float64" in s and "float32" not in s for s in sigs), (name, sigs)


def test_warmup_arguments(capsys):
    secs = kernels.warmup(dtypes="float64", ops="relu_forward", progress=False)
    assert list(secs) == ["relu_forward[float64]"]
    assert capsys.readouterr().err == ""
    kernels.warmup(dtypes=(np.float32,), ops=["relu_forward"], progress=True)
    assert "numbanet warmup" in capsys.readouterr().err
    with pytest.raises(ValueError, match="ops"):
        kernels.warmup(ops=["conv9d"])
    with pytest.raises(TypeError, match="dtypes"):
        kernels.warmup(dtypes=("int32",))


# --- on-disk cache ---------------------------------------------------------------

_COMPILE_AND_CHECK = """
import json
import numpy as np
import numbanet.kernels as K, numbanet.reference as R
from numbanet.bench import compare_outputs
from numbanet.kernels._config import CACHE
from numbanet.kernels._examples import examples
from numbanet.kernels._warmup import kernels_reached
ops = ["relu_forward", "sigmoid_backward", "softmax_cross_entropy"]
worst = 0.0
for op in ops:
    for kw in examples(op, "float32", seed=7):
        worst = max(worst, compare_outputs(getattr(K, op)(**kw), getattr(R, op)(**kw))[1])
hits = sum(sum(d.stats.cache_hits.values()) for op in ops for d in kernels_reached(op).values())
print(json.dumps({"cache": CACHE, "worst": worst, "hits": hits}))
"""


def _cache_files(path):
    return sorted(f for _, _, files in os.walk(path) for f in files if f.endswith((".nbi", ".nbc")))


@needs_jit
def test_two_processes_compile_into_one_fresh_cache(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    full_env = {**{k: v for k, v in os.environ.items() if not k.startswith("NUMBANET_")}, **env}
    procs = [
        subprocess.Popen([sys.executable, "-c", _COMPILE_AND_CHECK], env=full_env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        res = json.loads(out.strip().splitlines()[-1])
        assert res["cache"] and res["worst"] <= 1e-5
    assert _cache_files(tmp_path), "no cache files written"
    # A third process loads what the two wrote.
    res = run_python(_COMPILE_AND_CHECK, env)
    assert res["hits"] >= 3 and res["worst"] <= 1e-5


def _cache_file_pair(tmp_path):
    from numbanet.kernels._config import _ConcurrentSafeCacheFile

    return [_ConcurrentSafeCacheFile(str(tmp_path), "kernel-12.py311", ("stamp",)) for _ in range(2)]


@pytest.mark.parametrize("when", ["before_data", "after_data", "after_index"])
def test_two_signatures_saved_at_once_keep_their_own_code(tmp_path, when):
    # warmup's workers save float32 and float64 entries of one kernel at the
    # same time. Another process's whole save may land at any point of this
    # one's (only the index update is under a lock): each signature must
    # still load its own data, never the other's.
    a, b = _cache_file_pair(tmp_path)
    key_a, key_b = ("float32 sig", "cpu", ("h",)), ("float64 sig", "cpu", ("h",))
    assert a._entry_name(key_a) != a._entry_name(key_b)
    order = []
    save_data, save_index = a._save_data, a._save_index

    def data_then(name, data):
        if when == "before_data":
            b.save(key_b, "code of float64")
        save_data(name, data)
        order.append("data")
        if when == "after_data":
            b.save(key_b, "code of float64")

    def index(overloads):
        save_index(overloads)
        order.append("index")

    a._save_data, a._save_index = data_then, index
    a.save(key_a, "code of float32")
    if when == "after_index":
        b.save(key_b, "code of float64")
    assert order == ["data", "index"], "the index names data already written"
    for f in _cache_file_pair(tmp_path):
        assert f.load(key_a) == "code of float32"
        assert f.load(key_b) == "code of float64"


def test_cache_index_updates_wait_for_the_lock(tmp_path):
    pytest.importorskip("fcntl")  # the lock is POSIX-only (the class docstring says so)
    a, _ = _cache_file_pair(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import fcntl, sys, time
            with open({a._index_path + ".lock"!r}, "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                print("locked", flush=True)
                time.sleep(1.0)
        """)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.perf_counter()
        a.save(("sig",), "code")
        waited = time.perf_counter() - t0
    finally:
        holder.wait(timeout=30)
    assert waited > 0.5, f"the index was written while another process held its lock ({waited:.2f} s)"
    assert a.load(("sig",)) == "code"


@needs_jit
def test_kernels_save_through_the_concurrent_safe_cache_file():
    from numbanet.kernels import _config, _gemm_ext, optim

    assert type(optim._sgd_step._cache._cache_file) is _config._ConcurrentSafeCacheFile
    assert type(optim._sgd_chunk.dispatcher._cache._cache_file) is _config._ConcurrentSafeCacheFile
    _gemm_ext.link(numba.float64, ("gemm_block",))  # the GEMM's C callbacks
    cf = _gemm_ext._compiled["gemm_block", numba.float64]
    assert type(cf._cache._cache_file) is _config._ConcurrentSafeCacheFile


@needs_jit
def test_disable_cache_env_writes_nothing(tmp_path):
    res = run_python(_COMPILE_AND_CHECK, {"NUMBA_CACHE_DIR": str(tmp_path), "NUMBANET_DISABLE_CACHE": "1"})
    assert res["cache"] is False and res["hits"] == 0 and res["worst"] <= 1e-5
    assert _cache_files(tmp_path) == []


@needs_jit
def test_boundscheck_env_reaches_numbanet_kernels():
    # What the NUMBA_BOUNDSCHECK=1 run in .ci/run relies on: our jit options
    # leave Numba's bounds checking switchable from the environment.
    out = run_python(
        """
        import json
        import numpy as np
        from numbanet.kernels._config import jit
        @jit()
        def past_end(a):
            return a[a.size]
        try:
            past_end(np.zeros(3))
            print(json.dumps("no error"))
        except IndexError as e:
            print(json.dumps("IndexError"))
        """,
        {"NUMBA_BOUNDSCHECK": "1", "NUMBANET_DISABLE_CACHE": "1"},
    )
    assert out == "IndexError"


# --- threads ----------------------------------------------------------------------


@pytest.fixture
def restore_threads():
    before = kernels.get_num_threads()
    yield
    kernels.set_num_threads(before)


@needs_jit
def test_set_num_threads_reaches_every_op_in_every_thread(restore_threads):
    from threadpoolctl import threadpool_info

    kernels.set_num_threads(1)
    assert kernels.get_num_threads() == 1 and numba.get_num_threads() == 1
    blas = {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}
    assert blas and all(n == 1 for n in blas.values())

    def in_fresh_thread(op):
        assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS  # Numba's per-thread default
        for kw in examples(op, "float32"):
            getattr(kernels, op)(**kw)
        return numba.get_num_threads()

    for op in OPS:
        with ThreadPoolExecutor(1) as ex:  # a fresh Python thread per op
            assert ex.submit(in_fresh_thread, op).result() == 1, f"{op} does not apply set_num_threads"

    top = numba.config.NUMBA_NUM_THREADS
    kernels.set_num_threads(top)
    assert kernels.get_num_threads() == top
    for lib in threadpool_info():
        if lib["user_api"] == "blas":  # NumPy's BLAS (Affine) gets the same count
            assert lib["num_threads"] == top


@pytest.mark.parametrize("bad,err", [(0, ValueError), (-1, ValueError), (10**6, ValueError),
                                     (1.5, TypeError), (True, TypeError), ("2", TypeError), (None, TypeError)])
def test_set_num_threads_rejects(bad, err, restore_threads):
    before = kernels.get_num_threads()
    with pytest.raises(err, match="set_num_threads: n must"):
        kernels.set_num_threads(bad)
    assert kernels.get_num_threads() == before


@needs_jit
def test_env_var_is_read_lazily_and_applied():
    out = run_python(
        """
        import json, numba
        import numbanet.kernels as K
        import numpy as np
        lazy = not K._threads._env_read
        K.relu_forward(np.ones(3, np.float32))
        print(json.dumps({"lazy": lazy, "numba": numba.get_num_threads(), "K": K.get_num_threads()}))
        """,
        {"NUMBANET_NUM_THREADS": "1"},
    )
    assert out == {"lazy": True, "numba": 1, "K": 1}


def test_env_var_garbage_is_a_clear_error():
    proc = subprocess.run(
        [sys.executable, "-c", "import numbanet.kernels as K; K.get_num_threads()"],
        capture_output=True, text=True, env={**os.environ, "NUMBANET_NUM_THREADS": "lots"},
    )
    assert proc.returncode != 0 and "NUMBANET_NUM_THREADS must be a positive integer" in proc.stderr


@pytest.fixture
def fresh_thread_state(monkeypatch):
    """Let a test re-read NUMBANET_NUM_THREADS in this process, then undo it."""
    from numbanet.kernels import _threads

    before = kernels.get_num_threads()
    monkeypatch.setattr(_threads, "_env_read", False)
    monkeypatch.setattr(_threads, "_token", object())  # every thread re-syncs
    yield _threads
    monkeypatch.undo()
    kernels.set_num_threads(before)


def test_env_var_in_process(fresh_thread_state, monkeypatch):
    monkeypatch.setenv("NUMBANET_NUM_THREADS", "1")
    assert kernels.get_num_threads() == 1
    assert fresh_thread_state._requested == 1


@pytest.mark.parametrize("raw,err", [("0", "set_num_threads: NUMBANET_NUM_THREADS must be >= 1"),
                                     ("2.5", "NUMBANET_NUM_THREADS must be a positive integer")])
def test_env_var_bad_values_in_process(fresh_thread_state, monkeypatch, raw, err):
    monkeypatch.setenv("NUMBANET_NUM_THREADS", raw)
    with pytest.raises(ValueError, match=err):
        kernels.get_num_threads()


def test_kernels_reached_and_dispatchers_agree():
    from numbanet.kernels._warmup import dispatchers, kernels_reached

    every = dispatchers()
    for op in OPS:
        reached = kernels_reached(op)
        assert set(reached) <= set(every)
        # Plain functions under NUMBA_DISABLE_JIT: then there is nothing to find.
        assert bool(reached) != numba.config.DISABLE_JIT, op


@needs_jit
def test_startup_script_runs(capsys):
    from numbanet.bench.startup import main

    assert main(["--repeat", "1", "--ops", "relu_forward"]) == 0
    out = capsys.readouterr().out
    assert "import numbanet.layers: best" in out and "| relu_forward |" in out


# --- idle OpenMP workers spin briefly, then sleep -------------------------------

_WAIT_POLICY_PROBE = """
import json, os, subprocess, sys
import numpy as np
import numba
import numbanet.kernels as K
K.relu_forward(np.ones(3, np.float32))  # first kernel call starts Numba's threads
child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('GOMP_SPINCOUNT'))"],
                       capture_output=True, text=True).stdout.strip()
print(json.dumps({"layer": numba.threading_layer(), "env": os.environ.get("GOMP_SPINCOUNT"),
                  "child": child}))
"""


def _probe_wait_policy(env):
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("NUMBANET_", "OMP_", "GOMP_"))}
    full_env.update(env, OMP_DISPLAY_ENV="VERBOSE")  # libgomp prints its settings once, when loaded
    proc = subprocess.run([sys.executable, "-c", _WAIT_POLICY_PROBE],
                          capture_output=True, text=True, env=full_env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = [line.split("=", 1)[1].strip().strip("'") for line in proc.stderr.splitlines()
             if line.strip().startswith("GOMP_SPINCOUNT")]
    return json.loads(proc.stdout.strip().splitlines()[-1]), shown


@needs_jit
def test_openmp_workers_spin_briefly_without_leaking_the_setting():
    from numbanet.kernels._threads import SPIN_COUNT

    out, shown = _probe_wait_policy({})
    # The setting reaches libgomp and nothing else: not this process's
    # environment afterwards, not its subprocesses (e.g. the PyTorch worker).
    assert out["env"] is None and out["child"] == "None"
    if out["layer"] == "omp":
        assert shown == [SPIN_COUNT] and SPIN_COUNT != "300000"  # not libgomp's default
    else:  # TBB or workqueue: no libgomp was loaded, so nothing was shown
        assert shown == []


@needs_jit
@pytest.mark.parametrize("env, spins", [({"GOMP_SPINCOUNT": "123"}, "123"),
                                        ({"OMP_WAIT_POLICY": "ACTIVE"}, "30000000000")])
def test_a_users_openmp_wait_setting_wins(env, spins):
    out, shown = _probe_wait_policy(env)
    assert out["child"] == env.get("GOMP_SPINCOUNT", "None")
    if out["layer"] == "omp":
        assert shown == [spins]


# --- large freed blocks stay in the process ---------------------------------------

_MALLOC_PROBE = """
import ctypes, json
import numpy as np
import numbanet.kernels as K
from numbanet.kernels import _malloc

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
K.relu_forward(np.ones(3, np.float32))  # the first kernel call tunes malloc
nbytes = 20 * 2**20
before = libc.mallinfo2()
a = np.ones(nbytes, np.uint8)
during = libc.mallinfo2()
del a
after = libc.mallinfo2()
print(json.dumps({"state": _malloc.tune_malloc(),
                  "mmapped": during.hblkhd - before.hblkhd >= nbytes,
                  "kept": after.fordblks >= nbytes}))
"""


@pytest.mark.skipif(sys.platform != "linux" or not hasattr(os, "confstr")
                    or "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or ""), reason="glibc only")
@pytest.mark.parametrize("env, expected", [
    # Tuned: the 20 MiB block comes from the heap and stays there, free, after del.
    ({}, {"state": "tuned", "mmapped": False, "kept": True}),
    # Untouched: glibc's defaults (the mmap threshold starts at 128 KiB and only
    # rises as large blocks are freed) or the user's fixed 128 KiB threshold.
    ({"NUMBANET_MALLOC_TUNING": "0", "MALLOC_MMAP_THRESHOLD_": "131072"},
     {"state": "disabled", "mmapped": True}),
    ({"MALLOC_MMAP_THRESHOLD_": "131072"}, {"state": "user", "mmapped": True}),
])
def test_large_freed_blocks_are_kept_for_reuse_unless_the_user_chose(env, expected):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "NUMBANET_"))}
    proc = subprocess.run([sys.executable, "-c", _MALLOC_PROBE], capture_output=True, text=True,
                          env={**full_env, **env}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "kept" not in expected:
        del out["kept"]
    assert out == expected


# --- cache freshness across files -------------------------------------------------


def test_every_cross_file_njit_dependency_is_declared():
    """A kernel file that calls another file's @jit helpers must list that file
    in _config.DEPENDENCIES, or editing the helper would leave its cache stale."""
    import pathlib
    import re

    from numbanet.kernels import _config

    kdir = pathlib.Path(_config.__file__).parent
    jitted = {p.stem for p in kdir.glob("*.py") if "@jit(" in p.read_text()}
    for path in (kdir / f"{stem}.py" for stem in jitted):
        used = set(re.findall(r"^from \.(\w+) import", path.read_text(), re.M)) & jitted
        used.discard(path.stem)
        declared = {pathlib.Path(n).stem for n in _config.DEPENDENCIES.get(path.name, ())}
        assert used <= declared, f"{path.name} compiles @jit code from {sorted(used - declared)}"


@needs_jit
def test_kernel_caches_go_stale_when_the_gemm_file_changes(monkeypatch):
    from numbanet.kernels import _config, _conv_gemm, _conv_grid, affine

    real = _config._file_hash
    for dispatcher in (_conv_gemm._conv2d_forward_gemm, _conv_gemm._conv2d_backward_gemm, affine._matmul):
        locator = dispatcher._cache._impl._locator
        before = locator.get_source_stamp()
        monkeypatch.setattr(_config, "_file_hash", lambda path: b"edited " + path.encode())
        assert locator.get_source_stamp() != before  # an edit to _gemm.py invalidates
        monkeypatch.setattr(_config, "_file_hash", real)
        assert locator.get_source_stamp() == before
    # files without cross-file helpers keep numba's own locator
    assert not type(_conv_grid._copy_row._cache._impl._locator).__name__.startswith("Numbanet")


@needs_jit
def test_editing_a_tunable_makes_the_kernels_recompile(monkeypatch):
    """Kernels read CHUNK, PARALLEL_MIN, ... (kernels/_tunables.py) as globals,
    which Numba freezes into the cached machine code: every kernel file that
    imports the tunables declares them, and an edited value changes its
    kernels' cache freshness stamp."""
    import hashlib
    import pathlib
    import re

    from numbanet.kernels import _config, activation, affine, optim

    kdir = pathlib.Path(_config.__file__).parent
    readers = {p.name for p in kdir.glob("*.py")
               if "@jit(" in p.read_text() and re.search(r"^from \._tunables import", p.read_text(), re.M)}
    assert readers == {n for n, deps in _config.DEPENDENCIES.items() if "_tunables.py" in deps}
    real = _config._file_hash

    def edited(path):
        if os.path.basename(path) != "_tunables.py":
            return real(path)
        text, n = re.subn(r"^CHUNK = .*$", "CHUNK = 1024", pathlib.Path(path).read_text(), flags=re.M)
        assert n == 1
        return hashlib.sha256(text.encode()).digest()

    for dispatcher in (activation._relu_forward, optim._adam_step, affine._matmul):
        locator = dispatcher._cache._impl._locator
        before = locator.get_source_stamp()
        monkeypatch.setattr(_config, "_file_hash", edited)
        assert locator.get_source_stamp() != before
        monkeypatch.setattr(_config, "_file_hash", real)
        assert locator.get_source_stamp() == before


# --- the GEMM as external symbols: compiled once per dtype, CPU and tile -----------

_LINK_GEMM = """
import ctypes, json
import numpy as np
from numba import types
from numbanet.kernels import _gemm_ext
entries = {entries!r}
_gemm_ext.link(types.float32, entries)
err = None
if "gemm_block" in entries:
    # the compiled symbol itself, called as the kernels call it: x @ w into c
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 40)).astype(np.float32), rng.standard_normal((40, 5)).astype(np.float32)
    c = np.zeros((3, 5), np.float32)
    ptr = lambda a: a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    _gemm_ext._compiled["gemm_block", types.float32].ctypes(
        ptr(x), 3, 40, 40, 1, ptr(w), 5, 5, 1, ptr(c), 3, 5, 0, 3, 0, 5, 0)
    err = float(np.abs(c - x @ w).max())
print(json.dumps({{"hits": sum(cf.cache_hits for cf in _gemm_ext._compiled.values()),
                  "n": len(_gemm_ext._compiled), "err": err}}))
"""


@needs_jit
def test_gemm_objects_are_cached_per_target_cpu(tmp_path):
    from numbanet.kernels._gemm_ext import ENTRIES

    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    every = _LINK_GEMM.format(entries=tuple(ENTRIES))
    first = run_python(every, env)
    assert first["n"] == len(ENTRIES) and first["hits"] == 0 and first["err"] < 1e-4
    # Another target CPU (as a machine with other features would be) never
    # loads these objects: it compiles its own (one entry shows it; the cache
    # index is per function, keyed on the CPU alike for all).
    other = run_python(_LINK_GEMM.format(entries=("pack_b",)), {**env, "NUMBA_CPU_NAME": "generic"})
    assert other["n"] == 1 and other["hits"] == 0
    again = run_python(every, env)
    assert again["hits"] == len(ENTRIES) and again["err"] < 1e-4


def test_gemm_symbols_name_dtype_and_tile():
    from numba import types

    from numbanet.kernels import _config, _gemm_ext

    names = {_gemm_ext.symbol(e, dt) for e in _gemm_ext.ENTRIES for dt in (types.float32, types.float64)}
    assert len(names) == 2 * len(_gemm_ext.ENTRIES)
    assert all(_gemm_ext.tile_key() in s for s in names)
    # Editing the GEMM objects' file recompiles their callers (the tile itself
    # is in the cache file names: test_gemm_kernels_are_cached_per_tile).
    assert "_gemm_ext.py" in _config.DEPENDENCIES["_conv_gemm.py"]
    assert "_gemm_ext.py" in _config.DEPENDENCIES["affine.py"]


@needs_jit
def test_kernels_declare_every_gemm_entry_they_call():
    # A cached kernel loads with only its declared entry points registered.
    from numbanet.kernels import _gemm_ext
    from numbanet.kernels._warmup import dispatchers

    declared = {k: d for k, d in dispatchers().items() if hasattr(d, "gemm_entries")}
    assert {"_conv_gemm._conv2d_forward_gemm", "_conv_gemm._conv2d_backward_gemm", "affine._matmul"} <= set(declared)
    def calls(fn, seen):
        """GEMM entries whose calls end up in ``fn``'s machine code: its own,
        and those of every @njit function it calls (compiled into it)."""
        found = set()
        for c in fn.__code__.co_names:
            obj = fn.__globals__.get(c)
            if c in _gemm_ext.ENTRIES and obj is getattr(_gemm_ext, c):
                found.add(c)
            elif hasattr(obj, "py_func") and obj not in seen:
                seen.add(obj)
                found |= calls(obj.py_func, seen)
        return found

    for name, d in dispatchers().items():
        called = calls(d.py_func, {d})
        assert called <= set(getattr(d, "gemm_entries", ())), f"{name} calls {called}: decorate it with links_gemm"


_GEMM_KERNELS_FROM_CACHE = """
import json, sys
import numbanet.kernels as K, numbanet.reference as R
from numbanet.bench import compare_outputs
from numbanet.kernels._examples import examples
from numbanet.kernels._warmup import kernels_reached
ops = ("affine_forward", "affine_backward", "conv2d_forward", "conv2d_backward")
worst = {}
for dt in ("float32", "float64"):
    for op in ops:
        for kw in examples(op, dt, seed=3):  # every branch: the direct and GEMM convolutions
            worst[dt] = max(worst.get(dt, 0.0), compare_outputs(getattr(K, op)(**kw), getattr(R, op)(**kw))[1])
per_op = {op: {k: d for k, d in kernels_reached(op).items() if hasattr(d, "gemm_entries")} for op in ops}
gemm = {k: d for found in per_op.values() for k, d in found.items()}
# Numba's registries (numba.np.linalg imports SciPy): loaded by a compile, not by a cache load
refreshed = "numba.np.linalg" in sys.modules
print(json.dumps({"refreshed": refreshed, "worst": worst, "per_op": {op: sorted(found) for op, found in per_op.items()},
                  "hits": {k: sum(d.stats.cache_hits.values()) for k, d in gemm.items()},
                  "misses": {k: sum(d.stats.cache_misses.values()) for k, d in gemm.items()}}))
"""


@needs_jit
def test_kernels_loaded_from_the_cache_find_their_gemm_symbols():
    # The second process loads every GEMM-calling kernel (both dtypes, every
    # branch) from the cache, with nothing but links_gemm to register the
    # symbols its machine code calls (an unregistered symbol is a jump to
    # address 0: a segfault, not an error). The first fills the cache where
    # it is cold; it is the cache the rest of the suite uses, so after
    # numbanet-warmup neither compiles anything.
    run_python(_GEMM_KERNELS_FROM_CACHE)
    out = run_python(_GEMM_KERNELS_FROM_CACHE)
    assert all(out["per_op"].values()), out["per_op"]  # each op reaches a GEMM-calling kernel
    # each loaded from the cache, once per dtype, none compiled
    assert all(out["hits"][k] >= 2 and out["misses"][k] == 0 for k in out["hits"]), out
    assert not out["refreshed"]  # _config.load_without_refresh: loading set up no compiler
    assert out["worst"]["float32"] <= 1e-5 and out["worst"]["float64"] <= 1e-12, out["worst"]


@needs_jit
def test_warmup_in_worker_processes_then_loads_here(tmp_path):
    out = run_python(
        """
        import json
        import numbanet.kernels as K
        from numbanet.kernels._warmup import kernels_reached
        secs = K.warmup(dtypes="float32", ops=["relu_forward", "affine_forward"], processes=2, progress=False)
        hits = {op: sum(sum(d.stats.cache_hits.values()) for d in kernels_reached(op).values())
                for op in ("relu_forward", "affine_forward")}
        print(json.dumps({"secs": sorted(secs), "hits": hits}))
        """,
        {"NUMBA_CACHE_DIR": str(tmp_path)},
    )
    assert out["secs"] == ["affine_forward[float32]", "gemm[float32]", "relu_forward[float32]"]
    assert all(h >= 1 for h in out["hits"].values()), out  # compiled by the workers, loaded here


def test_warmup_worker_jobs_and_their_order():
    """``warmup(processes=N)`` hands out one job per kernels module and dtype
    plus one per dtype for the GEMM's symbols; a free worker takes the GEMM
    jobs first, then the costliest job that may start, and a job holding a
    GEMM op only once its dtype's GEMM job is done."""
    from numbanet.kernels import _warmup

    dtypes = ("float32", "float64")
    jobs = [(n, d) for d in dtypes for n in _warmup._names(None)]
    wjobs = _warmup._worker_jobs(jobs)
    modules = {_warmup._module(n) for n, _ in jobs}
    assert modules <= set(_warmup._COST)  # every module has a cost
    assert sorted((m, d) for m, d, _ in wjobs) == sorted((m, d) for m in modules | {"gemm"} for d in dtypes)
    for m, d, names in wjobs:  # every op once, in its module's job
        assert m == "gemm" or all(_warmup._module(n) == m for n in names)
    assert sorted((n, d) for m, d, names in wjobs if m != "gemm" for n in names) == sorted(jobs)

    order = _warmup._by_cost(wjobs)
    assert [(m, d) for m, d, _ in order[:2]] == [("gemm", "float32"), ("gemm", "float64")]
    costs = [_warmup._COST[m] for m, _, _ in order[2:]]
    assert costs == sorted(costs, reverse=True)

    def pick(pending, free, done):
        return [(m, d) for m, d, _ in _warmup._pick(pending, free, done)]

    # three free workers, no GEMM done: both GEMM jobs, then the costliest
    # job without a GEMM op (the convolutions are costlier but must wait)
    assert pick(order, 3, set()) == [("gemm", "float32"), ("gemm", "float64"), ("pool", "float32")]
    rest = order[2:]
    assert pick(rest, 1, {"float64"}) == [("conv", "float64")]
    assert pick(rest, 2, {"float32", "float64"}) == [("conv", "float32"), ("conv", "float64")]
    assert ("affine", "float32") not in pick(rest, len(rest), {"float64"})
    assert ("affine", "float32") in pick(rest, len(rest), {"float32"})
    assert pick(rest, 0, set()) == []


def test_warmup_workers_run_every_job_after_its_gemm(monkeypatch):
    """The scheduler loop of ``warmup(processes=N)``, with threads and sleeps
    in place of compiling processes: every op's seconds come back, and no
    convolution or Affine job starts before its dtype's GEMM job ended."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from numbanet.kernels import _warmup

    events, lock = [], threading.Lock()

    def job(what, cost):
        with lock:
            events.append((what, "start"))
        time.sleep(0.02 * cost)
        with lock:
            events.append((what, "end"))

    def fake_group(names, dtype):
        module = "gemm" if names == ("gemm",) else _warmup._module(names[0])
        job(f"{module}[{dtype}]", _warmup._COST[module])
        return {f"{n}[{dtype}]": 0.5 for n in names}

    monkeypatch.setattr(_warmup, "_run_group", fake_group)
    dtypes = ("float32", "float64")
    jobs = [(n, d) for d in dtypes for n in _warmup._names(None)]
    # three workers: one is free while both GEMM jobs run
    secs = _warmup._warmup_in_workers(jobs, 3, True, executor=ThreadPoolExecutor)
    assert list(secs) == [f"gemm[{d}]" for d in dtypes] + [f"{n}[{d}]" for n, d in jobs]
    for d in dtypes:
        for m in ("conv", "affine"):
            assert events.index((f"{m}[{d}]", "start")) > events.index((f"gemm[{d}]", "end")), events


def test_warmup_command(capsys):
    from numbanet.kernels._warmup import default_processes, main

    assert default_processes() >= 1
    assert main(["--ops", "relu_forward", "--dtypes", "float32", "-j", "1"]) == 0
    out = capsys.readouterr()
    assert "relu_forward[float32]" in out.out and "1 jobs in" in out.out
    with pytest.raises(ValueError, match="processes"):
        kernels.warmup(ops="relu_forward", processes=0)


@needs_jit
def test_gemm_kernels_are_cached_per_tile():
    """Kernels holding GEMM code are cached under the tile's name: a forced
    tile (NUMBANET_GEMM_TILE) never loads another tile's machine code."""
    from numbanet.kernels import _conv_gemm, _gemm, affine, pool

    for dispatcher in (_conv_gemm._conv2d_forward_gemm, affine._matmul, _gemm.gemm):
        impl = dispatcher._cache._impl
        assert impl._locator.get_disambiguator().endswith("-" + _gemm.TILE.name)
        assert f"-{_gemm.TILE.name}." in impl.filename_base
    assert _gemm.TILE.name not in pool._maxpool2d_forward._cache._impl.filename_base


@needs_jit
def test_parallel_kernels_parallelise_their_prange_loops_only():
    """``_config.jit(parallel=True)`` turns only ``prange`` loops into parallel
    regions: a kernel's array expressions, ``np.zeros`` and reductions stay
    plain serial code, not one more gufunc each to compile. For every
    signature of a dispatcher, not only the first (Numba parses the options
    again per signature)."""
    import warnings

    import numba

    from numbanet.kernels._config import _prange_only

    def kernel(a):
        b = a * 2  # an array expression
        z = np.zeros(3, a.dtype)
        s = np.zeros(a.size, a.dtype)
        for i in numba.prange(a.size):
            s[i] = b[i] + 1
        return s.sum() + z.sum()

    compiled = numba.njit(parallel=_prange_only())(kernel)
    for dt in (np.float32, np.float64):
        a = np.arange(5, dtype=dt)
        with warnings.catch_warnings():
            # a * 2 compiles alone, where parallel=True finds nothing to do
            warnings.simplefilter("ignore", numba.NumbaPerformanceWarning)
            assert compiled(a) == kernel(a)
    for sig in compiled.signatures:
        parfors = compiled.get_metadata(sig)["parfor_diagnostics"].initial_parfors
        assert len(parfors) == 1, (sig, parfors)
    everything = numba.njit(parallel=True)(kernel)  # the default converts all five
    everything(np.arange(5, dtype=np.float32))
    assert len(everything.get_metadata(everything.signatures[0])["parfor_diagnostics"].initial_parfors) > 1


_EXTERNAL_HELPER = """
import json
import numpy as np
import numbanet.kernels as K, numbanet.reference as R
from numbanet.kernels import _extcall, pool
planes = pool._maxpool2d_forward_planes
helper, kernel = getattr(planes, "dispatcher", planes), pool._maxpool2d_forward
rng = np.random.default_rng(0)
out = {}
for dt in (np.float32, np.float64):
    same = True
    for shape in ((1, 2, 4, 4), (8, 16, 24, 24)):  # below and above POOL_PARALLEL_MIN: both branches
        x = rng.standard_normal(shape).astype(dt)
        same &= bool(np.array_equal(K.maxpool2d_forward(x, 2, 2)[0], R.maxpool2d_forward(x, 2, 2)[0]))
    sigs = [s for s in helper.signatures if s[0].dtype.name == np.dtype(dt).name]
    ir = kernel.inspect_llvm(next(s for s in kernel.signatures if s[0].dtype.name == np.dtype(dt).name))
    mangled = helper.overloads[sigs[0]].fndesc.mangled_name
    out[np.dtype(dt).name] = {
        "same": same, "signatures": len(sigs),
        "declared": f'declare i32 @"{_extcall.symbol(helper, sigs[0])}"(' in ir,
        "defined": any(line.startswith("define") and mangled in line for line in ir.splitlines()),
    }
print(json.dumps(out))
"""


@needs_jit
def test_external_helpers_compile_once_and_are_called_not_linked(tmp_path):
    """A ``jit(external=True)`` per-chunk helper is compiled once for the
    serial branch and the ``prange`` loop of its kernel alike (bounds passed
    as np.int64), and the kernel's LLVM module (its parallel loop's libraries
    linked in) declares the helper's symbol instead of holding its code.
    In a fresh cache: Numba inspects only code it compiled."""
    out = run_python(_EXTERNAL_HELPER, {"NUMBA_CACHE_DIR": str(tmp_path)})
    for dt, got in out.items():
        assert got == {"same": True, "signatures": 1, "declared": True, "defined": False}, (dt, got)


def test_external_helper_symbols_name_the_helper_and_its_types():
    # What a cached kernel's machine code says it calls must decode to the
    # same helper and types (register_symbols_in loads them by it).
    from numba import types

    from numbanet.kernels import _extcall, batchnorm

    helper = batchnorm._batchnorm_backward_channels
    argtys = (types.Array(types.float32, 3, "C"), types.int64, types.uint64, types.float64, types.boolean)
    name = _extcall.symbol(helper.dispatcher, argtys)
    module, qualname, *codes = name[len(_extcall._PREFIX):].split("$")
    assert (module, qualname) == ("numbanet.kernels.batchnorm", "_batchnorm_backward_channels")
    assert tuple(_extcall._decode(c) for c in codes) == argtys
    assert _extcall._SYMBOL.fullmatch(name.encode())
    with pytest.raises(numba.core.errors.TypingError, match="aligned writable arrays"):
        _extcall.symbol(helper.dispatcher, (types.Array(types.float32, 1, "C", readonly=True),))
