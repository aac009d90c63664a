"""Chapter 08's checks, against the committed experiment: right answers pass, typical slips fail with a reason
that keeps the answer."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from nanogpt_lib.course.exercises import Wrong, ch08, verdict
from nanogpt_lib.model import GPT, GPTConfig
from nanogpt_lib.plots import read_metrics

from exercise_helpers import todo, wrong


def runs(stage: str) -> list[dict]:
    found = [json.loads(p.read_text()) for p in sorted(ch08.experiment_dir().glob("*/result.json"))]
    return [r for r in found if r["stage"] == stage]


@pytest.mark.parametrize("id", ["08.1", "08.2", "08.3", "08.4"])
def test_placeholders_are_not_answered(id):
    assert verdict(id, None)[0] is None and verdict(id, todo)[0] is None


def test_beat_the_recipe_placeholder_is_not_answered():  # the chapter's cell before a run of the learner's
    assert verdict("08.5", None)[0] is None and verdict("08.5", (None, "runs/laptop"))[0] is None


def one_seed_winner(runs, seed):
    mine = [r for r in runs if r["seed"] == seed]
    return min(mine, key=lambda r: r["final"]["val_loss"])["config"]["lr"]


def test_one_seed():
    ok, remark = verdict("08.1", one_seed_winner)
    assert ok is True and "two seeds" in remark

    def by_sorting(runs, seed):
        ranked = sorted((r["final"]["val_loss"], r["config"]["lr"]) for r in runs if r["seed"] == seed)
        return ranked[0][1]

    def by_dict(runs, seed):
        loss = {r["config"]["lr"]: r["final"]["val_loss"] for r in runs if r["seed"] == seed}
        return min(loss, key=loss.get)

    assert verdict("08.1", by_sorting)[0] is True
    assert verdict("08.1", by_dict)[0] is True

    def mean_of_seeds(runs, seed):
        means: dict[float, list[float]] = {}
        for r in runs:
            means.setdefault(r["config"]["lr"], []).append(r["final"]["val_loss"])
        return min(means, key=lambda lr: sum(means[lr]) / len(means[lr]))

    def by_best(runs, seed):
        return min((r for r in runs if r["seed"] == seed), key=lambda r: r["best_val_loss"])["config"]["lr"]

    def second(runs, seed):
        return sorted((r["final"]["val_loss"], r["config"]["lr"]) for r in runs if r["seed"] == seed)[1][1]

    assert "mean over all seeds" in wrong("08.1", mean_of_seeds)
    assert "best_val_loss" in wrong("08.1", by_best)
    assert "not this seed's lowest" in wrong("08.1", second)
    assert "give a function" in wrong("08.1", 0.004)


def tokens_per_param(run_dir) -> float:
    result = json.loads((Path(run_dir) / "result.json").read_text())
    with torch.device("meta"):
        model = GPT(GPTConfig(**result["config"]["model"]))
    return result["tokens"] / model.num_params()


def test_tokens_per_param():
    assert verdict("08.2", tokens_per_param)[0] is True
    assert "other way up" in wrong("08.2", lambda d: 1 / tokens_per_param(d))

    def every_parameter(run_dir):
        result = json.loads((Path(run_dir) / "result.json").read_text())
        with torch.device("meta"):
            model = GPT(GPTConfig(**result["config"]["model"]))
        return result["tokens"] / sum(p.numel() for p in model.parameters())

    assert "lookup tables" in wrong("08.2", every_parameter)
    constant = tokens_per_param(ch08.experiment_dir() / ch08.TPP_RUNS[0])  # right for one run only
    why = wrong("08.2", lambda d: constant)
    assert "not the run's tokens" in why and ch08.TPP_RUNS[0] not in why and "too" not in why

    def by_hand(run_dir):  # no model: the parameters from the config's numbers (num_params leaves out wpe)
        c = GPTConfig(**json.loads((Path(run_dir) / "result.json").read_text())["config"]["model"])
        C, b = c.n_embd, c.bias
        block = 2 * C * (2 if b else 1) + 12 * C * C + (9 * C if b else 0) + (2 * (C // c.n_head) if c.qk_norm else 0)
        n = c.vocab_size * C + c.n_layer * block + C * (2 if b else 1)  # tied or not, one vocab x C matrix counts
        return json.loads((Path(run_dir) / "result.json").read_text())["tokens"] / n

    def with_load_result(run_dir):
        from nanogpt_lib.sweep import load_result

        r = load_result(run_dir)
        with torch.device("meta"):
            return r["tokens"] / GPT(GPTConfig.from_dict(r["config"]["model"])).num_params(non_embedding=True)

    assert verdict("08.2", by_hand)[0] is True
    assert verdict("08.2", with_load_result)[0] is True


def decay_dividend(long_runs, half_runs):
    step = half_runs[0]["step"]
    at_step = [dict(r["curve"])[step] for r in long_runs]
    return sum(at_step) / len(at_step) - sum(r["final"]["val_loss"] for r in half_runs) / len(half_runs)


def test_decay_dividend():
    ok, remark = verdict("08.3", decay_dividend)
    assert ok is True and "nats lower" in remark

    def by_interpolation(long_runs, half_runs):  # numpy's interp at the half runs' step (an evaluation)
        import numpy as np

        step = half_runs[0]["step"]
        at = [np.interp(step, *zip(*r["curve"])) for r in long_runs]
        return float(np.mean(at) - np.mean([r["final"]["val_loss"] for r in half_runs]))

    def per_seed_then_mean(long_runs, half_runs):  # pair the seeds, average the differences: the same number
        half = {r["seed"]: r for r in half_runs}
        diffs = [dict(r["curve"])[half[r["seed"]]["step"]] - half[r["seed"]]["final"]["val_loss"] for r in long_runs]
        return sum(diffs) / len(diffs)

    assert verdict("08.3", by_interpolation)[0] is True
    assert verdict("08.3", per_seed_then_mean)[0] is True

    def final_of_long(long_runs, half_runs):
        return sum(r["final"]["val_loss"] for r in long_runs) / len(long_runs) - sum(
            r["final"]["val_loss"] for r in half_runs
        ) / len(half_runs)

    def first_seed(long_runs, half_runs):
        return decay_dividend(long_runs[:1], half_runs[:1])

    assert "the sign" in wrong("08.3", lambda long_runs, half_runs: -decay_dividend(long_runs, half_runs))
    assert "final loss" in wrong("08.3", final_of_long)
    assert "first seed" in wrong("08.3", first_seed)
    assert "give a function" in wrong("08.3", 0.0053)


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
    assert verdict("08.4", steps_to_target)[0] is True

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

    assert "nan" in wrong("08.4", no_first_case)
    assert "not where the interpolated curve first reaches" in wrong("08.4", at_evaluations)
    assert "not where the interpolated curve first reaches" in wrong("08.4", last_crossing)

    def with_pairs(curve, target):  # zip of neighbours, the first evaluation handled before
        if curve and curve[0][1] <= target:
            return float(curve[0][0])
        for (s0, l0), (s1, l1) in itertools.pairwise(curve):
            if l1 <= target:
                return s0 + (s1 - s0) * (l0 - target) / (l0 - l1)
        return math.inf

    def with_numpy(curve, target):
        import numpy as np

        steps, losses = (np.array(v, dtype=float) for v in zip(*curve))
        hit = np.flatnonzero(losses <= target)
        if not len(hit):
            return math.inf
        i = int(hit[0])
        return (
            float(steps[0])
            if i == 0
            else float(np.interp(target, [losses[i], losses[i - 1]], [steps[i], steps[i - 1]]))
        )

    assert verdict("08.4", with_pairs)[0] is True
    assert verdict("08.4", with_numpy)[0] is True
    assert "never" in wrong(
        "08.4", lambda curve, target: 0.0 if curve[-1][1] > target else steps_to_target(curve, target)
    )


# ---- 08.5: tiny minutes runs on a fake clock ---------------------------------------------------------------

# A weak tiny recipe (AdamW at a low rate) that reasonable changes beat within the same budget. One clock reading
# is one "second" (test_minutes.Tick): every run decides the same budget whatever its model, on any machine.
TINY_RECIPE = """
name = "tiny-recipe"
dataset = "txt"
batch_size = 4
seed = 1337
max_steps = 100
lr = 1e-4
min_lr = 1e-5
warmup_steps = 2
schedule = "wsd"
optimizer = "adamw"
eval_every = 10
eval_batches = 1
log_every = 5
ckpt_every = 10
device = "cpu"
dtype = "float32"

[model]
n_layer = 1
n_head = 2
n_embd = 32
block_size = 16
vocab_size = 320
"""
MINUTES = 0.6


class Tick:
    """A clock that advances one second at every reading."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A project home with the test corpus prepared as data set "txt", and a run of the tiny recipe there."""
    from tiny import prepared_home

    root = tmp_path_factory.mktemp("ch08")
    # An own 320-token BPE: the LM head, most of a step's and a score's work, is 157 times smaller than GPT-2's
    prepared_home(root, vocab=320)
    (root / "recipe.toml").write_text(TINY_RECIPE)
    mp = pytest.MonkeyPatch()
    mp.setenv("NANOGPT_HOME", str(root / "home"))
    mp.setattr(ch08, "RECIPE", root / "recipe.toml")
    mp.setattr(ch08, "CHECK_TOKENS", 1024)  # 64 windows of 16: the scoring as in the chapter, on less text
    runs = {}

    def run(name, *overrides, minutes=MINUTES):
        if name not in runs:
            cfg = ch08.recipe_config(minutes, name, overrides=overrides)
            runs[name] = ch08.minutes_run(cfg, progress=False, clock=Tick(), artifacts=False).run_dir
        return runs[name]

    run("recipe")
    yield run
    mp.undo()


def test_a_run_whose_budget_was_planned_again_is_read_whole(lab):
    """A run whose plan was checked on the way and moved (a machine that slowed down) logs two budgets: the
    check reads the last one, the checkpoint's, and refuses an edit of it."""

    class Slowing(Tick):
        def __call__(self) -> float:
            self.t += 1.0 if self.t < 30 else 1.5
            return self.t

    cfg = ch08.recipe_config(2, "slowing")
    folder = ch08.minutes_run(cfg, progress=False, clock=Slowing(), artifacts=False).run_dir
    run = ch08._open_run(folder, "your run")
    budgets = [r for r in read_metrics(folder) if r["kind"] == "budget"]
    assert len(budgets) >= 2 and run["budget"]["replanned_at"] == budgets[-1]["step"]
    metrics = folder / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    last = max(i for i, line in enumerate(lines) if '"kind": "budget"' in line)
    edited = json.loads(lines[last]) | {"max_steps": budgets[-1]["max_steps"] + 1}
    metrics.write_text("\n".join([*lines[:last], json.dumps(edited), *lines[last + 1 :]]) + "\n")
    with pytest.raises(Wrong, match=r"the budget in metrics\.jsonl is not the one its checkpoint decided"):
        ch08._open_run(folder, "your run")


def test_beat_the_recipe_right_answers(lab):
    ok, remark = verdict("08.5", (lab("faster", "lr=3e-3"), lab("recipe")))
    assert ok is True, remark
    assert "bits per character" in remark and "lr" in remark
    # Other winning changes: Muon for the matrices, and four times the tokens per step (steps cost the same here)
    for name, change in (("muon", "optimizer=muon"), ("bigger-batch", "batch_size=16")):
        ok, remark = verdict("08.5", [str(lab(name, change)), str(lab("recipe"))])
        assert ok is True, remark


def test_beat_the_recipe_refuses_shortcuts(lab, tmp_path):
    recipe = lab("recipe")
    longer = lab("longer", "lr=3e-3", minutes=2 * MINUTES)
    assert "different budgets of minutes" in wrong("08.5", (longer, recipe))
    slower = lab("slower", "lr=1e-5")
    why = wrong("08.5", (slower, recipe))
    assert "does not beat" in why and "bits/char" in why
    # An edited metrics file: the losing run's last evaluation made to look better than the recipe's
    edited = tmp_path / "edited"
    shutil.copytree(slower, edited)
    lines = (edited / "metrics.jsonl").read_text().splitlines()
    last = max(i for i, line in enumerate(lines) if '"kind": "eval"' in line)
    record = json.loads(lines[last])
    record["val_bpc"] /= 2
    lines[last] = json.dumps(record)
    (edited / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert "metrics.jsonl does not agree" in wrong("08.5", (edited, recipe))
    # A run timed on another machine (here: its machine record says so)
    moved = tmp_path / "moved"
    shutil.copytree(lab("faster", "lr=3e-3"), moved)
    machine = json.loads((moved / ch08.MACHINE).read_text())
    (moved / ch08.MACHINE).write_text(json.dumps({**machine, "threads": machine["threads"] + 1}))
    assert "differ in threads" in wrong("08.5", (moved, recipe))
    # The recipe itself, copied, is no answer; nor is one folder given twice
    shutil.copytree(recipe, tmp_path / "same")
    assert "trains the recipe itself" in wrong("08.5", (tmp_path / "same", recipe))
    assert "one run" in wrong("08.5", (recipe, recipe))
    swapped = wrong("08.5", (recipe, lab("faster", "lr=3e-3")))  # the pair the wrong way round
    assert "recipe's run is not" in swapped and "lr" in swapped
    assert "give a pair" in wrong("08.5", recipe)
