"""Chapter 07's checks, against the committed experiment: right answers pass, typical slips fail with a reason
that keeps the answer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from nanogpt_lib.exercises import ch07, verdict
from nanogpt_lib.model import GPT, GPTConfig

from exercise_helpers import todo, wrong


def runs(stage: str) -> list[dict]:
    found = [json.loads(p.read_text()) for p in sorted(ch07.experiment_dir().glob("*/result.json"))]
    return [r for r in found if r["stage"] == stage]


@pytest.mark.parametrize("id", ["07.1", "07.2", "07.3", "07.4"])
def test_placeholders_are_not_answered(id):
    assert verdict(id, None)[0] is None
    if id in ("07.2", "07.4"):
        assert verdict(id, todo)[0] is None


def test_one_seed():
    seed2 = {r["config"]["lr"]: r["final"]["val_loss"] for r in runs("lr") if r["seed"] == 2}
    best = min(seed2, key=seed2.get)
    assert verdict("07.1", best)[0] is True
    means: dict[float, list[float]] = {}
    for r in runs("lr"):
        means.setdefault(r["config"]["lr"], []).append(r["final"]["val_loss"])
    both = min(means, key=lambda lr: sum(means[lr]))
    assert both != best  # the committed experiment: one seed flips the decision (else the exercise is moot)
    assert "both seeds" in wrong("07.1", both)
    assert "not one of the sweep's rates" in wrong("07.1", 3e-3)
    worst = max(seed2, key=seed2.get)
    for answer in (both, worst, 3e-3):
        assert f"{best:g}" not in wrong("07.1", answer)


def tokens_per_param(run_dir) -> float:
    result = json.loads((Path(run_dir) / "result.json").read_text())
    with torch.device("meta"):
        model = GPT(GPTConfig(**result["config"]["model"]))
    return result["tokens"] / model.num_params()


def test_tokens_per_param():
    assert verdict("07.2", tokens_per_param)[0] is True
    assert "other way up" in wrong("07.2", lambda d: 1 / tokens_per_param(d))

    def every_parameter(run_dir):
        result = json.loads((Path(run_dir) / "result.json").read_text())
        with torch.device("meta"):
            model = GPT(GPTConfig(**result["config"]["model"]))
        return result["tokens"] / sum(p.numel() for p in model.parameters())

    assert "lookup tables" in wrong("07.2", every_parameter)
    constant = tokens_per_param(ch07.experiment_dir() / ch07.TPP_RUNS[0])  # right for one run only
    why = wrong("07.2", lambda d: constant)
    assert "too" in why and ch07.TPP_RUNS[0] not in why


def test_decay_dividend():
    half = runs("half")
    label = half[0]["label"].removesuffix(", half the steps")
    long_at_750 = []
    for r in runs("combo"):
        if r["label"] == label:
            lines = (ch07.experiment_dir() / r["name"] / "metrics.jsonl").read_text().splitlines()
            evals = {m["step"]: m["val_loss"] for m in map(json.loads, lines) if m["kind"] == "eval"}
            long_at_750.append(evals[750])
    truth = sum(long_at_750) / len(long_at_750) - sum(r["final"]["val_loss"] for r in half) / len(half)
    assert truth > 0  # the half run ends lower
    assert verdict("07.3", truth)[0] is True
    assert verdict("07.3", round(truth, 4))[0] is True  # read off 4-decimal printouts
    assert "the sign" in wrong("07.3", -truth)
    for slip in (truth + 0.01, 0.0):
        assert f"{truth:.4f}" not in wrong("07.3", slip)


def steps_to_target(curve, target):
    prev_step, prev_loss = 0, math.inf
    for step, loss in curve:
        if loss <= target:
            if prev_loss == math.inf:
                return float(step)
            return prev_step + (step - prev_step) * (prev_loss - target) / (prev_loss - loss)
        prev_step, prev_loss = step, loss
    return math.inf


def test_steps_to_target():
    assert verdict("07.4", steps_to_target)[0] is True

    def no_first_case(curve, target):  # interpolates from (0, inf) at the first evaluation
        prev_step, prev_loss = 0, math.inf
        for step, loss in curve:
            if loss <= target:
                return prev_step + (step - prev_step) * (prev_loss - target) / (prev_loss - loss)
            prev_step, prev_loss = step, loss
        return math.inf

    def at_evaluations(curve, target):  # no interpolation: the first evaluation at or below the target
        return next((float(step) for step, loss in curve if loss <= target), math.inf)

    def last_crossing(curve, target):
        crossings = [steps_to_target(curve[i:], target) for i in range(len(curve))]
        return max((c for c in crossings if math.isfinite(c)), default=math.inf)

    assert "nan" in wrong("07.4", no_first_case)
    assert "too late" in wrong("07.4", at_evaluations)
    assert "too late" in wrong("07.4", last_crossing)
    assert "never" in wrong("07.4", lambda curve, target: 0.0 if curve[-1][1] > target else steps_to_target(curve, target))
