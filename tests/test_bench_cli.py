"""The numbanet-bench command on a small case (numba only, and with PyTorch)."""

import json
import subprocess
import sys

import pytest

from numbanet.bench import compare

FAST = ["--cases", "affine_mnist", "--repeat", "1", "--budget", "0.05", "--quiet"]


def test_compare_table_and_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert compare.main(FAST + ["--no-torch", "--dtype", "both", "--cpu-time", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "affine_mnist  float32" in text and "affine_mnist  float64" in text
    assert "process CPU times" in text and "GEMM micro-kernel peak, 1 core: float32" in text
    assert "speed-up" in text and "torch ms" not in text
    records = json.loads(out.read_text())
    assert [r["dtype"] for r in records] == ["float32", "float64"]
    for r in records:
        assert r["cpu_time"] and 0 < r["gemm_peak_gflops"] and 0 < r["of_peak"]
        assert r["kernel"]["median"] > 0 and r["reference"]["median"] > 0
        assert r["max_rel_err"] < 1e-5
        assert r["speedup"] == pytest.approx(r["reference"]["median"] / r["kernel"]["median"])


def test_compare_with_torch_in_a_worker(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "r.json"
    assert compare.main(FAST + ["--threads", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "torch/kernel" in text
    (rec,) = json.loads(out.read_text())
    assert rec["threads"] == 1 and rec["torch"]["median"] > 0 and "error" not in rec["torch"]
    assert rec["vs_torch"] == pytest.approx(rec["torch"]["median"] / rec["kernel"]["median"])


def test_compare_plot(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "s.png"
    assert compare.main(FAST + ["--no-torch", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_list_and_bad_arguments(capsys):
    assert compare.main(["--list"]) == 0
    assert "affine_wide" in capsys.readouterr().out
    assert compare.main(["--cases", "no_such_case"]) == 2
    with pytest.raises(SystemExit):
        compare.main(["--repeat", "0"])


def test_module_entry_point():
    r = subprocess.run(
        [sys.executable, "-m", "numbanet.bench", "--list"], capture_output=True, text=True, check=True
    )
    assert "softmax_ce" in r.stdout


def test_conv_strategies_times_both_strategies_where_both_apply(capsys):
    from numbanet.bench import conv_strategies
    from numbanet.kernels import conv

    conv_strategies.main(["conv_mnist", "conv_strided", "--repeat", "1"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    mnist = {(r[1], r[-3]) for r in rows if r[0] == "conv_mnist"}
    assert ("forward", "direct") in mnist and ("forward", "gemm") in mnist
    assert {r[-3] for r in rows if r[0] == "conv_strided"} == {"gemm"}  # direct is stride 1 only
    assert conv._forced is None  # the thresholds decide again


def test_isa_avx2_restricts_both_sides(monkeypatch):
    from llvmlite import binding as ll

    feats = ll.get_host_cpu_features()
    if not (feats.get("avx2") and feats.get("fma")):
        with pytest.raises(SystemExit):
            compare.isa_env("avx2", {})
        return
    env = compare.isa_env("avx2", {"NUMBA_CACHE_DIR": "/tmp/c"})
    assert env["NUMBA_CPU_NAME"] == "haswell" and env["NUMBA_CACHE_DIR"] == "/tmp/c-avx2"
    flags = env["NUMBA_CPU_FEATURES"].split(",")
    assert "+avx2" in flags and "+fma" in flags and "+avx512f" not in flags
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert env["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"  # PyTorch's matrix products
    assert env["OPENBLAS_CORETYPE"] == "Haswell"  # the reference side's BLAS too
    # NumPy's OpenBLAS in such an environment loads its Haswell kernels
    r = subprocess.run([sys.executable, "-c", "from numbanet.bench.compare import _blas_line; print(_blas_line())"],
                       env=env, capture_output=True, text=True, check=True)
    if "openblas" in r.stdout.lower():
        assert "haswell" in r.stdout.lower(), r.stdout
    # the child process compiles for that target, with the AVX2 tile
    r = subprocess.run([sys.executable, "-m", "numbanet.bench", "--isa", "avx2", "--list"],
                       capture_output=True, text=True, check=True)
    assert "isa avx2: Numba target haswell" in r.stdout and "GEMM tile avx2 6 x 2" in r.stdout
    assert "softmax_ce" in r.stdout


def test_isa_avx2_caps_pytorchs_matrix_products():
    # PyTorch's float matrix products run in MKL, which ignores ATen's and
    # oneDNN's caps; MKL's verbose banner names the instruction set it chose.
    pytest.importorskip("torch")
    from llvmlite import binding as ll

    feats = ll.get_host_cpu_features()
    if not (feats.get("avx2") and feats.get("fma")):
        pytest.skip("no AVX2 + FMA: --isa avx2 refuses to run")
    env = dict(compare.isa_env("avx2"), MKL_VERBOSE="1")
    r = subprocess.run([sys.executable, "-c", "import torch; a = torch.ones(64, 64); torch.mm(a, a)"],
                       env=env, capture_output=True, text=True, check=True)
    banner = [ln for ln in (r.stdout + r.stderr).splitlines() if "MKL_VERBOSE" in ln and "architecture" in ln]
    if not banner:
        pytest.skip("this PyTorch build runs its matrix products without MKL")
    assert "AVX2" in banner[0] and "AVX-512" not in banner[0], banner[0]


@pytest.mark.parametrize("cold", [True, False])
def test_cold_cache_compiles_everything_in_workers_first(monkeypatch, cold):
    # A cold cache (the probe op's kernel was compiled, not loaded) compiles
    # every kernel for the chosen dtypes in one worker per core before timing;
    # a warm one leaves each case to load its own kernels.
    from numbanet import kernels
    from numbanet.kernels import _warmup

    calls = []
    monkeypatch.setattr(kernels, "warmup", lambda dtypes, **kw: calls.append((list(dtypes), kw)))

    class Stats:
        cache_misses = {("sig",): 1} if cold else {}

    class Dispatcher:
        stats = Stats()

    monkeypatch.setattr(_warmup, "kernels_reached", lambda op: {op: Dispatcher()})
    monkeypatch.setattr(_warmup, "default_processes", lambda: 3)
    compare._compile_kernels(["float32", "float64"], quiet=True)
    assert calls[0] == (["float32"], {"ops": ["relu_forward"], "progress": False})
    if cold:
        assert calls[1:] == [(["float32", "float64"], {"processes": 3, "progress": False})]
    else:
        assert calls[1:] == []
