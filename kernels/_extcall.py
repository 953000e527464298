"""Call an ``@njit`` helper from a kernel as an external symbol, not as linked code.

Why: Numba links every ``@njit`` function a kernel calls into the kernel's
LLVM module, and LLVM optimises and code-generates the result again. A
``prange`` loop is worse: its body becomes a gufunc, and Numba builds three
libraries around it (the body, ``_GufuncWrapper`` and
``parallelgufuncwrapper``), each of which links everything below it and runs
the whole ``-O3`` pipeline and the code generator again, before the kernel
does it once more. So a per-chunk helper called from a kernel's serial branch
and from its ``prange`` loop was optimised and code-generated five times
(measured on ``_maxpool2d_backward``: helper, gufunc, both wrappers and kernel
each spent 0.3-0.5 s in LLVM on the same ~2,000 instructions).

How: a helper decorated ``@_config.jit(external=True)`` is replaced by a
stand-in (:func:`external`). A kernel's call of it compiles the helper for the
argument types on its own (once, cached on disk like every kernel), registers
the address of its native function under a name of ours with
``llvmlite.binding.add_symbol``, and emits a call to that name through Numba's
calling convention: a declaration, no linked code. The libraries around a
``prange`` body then hold the call only. Errors raised in the helper
propagate as from any ``@njit`` call.

The name holds the helper's module, qualified name and argument types
(:func:`symbol`), so a kernel loaded from the on-disk cache can say what it
calls: :func:`_config.jit` wraps each cached dispatcher's loader so that,
before the machine code is loaded, every such name in it is decoded and its
helper compiled or loaded and registered (:func:`register_symbols_in`).

Rules for helpers called this way:

* arguments are arrays, integers, floats and booleans (what :func:`symbol`
  can name); pass bounds as ``np.int64`` so the serial branch and the
  ``prange`` (whose index is ``uint64``) share one compiled helper;
* the helper lives in the kernel's own file (or one in the kernel file's
  ``_config.DEPENDENCIES``): the kernel's machine code depends on the
  helper's signature and return type, and the cache stamp must change with
  them;
* the call costs a real function call (no inlining across it): use it per
  chunk or per plane, not per element.

Python (and ``NUMBA_DISABLE_JIT=1``) calls the helper itself.
"""

from __future__ import annotations

import functools
import importlib
import re

from numba import types
from numba.core import cgutils, errors
from numba.core.typing.templates import AbstractTemplate, infer_global, signature
from numba.extending import lower_builtin

__all__ = ["external", "symbol", "register_symbols_in"]

_PREFIX = "numbanet_ext$"
_SCALARS = {t.name: t for t in (types.int64, types.uint64, types.int32, types.intp, types.float32,
                                types.float64, types.boolean)}
_ARRAY = re.compile(r"A([a-z0-9]+)_(\d+)([CFA])")
_SYMBOL = re.compile(rb"numbanet_ext\$[A-Za-z0-9_.$]+")

#: symbol name -> the helper's compile result (kept alive: kernels call its code).
_registered: dict = {}


def _code(t) -> str:
    if isinstance(t, types.Array) and t.dtype.name in _SCALARS and t.mutable and t.aligned:
        return f"A{t.dtype.name}_{t.ndim}{t.layout}"
    if t in _SCALARS.values():
        return t.name
    raise errors.TypingError(f"external helper: arguments must be aligned writable arrays or int64, uint64, "
                             f"float or bool scalars, got {t}")


def _decode(code: str):
    m = _ARRAY.fullmatch(code)
    if m:
        return types.Array(_SCALARS[m.group(1)], int(m.group(2)), m.group(3))
    return _SCALARS[code]


def symbol(dispatcher, argtys) -> str:
    """The process-wide name of ``dispatcher`` compiled for ``argtys``."""
    f = dispatcher.py_func
    if "<" in f.__qualname__:
        raise errors.TypingError(f"external helper: {f.__qualname__} must be a module-level function")
    return _PREFIX + "$".join([f.__module__, f.__qualname__, *(_code(a) for a in argtys)])


def _register(dispatcher, argtys):
    name = symbol(dispatcher, argtys)
    cres = _registered.get(name)
    if cres is None:
        from llvmlite import binding as ll
        from numba.core.compiler_lock import global_compiler_lock

        with global_compiler_lock:
            dispatcher.compile(argtys)
            cres = dispatcher.overloads[argtys]
            ll.add_symbol(name, cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name))
            _registered[name] = cres
    return name, cres


def register_symbols_in(object_code: bytes) -> None:
    """Compile or load, and register, every helper that ``object_code`` (a
    cached kernel's machine code) calls through :func:`external`."""
    for raw in sorted(set(_SYMBOL.findall(object_code))):
        name = raw.decode()
        if name in _registered:
            continue
        module, qualname, *codes = name[len(_PREFIX):].split("$")
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        _register(obj.dispatcher, tuple(_decode(c) for c in codes))


def external(dispatcher):
    """A stand-in for ``dispatcher`` (an ``@njit`` helper) that compiled
    callers call through an external symbol; Python calls it directly. Its
    ``dispatcher`` attribute is the helper's own dispatcher."""

    def stand_in(*args):
        return dispatcher(*args)

    key = (_PREFIX, dispatcher)  # the typing and lowering key (the function is not yet a module global)

    # Typed and lowered in place (a typing template and lower_builtin), not
    # as an @overload: an overload's implementation is a function of its
    # own, which cost 0.2-0.7 s of LLVM per signature.
    class _Typing(AbstractTemplate):
        def generic(self, args, kws):
            if kws:
                return None
            argtys = tuple(types.unliteral(a) for a in args)
            return signature(_register(dispatcher, argtys)[1].signature.return_type, *argtys)

    infer_global(stand_in, typing_key=key)(_Typing)

    @lower_builtin(key, types.VarArg(types.Any))
    def _lower(context, builder, sig, args):
        name, cres = _register(dispatcher, sig.args)  # unliteral types (the template's)
        restype = cres.signature.return_type
        fnty = context.call_conv.get_function_type(restype, sig.args)
        callee = cgutils.get_or_insert_function(builder.module, fnty, name)
        status, res = context.call_conv.call_function(builder, callee, restype, sig.args, args)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return res

    functools.update_wrapper(stand_in, dispatcher.py_func)
    stand_in.dispatcher = dispatcher
    return stand_in
