"""numbanet's own matrix product (the GEMM under the convolution and Affine kernels) against NumPy.

The in-process tests call the GEMM where the kernels do: its C entry points
(:mod:`numbanet.kernels._gemm_ext`, compiled once per dtype and cached, so
warm-up has compiled them already), through small ``@njit`` callers whose
only code is the external call. Operand layouts (contiguous, transposed,
strided) reach the entry points as strides, as in the kernels; calling
``_gemm``'s functions directly instead would compile the whole GEMM again for
every layout and dtype. The tile probes below compile ``_gemm`` directly, for
every tile, in fresh processes.
"""

import contextlib

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numbanet.kernels import _gemm, _gemm_ext
from numbanet.kernels._gemm import MR, nr


@numba.njit
def _ext_gemm_block(a, b, c, i0, i1, j0, j1, accumulate):
    _gemm_ext.gemm_block(a, b, c, i0, i1, j0, j1, accumulate)


@numba.njit
def _ext_pack_a(a, ap):
    _gemm_ext.pack_a_rows_into(a, 0, a.shape[0], ap)


@numba.njit
def _ext_pack_b(b, kc, nc, bp):
    _gemm_ext.pack_b(b, 0, kc, 0, nc, bp)


@numba.njit
def _ext_kernel_block_bt(ap, a_off, m_, kc, b, btab, t0, b_col, nc, c, j0, add, tile):
    _gemm_ext.kernel_block_bt(ap, a_off, m_, kc, b, btab, t0, b_col, nc, c, j0, add, tile)


@numba.njit
def _ext_kernel_block_at(a, atab, a_col, m_, kc, bp, nc, c, j0, add, tile):
    _gemm_ext.kernel_block_at(a, atab, a_col, m_, kc, bp, nc, c, j0, add, tile)


def gemm(a, b, c, accumulate):
    """``c (+)= a @ b`` through the ``gemm_block`` entry (``c`` C-contiguous)."""
    _ext_gemm_block(a, b, c, 0, a.shape[0], 0, b.shape[1], accumulate)


def pack_a(a):
    """All of ``a`` packed (``_gemm.pack_a``) through the ``pack_a_rows_into`` entry."""
    ap = np.empty(-(-a.shape[0] // MR) * MR * a.shape[1], a.dtype)
    _ext_pack_a(a, ap)
    return ap


_GUARD = 37


def _guarded(rng, shape, dt):
    """A C-contiguous matrix inside a larger buffer, and the buffer: writes
    outside the matrix show up in the ``_GUARD`` elements on either side."""
    n = int(np.prod(shape))
    buf = rng.standard_normal(n + 2 * _GUARD).astype(dt)
    return buf[_GUARD : _GUARD + n].reshape(shape), buf

# sizes around the blocking edges: MR rows, NR columns (float32's and
# float64's), KC steps, NC columns (named: the tile is the target's, and the
# small blocks below apply)
EDGES = [0, 1, 2, ("MR", -1), ("MR", 0), ("MR", 1), ("NR8", 1), ("NR4", -1), ("NR4", 0), ("NR4", 1), 33,
         ("KC", -1), ("KC", 0), ("KC", 1), ("NC", 3)]


def _size(edge):
    if isinstance(edge, int):
        return edge
    name, delta = edge
    return (nr(int(name[2:])) if name.startswith("NR") else getattr(_gemm, name)) + delta


@contextlib.contextmanager
def _blocks():
    """With NUMBA_DISABLE_JIT (coverage runs the kernels as plain Python) use
    small KC and NC blocks, so the same edges are reached in seconds."""
    if not numba.config.DISABLE_JIT:
        yield
        return
    old = _gemm.KC, _gemm.NC
    _gemm.KC, _gemm.NC = 16, 64
    try:
        yield
    finally:
        _gemm.KC, _gemm.NC = old


def _operand(rng, shape, dt, layout):
    """A matrix of ``shape`` stored C-contiguous, transposed, or strided."""
    if layout == "T":
        return np.ascontiguousarray(rng.standard_normal(shape[::-1]).astype(dt)).T
    if layout == "strided":
        return rng.standard_normal((shape[0], 2 * shape[1] + 1)).astype(dt)[:, 1::2]
    return rng.standard_normal(shape).astype(dt)


def _tol(dt, k):
    """Error bound of a length-k sum, relative to max(1, max|result|)."""
    return (2e-5 if np.dtype(dt) == np.float32 else 1e-12) * max(1, k) ** 0.5


def _check(m, k, n, dt, la, lb, accumulate, seed):
    rng = np.random.default_rng(seed)
    a = _operand(rng, (m, k), dt, la)
    b = _operand(rng, (k, n), dt, lb)
    c, buf = _guarded(rng, (m, n), dt)
    before, buf_before = c.copy(), buf.copy()
    gemm(a, b, c, accumulate)
    want = a.astype(np.float64) @ b.astype(np.float64) + (before if accumulate else 0)
    tol = _tol(dt, k)
    np.testing.assert_allclose(c, want, rtol=tol, atol=tol)
    buf_before[_GUARD : _GUARD + c.size] = c.ravel()
    assert np.array_equal(buf, buf_before, equal_nan=True)  # nothing outside c written
    return a, b


@given(m=st.sampled_from(EDGES), k=st.sampled_from(EDGES), n=st.sampled_from(EDGES[:-1]),
       f32=st.booleans(), la=st.sampled_from(["C", "T", "strided"]), lb=st.sampled_from(["C", "T", "strided"]),
       accumulate=st.booleans(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=80, deadline=None)
def test_gemm_matches_numpy(m, k, n, f32, la, lb, accumulate, seed):
    with _blocks():
        _check(_size(m), _size(k), _size(n), np.float32 if f32 else np.float64, la, lb, accumulate, seed)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_gemm_wide_n_and_block_columns_leave_the_rest_alone(dt):
    rng = np.random.default_rng(1)
    with _blocks():
        m, k, n = 19, 70, _gemm.NC + 45  # two NC blocks, ragged tiles everywhere
        a, b = rng.standard_normal((m, k)).astype(dt), rng.standard_normal((k, n)).astype(dt)
        wide = np.full((m, n + 7), 5.0, dt)
        # columns 0 .. n of a wider c: the row stride is not the block's width
        _ext_gemm_block(a, np.ascontiguousarray(np.pad(b, ((0, 0), (0, 7)))), wide, 0, m, 0, n, False)
    np.testing.assert_allclose(wide[:, :n], a @ b, rtol=_tol(dt, k), atol=_tol(dt, k))
    assert (wide[:, n:] == 5).all()  # the columns beyond the block are not touched
    assert wide.dtype == dt


@pytest.mark.parametrize("la", ["C", "T"])
@pytest.mark.parametrize("lb", ["C", "T"])
def test_gemm_block_writes_its_block_only_and_matches_the_whole_product(la, lb):
    rng = np.random.default_rng(3)
    m, k, n = 37, 45, 70
    a, b = _operand(rng, (m, k), np.float32, la), _operand(rng, (k, n), np.float32, lb)
    whole = np.empty((m, n), np.float32)
    gemm(a, b, whole, False)
    c = np.full((m, n), 7.0, np.float32)
    _ext_gemm_block(a, b, c, 9, 30, 33, 65, False)
    assert np.array_equal(c[9:30, 33:65], whole[9:30, 33:65])  # same sums, same order
    c[9:30, 33:65] = 7.0
    assert (c == 7.0).all()


def test_gemm_is_deterministic_and_propagates_nan():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((40, 600)).astype(np.float32)
    b = rng.standard_normal((600, 70)).astype(np.float32)
    c1, c2 = np.empty((40, 70), np.float32), np.empty((40, 70), np.float32)
    gemm(a, b, c1, False)
    gemm(a, b, c2, False)
    assert np.array_equal(c1, c2)
    a[3, 17] = np.nan
    b[5, 9] = np.inf
    gemm(a, b, c1, False)
    assert np.isnan(c1[3]).all()
    assert np.isinf(np.delete(c1[:, 9], 3)).all()
    assert np.isfinite(np.delete(np.delete(c1, 3, 0), 9, 1)).all()


def _unpacked_case(m, kc, nc, dt, seed):
    """Operands for the in-place variants: A and B as runs of flat arrays at
    random offsets (as the convolution's im2col rows are runs of its planes),
    with the slack the ragged tiles read past a row."""
    rng = np.random.default_rng(seed)
    nr_ = nr(np.dtype(dt).itemsize)
    a = rng.standard_normal((m, kc)).astype(dt)
    b = rng.standard_normal((kc, nc)).astype(dt)
    size = 4 * (m + kc) * (kc + nc) + 64
    flat = rng.standard_normal(size + nr_).astype(dt)
    flat[size:] = np.nan  # the slack: read, never kept
    return rng, a, b, flat, size


@given(m=st.sampled_from([1, MR - 1, MR, MR + 1, 19]), kc=st.sampled_from([1, 7, 40]),
       nc=st.sampled_from([1, 31, 32, 33, 70]), f32=st.booleans(), add=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_kernel_block_with_b_read_in_place(m, kc, nc, f32, add, seed):
    dt = np.float32 if f32 else np.float64
    rng, a, _, flat, size = _unpacked_case(m, kc, nc, dt, seed)
    t0, b_col, j0 = 3, 5, 2
    btab = np.zeros(t0 + kc, np.int64)
    btab[t0:] = rng.integers(0, size - nc - b_col, kc)
    btab[t0 + kc - 1] = size - nc - b_col  # a row ending at the slack
    b = np.stack([flat[o + b_col : o + b_col + nc] for o in btab[t0:]])
    c = rng.standard_normal((m, j0 + nc + 3)).astype(dt)
    before = c.copy()
    tile = np.empty((MR, nr(np.dtype(dt).itemsize)), dt)
    _ext_kernel_block_bt(pack_a(a), 0, m, kc, flat, btab, t0, b_col, nc, c, j0, add, tile)
    want = a.astype(np.float64) @ b + (before[:, j0 : j0 + nc] if add else 0)
    np.testing.assert_allclose(c[:, j0 : j0 + nc], want, rtol=1e-5, atol=1e-4 if f32 else 1e-12)
    assert np.array_equal(c[:, :j0], before[:, :j0]) and np.array_equal(c[:, j0 + nc :], before[:, j0 + nc :])


@given(m=st.sampled_from([1, MR - 1, MR, MR + 1, 19]), kc=st.sampled_from([1, 7, 40]),
       nc=st.sampled_from([1, 31, 32, 33, 70]), f32=st.booleans(), add=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_kernel_block_with_a_read_in_place(m, kc, nc, f32, add, seed):
    dt = np.float32 if f32 else np.float64
    rng, _, b, flat, size = _unpacked_case(m, kc, nc, dt, seed)
    a_col, j0 = 4, 1
    atab = np.zeros(-(-m // MR) * MR, np.int64)  # rows past m point at 0
    atab[:m] = rng.integers(0, size - kc - a_col, m)
    a = np.stack([flat[o + a_col : o + a_col + kc] for o in atab[:m]])
    nr_ = nr(np.dtype(dt).itemsize)
    bp = np.empty(-(-nc // nr_) * nr_ * kc, dt)  # _gemm.b_buffer's size
    _ext_pack_b(b, kc, nc, bp)
    c = rng.standard_normal((m, j0 + nc + 2)).astype(dt)
    before = c.copy()
    tile = np.empty((MR, nr_), dt)
    _ext_kernel_block_at(flat, atab, a_col, m, kc, bp, nc, c, j0, add, tile)
    want = a.astype(np.float64) @ b + (before[:, j0 : j0 + nc] if add else 0)
    np.testing.assert_allclose(c[:, j0 : j0 + nc], want, rtol=1e-5, atol=1e-4 if f32 else 1e-12)
    assert np.array_equal(c[:, :j0], before[:, :j0]) and np.array_equal(c[:, j0 + nc :], before[:, j0 + nc :])


def test_tile_is_numbas_targets():
    """The tile follows the CPU Numba compiles for (NUMBA_CPU_NAME/FEATURES or
    the host), whatever that is; NR is NV vectors of the tile's width."""
    import os

    want = os.environ.get("NUMBANET_GEMM_TILE") or _gemm.target_isa(*_gemm.numba_target())
    assert _gemm.TILE is _gemm.TILES[want]
    assert (MR, _gemm.NV, _gemm.VECTOR_BYTES, _gemm.KC) == (_gemm.TILE.mr, _gemm.TILE.nv, _gemm.TILE.vector_bytes,
                                                            _gemm.TILE.kc)
    assert nr(4) == _gemm.NV * _gemm.VECTOR_BYTES // 4 and nr(8) * 2 == nr(4)
    assert _gemm.tile_cols(np.empty(1, np.float32)) == nr(4) and _gemm.tile_cols(np.empty(1, np.float64)) == nr(8)


_X86 = "x86_64-unknown-linux-gnu"


@pytest.mark.parametrize("triple, cpu, features, isa", [
    (_X86, "skylake-avx512", "", "avx512"),
    (_X86, "znver4", "", "avx512"),
    (_X86, "skylake-avx512", "-avx512f", "avx2"),  # features override the CPU name
    (_X86, "haswell", "", "avx2"),
    (_X86, "znver3", "", "avx2"),
    (_X86, "haswell", "-fma", "generic"),  # AVX2 without FMA
    (_X86, "sandybridge", "", "generic"),  # AVX without FMA
    (_X86, "x86-64", "", "generic"),
    ("aarch64-unknown-linux-gnu", "generic", "", "neon"),
    ("aarch64-unknown-linux-gnu", "apple-m1", "", "neon"),
    ("powerpc64le-unknown-linux-gnu", "pwr9", "", "generic"),
])
def test_target_isa_comes_from_the_target_not_the_host(triple, cpu, features, isa):
    assert _gemm.target_isa(triple, cpu, features) == isa


@pytest.mark.parametrize("name", sorted(_gemm.TILES))
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_every_tile_keeps_its_accumulators_in_registers(name, dt):
    """Each tile's micro-kernel, compiled for its reference target (NEON for
    AArch64, cross-compiled by llvmlite), has no stack load or store in its
    k loop, and one FMA per accumulator per step (fused tiles)."""
    tile = _gemm.TILES[name]
    asm = _gemm.microkernel_asm(tile, dt, *tile.reference_target)
    assert _gemm.loop_stack_accesses(asm) == []
    if tile.fused:
        assert _gemm._loop_fmas(asm) == tile.mr * tile.nv
    reg = {"avx512": "%zmm", "avx2": "%ymm", "generic": "%xmm", "neon": ".4s" if dt == np.float32 else ".2d"}[name]
    assert reg in asm


def test_spill_check_finds_spills():
    """The check above can fail: the old 8-row tile on a 16-register AVX2
    target spills, and so does a 24-accumulator tile on x86-64's 16 xmm."""
    import dataclasses

    for base, mr in (("avx2", 8), ("generic", 8)):
        tile = dataclasses.replace(_gemm.TILES[base], mr=mr)
        assert _gemm.loop_stack_accesses(_gemm.microkernel_asm(tile, np.float32, *tile.reference_target))


_TILE_PROBE = """
import json, sys
import numpy as np
from numbanet.kernels import _gemm
rng = np.random.default_rng(0)
errs = {"float32": [], "float64": []}
mr, nr32 = _gemm.MR, _gemm.nr(4)
for dt in (np.float32, np.float64):
    nr_ = _gemm.nr(np.dtype(dt).itemsize)
    for m, k, n in [(1, 1, 1), (mr, 7, nr_), (2 * mr + 1, _gemm.KC + 3, 2 * nr_ + 3), (mr - 1, 5, nr_ - 1)]:
        a, b = rng.standard_normal((m, k)).astype(dt), rng.standard_normal((k, n)).astype(dt)
        want = a.astype(np.float64) @ b
        scale = np.abs(a).astype(np.float64) @ np.abs(b) + 1
        c = np.empty((m, n), dt)
        _gemm.gemm(a, b, c, False)
        errs[np.dtype(dt).name].append(float((np.abs(c - want) / scale).max()))
        if k > _gemm.KC:
            continue  # pack_a's one-block layout below needs k <= KC
        # the in-place variants (the convolution's operands)
        flat = np.concatenate([a.ravel(), b.ravel(), np.zeros(nr_, dt)])
        tab_a = np.zeros(-(-m // mr) * mr, np.int64)
        tab_a[:m] = np.arange(m) * k
        tab_b = a.size + np.arange(k) * n
        tile = np.empty((mr, nr_), dt)
        bp = _gemm.b_buffer(k, n, b)
        _gemm.pack_b(b, 0, k, 0, n, bp)
        _gemm.kernel_block_at(flat, tab_a, 0, m, k, bp, n, c, 0, False, tile)
        errs[np.dtype(dt).name].append(float((np.abs(c - want) / scale).max()))
        _gemm.kernel_block_bt(_gemm.pack_a(a), 0, m, k, flat, tab_b, 0, 0, n, c, 0, False, tile)
        errs[np.dtype(dt).name].append(float((np.abs(c - want) / scale).max()))
# the compiled (inlined) micro-kernels of this target: no stack traffic in the k loop
# (the block loops that hold them are external helpers: their own dispatchers)
spills = [s for f in (_gemm._kernel_block_a.dispatcher, _gemm.kernel_block_bt.dispatcher, _gemm.kernel_block_at.dispatcher)
          for sig in f.signatures for s in _gemm.loop_stack_accesses(f.inspect_asm(sig))] if sys.argv[1] == "1" else None
print(json.dumps({"tile": _gemm.TILE.name, "mr": mr, "nr32": nr32, "err": {k: max(v) for k, v in errs.items()}, "spills": spills}))
"""

#: x86 variants: the Numba target that selects each tile on this machine.
_X86_TARGETS = {"avx512": "skylake-avx512", "avx2": "haswell", "generic": "x86-64"}
_RANK = {"generic": 0, "avx2": 1, "avx512": 2}


def _tile_run(name, cache_dir):
    """How :func:`test_every_tile_computes_the_product` runs ``name``: its
    environment, and whether it is compiled for its own target."""
    import os

    host = _gemm.target_isa(*_gemm.numba_target())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CPU_", "NUMBANET_GEMM_"))}
    env["NUMBA_CACHE_DIR"] = str(cache_dir)
    native = name in _X86_TARGETS and host in _RANK and _RANK[name] <= _RANK[host]
    if native:
        env.update(NUMBA_CPU_NAME=_X86_TARGETS[name], NUMBA_CPU_FEATURES="")
    else:
        env["NUMBANET_GEMM_TILE"] = name
    return env, native


@pytest.fixture(scope="module")
def tile_runs(tmp_path_factory):
    """Every tile's probe, all started at once (each is mostly compilation,
    so they share the cores instead of queueing): name -> (native, process)."""
    import subprocess
    import sys

    procs = {}
    for name in sorted(_gemm.TILES):
        env, native = _tile_run(name, tmp_path_factory.mktemp(f"cache-{name}"))
        procs[name] = native, subprocess.Popen([sys.executable, "-c", _TILE_PROBE, "1" if native else "0"],
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    done = {}
    for name, (native, proc) in procs.items():
        out, err = proc.communicate(timeout=900)
        done[name] = native, proc.returncode, out, err
    return done


@pytest.mark.parametrize("name", sorted(_gemm.TILES))
def test_every_tile_computes_the_product(tile_runs, name):
    """Each tile's kernels against NumPy, in a fresh process (and cache):
    compiled for the tile's own target (``NUMBA_CPU_NAME``) where this machine
    can run it, its compiled k loops then checked for spills; else (AVX-512 on
    an AVX2 machine, NEON on x86) the tile forced on this machine's target,
    where LLVM splits its vectors: the same IR and index arithmetic, run."""
    import json

    native, returncode, stdout, stderr = tile_runs[name]
    assert returncode == 0, stderr[-3000:]
    out = json.loads(stdout.strip().splitlines()[-1])
    tile = _gemm.TILES[name]
    assert (out["tile"], out["mr"], out["nr32"]) == (name, tile.mr, tile.nr(4))
    # relative to sum_k |a||b|: rounding over k <= KC + 3 steps
    assert out["err"]["float32"] < 1e-5 and out["err"]["float64"] < 1e-13
    if native:
        assert out["spills"] == []


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_row_major_a_read_in_place_gives_the_packed_paths_bits(dt):
    """gemm_block reads a row-major A in place for products up to
    A_IN_PLACE_MAX_N columns wide; the micro-kernel and the order of every sum
    are those of the packed path, so the bits must be too (including a
    ragged last row tile and a k past KC)."""
    rng = np.random.default_rng(5)
    m, k, n = 2 * MR + 1, _gemm.KC + 3, min(_gemm.A_IN_PLACE_MAX_N, 2 * nr(np.dtype(dt).itemsize) + 3)
    a, b = rng.standard_normal((m, k)).astype(dt), rng.standard_normal((k, n)).astype(dt)
    in_place, packed = np.empty((m, n), dt), np.empty((m, n), dt)
    assert a.strides[1] == a.itemsize and n <= _gemm.A_IN_PLACE_MAX_N  # read in place
    gemm(a, b, in_place, False)
    gemm(np.asfortranarray(a), b, packed, False)  # the same A with a column stride: packed
    assert np.array_equal(in_place, packed)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_column_major_a_read_in_place_gives_the_packed_paths_bits(dt):
    """A column-major A (the transpose of a row-major matrix: Affine's
    ``x.T @ dy``) is read in place, its ragged last row panel packed; the
    bits are those of packing all of A, for the whole product and for a
    block of its rows (a thread's share)."""
    rng = np.random.default_rng(7)
    m, k, n = 3 * MR + 2, _gemm.KC + 5, nr(np.dtype(dt).itemsize) + 3
    x = rng.standard_normal((k, m)).astype(dt)  # row-major: x.T is column-major
    b = rng.standard_normal((k, n)).astype(dt)
    in_place, packed = np.empty((m, n), dt), np.empty((m, n), dt)
    gemm(x.T, b, in_place, False)
    strided = rng.standard_normal((m, 2 * k)).astype(dt)[:, ::2]  # neither unit stride: packed
    strided[...] = x.T
    gemm(strided, b, packed, False)
    assert np.array_equal(in_place, packed)
    np.testing.assert_allclose(in_place, x.T.astype(np.float64) @ b, rtol=_tol(dt, k), atol=_tol(dt, k))
    block = np.full((m, n), 3.0, dt)
    _ext_gemm_block(x.T, b, block, MR + 1, m, 0, n, False)  # rows MR+1 .. m: panels cut off the tile grid
    assert np.array_equal(block[MR + 1 :], packed[MR + 1 :]) and (block[: MR + 1] == 3).all()


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("la", ["C", "T", "strided"])
def test_edge_tiles_give_the_full_tiles_bits(dt, la):
    """Ragged tiles (masked stores, as few vectors as their columns need)
    sum each element in the same FMA chain as a full tile: every column and
    row remainder (1 .. NR - 1 columns, 1 .. MR - 1 rows) of a product equals
    the same elements of a product whose tiles are all full, bit for bit,
    and touches nothing outside C, with and without accumulating."""
    rng = np.random.default_rng(8)
    nr_ = nr(np.dtype(dt).itemsize)
    m, k = 2 * MR, 19
    a = _operand(rng, (m, k), dt, la)
    b = rng.standard_normal((k, 2 * nr_)).astype(dt)
    full = np.empty((m, 2 * nr_), dt)
    gemm(a, b, full, False)
    for rows in (MR + 1, 2 * MR - 1):
        for cols in range(nr_ + 1, 2 * nr_):
            c, buf = _guarded(rng, (rows, cols), dt)
            start, buf_before = c.copy(), buf.copy()
            _ext_gemm_block(a, np.ascontiguousarray(b[:, :cols]), c, 0, rows, 0, cols, True)
            # same chain, then added to C: as the full product added to C
            assert np.array_equal(c, start + full[:rows, :cols])
            gemm(a[:rows], np.ascontiguousarray(b[:, :cols]), c, False)
            assert np.array_equal(c, full[:rows, :cols]), (rows, cols)
            buf_before[_GUARD : _GUARD + c.size] = c.ravel()
            assert np.array_equal(buf, buf_before)  # nothing outside c written


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_fewer_rows_than_a_tile_sum_in_k_order(dt):
    """A with fewer than MR rows (a batch of one) skips the tiles: each
    element is the plain k-ordered sum of products, one rounding each."""
    rng = np.random.default_rng(6)
    m, k, n = MR - 1, 37, 21
    a, b = rng.standard_normal((m, k)).astype(dt), rng.standard_normal((k, n)).astype(dt)
    want = np.zeros((m, n), dt)
    for kk in range(k):
        want += a[:, kk : kk + 1] * b[kk]
    c = np.full((m, n + 2), 9, dt)
    b_wide = np.pad(b, ((0, 0), (0, 2)))  # columns 0 .. n of a wider c
    _ext_gemm_block(a, b_wide, c, 0, m, 0, n, False)
    assert np.array_equal(c[:, :n], want) and (c[:, n:] == 9).all()
    _ext_gemm_block(a, b_wide, c, 0, m, 0, n, True)
    assert np.array_equal(c[:, :n], want + want)


def _machine_code(cfunc) -> bytes:
    """The object code of a compiled C callback: its library's, when it was
    compiled in this process; read back from its cache file when it was loaded
    from the cache (MCJIT consumes a loaded library's object code, so the
    library no longer holds it: CI's warm-up fills the cache before pytest)."""
    library = cfunc._library
    if library._compiled_object is not None:
        return library.serialize_using_object_code()[2][0]
    cache = cfunc._cache
    payload = cache._cache_file.load(cache._index_key(cfunc._sig, library.codegen))
    assert payload is not None, "the callback was neither compiled here nor in the cache"
    _name, kind, data = payload[0]  # CompileResult._reduce(): the library's serialized state
    assert kind == "object", kind
    return data[0]


@pytest.mark.parametrize("entry", ["gemm_block", "kernel_block_at", "kernel_block_bt", "pack_a_rows_into", "pack_b"])
def test_entry_points_call_the_block_loops_and_packers_not_link_them(entry):
    """The GEMM's C entry points call ``_gemm``'s block loops and packers
    through external symbols (``_config.jit(external=True)``): their machine
    code names the helpers' symbols (which the cache loader registers first),
    and does not hold the helpers' code (linked, it was optimised again in
    every entry point, four times over in ``gemm_block``). Read from the
    machine code, so it holds for entry points loaded from the cache too."""
    import re

    from numba import float32

    helpers = {"gemm_block": ("_kernel_block_a", "kernel_block_at", "pack_b", "_pack_a"),
               "kernel_block_at": ("kernel_block_at",), "kernel_block_bt": ("kernel_block_bt",),
               "pack_a_rows_into": ("_pack_a",), "pack_b": ("pack_b",)}[entry]
    _gemm_ext.link(float32, (entry,))
    obj = _machine_code(_gemm_ext._compiled[entry, float32])
    called = {s.decode().split("$")[2] for s in re.findall(rb"numbanet_ext\$[A-Za-z0-9_.$]+", obj)
              if s.startswith(b"numbanet_ext$numbanet.kernels._gemm$")}
    assert called == set(helpers), called
    for name in helpers:  # Numba's mangled name of the helper's own function, as a linked copy would carry
        assert f"5_gemm{len(name)}{name}B".encode() not in obj, name
