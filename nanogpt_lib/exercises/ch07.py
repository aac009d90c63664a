"""Checks for notebook 07 (experiments): reading the committed runs in ``experiments/full``.

Every truth is recomputed from the runs' own files (``result.json``, ``metrics.jsonl``) with the library's
readers (``nanogpt_lib.sweep``), so the checks follow the experiment if it is ever re-run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import paths
from ..model import GPT, GPTConfig
from ..sweep import RESULT, load_result, steps_to_target
from . import Wrong, expect, exercise


def experiment_dir() -> Path:
    """The committed full experiment (``experiments/full`` under the project root)."""
    return paths.project_root() / "experiments" / "full"


def results(stage: str | None = None) -> list[dict[str, Any]]:
    """Every finished run of the full experiment (``sweep.load_result``: result.json plus its val curve),
    optionally of one stage, in folder order."""
    if not experiment_dir().is_dir():
        raise FileNotFoundError(f"{paths.shown(experiment_dir())} is missing: the exercises read the committed "
                                "experiment of the repository (is NANOGPT_HOME set elsewhere?)")
    runs = [load_result(d) for d in sorted(experiment_dir().iterdir()) if (d / RESULT).is_file()]
    return [r for r in runs if stage is None or r["stage"] == stage]


def _number(answer: object) -> float:
    expect(isinstance(answer, (int, float)) and not isinstance(answer, bool) and math.isfinite(answer),
           f"give a number, got {answer!r}")
    return float(answer)


def _lr_winner(runs: list[dict[str, Any]]) -> float:
    """The rate whose mean final val loss over ``runs`` is lowest."""
    by_lr: dict[float, list[float]] = {}
    for r in runs:
        by_lr.setdefault(r["config"]["lr"], []).append(r["final"]["val_loss"])
    return min(by_lr, key=lambda lr: statistics.fmean(by_lr[lr]))


# ---- 07.1 one seed's verdict --------------------------------------------------------------------------

@exercise("07.1", "Which learning rate wins with one seed?",
          "a float: the peak learning rate the lr stage would have picked (lowest final val loss) if only "
          "seed 2 had been run")
def _one_seed(answer: object) -> str:
    lr = _number(answer)
    runs = results("lr")
    rates = sorted({r["config"]["lr"] for r in runs})
    seed2 = _lr_winner([r for r in runs if r["seed"] == 2])
    both = _lr_winner(runs)
    if not math.isclose(lr, seed2, rel_tol=1e-9):
        expect(any(math.isclose(lr, x, rel_tol=1e-9) for x in rates),
               f"{lr:g} is not one of the sweep's rates: read them from the runs (config['lr'] in result.json)")
        if math.isclose(lr, both, rel_tol=1e-9):
            raise Wrong("that is the winner of the mean over both seeds (the tuned baseline the notebook prints); "
                        "look at seed 2's runs alone")
        if math.isclose(lr, _lr_winner([r for r in runs if r["seed"] == 1]), rel_tol=1e-9):
            raise Wrong("that is seed 1's winner; the question is about seed 2")
        raise Wrong(f"seed 2's run at lr {lr:g} is not its lowest final val loss")
    if math.isclose(seed2, both, rel_tol=1e-9):
        return "seed 2 agrees with the mean of both seeds."
    gap = abs(statistics.fmean(r["final"]["val_loss"] for r in runs if r["config"]["lr"] == seed2 and r["seed"] == 2)
              - statistics.fmean(r["final"]["val_loss"] for r in runs if r["config"]["lr"] == both and r["seed"] == 2))
    return (f"one seed would have tuned the baseline to {seed2:g}, not {both:g}: seed 2 prefers it by {gap:.4f} "
            "nats, less than the two seeds of one rate differ. That is why every stage runs two seeds.")


# ---- 07.2 tokens per parameter ------------------------------------------------------------------------

# Runs whose counts differ: learned positions (a wpe table), RoPE (none), an untied head, half the tokens,
# half the batch for twice the steps.
TPP_RUNS = ("lr-baseline-lr-0.002-s1", "variant-untied-s1", "variant-rope-s2",
            "half-combo-lr-x1-muon-lr-0.02-half-the-steps-s1", "recipe-batch-32-750-steps-s1")


def _n_params(model_config: dict[str, Any], **count: Any) -> int:
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        return GPT(GPTConfig.from_dict(model_config)).num_params(**count)


@exercise("07.2", "Tokens per parameter of a run",
          "a function tokens_per_param(run_dir) -> float: the tokens the run trained on divided by its "
          "model's GPT.num_params() (the N of 6N), for a run folder of experiments/full")
def _tokens_per_param(tokens_per_param: Callable[[Path], float]) -> str:
    expect(callable(tokens_per_param), f"give a function tokens_per_param(run_dir), got {type(tokens_per_param).__name__}")
    shown = []
    for name in TPP_RUNS:
        run_dir = experiment_dir() / name
        result = load_result(run_dir)
        mine = _number(tokens_per_param(run_dir))
        n = _n_params(result["config"]["model"])
        truth = result["tokens"] / n
        # Both are one division of the same two integers: equal to float rounding (1e-9 relative leaves room
        # for a sum done in another order), while the nearest slip (counting the 8,192-weight position table)
        # is 1e-3 off.
        if not math.isclose(mine, truth, rel_tol=1e-9):
            if math.isclose(mine, 1 / truth, rel_tol=1e-6):
                raise Wrong(f"{name}: that is parameters per token; the ratio is the other way up")
            if math.isclose(mine, result["tokens"] / _n_params(result["config"]["model"], non_embedding=False),
                            rel_tol=1e-6):
                raise Wrong(f"{name}: you counted every parameter; num_params() leaves out the lookup tables "
                            "(the position table, and wte when the head is untied)")
            raise Wrong(f"{name}: your ratio {mine:.4g} is not the run's tokens over its num_params()")
        shown.append(truth)
    return (f"from {min(shown):.2f} to {max(shown):.2f} tokens per parameter: Chinchilla's compute-optimal "
            "runs train on about 20, so these runs are short for their size.")


# ---- 07.3 what the decay buys -------------------------------------------------------------------------

def decay_dividend() -> tuple[float, str, int]:
    """(the best combination's mean val loss at the half run's last step, minus the half run's mean final
    val loss; the combination's label; that step), both means over seeds."""
    half = results("half")
    full_label = half[0]["label"].removesuffix(", half the steps")
    full = [r for r in results("combo") if r["label"] == full_label]
    step = half[0]["step"]
    at_step = []
    for r in full:
        losses = dict(r["curve"])
        if step not in losses:  # the evaluation grid holds it for the committed runs
            raise RuntimeError(f"{r['name']} has no evaluation at step {step}")
        at_step.append(losses[step])
    return statistics.fmean(at_step) - statistics.fmean(r["final"]["val_loss"] for r in half), full_label, step


@exercise("07.3", "What does the decay buy?",
          "a float: the best combination's val loss at step 750 of its 1,500-step run minus the final val "
          "loss of its half-steps run (750 steps), each a mean over both seeds (positive: the half run is lower)")
def _decay(answer: object) -> str:
    mine = _number(answer)
    truth, label, step = decay_dividend()
    # Read off printed losses rounded to 4 decimals, each of the four can be off by 5e-5: 5e-4 allows that with
    # room, and is a tenth of the answer itself.
    if abs(mine - truth) > 5e-4:
        if abs(mine + truth) <= 5e-4:
            raise Wrong("the sign: subtract the half run's final loss from the long run's loss at the same step")
        raise Wrong(f"{mine:.4f} is {'too high' if mine > truth else 'too low'}: use the val loss of the long run "
                    f"'{label}' at step {step} (its metrics.jsonl or load_result(...)['curve']) and the half "
                    "run's final val loss, both averaged over seeds")
    return (f"at step {step} the long run's cosine is halfway down, its rate still about half the peak; the half "
            f"run has decayed to the minimum by then and ends {truth:.4f} nats lower. Small, but it is why a "
            "speed-up read off a long run is checked by a run that is meant to stop early.")


# ---- 07.4 steps to the target -------------------------------------------------------------------------

def _target() -> float:
    """The tuned baseline's mean final val loss, as the lr stage decides it."""
    runs = results("lr")
    best = _lr_winner(runs)
    return statistics.fmean(r["final"]["val_loss"] for r in runs if r["config"]["lr"] == best)


# Edge cases: already at the target at the first evaluation, exactly on it, never reaching it, and a curve that
# dips below and comes back (the first crossing counts).
EDGE_CURVES = (([(50, 4.0), (100, 3.0)], 4.5), ([(50, 5.0), (100, 4.5), (150, 4.0)], 4.5),
               ([(50, 5.0), (100, 4.9)], 4.5), ([(10, 6.0), (20, 4.0), (30, 5.0), (40, 3.0)], 4.5))


@exercise("07.4", "Steps to the target, by hand",
          "a function steps_to_target(curve, target) -> float, curve a list of (step, val_loss): the first "
          "step at which the curve reaches target, interpolated linearly between evaluations; math.inf if never")
def _steps(mine_fn: Callable[[list[tuple[int, float]], float], float]) -> str:
    expect(callable(mine_fn), f"give a function steps_to_target(curve, target), got {type(mine_fn).__name__}")
    target = _target()
    cases = [(f"the edge case {curve}, target {t}", curve, t) for curve, t in EDGE_CURVES]
    cases += [(f"run {r['name']} (the experiment's target)", r["curve"], target) for r in results()]
    for what, curve, t in cases:
        mine, truth = mine_fn([tuple(p) for p in curve], t), steps_to_target(curve, t)
        expect(isinstance(mine, (int, float)) and not isinstance(mine, bool),
               f"{what}: returned {type(mine).__name__}, not a number")
        expect(not math.isnan(mine), f"{what}: you returned nan (inf - inf or 0 / 0 in the interpolation?)")
        if math.isinf(truth) or math.isinf(mine):
            expect(mine == truth, f"{what}: the curve {'never reaches' if math.isinf(truth) else 'reaches'} the "
                   f"target, yet you returned {mine}")
            continue
        # Linear interpolation in float64: ~1e-13 steps apart whatever the order of operations.
        expect(math.isclose(mine, truth, rel_tol=1e-9),
               f"{what}: your step {mine:.2f} is not where the interpolated curve first reaches the target")
    return f"equal to nanogpt_lib.sweep.steps_to_target on {len(EDGE_CURVES)} edge cases and all {len(cases) - len(EDGE_CURVES)} runs."
