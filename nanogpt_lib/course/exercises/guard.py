"""Switch off, while a learner's answer runs, the functions that would answer the exercise for them.

A check that only compares object identity (``answer is not is_val``) lets any wrapper through:
``lambda i, s, v: is_val(i, s, v)`` is another object. So the guard works at *call* level, three ways:

* a Python function (a library function, a method such as ``TokenData.get_batch``, tiktoken's
  ``Encoding.encode``, a check's own helper) gets, for the duration, a body that refuses: its ``__code__`` is
  swapped, so every reference to it is caught, the name imported before the check ran and a bound method
  included;
* torch functions and ``torch.ops.aten`` operators are refused by name in a ``TorchFunctionMode``, which sees
  ``F.scaled_dot_product_attention``, ``torch._C._nn.scaled_dot_product_attention``,
  ``torch.ops.aten.scaled_dot_product_attention(.default)`` and ``Tensor.tril`` alike;
* an attribute that is neither (numpy's dispatchers, tiktoken's compiled ``CoreBPE``) is replaced on its owner.

Everything is put back when the answer returns or raises. A refused call raises :class:`Off`, a
:class:`~nanogpt_lib.course.exercises.Wrong` whose one-line message names the function and why it is off; the guard
also remembers it, so an answer that swallows the error (``try: ... except Exception``) or a torch layer that
wraps it is still refused.
"""

from __future__ import annotations

import functools
import inspect
import threading
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch.overrides import TorchFunctionMode

from . import Wrong


class Off(Wrong):
    """The answer called a function its check switches off (the message names it and says why)."""


@dataclass(frozen=True)
class Twin:
    """One thing an exercise switches off: ``fn`` a Python function, or ``owner.attr`` an attribute, or
    ``ops`` torch function / aten operator names; ``label`` is how the learner knows it."""

    label: str
    fn: Any = None
    owner: Any = None
    attr: str = ""
    ops: tuple[str, ...] = ()
    only: tuple[str, ...] = ()  # for an attribute: refuse only its members whose name holds one of these


def _python_functions(obj: Any) -> list[types.FunctionType]:
    """The Python functions behind ``obj``: itself, a method's function, a decorator's ``__wrapped__`` chain."""
    found: list[types.FunctionType] = []
    seen: set[int] = set()
    while obj is not None and id(obj) not in seen:
        seen.add(id(obj))
        if isinstance(obj, (staticmethod, classmethod, types.MethodType)):
            obj = obj.__func__
            continue
        if isinstance(obj, property):
            found += [f for part in (obj.fget, obj.fset) if part for f in _python_functions(part)]
            break
        if isinstance(obj, types.FunctionType):
            found.append(obj)
        obj = getattr(obj, "__wrapped__", None)
    return found


def fn(obj: Any, label: str | None = None) -> Twin:
    """Switch off a Python function or method (and what it wraps), wherever it is referenced from."""
    if label is None:
        target = _python_functions(obj)[0] if _python_functions(obj) else obj
        label = f"{target.__module__}.{target.__qualname__}"
    return Twin(label, fn=obj)


def attr(owner: Any, name: str, label: str | None = None, only: tuple[str, ...] = ()) -> Twin:
    """Switch off ``owner.name`` (a module or class attribute that is not a Python function); with ``only``,
    just its members whose names hold one of those words (the rest still work through it)."""
    return Twin(
        label or f"{getattr(owner, '__name__', type(owner).__name__)}.{name}", owner=owner, attr=name, only=only
    )


def ops(*names: str, label: str | None = None) -> Twin:
    """Switch off torch functions and aten operators called ``names``, by any route (``torch.x``, ``Tensor.x``,
    ``F.x``, ``torch.ops.aten.x``)."""
    return Twin(label or " / ".join(f"torch's {n}" for n in names), ops=tuple(names))


def module_helpers(module: types.ModuleType, keep: Iterable[str] = ()) -> list[Twin]:
    """Every function and method defined in ``module`` except the names in ``keep``: a check's own helpers,
    which compute the truth and so would answer the exercise."""
    keep = set(keep)
    twins = []
    for name, obj in vars(module).items():
        if name in keep or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            twins += [
                fn(f, f"{module.__name__}.{obj.__name__}.{n}") for n, f in vars(obj).items() if _python_functions(f)
            ]
        elif _python_functions(obj):
            twins.append(fn(obj, f"{module.__name__}.{name}"))
    return twins


@dataclass
class _State:
    why: str
    labels: dict[int, str] = field(default_factory=dict)  # refusal key -> label
    codes: list[tuple[types.FunctionType, types.CodeType]] = field(default_factory=list)  # swapped, originals
    thread: int = field(default_factory=threading.get_ident)  # the answer's thread; others are not refused
    tripped: Off | None = None


_ACTIVE: list[_State] = []
_LAST: list[_State] = []  # the latest guard, kept after it ends: another thread may still be inside a swapped body


def _state() -> _State:
    return _ACTIVE[-1] if _ACTIVE else _LAST[-1]


def _refused(key: int, fid: int = -1, args: tuple = (), kwargs: dict | None = None) -> Any:
    """Called by every switched-off body: remember the first refusal and raise it. Another thread (a widget
    generating text in the background) is not the answer: its call runs the function's original code."""
    state = _state()
    if (threading.get_ident() != state.thread or not _ACTIVE) and fid >= 0:
        f, code = state.codes[fid]
        original = types.FunctionType(code, f.__globals__, f.__name__, f.__defaults__, f.__closure__)
        original.__kwdefaults__ = f.__kwdefaults__
        return original(*args, **(kwargs or {}))
    off = Off(f"your answer calls {state.labels[key]}, which this check switches off: {state.why}")
    if state.tripped is None:
        state.tripped = off
    raise off


@functools.cache
def _refusing_code(key: int, fid: int, n_free: int) -> types.CodeType:
    """A function body that returns ``_refused(key, fid, args, kwargs)``, with ``n_free`` free variables (a
    closure's ``__code__`` can only be swapped for one with as many). It imports this module by name: it runs
    with the globals of the function it replaces."""
    free = [f"_free{i}" for i in range(n_free)]
    lines = ["def _outer():", *(f"    {v} = None" for v in free), "    def _refuse(*args, **kwargs):"]
    if free:
        lines.append(f"        ({', '.join(free)},)")
    lines += [
        f"        return __import__({__name__!r}, fromlist=['_refused'])._refused({key}, {fid}, args, kwargs)",
        "    return _refuse",
    ]
    scope: dict[str, Any] = {}
    exec("\n".join(lines), scope)  # noqa: S102 - our own fixed template, no outside input
    return scope["_outer"]().__code__


class _Refuser:
    """Put in place of an attribute: calling it, or reaching into it (``enc._core_bpe.encode``), refuses;
    with ``only``, members whose names hold none of those words are the original's."""

    def __init__(self, key: int, original: Any, only: tuple[str, ...]) -> None:
        self._key, self._original, self._only = key, original, only

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() != _state().thread:
            return self._original(*args, **kwargs)
        _refused(self._key)

    def __getattr__(self, name: str) -> Any:
        if (self._only and not any(word in name for word in self._only)) or threading.get_ident() != _state().thread:
            return getattr(self._original, name)
        _refused(self._key)


class _RefuseOps(TorchFunctionMode):
    def __init__(self, names: dict[str, int]) -> None:
        super().__init__()
        self.names = names

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "").split(".")[0]
        if name in self.names:  # modes are per thread: only the answer's thread gets here
            _refused(self.names[name])
        return func(*args, **(kwargs or {}))


_MISSING = object()


@contextmanager
def switched_off(twins: Iterable[Twin], why: str) -> Iterator[None]:
    """While the block runs, every twin refuses to be called (raising :class:`Off`); all restored after.

    Re-entrant: inside an active guard (a wrapped method called by another) it changes nothing more.
    """
    if _ACTIVE:
        yield
        return
    state = _State(why)
    codes = state.codes
    _LAST[:] = [state]
    attrs: list[tuple[Any, str, Any]] = []
    op_names: dict[str, int] = {}
    _ACTIVE.append(state)
    try:
        for key, twin in enumerate(twins):
            state.labels[key] = twin.label
            for name in twin.ops:
                op_names[name] = key
            for f in _python_functions(twin.fn) if twin.fn is not None else []:
                if any(f is done for done, _ in codes):
                    continue
                codes.append((f, f.__code__))
                f.__code__ = _refusing_code(key, len(codes) - 1, len(f.__code__.co_freevars))
            if twin.owner is not None:
                attrs.append((twin.owner, twin.attr, vars(twin.owner).get(twin.attr, _MISSING)))
                setattr(twin.owner, twin.attr, _Refuser(key, getattr(twin.owner, twin.attr), twin.only))
        mode = _RefuseOps(op_names) if op_names else None
        if mode is not None:
            mode.__enter__()
        try:
            yield
        finally:
            if mode is not None:
                mode.__exit__(None, None, None)
    except Off:
        raise
    except Exception:
        if state.tripped is not None:  # the refusal, wrapped or followed by another error: say what is off
            raise state.tripped from None
        raise
    finally:
        for f, code in reversed(codes):
            f.__code__ = code
        for owner, name, old in reversed(attrs):
            if old is _MISSING:
                delattr(owner, name)  # it came from a base class
            else:
                setattr(owner, name, old)
        _ACTIVE.remove(state)
    if state.tripped is not None:  # the answer caught the refusal and carried on
        raise state.tripped


def guarded(answer: Any, twins: Callable[[], list[Twin]], why: str) -> Any:
    """``answer`` as the check will call it: each call (a class's construction and methods too) runs inside
    :func:`switched_off`. Data (a number, a str) comes back as it is."""

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def call(*args: Any, **kwargs: Any) -> Any:
            with switched_off(twins(), why):
                return f(*args, **kwargs)

        return call

    if inspect.isclass(answer):
        names = {n for n, v in vars(answer).items() if isinstance(v, types.FunctionType)} | {"__init__", "forward"}
        methods = {
            n: wrap(getattr(answer, n))
            for n in names
            if isinstance(inspect.getattr_static(answer, n, None), types.FunctionType)
        }
        return type(
            answer.__name__,
            (answer,),
            {**methods, "__module__": answer.__module__, "__qualname__": answer.__qualname__},
        )
    if callable(answer):
        return wrap(answer)
    return answer
