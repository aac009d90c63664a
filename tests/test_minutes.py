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
from nanogpt_lib.train import MEASURE_STEPS, SETTLE_STEPS, TrainError, decide_budget, lr_at, train

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
