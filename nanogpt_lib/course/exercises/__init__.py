"""Checks for the chapters' exercises: right or wrong, and why, without giving the answer away.

Each chapter's checks live in ``chNN.py`` beside this file and register themselves with :func:`exercise`. A
notebook calls ``check("03.2", answer)``: it prints one verdict and returns ``True`` or ``False``, so an
unanswered exercise (``None``, ``...``, or a function that still raises ``NotImplementedError``) never fails a
chapter run, while the solutions notebooks ``assert check(...)`` so that a check that rots fails the build.

A checker receives the learner's answer and either returns (optionally a short remark to print with the
verdict) or raises :class:`Wrong` with the reason. Reasons say *what* is off (a shape, a value at an index, a
property that fails) and never print the expected answer, nor whether a number is too high or too low (that
would let an answer be found by bisection).

Each exercise declares what it switches off (``off``, see :mod:`.guard`): the library functions and their
torch/tiktoken twins that would answer it. :func:`verdict` hands the checker the answer already wrapped, so
that every call of it runs with those, and all of the check module's own helpers, refusing to be called;
the checker computes its truths outside those calls.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ...devices import cpu_threads

Checker = Callable[[Any], "str | None"]
OffList = Callable[[], list]  # -> list[guard.Twin], built when the check runs (the modules are imported by then)


class Wrong(Exception):
    """Raised by a checker: the answer is wrong, and the message says why (without the solution)."""


class NotAnswered(Exception):
    """Raised by a checker when the answer is a placeholder the learner has not filled in yet."""


@dataclass(frozen=True)
class Exercise:
    id: str  # "03.2": chapter, then number
    title: str  # one line, as the notebook's heading names it
    answer: str  # what to pass to check(): "a function causal_mask(T) -> bool tensor (T, T)"
    checker: Checker
    off: OffList  # what the answer may not call (besides the check module's own helpers)
    why: str  # why they are off, as the learner reads it


_REGISTRY: dict[str, Exercise] = {}
_ID = re.compile(r"^(\d\d)\.(\d+)$")


def exercise(
    id: str, title: str, answer: str, off: OffList | None = None, why: str = "write that part yourself"
) -> Callable[[Checker], Checker]:
    """Register ``checker`` as the check of exercise ``id`` (used by the ``chNN`` modules); ``off`` lists the
    library functions the answer may not call, ``why`` says why (both shown in one line if it does)."""
    if not _ID.match(id):
        raise ValueError(f"exercise id {id!r} is not of the form '03.2'")

    def register(checker: Checker) -> Checker:
        if id in _REGISTRY:
            raise ValueError(f"exercise {id} is registered twice")
        _REGISTRY[id] = Exercise(id, title, answer, checker, off or list, why)
        return checker

    return register


def expect(condition: bool, why: str) -> None:
    """Raise :class:`Wrong` with ``why`` unless ``condition`` holds (a checker's one-line assert)."""
    if not condition:
        raise Wrong(why)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run a check's tiny training or big count on one torch thread, the caller's setting restored after.

    At this size each op is microseconds of work: on a busy 2-core machine two threads measured 10-40x slower
    than one (26 s against 1.2 s for 100 steps of 03.4's model), all of it in synchronisation."""
    with cpu_threads(1):
        yield


def chi2_tail(stat: float, df: int) -> float:
    """P(X >= stat) for a chi-square variable with ``df`` degrees of freedom (the regularised upper incomplete
    gamma function): the p-value of the checks that test a distribution (a sampler's, a loader's)."""
    return float(
        torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), torch.tensor(stat / 2, dtype=torch.float64))
    )


def _load_chapter(chapter: str) -> None:
    try:
        importlib.import_module(f"{__name__}.ch{chapter}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.ch{chapter}":
            raise
        raise ValueError(f"chapter {chapter} has no exercises") from None


def exercises(chapter: str | int) -> list[Exercise]:
    """The exercises of a chapter (``"03"`` or ``3``), in order."""
    chapter = f"{int(chapter):02d}"
    _load_chapter(chapter)
    found = [e for i, e in _REGISTRY.items() if i.startswith(chapter + ".")]
    return sorted(found, key=lambda e: int(e.id.split(".")[1]))


def get(id: str) -> Exercise:
    """The exercise called ``id`` (``"03.2"``); a ``ValueError`` names the chapter's exercises if unknown."""
    m = _ID.match(id)
    if not m:
        raise ValueError(f"exercise id {id!r} is not of the form '03.2'")
    _load_chapter(m.group(1))
    if id not in _REGISTRY:
        known = ", ".join(e.id for e in exercises(m.group(1)))
        raise ValueError(f"no exercise {id}; chapter {m.group(1)} has {known}")
    return _REGISTRY[id]


def switched_off(ex: Exercise) -> list:
    """Everything the answer to ``ex`` may not call: its declared twins, then every function of its check
    module except those the module lists in ``PUBLIC`` (helpers a learner is meant to use)."""
    from . import guard

    module = importlib.import_module(ex.checker.__module__)
    keep = set(getattr(module, "PUBLIC", ())) | {e.checker.__name__ for e in _REGISTRY.values()}
    return ex.off() + guard.module_helpers(module, keep)


def _unanswered(answer: Any) -> bool:
    return answer is None or answer is Ellipsis


def verdict(id: str, answer: Any) -> tuple[bool | None, str]:
    """Run the check of ``id`` on ``answer``: ``(True, remark)``, ``(False, why)`` or ``(None, how to answer)``.

    ``None`` means not answered yet. A learner's code that raises is a wrong answer (its error is the why),
    except ``NotImplementedError``, the placeholder a chapter leaves in a function to fill in.
    """
    ex = get(id)
    how = f"not answered yet: give check({id!r}, ...) {ex.answer}, then run the cell again"
    if _unanswered(answer):
        return None, how
    from . import guard

    try:
        twins = switched_off(ex)
        with one_thread():
            remark = ex.checker(guard.guarded(answer, lambda: twins, ex.why))
    except NotAnswered:
        return None, how
    except NotImplementedError:
        return None, how
    except Wrong as w:
        return False, str(w)
    except Exception as e:  # noqa: BLE001 - the learner's code may raise anything: it becomes the verdict
        return False, f"your answer raised {type(e).__name__}: {e}"
    return True, remark or ""


def check(id: str, answer: Any) -> bool:
    """Check exercise ``id``: print the verdict (right, wrong and why, or how to answer) and return it as a bool."""
    ok, text = verdict(id, answer)
    title = get(id).title
    if ok is None:
        print(f"Exercise {id} ({title}): {text}.")
    elif ok:
        print(f"✓ Exercise {id} ({title}): right." + (f" {text}" if text else ""))
    else:
        print(f"✗ Exercise {id} ({title}): not yet: {text}")
    return bool(ok)
