"""Training for N minutes (issue 23): the budget formula by hand, a killed minutes run resumed is bitwise the
straight one (the budget is kept in the checkpoint, never measured again), and bad input is one line, exit 2.

The clock is the trainer's seam: these tests pass one that ticks a fixed amount per reading, so the budget
a run decides does not depend on how busy the machine is."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nanogpt_lib.checkpoint import load_checkpoint
from nanogpt_lib.cli import main
from nanogpt_lib.config import load_config
from nanogpt_lib.plots import read_metrics
from nanogpt_lib.train import (
    MEASURE_STEPS,
    SETTLE_STEPS,
    TrainError,
    decide_budget,
    lr_at,
    replan_budget,
    replan_point,
    train,
)

from fault_helpers import TRAIN_KILLER, assert_same_run
from tiny import SMALL_RUN

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    *SMALL_RUN,
    "dataset=txt",
    "warmup_steps=2",
    "model.dropout=0.1",
    "eval_every=10",
    "ckpt_every=4",
    "log_every=1",
]
DECIDED_AT = SETTLE_STEPS + MEASURE_STEPS  # a fresh minutes run decides at the end of this step
# One reading of the clock is 1 "s": a plain step reads it once, so it measures 1 s/step, and 0.8 minutes hold
# a few tens of steps (each also carries a tenth of an evaluation and a quarter of a checkpoint)
TICK, MINUTES = 1.0, 0.8


class Tick:
    """A clock that advances ``dt`` seconds at every reading."""

    def __init__(self, dt: float) -> None:
        self.t, self.dt = 0.0, dt

    def __call__(self) -> float:
        self.t += self.dt
        return self.t


def test_the_budget_is_the_steps_that_fit_by_hand():
    cfg = load_config(
        None, ["minutes=1", "eval_every=10", "ckpt_every=20", "warmup_steps=5", "schedule=wsd", "decay_frac=0.2"]
    )
    # 9 steps of 0.5 s and one of 5 s (another process's burst): the median is 0.5. Each step also carries
    # 2 s / 10 of evaluation and 1 s / 20 of checkpoint: 0.75 s. Left after 6 s, and the last evaluation and
    # checkpoint: 60 - 6 - 2 - 1 = 51 s, 68 steps of 0.75 s after step 15.
    budget = decide_budget(cfg, 15, 6.0, [0.5] * 9 + [5.0], eval_s=2.0, ckpt_s=1.0)
    assert (budget.max_steps, budget.step_s, budget.overhead_s, budget.decided_at) == (83, 0.5, 0.25, 15)
    assert budget.decay_from == 83 - round(0.2 * 83) == 66  # WSD's last fifth
    assert budget.line() == (
        "minutes 1: 83 steps at 0.5 s/step (+0.25 s/step for evaluations and checkpoints), decay from step 66"
    )
    assert budget.seconds_left(15) == 68 * 0.75
    cosine = decide_budget(
        load_config(None, ["minutes=1", "schedule=cosine", "warmup_steps=5", "eval_every=10", "ckpt_every=20"]),
        15,
        6.0,
        [0.5] * 10,
        2.0,
        1.0,
    )
    assert cosine.decay_from == 5  # a cosine decays from the end of its warmup
    with pytest.raises(TrainError, match=r"warmup_steps|warmup"):  # 1 minute of 0.75-second steps: 80 steps
        decide_budget(
            load_config(None, ["minutes=1", "warmup_steps=100", "eval_every=10", "ckpt_every=20"]),
            0,
            0.0,
            [0.5],
            2.0,
            1.0,
        )


def test_a_wsd_run_plans_again_halfway_to_its_decay_by_hand():
    cfg = load_config(None, ["minutes=10", "eval_every=50", "ckpt_every=100", "warmup_steps=20", "decay_frac=0.2"])
    # Decided at step 15: 0.2 s steps plus 1/50 of a 1 s evaluation and 1/100 of a 0.5 s checkpoint: 0.225 s.
    # (600 - 5 - 1.5) / 0.225 = 2637.8: 2,652 steps, decaying from 2652 - round(530.4) = 2,122.
    budget = decide_budget(cfg, 15, 5.0, [0.2] * 10, eval_s=1.0, ckpt_s=0.5)
    assert (budget.max_steps, budget.decay_from) == (2652, 2122)
    point = replan_point(cfg, budget, 15)
    assert point == 15 + (2122 - 15) // 2 == 1068
    # As planned (0.225 s a step since the decision): the same budget, not a new one.
    assert replan_budget(cfg, budget, point, 5 + 1053 * 0.225, 0.225, 1.5) is budget
    # The machine slowed to 0.26 s a step: it would end 92 s late. Left: 600 - 278.78 - 1.5 = 319.72 s, 1,229
    # steps of 0.26 s; the decay starts 2297 - round(459.4) = 1,838, still ahead of step 1,068.
    slow = 1053 * 0.26
    again = replan_budget(cfg, budget, point, 5 + slow, 0.26, 1.5)
    assert (again.max_steps, again.decay_from, again.replanned_at) == (2297, 1838, 1068)
    assert again.step_s + again.overhead_s == pytest.approx(0.26, rel=1e-12)
    assert abs(5 + slow + (2297 - 1068) * 0.26 + 1.5 - 600) < 0.26  # on time, to within a step
    assert again.line().endswith("decay from step 1,838, planned again at step 1,068")
    # The next checks are halfway from there to the new decay, until the half holds no checkpoint (every 100).
    assert replan_point(cfg, again, 1068) == 1068 + (1838 - 1068) // 2 == 1453
    assert replan_point(cfg, again, 1453) == 1453 + 192 == 1645
    assert replan_point(cfg, again, 1645) is None  # (1838 - 1645) // 2 = 96 < 100
    # Twice as slow as planned: the time left holds 134 steps, but a decay must not start behind the run:
    # the end moves out until it starts at step 1,069 (a late run, never a rate that jumps down).
    late = replan_budget(cfg, budget, point, 5 + 1053 * 0.5, 0.5, 1.5)
    assert late.decay_from == 1069 and late.max_steps == 1336
    # A run whose flat phase's first half holds no checkpoint does not plan again (4 s steps: 162 steps in all).
    short = decide_budget(cfg, 15, 5.0, [4.0] * 10, eval_s=1.0, ckpt_s=0.5)
    assert (short.max_steps, short.decay_from) == (162, 130) and replan_point(cfg, short, 15) is None


class Slowing(Tick):
    """A clock that reads ``dt`` per reading for its first ``until`` readings, then ``later``."""

    def __init__(self, dt: float, until: int, later: float) -> None:
        super().__init__(dt)
        self.reads, self.until, self.later = 0, until, later

    def __call__(self) -> float:
        self.reads += 1
        if self.reads > self.until:
            self.dt = self.later
        return super().__call__()


def test_a_machine_that_slows_down_still_ends_on_time(env, home):
    # Evaluations every 5 steps and checkpoints every 4 let a short run plan again (both fit before the
    # replan point); after the decision the clock runs 40% slower, as a hot laptop would.
    args = [*TINY, "eval_every=5", "minutes=2", "name=slowing"]
    clock = Slowing(TICK, until=2 * DECIDED_AT, later=1.4 * TICK)
    result = train(load_config(None, args), progress=False, clock=clock)
    budget = result.budget
    assert budget is not None and budget.replanned_at is not None and result.step == budget.max_steps
    decided = [r for r in read_metrics(home / "runs" / "slowing") if r["kind"] == "budget"]
    assert decided[0]["step"] == DECIDED_AT and decided[-1]["step"] == budget.replanned_at and len(decided) >= 2
    assert decided[-1]["max_steps"] < decided[0]["max_steps"]  # fewer steps than the first minutes planned
    # Ends within the re-plan's slack of the deadline (3 steps of the slower clock), where the first plan would
    # have run about 40% of the rest over.
    assert abs(clock.t - 120) <= 3 * 1.4 * (1 + 1 / 5 + 1 / 4) + 2, clock.t
    # The rate: flat until the re-planned decay, then WSD's line to min_lr at the new end, bitwise.
    cfg = load_config(None, [*args, f"max_steps={budget.max_steps}"])
    lrs = {r["step"]: r["lr"] for r in read_metrics(home / "runs" / "slowing") if r["kind"] == "step"}
    assert all(lrs[s] == cfg.lr * (lr_at(s - 1, cfg) / cfg.lr) for s in range(3, result.step + 1))


@pytest.fixture
def env(home) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}  # the home fixture has set NANOGPT_HOME


def test_a_killed_minutes_run_resumes_bitwise_without_measuring_again(env, home, capsys):
    args = [*TINY, f"minutes={MINUTES}", f"threads={torch.get_num_threads()}"]
    straight = train(load_config(None, [*args, "name=straight"]), progress=False, clock=Tick(TICK))
    budget = straight.budget
    assert budget is not None and budget.decided_at == DECIDED_AT and straight.step == budget.max_steps
    assert DECIDED_AT + 4 < budget.max_steps < 60, budget  # room to be killed after the decision; still cheap
    assert f"{budget.line()}" in capsys.readouterr().out
    kill_at = DECIDED_AT + 3  # after the decision's checkpoint (step 15) and the step-16 one
    proc = subprocess.run(
        [sys.executable, "-c", TRAIN_KILLER, str(kill_at), str(TICK), "", *args, "name=killed"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    killed = home / "runs" / "killed"
    assert load_checkpoint(killed / "ckpt.pt")["step"] == 16
    # A clock 100 times slower: a run that measured again would decide far fewer steps (or none at all).
    resumed = train(load_config(None, [*args, "name=killed"]), progress=False, clock=Tick(100 * TICK))
    assert "the budget this run decided stands" in capsys.readouterr().out
    assert resumed.step == straight.step and resumed.budget == budget
    # bitwise: weights, optimizer state, RNG state, step, budget, and every metric but the timing figures
    assert_same_run(killed, home / "runs" / "straight")
    assert load_checkpoint(killed / "ckpt.pt")["budget"] == dataclasses.asdict(budget)
    decided = [r for r in read_metrics(killed) if r["kind"] == "budget"]
    assert len(decided) == 1 and decided[0]["max_steps"] == budget.max_steps and decided[0]["step"] == DECIDED_AT


def test_the_schedule_is_flat_until_the_decision_then_ends_at_the_budget(env, home):
    result = train(
        load_config(None, [*TINY, f"minutes={MINUTES}", "name=schedule", "schedule=cosine"]),
        progress=False,
        clock=Tick(TICK),
    )
    cfg = load_config(None, [*TINY, "schedule=cosine", f"max_steps={result.budget.max_steps}"])
    lrs = {r["step"]: r["lr"] for r in read_metrics(home / "runs" / "schedule") if r["kind"] == "step"}
    # Logged at step s: the rate of step s - 1, applied as lr * (lr_at / lr). Before the decision: the warmup,
    # then the peak (a cosine that never ends: min_lr + (lr - min_lr) and the ratio round, hence 1e-12).
    assert lrs[1] == pytest.approx(cfg.lr / 2, rel=1e-12)
    assert all(lrs[s] == pytest.approx(cfg.lr, rel=1e-12) for s in range(2, DECIDED_AT + 1))
    # After it, the cosine that ends at the budget, bitwise (the same function of the same numbers).
    assert all(lrs[s] == cfg.lr * (lr_at(s - 1, cfg) / cfg.lr) for s in range(DECIDED_AT + 1, result.step + 1))
    assert lrs[result.step] < cfg.lr / 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--minutes", "0"], "minutes"),
        (["--minutes", "1", "--set", "max_steps=5"], "--minutes and --set max_steps"),
        (["--set", "minutes=1", "--set", "max_steps=5"], "--minutes and --set max_steps"),
        (["--minutes", "0.01", "--set", "warmup_steps=1000"], "warmup"),
    ],
)
def test_bad_minutes_are_one_line_exit_2(env, home, capsys, argv, message):
    code = main(["train", "--name", "bad", "--no-progress", *argv, *[a for s in TINY for a in ("--set", s)]])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and message in err and "\n" not in err, err
