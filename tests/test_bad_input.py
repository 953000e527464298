"""Table-driven bad input for every public kernel function, layer and optimizer.

Each (function, bad input) pair is one test. Starting from the valid tiny
examples of :mod:`numbanet.kernels._examples`, every argument is bent in each
way that applies to its kind: float arrays (wrong rank, mismatched shape,
zero-size axis, wrong or mixed dtype, non-contiguous / negative-stride /
Fortran / read-only views, NaN and Inf, not an array at all), class labels and
other integer arrays (out of range, wrong dtype or shape), ints, floats and
(h, w) tuples (negative, zero, huge, NaN, wrong type), and pairs of arrays of
one shape are passed as the same array or as overlapping views.

The oracle, the same for all pairs:
- the call either returns the result of :mod:`numbanet.reference` on the same
  arguments (for an argument updated in place: in the caller's array, as if
  the arguments were separate copies), or raises ``ValueError`` /
  ``TypeError`` whose message starts with the function name and names the
  bent argument (or, for a conflict, one of the arguments involved);
- it never raises anything else, never writes to an argument it does not
  update, and leaves everything as it was when it raises;
- an argument that is updated in place must be rejected when it cannot be
  (read-only, a list, a scalar);
- a layer or optimizer that raises keeps its parameters, gradients and state.

Crashes: the kernels trust their inputs, so a missing check shows up either
as a wrong result here or, in ``.ci/run``'s ``NUMBA_BOUNDSCHECK=1`` pass over
this file, as an ``IndexError`` (which fails the oracle).
"""
from __future__ import annotations

import copy
import inspect

import numpy as np
import pytest

import numbanet.kernels as kernels
import numbanet.layers as layers
import numbanet.reference as reference
from numbanet.bench import compare_outputs
from numbanet.kernels._examples import available, examples

EXAMPLES = available()

# NaN/Inf inputs make NumPy warn in the reference and in BLAS; the values are checked.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

TOL = {"float32": 1e-5, "float64": 1e-12}

# Arguments holding integer class indices rather than float data.
INDEX_ARGS = {"labels"}

# Hyperparameters per op that its examples leave at their defaults: name -> a
# valid value, added to every example so that they get bent too (ints are
# tried with BAD_INTS, tuples with _tuple_benders).
HYPER: dict[str, dict[str, object]] = {}

# Arguments an op updates in place (optimizer steps): checked after the call
# against the reference's in-place result, and unchanged when the call raises.
_ADAM_STATE = {"param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
INPLACE: dict[str, set[str]] = {
    "sgd_step": {"param", "momentum_buffer"},
    "sgd_step_foreach": {"params", "momentum_buffers"},
    "adagrad_step": {"param", "state_sum"},
    "adagrad_step_foreach": {"params", "state_sums"},
    "rmsprop_step_foreach": {"params", "square_avgs", "grad_avgs", "momentum_buffers"},
    "rmsprop_step": {"param", "square_avg", "grad_avg", "momentum_buffer"},
    "adam_step": _ADAM_STATE,
    "adam_step_foreach": {"params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"},
    "adamw_step": _ADAM_STATE,
    "book_momentum_step": {"param", "velocity"},
    "book_nesterov_step": {"param", "velocity"},
    "book_adam_step": {"param", "exp_avg", "exp_avg_sq"},
    "book_momentum_step_foreach": {"params", "velocities"},
    "book_nesterov_step_foreach": {"params", "velocities"},
    "book_adam_step_foreach": {"params", "exp_avgs", "exp_avg_sqs"},
}

BAD_INTS = [("negative", -1), ("zero", 0), ("large", 5), ("huge", 10**9), ("int64_overflow", 2**63),
            ("float", 1.5), ("bool", True), ("str", "1"), ("none", None)]

BAD_FLOATS = [("negative", -1.0), ("nan", float("nan")), ("inf", float("inf")), ("huge", 1e300),
              ("str", "0.1"), ("none", None), ("complex", 1j)]

WRONG_DTYPES = ["int32", "int64", "uint8", "bool", "float16", "complex64", "complex128", "object"]


# --- bending one argument ---------------------------------------------------------


def _strided(a):
    """Same values as ``a`` in a view with gaps between elements."""
    if a.ndim == 0:
        return a
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


def _reversed_view(a):
    """Same values as ``a`` in a view with negative strides on every axis."""
    idx = (slice(None, None, -1),) * a.ndim
    return np.ascontiguousarray(a[idx])[idx]


def _read_only(a):
    a = a.copy()
    a.setflags(write=False)
    return a


def _with(a, value):
    a = a.astype(a.dtype, copy=True)
    if a.size:
        a.flat[a.size // 2] = value
    return a


def _float_benders(a, dtype):
    """(label, bent array, expectation) for a float array argument.

    Expectation "same" means the call must succeed and match the reference;
    "either" allows a clear error instead.
    """
    other = np.float64 if dtype == np.float32 else np.float32
    yield "ndim_plus_1", a[None], "either"
    if a.ndim:
        yield "ndim_minus_1", a[0] if len(a) else np.zeros(a.shape[1:], a.dtype), "either"
        grown = np.concatenate([a, a[..., :1]], axis=-1)
        yield "last_axis_plus_1", grown, "either"
        for ax in range(a.ndim):
            yield f"zero_size_axis{ax}", np.take(a, [], axis=ax), "either"
    for dt in WRONG_DTYPES:
        yield f"dtype_{dt}", a.astype(dt), "either"
    yield "mixed_float", a.astype(other), "either"
    yield "strided_view", _strided(a), "same"
    yield "negative_strides", _reversed_view(a), "same"
    yield "fortran_order", np.asfortranarray(a), "same"
    yield "read_only", _read_only(a), "same"
    yield "nan", _with(a, np.nan), "same"
    yield "inf", _with(a, np.inf), "same"
    yield "minus_inf", _with(a, -np.inf), "same"
    yield "none", None, "either"
    yield "nested_list", a.tolist(), "either"
    yield "scalar", dtype.type(1.5), "either"


def _index_benders(a, k):
    yield "labels_int32", a.astype(np.int32), "same"
    yield "labels_uint8", a.astype(np.uint8), "same"
    yield "labels_out_of_range_high", _with(a, k), "either"
    yield "labels_negative", _with(a, -1), "either"
    yield "labels_float", a.astype(np.float64), "either"
    yield "labels_bool", a.astype(bool), "either"
    yield "labels_complex", a.astype(np.complex128), "either"
    yield "labels_object", a.astype(object), "either"
    yield "labels_too_long", np.concatenate([a, a[:1]]), "either"
    yield "labels_too_short", a[:-1], "either"
    yield "labels_2d_wrong_width", np.zeros((a.size, k + 1)), "either"
    yield "labels_3d", a[:, None, None], "either"
    yield "labels_strided", _strided(a), "same"
    yield "labels_read_only", _read_only(a), "same"
    yield "labels_none", None, "either"
    yield "labels_list", a.tolist(), "same"


def _aliases(kw):
    """Pairs of float arguments with one shape: pass the same array (or two
    overlapping views of one buffer) for both."""
    names = [n for n, a in kw.items() if isinstance(a, np.ndarray) and a.dtype.kind == "f"]
    for i, p in enumerate(names):
        for q in names[i + 1:]:
            if kw[p].shape == kw[q].shape and kw[p].ndim:
                yield f"alias_{q}_is_{p}", {q: kw[p]}, {p, q}
                flat = np.concatenate([kw[p].ravel(), kw[q].ravel()[-1:]])
                n = kw[p].size
                yield (f"overlap_{p}_{q}",
                       {p: flat[:n].reshape(kw[p].shape), q: flat[1:n + 1].reshape(kw[q].shape)}, {p, q})


def _int_array_benders(a):
    """An integer array argument that is not class labels (e.g. pooling argmax)."""
    yield "int_negative", _with(a, -1), "either"
    yield "int_huge", _with(a, 2**40), "either"
    yield "int_as_float", a.astype(np.float64), "either"
    yield "int_bool", a.astype(bool), "either"
    yield "int_ndim_plus_1", a[None], "either"
    yield "int_shape_plus_1", np.concatenate([a, a[..., :1]], axis=-1), "either"
    yield "int_strided", _strided(a), "same"
    yield "int_read_only", _read_only(a), "same"
    yield "int_none", None, "either"


def _tuple_benders(t):
    """A tuple of ints argument (a shape, or an (h, w) hyperparameter pair)."""
    yield "tuple_shorter", t[:-1], "either"
    yield "tuple_longer", t + (t[-1],), "either"
    for i in range(len(t)):
        yield f"tuple{i}_negative", t[:i] + (-1,) + t[i + 1:], "either"
        yield f"tuple{i}_zero", t[:i] + (0,) + t[i + 1:], "either"
        yield f"tuple{i}_huge", t[:i] + (10**9,) + t[i + 1:], "either"
        yield f"tuple{i}_float", t[:i] + (float(t[i]) + 0.5,) + t[i + 1:], "either"
    yield "tuple_none", None, "either"


def _list_benders(name, a, kw, dtype):
    """A list of float arrays (a ``*_foreach`` step's tensors): the list
    itself bent, and its middle entry bent as any float array argument."""
    yield "list_shorter", a[:-1], "either"
    yield "list_as_tuple", tuple(a), "same"
    yield "list_as_array", a[0], "either"
    yield "list_none", None, "either"
    i = len(a) // 2
    for label, bent, expect in _float_benders(a[i], dtype):
        yield f"item{i}-{label}", a[:i] + [bent] + a[i + 1:], expect


def _benders(name, a, kw, dtype):
    if isinstance(a, bool) or a is None:
        return iter(())
    if isinstance(a, list):
        return _list_benders(name, a, kw, dtype)
    if isinstance(a, int):
        return iter([(label, value, "either") for label, value in BAD_INTS])
    if isinstance(a, float):
        return iter([(label, value, "either") for label, value in BAD_FLOATS])
    if isinstance(a, tuple):
        return _tuple_benders(a)
    if a.dtype.kind in "iu":
        if name in INDEX_ARGS and a.ndim == 1:
            k = next(v.shape[1] for v in kw.values() if isinstance(v, np.ndarray) and v.ndim == 2)
            return _index_benders(a, k)
        return _int_array_benders(a)
    return _float_benders(a, dtype)


def bad_inputs(op, dtype):
    """All (id, bent kwargs, bent argument, expectation) for ``op`` in ``dtype``.

    Every argument of the examples is bent by kind (float array, integer
    array, class labels, int, tuple of ints), and the hyperparameters in
    ``HYPER`` are added with their valid value and bent too.
    """
    dtype = np.dtype(dtype)
    out = []
    for ex, kw in enumerate(examples(op, dtype)):
        kw = {**HYPER.get(op, {}), **kw}
        written = INPLACE.get(op, set())
        for name, a in kw.items():
            if dtype == np.float32 and not isinstance(a, (np.ndarray, list)):
                continue  # hyperparameters: checked once, in float64
            for label, bent, expect in _benders(name, a, kw, dtype):
                if name in written and label.endswith(("read_only", "nested_list", "scalar")):
                    expect = "raise"  # an update in place would be lost
                out.append((f"{op}[{ex}]-{dtype}-{name}-{label}", {**kw, name: bent}, name, expect))
        for label, change, pair in _aliases(kw):
            # Sharing memory with an array that is written: an error naming
            # one of the two, or the result of the same call on separate copies.
            expect = "either" if pair & written else "same"
            out.append((f"{op}[{ex}]-{dtype}-{label}", {**kw, **change}, sorted(pair & written or pair)[0], expect))
    return out


def _snapshot(obj):
    return copy.deepcopy(obj)


def _equal(a, b):
    """Bitwise equality of nested values (NaN equals NaN)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                and a.dtype == b.dtype and a.tobytes() == b.tobytes())
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, np.random.Generator):
        return isinstance(b, np.random.Generator) and a.bit_generator.state == b.bit_generator.state
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return a is b or a == b


def _as_array(v):
    return np.array(v) if isinstance(v, (list, np.ndarray, np.generic)) else v


def _as_arrays(kw):
    """Copies of ``kw`` with lists and scalars made arrays: the reference does
    not validate, so it gets what the kernel's wrapper made of the input. A
    list or tuple of arrays (a ``*_foreach`` step's tensors) stays a list of
    such copies."""
    return {k: [_as_array(x) for x in v] if _is_tensor_list(v) else _as_array(v) for k, v in kw.items()}


def _is_tensor_list(v):
    return isinstance(v, (list, tuple)) and any(isinstance(x, np.ndarray) for x in v)


def _tol(outputs):
    """Tolerance of the least precise float output."""
    from numbanet.bench.registry import flatten_outputs

    kinds = {o.dtype.name for o in flatten_outputs(outputs)}
    return TOL["float32"] if "float32" in kinds else TOL["float64"]


def _check_nonfinite(label, got, want):
    """Outputs from an input holding NaN or +-inf.

    Non-finite values land where the reference puts them, and finite values
    agree. Except for convolution: where a NaN/inf meets zero padding, whether
    ``0 * NaN`` is computed depends on the algorithm (the direct forward
    kernels skip padding taps the im2col reference multiplies; the backward
    dx works on a zero-padded grid the reference's col2im never multiplies).
    There the non-finite values must still appear (never all lost, never
    out of nothing), and the finite values agree.
    """
    from numbanet.bench.registry import flatten_outputs

    for i, (g, w) in enumerate(zip(flatten_outputs(got), flatten_outputs(want))):
        assert g.shape == w.shape and g.dtype == w.dtype, f"{label}: output {i} shape/dtype"
        g64, w64 = g.astype(np.float64), w.astype(np.float64)
        bad_g, bad_w = ~np.isfinite(g64), ~np.isfinite(w64)
        if "conv" in label.lower():
            assert bad_g.any() == bad_w.any(), f"{label}: output {i} non-finite in one and not the other"
        else:
            # (NaN vs +-inf may differ: inf * 0 or inf - inf depends on how
            # a formula is factored.)
            assert np.array_equal(bad_g, bad_w), f"{label}: output {i} has non-finite values elsewhere"
        ok = ~bad_w & ~bad_g
        if ok.any():
            err = np.abs(g64[ok] - w64[ok]).max() / max(np.abs(w64[ok]).max(), 1e-300)
            assert err <= _tol(w), f"{label}: output {i} finite values differ by {err:.3g}"


def check_error(exc, fn, arg, arg_names):
    msg = str(exc)
    assert isinstance(exc, (ValueError, TypeError)), f"{type(exc).__name__}: {msg}"
    assert msg.startswith(f"{fn}:"), f"message does not name {fn}: {msg!r}"
    named = [n for n in arg_names if n in msg]
    assert named, f"message names no argument of {fn} {arg_names}: {msg!r}"
    return named


# --- kernels ----------------------------------------------------------------------

# A window larger than the padded input has no output: the kernels raise,
# and the reference (which validates nothing else) must raise too.
NO_OUTPUT = "larger than the padded input"

CASES = [c for op in sorted(EXAMPLES) for dt in ("float32", "float64") for c in bad_inputs(op, dt)]
N_KERNEL_PAIRS = len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_kernel_bad_input(case):
    label, kw, arg, expect = case
    op = label.split("[")[0]
    dtype = label.split("-")[1]
    fn = getattr(kernels, op)
    arg_names = list(inspect.signature(fn).parameters)
    written = INPLACE.get(op, set())
    before = _snapshot(kw)
    try:
        got = fn(**kw)
    except Exception as exc:  # noqa: BLE001  the oracle decides
        assert expect != "same", f"{label}: valid input rejected: {type(exc).__name__}: {exc}"
        named = check_error(exc, op, arg, arg_names)
        if "dtype" in label or label.endswith(("-none", "-scalar")):
            assert arg in named, f"{label}: error does not name {arg}: {exc}"
        if NO_OUTPUT in str(exc):
            # The walk through numbanet.reference: no output is an error there too.
            with pytest.raises(ValueError, match=NO_OUTPUT):
                getattr(reference, op)(**_as_arrays(before))
        # Raising means no partial update, in-place arguments included.
        assert _equal(kw, before), f"{label}: raised but changed its arguments"
        return
    assert expect != "raise", f"{label}: accepted an argument it cannot update in place"
    unwritten = [k for k in kw if k not in written]
    assert all(_equal(kw[k], before[k]) for k in unwritten), f"{label}: the kernel wrote to its inputs"
    # The reference does not validate: hand it what the kernel made of the input.
    ref_kw = _as_arrays(before)
    want = getattr(reference, op)(**ref_kw)
    if want is None:  # in-place ops return nothing
        assert got is None, f"{label}: returned {got!r}, the reference returns None"
    elif label.endswith(("-nan", "inf")):
        _check_nonfinite(label, got, want)
    else:
        rel = compare_outputs(got, want)[1]
        assert rel <= _tol(want), f"{label}: accepted, but differs from the reference by {rel:.3g}"
    for k in written & kw.keys():
        # The caller's array (a view, if a view was passed) holds the update.
        pairs = zip(kw[k], ref_kw[k]) if _is_tensor_list(kw[k]) else [(kw[k], ref_kw[k])]
        for got_k, want_k in pairs:
            rel = compare_outputs(np.asarray(got_k), want_k)[1]
            assert rel <= _tol(want_k), f"{label}: in-place {k} differs from the reference by {rel:.3g}"


@pytest.mark.parametrize("op, kw", [
    ("conv2d_forward", dict(x=np.zeros((2, 5, 3, 3)), w=np.zeros((4, 5, 3, 5)), b=None, pad=(1, 0))),
    ("conv2d_backward", dict(dy=np.zeros((2, 4, 1, 1)), x=np.zeros((2, 5, 3, 3)), w=np.zeros((4, 5, 2, 2)),
                             dilation=3)),
    ("maxpool2d_forward", dict(x=np.zeros((2, 5, 3, 3)), pool_h=4, pool_w=2)),
    ("avgpool2d_forward", dict(x=np.zeros((2, 5, 3, 3)), pool_h=2, pool_w=2, stride=1, pad=(0, 0))),
])
def test_twins_agree_on_empty_output(op, kw):
    """Found by a fuzz of conv/pool geometry: the reference returned shape
    (2, 5, 3, 0) where the kernels raise. The last row is valid in both."""
    if op == "avgpool2d_forward":
        assert getattr(kernels, op)(**kw).shape == getattr(reference, op)(**kw).shape == (2, 5, 2, 2)
        return
    for impl in (kernels, reference):
        with pytest.raises(ValueError, match="larger than the padded input"):
            getattr(impl, op)(**kw)


# --- layers -------------------------------------------------------------------------


def _layer_examples(backend, dt, rng):
    """name -> (layer, forward kwargs, backward kwargs) with a valid step done."""
    d = np.dtype(dt)
    x = rng.standard_normal((3, 2, 3)).astype(d)
    w = rng.standard_normal((6, 5)).astype(d)
    b = rng.standard_normal(5).astype(d)
    dy5 = rng.standard_normal((3, 5)).astype(d)
    dyx = rng.standard_normal(x.shape).astype(d)
    t = np.array([0, 4, 2])
    return {
        "Affine": (layers.Affine(w.copy(), b.copy(), backend=backend), {"x": x}, {"dout": dy5}),
        "Relu": (layers.Relu(backend=backend), {"x": x}, {"dout": dyx}),
        "Sigmoid": (layers.Sigmoid(backend=backend), {"x": x}, {"dout": dyx}),
        "SoftmaxWithLoss": (layers.SoftmaxWithLoss(backend=backend), {"x": dy5, "t": t}, {"dout": 1}),
        **_conv_layer_examples(backend, d, rng),
        **_regularization_layer_examples(backend, d, rng),
    }


def _regularization_layer_examples(backend, d, rng):
    if not hasattr(layers, "BatchNormalization"):
        return {}
    x = rng.standard_normal((3, 2, 2, 3)).astype(d)
    dyx = rng.standard_normal(x.shape).astype(d)
    gamma = rng.standard_normal(2).astype(d)
    beta = rng.standard_normal(2).astype(d)
    return {
        "BatchNormalization": (layers.BatchNormalization(gamma.copy(), beta.copy(), backend=backend),
                               {"x": x}, {"dout": dyx}),
        "Dropout": (layers.Dropout(0.3, seed=5, backend=backend), {"x": x}, {"dout": dyx}),
        "Flatten": (layers.Flatten(backend=backend), {"x": x}, {"dout": dyx.reshape(3, -1)}),
    }


def _conv_layer_examples(backend, d, rng):
    if not hasattr(layers, "Convolution"):
        return {}
    x = rng.standard_normal((2, 3, 5, 4)).astype(d)
    w = rng.standard_normal((4, 3, 3, 3)).astype(d)
    b = rng.standard_normal(4).astype(d)
    return {
        "Convolution": (layers.Convolution(w, b, stride=1, pad=1, backend=backend), {"x": x},
                        {"dout": rng.standard_normal((2, 4, 5, 4)).astype(d)}),
        "Pooling-max": (layers.Pooling(2, 2, stride=1, pad=1, mode="max", backend=backend), {"x": x},
                        {"dout": rng.standard_normal((2, 3, 6, 5)).astype(d)}),
        "Pooling-avg": (layers.Pooling(3, 2, stride=2, mode="avg", backend=backend), {"x": x},
                        {"dout": rng.standard_normal((2, 3, 2, 2)).astype(d)}),
    }


def _layer_cases():
    out = []
    for dt in ("float32", "float64"):
        exs = _layer_examples(None, dt, np.random.default_rng(0))
        for lname, (_, fkw, bkw) in exs.items():
            for phase, kw in (("forward", fkw), ("backward", bkw)):
                for name, a in kw.items():
                    if not isinstance(a, np.ndarray):
                        continue
                    gen = _index_benders(a, 5) if name == "t" else _float_benders(a, np.dtype(dt))
                    for label, _, expect in gen:
                        out.append((f"{lname}.{phase}-{dt}-{name}-{label}", lname, phase, dt, name, label, expect))
    return out


LAYER_CASES = _layer_cases()
N_LAYER_PAIRS = len(LAYER_CASES)


def _bend(a, label, dt, name):
    gen = _index_benders(a, 5) if name == "t" else _float_benders(a, np.dtype(dt))
    return next(bent for lab, bent, _ in gen if lab == label)


def _state(layer):
    return {k: v for k, v in vars(layer).items() if k != "ops"}


def _run_layer(backend, lname, phase, dt, name, label):
    """Valid forward+backward, then the phase under test with the bent arg."""
    layer, fkw, bkw = _layer_examples(backend, dt, np.random.default_rng(0))[lname]
    layer.forward(**fkw)
    layer.backward(**bkw)
    if phase == "backward":
        layer.forward(**fkw)
    kw = dict(fkw if phase == "forward" else bkw)
    kw[name] = _bend(kw[name], label, dt, name)
    return layer, getattr(layer, phase), kw


@pytest.mark.parametrize("case", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_layer_bad_input(case):
    _, lname, phase, dt, name, label, expect = case
    layer, method, kw = _run_layer(None, lname, phase, dt, name, label)
    state = _snapshot(_state(layer))
    ids = {k: id(v) for k, v in _state(layer).items() if isinstance(v, np.ndarray)}
    try:
        got = method(**kw)
    except Exception as exc:  # noqa: BLE001
        assert expect == "either", f"valid input rejected: {type(exc).__name__}: {exc}"
        assert isinstance(exc, (ValueError, TypeError)), f"{type(exc).__name__}: {exc}"
        assert _equal(_state(layer), state), f"{lname}.{phase} raised but changed the layer's state"
        assert ids == {k: id(v) for k, v in _state(layer).items() if isinstance(v, np.ndarray)}
        return
    ref_layer, ref_method, ref_kw = _run_layer(reference, lname, phase, dt, name, label)
    want = ref_method(**_as_arrays(ref_kw))
    if label.endswith(("nan", "inf")):
        _check_nonfinite(f"{lname}-{label}", got, want)
        return
    assert compare_outputs(got, want)[1] <= _tol(want)
    for pname in layer.param_names:
        assert compare_outputs(layer.grads[pname], ref_layer.grads[pname])[1] <= _tol(want)


def test_report_pair_count(capsys):
    total = N_KERNEL_PAIRS + N_LAYER_PAIRS + N_OPT_PAIRS
    with capsys.disabled():
        print(f"\nbad-input pairs: {N_KERNEL_PAIRS} kernel + {N_LAYER_PAIRS} layer"
              f" + {N_OPT_PAIRS} optimizer = {total}")
    assert N_KERNEL_PAIRS >= 30 * len(EXAMPLES)


def test_every_layer_has_a_row():
    names = {n for n in layers.__all__ if isinstance(getattr(layers, n), type) and n != "Layer"}
    rows = _layer_examples(None, "float64", np.random.default_rng(0)).values()
    assert names <= {type(layer).__name__ for layer, _, _ in rows}, "add the new layer to _layer_examples"


# --- optimizers ---------------------------------------------------------------------


def _optimizer_classes():
    """Every optimizer class exported by numbanet.optimizers (not the base)."""
    import numbanet.optimizers as optimizers

    base = getattr(optimizers, "Optimizer", None)
    found = {}
    for n in getattr(optimizers, "__all__", []):
        cls = getattr(optimizers, n)
        if isinstance(cls, type) and base is not None and issubclass(cls, base) and cls is not base:
            found[n] = cls
    return found


def _opt_problem(dt):
    rng = np.random.default_rng(1)
    d = np.dtype(dt)
    shapes = {"W": (3, 4), "b": (4,), "s": (1,), "e": (0, 2)}
    params = {k: rng.standard_normal(s).astype(d) for k, s in shapes.items()}
    grads = {k: rng.standard_normal(s).astype(d) for k, s in shapes.items()}
    return params, grads


def _opt_cases():
    out = []
    for oname in sorted(_optimizer_classes()):
        for dt in ("float32", "float64"):
            params, grads = _opt_problem(dt)
            # A regular entry and a zero-size one; "b" and "s" only take part.
            for which, group in (("grads", grads), ("params", params)):
                for name, a in group.items():
                    if name not in ("W", "e"):
                        continue
                    for label, _, expect in _float_benders(a, np.dtype(dt)):
                        if which == "params" and label in ("read_only", "nested_list", "scalar"):
                            expect = "raise"  # an update in place would be lost
                        out.append((f"{oname}-{dt}-{which}.{name}-{label}", oname, dt, which, name, label, expect))
                out.append((f"{oname}-{dt}-{which}-missing_W", oname, dt, which, "W", "missing", "either"))
            out.append((f"{oname}-{dt}-grad_is_param", oname, dt, "grads", "W", "alias", "either"))
    return out


OPT_CASES = _opt_cases()
N_OPT_PAIRS = len(OPT_CASES)


def _opt_state(opt, params):
    sd = opt.state_dict() if hasattr(opt, "state_dict") else {k: v for k, v in vars(opt).items()}
    return copy.deepcopy({"params": params, "state": sd})


def _opt_after_two_steps(oname, dt):
    opt = _optimizer_classes()[oname]()
    params, grads = _opt_problem(dt)
    for _ in range(2):
        opt.update(params, grads)
    return opt, params, grads


def _opt_run(oname, dt, which, name, label):
    """Two valid steps done; params and grads for a third with the bent entry."""
    opt, params, grads = _opt_after_two_steps(oname, dt)
    if label == "missing":
        bent = {k: v for k, v in (grads if which == "grads" else params).items() if k != name}
    elif label == "alias":
        bent = {**grads, name: params[name]}
    else:
        group = grads if which == "grads" else params
        bent = {**group, name: _bend(group[name], label, dt, name)}
    if which == "params":
        params = bent
    else:
        grads = bent
    return opt, params, grads


@pytest.mark.parametrize("case", OPT_CASES, ids=[c[0] for c in OPT_CASES])
def test_optimizer_bad_input(case):
    _, oname, dt, which, name, label, expect = case
    opt, params, grads = _opt_run(oname, dt, which, name, label)
    before = _opt_state(opt, params)
    # What a correct step computes: the same step on plain contiguous copies.
    ref_grads = {k: np.array(v) for k, v in grads.items()}
    ref_params = {k: np.array(v) for k, v in params.items()}
    try:
        opt.update(params, grads)
    except Exception as exc:  # noqa: BLE001
        assert expect != "same", f"valid input rejected: {type(exc).__name__}: {exc}"
        assert isinstance(exc, (ValueError, TypeError)), f"{type(exc).__name__}: {exc}"
        assert name in str(exc), f"error does not name {name!r}: {exc}"
        assert _equal(_opt_state(opt, params), before), f"{oname} raised but changed parameters or state"
        return
    assert expect != "raise", "accepted a parameter it cannot update in place"
    # Accepted: the copies' result, written into the caller's arrays (views included).
    _opt_after_two_steps(oname, dt)[0].update(ref_params, ref_grads)
    for k in params:
        rel = compare_outputs(np.asarray(params[k]), ref_params[k])[1]
        assert rel <= _tol(ref_params[k]), f"param {k} differs from the contiguous-copy step by {rel:.3g}"


def test_int_param_and_output_size_bounds():
    from numbanet.kernels import validate as v

    with pytest.raises(ValueError, match=r"f: pad must lie in \[-2\*\*62, 2\*\*62\)"):
        v.int_param("f", "pad", 2**63)
    assert v.int_param("f", "pad", np.int64(3), minimum=0) == 3
    v.output_size("f", (2, 3), np.float32, "pad")
    with pytest.raises(ValueError, match="f: stride and pad give an output of shape"):
        v.output_size("f", (2**40, 2**20), np.float64, "stride and pad")
