"""The exercise-check machinery: verdicts for right, wrong, unanswered and crashing answers.

Each chapter's own checks are tested in tests/test_exercises_chNN.py (a right answer passes, typical wrong
ones fail with a reason that does not give the answer away); the solutions notebooks run them under nbval.
"""

from __future__ import annotations

import re
import sys
import types

import pytest

from nanogpt_lib.course import exercises as ex


@pytest.fixture
def chapter_99(monkeypatch):
    """A throwaway chapter 99 with one exercise: answer a function returning its argument squared."""
    module = types.ModuleType("nanogpt_lib.course.exercises.ch99")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(ex, "_REGISTRY", dict(ex._REGISTRY))

    @ex.exercise("99.1", "Square a number", "a function square(x) -> x * x")
    def _(square):
        for x in (0, 3, -2.5):
            ex.expect(square(x) == x * x, f"square({x}) gave {square(x)!r}")
        return "it squares negatives too"

    return module


def test_right_wrong_and_unanswered(chapter_99, capsys):
    assert ex.check("99.1", lambda x: x * x) is True
    assert "✓ Exercise 99.1 (Square a number): right. it squares negatives too" in capsys.readouterr().out
    assert ex.check("99.1", lambda x: x + x) is False
    out = capsys.readouterr().out
    assert "✗" in out and "square(3) gave 6" in out
    for placeholder in (None, ...):
        assert ex.check("99.1", placeholder) is False
        assert "not answered yet" in capsys.readouterr().out


def test_placeholder_function_is_unanswered_and_a_crash_is_wrong(chapter_99):
    def todo(x):
        raise NotImplementedError

    assert ex.verdict("99.1", todo)[0] is None
    ok, why = ex.verdict("99.1", lambda x: x / 0)
    assert ok is False and "ZeroDivisionError" in why


def test_unknown_ids_name_what_exists(chapter_99):
    with pytest.raises(ValueError, match=re.escape("chapter 99 has 99.1")):
        ex.get("99.7")
    with pytest.raises(ValueError, match="not of the form"):
        ex.get("3.2")
    with pytest.raises(ValueError, match="chapter 98 has no exercises"):
        ex.exercises(98)
    with pytest.raises(ValueError, match="registered twice"):
        ex.exercise("99.1", "again", "x")(lambda a: None)
