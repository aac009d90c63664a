"""Helpers shared by tests/test_exercises_chNN.py: a placeholder answer and "this answer must be wrong"."""

from __future__ import annotations

import re

from nanogpt_lib.course.exercises import verdict


def todo(*args, **kwargs):
    raise NotImplementedError  # the placeholder a chapter leaves: "your code here"


def numbers_in(text: str) -> set[int]:
    return {int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", text)}


def wrong(id: str, answer: object, *fragments: str, hidden: tuple[int, ...] = ()) -> str:
    """The answer fails with a reason that holds each fragment and none of the numbers in ``hidden`` (the right
    answers: a reason must say what is off without giving the answer away); return the reason."""
    ok, why = verdict(id, answer)
    assert ok is False, (id, ok, why)
    assert why
    for fragment in fragments:
        assert fragment in why, why
    assert not numbers_in(why) & set(hidden), why
    return why
