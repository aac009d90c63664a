"""The guard every check runs its answer under (nanogpt_lib.course.exercises.guard): what it switches off is refused by
any route, in one line that names it; everything is restored afterwards, whatever the answer did."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from nanogpt_lib import sample
from nanogpt_lib.course import exercises as ex
from nanogpt_lib.course.exercises import guard, verdict
from nanogpt_lib.prepare import is_val
from nanogpt_lib.sample import sample_next
from nanogpt_lib.tokenizer import encode, get_tokenizer

ALL = [e.id for chapter in range(1, 8) for e in ex.exercises(chapter)]


def test_a_switched_off_function_is_refused_through_any_reference():
    held = sample_next  # imported before the guard: a module attribute swap would miss it
    twins = [guard.fn(sample_next), guard.ops("tril", label="torch's tril")]
    with (
        pytest.raises(guard.Off, match="sample_next, which this check switches off: because"),
        guard.switched_off(twins, "because"),
    ):
        held(torch.zeros(1, 3), 1.0)
    for call in (
        lambda: torch.ones(2, 2).tril(),
        lambda: torch.tril(torch.ones(2, 2)),
        lambda: torch.ops.aten.tril(torch.ones(2, 2)),
        lambda: torch.ops.aten.tril.default(torch.ones(2, 2)),
    ):
        with pytest.raises(guard.Off, match="torch's tril"), guard.switched_off(twins, "because"):
            call()


def test_everything_is_restored_when_the_answer_raises_or_is_refused():
    tokenizer = get_tokenizer()
    core, code, tril = tokenizer._core_bpe, sample_next.__code__, np.tril
    before = (torch.ones(3, 3).tril(), encode("to be"), sample_next(torch.eye(3), 0))

    def raises(*args, **kwargs):
        raise ValueError("the answer's own bug")

    refused = {
        "02.4": lambda chunk: encode(chunk),
        "03.1": lambda T: torch.ones(T, T).tril().bool(),
        "07.1": lambda logits, t, gen: sample_next(logits, t, gen=gen),
    }
    for id, answer in refused.items():
        ok, why = verdict(id, raises)
        assert ok is False and "ValueError: the answer's own bug" in why, why
        ok, why = verdict(id, answer)
        assert ok is False and "switches off" in why, why
    assert tokenizer._core_bpe is core and sample_next.__code__ is code and np.tril is tril
    after = (torch.ones(3, 3).tril(), encode("to be"), sample_next(torch.eye(3), 0))
    assert torch.equal(before[0], after[0]) and before[1] == after[1] and torch.equal(before[2], after[2])
    assert not guard._ACTIVE  # no guard left active
    assert not torch.overrides._get_current_function_mode_stack()  # no torch function mode left behind


def test_a_swallowed_or_wrapped_refusal_is_still_refused():
    def swallows(logits, temperature, gen):
        try:
            return sample_next(logits, temperature, gen=gen)
        except Exception:  # noqa: BLE001 - the learner's fallback that hides the refusal, as the test needs
            return logits.argmax(-1, keepdim=True)

    def rewraps(logits, temperature, gen):
        try:
            return sample_next(logits, temperature, gen=gen)
        except Exception as e:
            raise RuntimeError("something else") from e

    for answer in (swallows, rewraps):
        ok, why = verdict("07.1", answer)
        assert ok is False and "nanogpt_lib.sample.sample_next" in why, why


def test_the_reason_is_one_line_naming_the_function_and_why():
    ok, why = verdict("01.2", lambda train, val, n: float(is_val(0, 0, 2)))
    assert ok is False and "\n" not in why
    assert why.startswith("your answer calls nanogpt_lib.prepare.is_val, which this check switches off:")


def test_the_guard_is_reentrant_and_class_answers_are_guarded_in_every_method():
    # inside an active guard, a second one adds nothing
    with guard.switched_off([guard.fn(is_val)], "outer"), guard.switched_off([guard.fn(encode)], "inner"):
        assert encode("a") == [64]
    with (
        pytest.raises(guard.Off, match="outer"),  # caught inside, still refused when the guard ends
        guard.switched_off([guard.fn(is_val)], "outer"),
        pytest.raises(guard.Off),
    ):
        is_val(0, 0, 2)
    assert is_val(0, 0, 1) is True

    class Answer(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.n = n

        def forward(self, x):
            return F.layer_norm(x, (self.n,))

    wrapped = guard.guarded(Answer, lambda: [guard.ops("layer_norm")], "norm it yourself")
    module = wrapped(4)
    assert isinstance(module, Answer)
    with pytest.raises(guard.Off, match="norm it yourself"):
        module(torch.ones(2, 4))
    assert guard.guarded(3.5, list, "") == 3.5 and guard.guarded("word", list, "") == "word"


@pytest.mark.parametrize("id", [i for i in ALL if i not in ("02.2", "02.5")])  # those two take a str
def test_every_check_switches_off_its_own_helpers(id):
    # the check module's private functions compute the truth: an answer calling one is refused, by name
    module = inspect.getmodule(ex.get(id).checker)
    public = set(getattr(module, "PUBLIC", ()))
    checkers = {e.checker.__name__ for e in ex._REGISTRY.values()}
    helpers = [
        f
        for n, f in vars(module).items()
        if inspect.isfunction(f)
        and f.__module__ == module.__name__
        and n.startswith("_")
        and n not in public
        and n not in checkers
    ]
    assert helpers, module.__name__
    helper = helpers[0]
    ok, why = verdict(id, lambda *args, **kwargs: helper())
    assert ok is False and f"{module.__name__}.{helper.__name__}" in why and "switches off" in why, why


@pytest.mark.parametrize("id", ALL)
def test_every_exercise_says_why_its_functions_are_off(id):
    e = ex.get(id)
    assert e.why and e.why[0].islower() and not e.why.endswith(".")
    assert all(isinstance(t, guard.Twin) for t in ex.switched_off(e))


def test_no_check_answers_too_high_or_too_low():
    # a direction to move in would let a number be found by bisection
    for path in sorted(Path(ex.__file__).parent.glob("ch*.py")):
        text = path.read_text()
        found = re.findall(r"too (?:high|low|late|early)|is (?:higher|lower)\b", text)
        assert not found, (path.name, found)


def test_the_checks_run_on_one_thread_and_leave_the_count_as_they_found_it():
    """A learner's kernel runs on all its threads; a check's tiny work runs on one (in a notebook as here)."""
    torch.set_num_threads(2)  # the learner's count (conftest's fixture gives the suite its own back after)
    inside = []

    def causal_mask(T):
        inside.append(torch.get_num_threads())
        return torch.arange(T)[None, :] <= torch.arange(T)[:, None]

    assert verdict("03.1", causal_mask)[0] is True
    assert inside and set(inside) == {1}
    assert torch.get_num_threads() == 2


def test_sample_module_functions_are_all_off_in_chapter_06():
    labels = {t.label for t in ex.switched_off(ex.get("07.3"))}
    for name in ("sample_next", "generate", "stream_text"):
        assert f"nanogpt_lib.sample.{name}" in labels
    assert callable(sample.generate)


def test_other_threads_are_not_refused():
    # a widget generating text in a background thread while a check runs: its calls are not the answer's
    import threading

    results = {}

    def background():
        results["sample"] = sample_next(torch.eye(3), 0).tolist()
        results["tril"] = torch.ones(2, 2).tril().tolist()
        results["encode"] = get_tokenizer()._core_bpe.encode_ordinary("to be")

    twins = [guard.fn(sample_next), guard.ops("tril"), guard.attr(get_tokenizer(), "_core_bpe", only=("encode",))]
    with pytest.raises(guard.Off, match="sample_next"), guard.switched_off(twins, "because"):
        worker = threading.Thread(target=background)
        worker.start()
        worker.join()
        sample_next(torch.eye(3), 0)  # the answer's own thread still is refused
    assert results == {"sample": [[0], [1], [2]], "tril": [[1.0, 0.0], [1.0, 1.0]], "encode": encode("to be")}
