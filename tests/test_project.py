"""Checks on the project's structure: the kernel/reference twins export the
same ops, every op has examples, CI's required optional modules really are
required, and the private Numba APIs numbanet leans on are still there."""

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import numbanet.kernels as kernels
import numbanet.reference as reference
from numbanet.kernels import _examples

ROOT = Path(__file__).resolve().parent.parent


def test_reference_exports_the_kernel_ops():
    ops = [n for n in kernels.__all__ if n not in kernels.UTILITIES]
    assert sorted(reference.__all__) == sorted(ops)
    for op in ops:
        k, r = inspect.signature(getattr(kernels, op)), inspect.signature(getattr(reference, op))
        assert list(k.parameters) == list(r.parameters), f"{op}: {k} vs reference {r}"


def test_every_op_has_examples_and_no_example_is_orphaned(monkeypatch):
    assert set(_examples.available()) == set(kernels.__all__) - set(kernels.UTILITIES)
    monkeypatch.setitem(_examples.EXAMPLES, "no_such_op", [])
    with pytest.raises(RuntimeError, match="no_such_op"):
        _examples.available()


def test_numbanet_require_turns_a_missing_module_into_an_error():
    env = {**os.environ, "NUMBANET_REQUIRE": "sklearn, numbanet_no_such_module"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         str(ROOT / "tests" / "test_readme.py")],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )
    assert proc.returncode != 0
    assert "numbanet_no_such_module" in proc.stdout + proc.stderr


def test_private_numba_apis_are_still_there():
    """kernels/_config.py prepends cache locators to
    ``CacheImpl._locator_classes`` (subclassing Numba's three locators and
    overriding ``get_source_stamp``), and kernels/_threads.py starts the pool
    with ``parallel._launch_threads`` after reading ``parallel._is_initialized``,
    and _config.jit passes ``numba.core.cpu_options.ParallelOptions`` as the
    ``parallel`` option. None of this is public Numba API: if a Numba release moves it, this test
    names what moved (see ARCHITECTURE.md)."""
    from numba.core import caching
    from numba.np.ufunc import parallel

    from numbanet.kernels import _config

    classes = caching.CacheImpl._locator_classes
    assert isinstance(classes, list)
    names = [c.__name__ for c in classes]
    assert names[:3] == ["NumbanetUserProvidedCacheLocator", "NumbanetInTreeCacheLocator",
                         "NumbanetUserWideCacheLocator"], names
    for base in (caching.UserProvidedCacheLocator, caching.InTreeCacheLocator, caching.UserWideCacheLocator):
        assert callable(getattr(base, "from_function", None)) and callable(getattr(base, "get_source_stamp", None))
    assert "_py_file" in inspect.getsource(caching._SourceFileBackedLocatorMixin)
    assert callable(parallel._launch_threads)
    assert isinstance(parallel._is_initialized, bool)
    # _config._prange_only: the parallel option as an instance (a dict's keys are popped)
    from numba.core.cpu_options import ParallelOptions

    opts = ParallelOptions(_config._prange_only())
    assert opts.prange and opts.setitem and not (opts.numpy or opts.reduction or opts.inplace_binop)
    assert _config.DEPENDENCIES  # the locators exist for these
    # _config.load_external_helpers_first and _extcall: a cached kernel's
    # payload starts with its library's (name, "object", (object code, ...))
    from numba.core import compiler, codegen

    assert callable(caching.CompileResultCacheImpl.rebuild)
    assert list(inspect.signature(compiler.CompileResult._rebuild).parameters)[:2] == ["target_context", "libdata"]
    assert "'object'" in inspect.getsource(codegen.CPUCodeLibrary.serialize_using_object_code)
    assert callable(codegen.JITCodeLibrary.get_pointer_to_function)
    # _config.load_without_refresh: Numba's public load_overload is refresh +
    # the guarded _load_overload, and the runtime's initialize is all a load needs
    from numba.core import ccallback
    from numba.core.runtime import rtsys

    src = inspect.getsource(caching.Cache.load_overload)
    assert "refresh()" in src and "_guard_against_spurious_io_errors" in src and "_load_overload(" in src
    assert list(inspect.signature(caching.Cache._load_overload).parameters) == ["self", "sig", "target_context"]
    assert callable(rtsys.initialize)
    # _gemm_ext._c_callback builds numba.cfunc's CFunc itself
    assert list(inspect.signature(ccallback.CFunc.__init__).parameters)[1:5] == ["pyfunc", "sig", "locals", "options"]
    assert callable(ccallback.CFunc.enable_caching) and callable(ccallback.CFunc.compile)
    # _config.save_concurrent_safe: each cache's IndexDataCacheFile, whose
    # save, index and data methods and name pattern its subclass uses
    assert "self._cache_file = IndexDataCacheFile(" in inspect.getsource(caching.Cache.__init__)
    for name in ("save", "load", "_load_index", "_save_index", "_save_data"):
        assert callable(getattr(caching.IndexDataCacheFile, name)), name
    init = inspect.getsource(caching.IndexDataCacheFile.__init__)
    assert "self._index_path" in init and "'%s.{number:d}.nbc'" in init


def test_every_public_op_is_a_kernel_op():
    """One contract: each public op is wrapped by ``_threads.kernel_op`` (the
    thread and malloc set-up) and validates with the pure ``validate`` checks."""
    for op in set(kernels.__all__) - set(kernels.UTILITIES):
        assert getattr(getattr(kernels, op), "op_name", None) == op, f"{op} lacks @kernel_op"
    assert "import _threads" not in (ROOT / "kernels" / "validate.py").read_text()
    assert "from ._threads" not in (ROOT / "kernels" / "validate.py").read_text()


_NO_THREADS_PROBE = """
import json
import numpy as np
import numba.np.ufunc.parallel as par
import numbanet.reference as R
from numbanet.layers import Affine, Dropout, Flatten
from numbanet.optimizers import Adam

x = np.ones((4, 2, 3), np.float32)
Flatten().forward(x)
Dropout(0.5, seed=0).forward(x)
fc = Affine(np.ones((6, 2), np.float32), np.zeros(2, np.float32), backend=R)
fc.backward(fc.forward(x))
Adam(backend=R).update(fc.params, fc.grads)
before = par._is_initialized
import numbanet.kernels as K
K.relu_forward(x)
print(json.dumps([before, par._is_initialized]))
"""


def test_validation_and_reference_backend_start_no_threads():
    """Flatten, Dropout and layers/optimizers on backend=reference validate
    with the kernels' checks, but start Numba's threads only when a kernel op
    runs."""
    proc = subprocess.run([sys.executable, "-c", _NO_THREADS_PROBE], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[false, true]"


def test_optimizer_docstring_examples_run():
    """Each optimizer's update is written once, as equations in its class
    docstring, with a doctested example."""
    import doctest

    from numbanet.optimizers import adaptive, sgd

    for mod in (sgd, adaptive):
        result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted >= 10 and result.failed == 0, (mod.__name__, result)


def test_test_files_are_named_after_the_code_they_test():
    """ARCHITECTURE.md's scheme, so a newcomer finds the tests by name:
    tests/test_<file>.py for each kernel op file, tests/test_layer_<file>.py
    for each layer file."""
    ops = {f"test_{m}.py" for m in kernels.OP_MODULES}
    layer_files = {f"test_layer_{p.stem}.py" for p in (ROOT / "layers").glob("*.py") if not p.name.startswith("_")}
    missing = sorted(n for n in ops | layer_files if not (ROOT / "tests" / n).exists())
    assert not missing, f"no test file {missing}"
    for name in ops | layer_files:
        assert name in (ROOT / "ARCHITECTURE.md").read_text(), f"ARCHITECTURE.md does not name {name}"
