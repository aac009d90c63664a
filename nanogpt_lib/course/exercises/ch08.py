"""Checks for notebook 08 (experiments): reading the committed runs in ``experiments/full``.

Where the answer is a number read off the runs (which rate one seed picks, what the decay buys), the exercise
asks for the function that computes it: the check runs it on sweeps the learner never sees (other rates,
seeds, step counts, written here at random) and then on the committed runs, so no number can be guessed
and narrowed down. Truths on the committed runs come from their own files (``result.json``,
``metrics.jsonl``) read with the library's readers (``nanogpt_lib.sweep``).

08.5 is checked on two run folders the learner made on their own machine: a minutes run of the recipe and one
of their changed recipe. Nothing is taken on trust from files a learner could edit: each run's checkpoint,
metrics and machine record must agree with one another, and the bits per character compared are scored again
from each checkpoint's weights on windows of the val text that only the val split decides.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import paths, sweep
from ...checkpoint import CheckpointError, load_checkpoint, load_model_state
from ...config import TrainConfig, load_config
from ...data import TokenData, text_stats
from ...devices import cpu_class, cpu_info, pick_device
from ...files import atomic_write_text
from ...model import GPT, GPTConfig
from ...rundir import CKPT, METRICS, RunDir
from ...sweep import load_result, steps_to_target
from ...tokenizer import identity as tokenizer_identity
from ...train import TrainResult, train
from . import NotAnswered, Wrong, exercise, expect
from .guard import fn

# What a learner's answer may call: the readers of the runs, and 08.5's way to make and score a minutes run
PUBLIC = ("experiment_dir", "results", "minutes_run", "recipe_config", "machine_record", "val_bits_per_char")


def _sweep_twins() -> list:
    """The sweep module's helpers that compute, not read (load_result stays: it only reads a run's files)."""
    return [fn(sweep.steps_to_target), fn(sweep.run_grid)]


def experiment_dir() -> Path:
    """The committed full experiment (``experiments/full`` under the project root)."""
    return paths.project_root() / "experiments" / "full"


def results(stage: str | None = None) -> list[dict[str, Any]]:
    """Every finished run of the full experiment (``sweep.load_result``: result.json plus its val curve),
    optionally of one stage, in folder order."""
    if not experiment_dir().is_dir():
        raise FileNotFoundError(
            f"{paths.shown(experiment_dir())} is missing: the exercises read the committed "
            "experiment of the repository (is NANOGPT_HOME set elsewhere?)"
        )
    runs = [load_result(d) for d in sorted(experiment_dir().iterdir()) if RunDir(d).result.is_file()]
    return [r for r in runs if stage is None or r["stage"] == stage]


def _number(answer: object) -> float:
    expect(
        isinstance(answer, (int, float)) and not isinstance(answer, bool) and math.isfinite(answer),
        f"give a number, got {answer!r}",
    )
    return float(answer)


# ---- 08.1 one seed's verdict --------------------------------------------------------------------------


def _fake_run(lr: float, seed: int, final: float, best: float, step: int = 1500) -> dict[str, Any]:
    """A run record shaped like load_result's, for the sweeps the learner never sees."""
    return {
        "name": f"lr-{lr:g}-s{seed}",
        "label": f"lr {lr:g}",
        "stage": "lr",
        "seed": seed,
        "step": step,
        "config": {"lr": lr},
        "final": {"val_loss": final},
        "best_val_loss": best,
        "curve": [(step, final)],
    }


def _hidden_sweeps() -> list[list[dict[str, Any]]]:
    """Three lr sweeps (4-6 rates, 2-3 seeds) where each seed prefers another rate, and where the lowest best
    val loss is another run than the lowest final one (a curve that dipped, then rose)."""
    g = random.Random(71)
    sweeps = []
    for n_rates, n_seeds in ((5, 2), (4, 3), (6, 2)):
        rates: list[float] = []
        while len(rates) < n_rates:  # distinct rates, as a sweep has
            rate = g.choice((1, 2, 3, 5)) * 10.0 ** g.randint(-4, -2)
            rates += [rate] if rate not in rates else []
        rates.sort()
        runs = []
        for seed in range(1, n_seeds + 1):
            order = list(range(n_rates))
            g.shuffle(order)  # this seed's ranking of the rates
            for rank, i in enumerate(order):
                final = 4.0 + 0.01 * rank + g.random() * 1e-3
                best = final - (0.05 if rank == n_rates - 1 else g.random() * 1e-3)  # the worst dipped lowest
                runs.append(_fake_run(rates[i], seed, final, best))
        sweeps.append(runs)
    return sweeps


def _winner(runs: list[dict[str, Any]], seed: int | None) -> float:
    """The rate of the lowest mean final val loss, over ``seed``'s runs (or all seeds' for None)."""
    by_lr: dict[float, list[float]] = {}
    for r in runs:
        if seed is None or r["seed"] == seed:
            by_lr.setdefault(r["config"]["lr"], []).append(r["final"]["val_loss"])
    return min(by_lr, key=lambda lr: statistics.fmean(by_lr[lr]))


@exercise(
    "08.1",
    "Which learning rate wins with one seed?",
    "a function one_seed_winner(runs, seed) -> float: among the runs (load_result records of one lr sweep) "
    "of that seed, the config['lr'] of the one with the lowest final val loss",
    off=_sweep_twins,
    why="rank the runs yourself",
)
def _one_seed(one_seed_winner: Callable[[list[dict[str, Any]], int], float]) -> str:
    expect(
        callable(one_seed_winner), f"give a function one_seed_winner(runs, seed), got {type(one_seed_winner).__name__}"
    )
    sweeps = [(f"hidden sweep {i + 1}", runs) for i, runs in enumerate(_hidden_sweeps())]
    sweeps.append(("the lr stage", results("lr")))
    for what, runs in sweeps:
        for seed in sorted({r["seed"] for r in runs}):
            got = _number(one_seed_winner([dict(r) for r in runs], seed))
            truth = _winner(runs, seed)
            if math.isclose(got, truth, rel_tol=1e-12):
                continue
            at = f"{what}, seed {seed}"
            rates = {r["config"]["lr"] for r in runs}
            expect(
                any(math.isclose(got, x, rel_tol=1e-12) for x in rates),
                f"{at}: {got:g} is not one of the sweep's rates (config['lr'])",
            )
            expect(
                not math.isclose(got, _winner(runs, None), rel_tol=1e-12),
                f"{at}: that is the winner of the mean over all seeds; the question is one seed's runs",
            )
            lowest = min(runs, key=lambda r: r["final"]["val_loss"])["config"]["lr"]
            expect(
                not math.isclose(got, lowest, rel_tol=1e-12),
                f"{at}: that is the lowest final loss of any seed's run; the question is this seed's runs",
            )
            by_best = min((r for r in runs if r["seed"] == seed), key=lambda r: r["best_val_loss"])
            expect(
                not math.isclose(got, by_best["config"]["lr"], rel_tol=1e-12),
                f"{at}: that run has the lowest best_val_loss; the lr stage ranks by the final val loss",
            )
            raise Wrong(f"{at}: the run at {got:g} is not this seed's lowest final val loss")
    runs = results("lr")
    seed2, both = one_seed_winner(runs, 2), _winner(runs, None)
    if math.isclose(seed2, both, rel_tol=1e-9):
        return "it ranks the hidden sweeps and the lr stage as asked; there seed 2 agrees with both seeds' mean."
    loss = {(r["config"]["lr"], r["seed"]): r["final"]["val_loss"] for r in runs}
    gap = abs(loss[(seed2, 2)] - loss[(both, 2)])
    return (
        f"it ranks the hidden sweeps and the lr stage as asked. There, one seed (2) would have tuned the baseline to "
        f"{seed2:g}, not {both:g}: seed 2 prefers it by {gap:.4f} nats, less than the two seeds of one rate "
        "differ. That is why every stage runs two seeds."
    )


# ---- 08.2 tokens per parameter ------------------------------------------------------------------------

# Runs whose counts differ: learned positions (a wpe table), RoPE (none), an untied head, half the tokens,
# half the batch for twice the steps.
TPP_RUNS = (
    "lr-baseline-lr-0.002-s1",
    "variant-untied-s1",
    "variant-rope-s2",
    "half-combo-lr-x1-muon-lr-0.02-half-the-steps-s1",
    "recipe-batch-32-750-steps-s1",
)


def _n_params(model_config: dict[str, Any], **count: Any) -> int:
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        return GPT(GPTConfig.from_dict(model_config)).num_params(**count)


@exercise(
    "08.2",
    "Tokens per parameter of a run",
    "a function tokens_per_param(run_dir) -> float: the tokens the run trained on divided by its "
    "model's GPT.num_params() (the N of 6N), for a run folder of experiments/full",
    off=list,
    why="read the tokens and count the parameters yourself",
)
def _tokens_per_param(tokens_per_param: Callable[[Path], float]) -> str:
    expect(
        callable(tokens_per_param), f"give a function tokens_per_param(run_dir), got {type(tokens_per_param).__name__}"
    )
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
            if math.isclose(
                mine, result["tokens"] / _n_params(result["config"]["model"], non_embedding=False), rel_tol=1e-6
            ):
                raise Wrong(
                    f"{name}: you counted every parameter; num_params() leaves out the lookup tables "
                    "(the position table, and wte when the head is untied)"
                )
            raise Wrong(f"{name}: your ratio {mine:.4g} is not the run's tokens over its num_params()")
        shown.append(truth)
    return (
        f"from {min(shown):.2f} to {max(shown):.2f} tokens per parameter: Chinchilla's compute-optimal "
        "runs train on about 20, so these runs are short for their size."
    )


# ---- 08.3 what the decay buys -------------------------------------------------------------------------


def _dividend(long_runs: list[dict[str, Any]], half_runs: list[dict[str, Any]]) -> float:
    step = half_runs[0]["step"]
    at_step = [dict(r["curve"])[step] for r in long_runs]
    return statistics.fmean(at_step) - statistics.fmean(r["final"]["val_loss"] for r in half_runs)


def _hidden_pairs() -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Long runs and their half runs the learner never sees: 2-3 seeds, other lengths and evaluation grids;
    each long run's best val loss and final loss differ from its loss at the half run's last step."""
    g = random.Random(73)
    pairs = []
    for steps, every, n_seeds in ((800, 100, 3), (1200, 50, 2), (600, 60, 2)):
        longs, halves = [], []
        for seed in range(1, n_seeds + 1):
            curve = [(s, 6.0 - 1.5 * s / steps + g.random() * 0.01) for s in range(every, steps + 1, every)]
            longs.append({**_fake_run(1e-3, seed, curve[-1][1], curve[-1][1] - 0.01, steps), "curve": curve})
            final = dict(curve)[steps // 2] - 0.05 - g.random() * 0.02
            halves.append(_fake_run(1e-3, seed, final, final, steps // 2))
        pairs.append((longs, halves))
    return pairs


def _committed_pair() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The best combination's 1,500-step runs and its half-steps runs, from experiments/full."""
    half = results("half")
    full_label = half[0]["label"].removesuffix(", half the steps")
    return [r for r in results("combo") if r["label"] == full_label], half


@exercise(
    "08.3",
    "What does the decay buy?",
    "a function decay_dividend(long_runs, half_runs) -> float: the long runs' mean val loss at the half "
    "runs' last step (their 'step') minus the half runs' mean final val loss (positive: the half runs "
    "end lower); each list holds one run per seed",
    off=_sweep_twins,
    why="read the curves yourself",
)
def _decay(decay_dividend: Callable[[list[dict[str, Any]], list[dict[str, Any]]], float]) -> str:
    expect(
        callable(decay_dividend),
        f"give a function decay_dividend(long_runs, half_runs), got {type(decay_dividend).__name__}",
    )
    cases = [(f"hidden pair {i + 1}", *pair) for i, pair in enumerate(_hidden_pairs())]
    cases.append(("the committed best combination", *_committed_pair()))
    for what, longs, halves in cases:
        got = _number(decay_dividend([dict(r) for r in longs], [dict(r) for r in halves]))
        truth = _dividend(longs, halves)
        # A difference of two means of the same numbers: equal to float64 rounding whatever the order.
        if math.isclose(got, truth, rel_tol=1e-9, abs_tol=1e-12):
            continue
        expect(
            not math.isclose(got, -truth, rel_tol=1e-9),
            f"{what}: the sign: the long runs' loss minus the half runs' final loss",
        )
        mean_final = statistics.fmean(r["final"]["val_loss"] for r in longs)
        half_final = statistics.fmean(r["final"]["val_loss"] for r in halves)
        expect(
            not math.isclose(got, mean_final - half_final, rel_tol=1e-9),
            f"{what}: you took the long runs' final loss; the comparison is at the same step, the half runs' last",
        )
        expect(
            not math.isclose(got, statistics.fmean(r["best_val_loss"] for r in longs) - half_final, rel_tol=1e-9),
            f"{what}: you took the long runs' best val loss; the comparison is their loss at the half runs' last step",
        )
        one = dict(longs[0]["curve"])[halves[0]["step"]] - halves[0]["final"]["val_loss"]
        expect(
            not math.isclose(got, one, rel_tol=1e-9),
            f"{what}: that is the first seed's difference alone; average each side over its seeds",
        )
        raise Wrong(
            f"{what}: your difference is not the long runs' mean loss at the half runs' last step minus "
            "the half runs' mean final loss"
        )
    longs, halves = _committed_pair()
    truth, step = decay_dividend(longs, halves), halves[0]["step"]
    return (
        f"equal on {len(cases) - 1} hidden pairs and the committed runs. At step {step} the long run's cosine "
        f"is halfway down, its rate still about half the peak; the half run has decayed to the minimum by then "
        f"and ends {truth:.4f} nats lower. Small, but it is why a speed-up read off a long run is checked by a "
        "run that is meant to stop early."
    )


# ---- 08.4 steps to the target -------------------------------------------------------------------------


def _target() -> float:
    """The tuned baseline's mean final val loss, as the lr stage decides it."""
    runs = results("lr")
    best = _winner(runs, None)
    return statistics.fmean(r["final"]["val_loss"] for r in runs if r["config"]["lr"] == best)


# Edge cases: already at the target at the first evaluation, exactly on it, never reaching it, and a curve that
# dips below and comes back (the first crossing counts).
EDGE_CURVES = (
    ([(50, 4.0), (100, 3.0)], 4.5),
    ([(50, 5.0), (100, 4.5), (150, 4.0)], 4.5),
    ([(50, 5.0), (100, 4.9)], 4.5),
    ([(10, 6.0), (20, 4.0), (30, 5.0), (40, 3.0)], 4.5),
)


@exercise(
    "08.4",
    "Steps to the target, by hand",
    "a function steps_to_target(curve, target) -> float, curve a list of (step, val_loss): the first "
    "step at which the curve reaches target, interpolated linearly between evaluations; math.inf if never",
    off=_sweep_twins,
    why="interpolate the curve yourself",
)
def _steps(mine_fn: Callable[[list[tuple[int, float]], float], float]) -> str:
    expect(callable(mine_fn), f"give a function steps_to_target(curve, target), got {type(mine_fn).__name__}")
    target = _target()
    cases = [(f"the edge case {curve}, target {t}", curve, t) for curve, t in EDGE_CURVES]
    cases += [(f"run {r['name']} (the experiment's target)", r["curve"], target) for r in results()]
    for what, curve, t in cases:
        mine, truth = mine_fn([tuple(p) for p in curve], t), steps_to_target(curve, t)
        expect(
            isinstance(mine, (int, float)) and not isinstance(mine, bool),
            f"{what}: returned {type(mine).__name__}, not a number",
        )
        expect(not math.isnan(mine), f"{what}: you returned nan (inf - inf or 0 / 0 in the interpolation?)")
        if math.isinf(truth) or math.isinf(mine):
            expect(
                mine == truth,
                f"{what}: the curve {'never reaches' if math.isinf(truth) else 'reaches'} the "
                f"target, yet you returned {mine}",
            )
            continue
        # Linear interpolation in float64: ~1e-13 steps apart whatever the order of operations.
        expect(
            math.isclose(mine, truth, rel_tol=1e-9),
            f"{what}: your step {mine:.2f} is not where the interpolated curve first reaches the target",
        )
    return (
        f"equal to nanogpt_lib.sweep.steps_to_target on {len(EDGE_CURVES)} edge cases and all "
        f"{len(cases) - len(EDGE_CURVES)} runs."
    )


# ---- 08.5 beat the recipe on your machine -------------------------------------------------------------

RECIPE = paths.project_root() / "configs" / "laptop.toml"  # the recipe to beat (tests point it at a tiny one)
# The chapter's demo cut of the recipe: small batches and a short warmup, so that a run of half a minute decides
# a budget well past its warmup on a busy laptop (41 steps of 0.6 s measured on a busy 2-core CPU, one thread,
# where the recipe's own 1.8 s steps fit none), and small evaluations often, so that its live curve has points.
# A recipe folder may be the recipe or this cut of it.
DEMO = ("batch_size=8", "warmup_steps=5", "eval_batches=2", "eval_every=10")
# Keys that say how a run is named, timed, logged or placed, not what it learns: a recipe folder may set them
# as it likes (the chapter evaluates less often in its demo), and changing only them is no change of recipe.
BOOKKEEPING = (
    "name",
    "minutes",
    "max_steps",
    "threads",
    "device",
    "eval_every",
    "eval_batches",
    "log_every",
    "ckpt_every",
)
MACHINE = "machine.json"  # written beside a run's checkpoint by minutes_run: where and how it was timed
CHECK_TOKENS = 8192  # val tokens each run is scored on: a second or two of forward passes at the recipe's size


def machine_record(cfg: TrainConfig, clock: Callable[[], float]) -> dict[str, Any]:
    """What a run's speed depends on besides its config: the CPU (model name and class), the threads torch
    trains on, the device, torch's version, and the clock that timed the budget."""
    return {
        "cpu": cpu_info()[0],
        "cpu_class": cpu_class(),
        "threads": cfg.threads or torch.get_num_threads(),
        "device": pick_device(cfg.device).type,
        "torch": torch.__version__,
        "clock": f"{getattr(clock, '__module__', '?')}.{getattr(clock, '__qualname__', type(clock).__name__)}",
    }


def minutes_run(cfg: TrainConfig, **kwargs: Any) -> TrainResult:
    """``train(cfg, **kwargs)`` for a run of ``cfg.minutes``, then the machine it ran on written to the run
    folder's ``machine.json``: 08.5 compares two runs only if they were timed alike."""
    if cfg.minutes is None:
        raise ValueError("minutes_run trains for cfg.minutes: set it (e.g. replace(cfg, minutes=10))")
    result = train(cfg, **kwargs)
    record = machine_record(cfg, kwargs.get("clock", time.perf_counter))
    atomic_write_text(result.run_dir / MACHINE, json.dumps(record, indent=2))
    return result


def recipe_config(minutes: float, name: str, demo: bool = False, overrides: tuple[str, ...] = ()) -> TrainConfig:
    """The recipe (``RECIPE``; with ``demo`` its chapter cut, ``DEMO``) for ``minutes``, named ``name``, with
    ``overrides`` on top: the learner's changes go there."""
    return load_config(RECIPE, [*(DEMO if demo else ()), f"minutes={minutes:g}", f"name={name}", *overrides])


def _learning(cfg: dict[str, Any]) -> dict[str, Any]:
    """A config's settings that shape what it learns (the bookkeeping keys left out), flattened."""
    flat = {k: v for k, v in cfg.items() if k not in BOOKKEEPING and k != "model"}
    return {**flat, **{f"model.{k}": v for k, v in cfg["model"].items()}}


def _changed(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def _open_run(folder: Any, who: str) -> dict[str, Any]:
    """A finished minutes run's checkpoint, metrics and machine record, each checked against the others."""
    expect(isinstance(folder, (str, Path)), f"{who}: give a run folder (a path), got {type(folder).__name__}")
    folder = Path(folder)
    run = RunDir(folder)
    expect(run.ckpt.is_file(), f"{who}: {paths.shown(folder)} holds no {CKPT}: is it a run folder of train()?")
    try:
        ckpt = load_checkpoint(run.ckpt)
    except CheckpointError as e:
        raise Wrong(f"{who}: {e}") from None
    cfg = ckpt["config"]
    budget = ckpt.get("budget")
    expect(cfg.get("minutes") is not None, f"{who} is not a minutes run: set cfg.minutes")
    expect(isinstance(budget, dict), f"{who} never decided its step budget (it stopped while measuring its speed)")
    expect(
        ckpt["step"] == budget["max_steps"],
        f"{who} stopped at step {ckpt['step']}, not at the end of the "
        "budget it decided: finish it (run it again: mode 'auto' resumes it)",
    )
    expect(
        (folder / MACHINE).is_file(),
        f"{who} has no {MACHINE}: make the run with ch08.minutes_run(cfg), which records the machine it ran on",
    )
    machine = json.loads((folder / MACHINE).read_text())
    expect(run.metrics.is_file(), f"{who} has no {METRICS}: is it a run folder of train()?")
    records = run.read_metrics()
    budgets = [r for r in records if r.get("kind") == "budget"]
    evals = [r for r in records if r.get("kind") == "eval"]
    # One record when the run decided, and one more each time a check on the way moved its end: the last
    # one is the budget the run ended on, the checkpoint's.
    expect(
        bool(budgets) and {k: v for k, v in budgets[-1].items() if k not in ("kind", "step")} == budget,
        f"{who}: the budget in metrics.jsonl is not the one its checkpoint decided",
    )
    text = text_stats(paths.data_dir() / cfg["dataset"], "val")
    # The trainer writes best_val and each record's val_bpc from the very floats it logs (JSON keeps a float
    # exactly): an edited record breaks the equality, so these compare bitwise.
    expect(
        bool(evals)
        and evals[-1]["step"] == ckpt["step"]
        and min(r["val_loss"] for r in evals) == ckpt["best_val"]
        and all(r["val_bpc"] == text.bits_per_char(r["val_loss"]) for r in evals),
        f"{who}: metrics.jsonl does not agree with its checkpoint and its val text (was it edited?)",
    )
    return {"folder": folder, "ckpt": ckpt, "config": cfg, "budget": budget, "machine": machine, "text": text}


@torch.no_grad()
def val_bits_per_char(run: dict[str, Any]) -> float:
    """The run's final weights scored in float32 on ``CHECK_TOKENS`` val tokens: windows of its block size
    spread evenly over its data set's val split (the same windows for every run of one tokenizer and block
    size), the mean loss per token turned into bits per character of the val text."""
    cfg = run["config"]
    model = GPT(GPTConfig.from_dict(cfg["model"]))
    load_model_state(model, run["ckpt"]["model"], RunDir(run["folder"]).ckpt)
    model.eval()
    data = TokenData(
        paths.data_dir() / cfg["dataset"],
        model.config.block_size,
        model.config.vocab_size,
        tokenizer=run["ckpt"].get("tokenizer"),
    )
    val, T = data.splits["val"], model.config.block_size
    n = max(CHECK_TOKENS // T, 1)
    starts = torch.linspace(0, len(val) - T - 1, n).long().tolist()
    windows = torch.from_numpy(np.stack([val[s : s + T + 1] for s in starts]).astype(np.int64))
    total = 0.0
    for chunk in windows.split(32):
        _, loss = model(chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous())
        total += loss.item() * chunk.size(0)
    return run["text"].bits_per_char(total / n)


@exercise(
    "08.5",
    "Beat the recipe on your machine",
    "a pair (your_run_folder, recipe_run_folder): two finished runs of ch08.minutes_run on this machine, "
    "for the same minutes, yours with your changes to the recipe",
    off=list,
    why="train your own run",
)
def _beat(answer: tuple[Any, Any]) -> str:
    expect(
        isinstance(answer, (tuple, list)) and len(answer) == 2,
        f"give a pair (your run folder, the recipe's run folder), got {type(answer).__name__}",
    )
    if answer[0] is None:  # the chapter's placeholder: no run of yours yet
        raise NotAnswered
    expect(Path(answer[0]).resolve() != Path(answer[1]).resolve(), "the two folders are one run")
    mine, recipe = _open_run(answer[0], "your run"), _open_run(answer[1], "the recipe's run")
    expect(
        mine["budget"]["minutes"] == recipe["budget"]["minutes"],
        "the two runs had different budgets of minutes: the comparison is at equal time",
    )
    differ = _changed(mine["machine"], recipe["machine"])
    expect(not differ, f"the two runs were not timed alike: their {MACHINE} differ in {', '.join(differ)}")
    expect(
        mine["ckpt"].get("precision") == recipe["ckpt"].get("precision"),
        "the two runs trained in different precisions: give both the same dtype",
    )
    same_text = (mine["text"].chars, mine["text"].bytes) == (recipe["text"].chars, recipe["text"].bytes)
    expect(same_text, "the two runs' val splits are not the same text: prepare both data sets from the same source")
    for run, who in ((mine, "your run"), (recipe, "the recipe's run")):
        data = TokenData(paths.data_dir() / run["config"]["dataset"], 1)
        expect(
            tokenizer_identity(data.tokenizer) == tokenizer_identity(run["ckpt"].get("tokenizer")),
            f"{who}: its data set was prepared again with another tokenizer since it trained",
        )
    base = _learning(recipe["config"])
    off_recipe = [set(_changed(base, _learning(recipe_config(1, "x", demo).to_dict()))) for demo in (False, True)]
    expect(
        not all(off_recipe),
        f"the recipe's run is not {paths.shown(RECIPE)}'s recipe (nor the chapter's demo "
        f"cut of it): it changes {', '.join(sorted(min(off_recipe, key=len)))}",
    )
    changes = _changed(base, _learning(mine["config"]))
    expect(
        bool(set(changes) - {"seed"}),
        "your run trains the recipe itself"
        + (" with another seed: that is luck, not a better recipe" if changes else "")
        + ": change what it learns",
    )
    ours, theirs = val_bits_per_char(mine), val_bits_per_char(recipe)
    expect(
        ours < theirs,
        f"scored from the checkpoints on the same val text, your run's {ours:.4f} bits/char does "
        f"not beat the recipe's {theirs:.4f}",
    )
    return (
        f"{ours:.4f} against the recipe's {theirs:.4f} bits per character in {mine['budget']['minutes']:g} "
        f"minutes on {mine['machine']['cpu_class']} ({mine['budget']['max_steps']:,} steps against "
        f"{recipe['budget']['max_steps']:,}), changing {', '.join(changes)}."
    )
