"""What a long command shows while it works, and what a run's summary says: a progress bar on eval and
prepare (none with --no-progress), no MFU without a datasheet peak, and no "0 tokens/s" for a run that had
nothing left to train."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from nanogpt_lib.checkpoint import export_weights
from nanogpt_lib.config import load_config
from nanogpt_lib.devices import FP32, peak_flops
from nanogpt_lib.model import GPT
from nanogpt_lib.plots import read_metrics
from nanogpt_lib.train import train

from tiny import TINY_MODEL, TINY_RUN

TINY = [*TINY_RUN, "warmup_steps=1", "log_every=1", "eval_every=2", "max_steps=2", "name=tiny"]


def nanogpt(*argv: str) -> subprocess.CompletedProcess:
    """The command in a process of its own, with progress bars allowed (the suite turns them off with
    TQDM_DISABLE, which tqdm reads once, when it is imported)."""
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    return subprocess.run(
        [sys.executable, "-m", "nanogpt_lib.cli", *argv],
        capture_output=True,
        text=True,
        env={**env, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )


@pytest.mark.parametrize("flag", [[], ["--no-progress"]])
def test_eval_shows_a_bar_per_pass_unless_told_not_to(home, tmp_path, flag):
    torch.manual_seed(0)
    export_weights(GPT(TINY_MODEL), TINY_MODEL, tmp_path / "w")
    proc = nanogpt("eval", "--weights", str(tmp_path / "w"), "--dataset", "txt", "--device", "cpu", *flag)
    assert proc.returncode == 0, proc.stderr
    shown = "untrained:" in proc.stderr and "trained:" in proc.stderr and "batch" in proc.stderr
    assert shown == (not flag), proc.stderr
    assert "trained" in proc.stdout and "unigram" in proc.stdout


@pytest.mark.parametrize("flag", [[], ["--no-progress"]])
def test_prepare_shows_a_bar_unless_told_not_to(tmp_path, txt_dir, flag):
    proc = nanogpt("prepare", str(txt_dir), "--data-dir", str(tmp_path / "data"), *flag)
    assert proc.returncode == 0, proc.stderr
    assert ("tokenizing" in proc.stderr) == (not flag), proc.stderr


def test_no_mfu_without_a_datasheet_peak(home):
    """A peak measured at start-up on a busy machine made 333 tokens/s read 33% MFU: on a CPU the trainer
    now logs and shows no MFU at all."""
    assert peak_flops(torch.device("cpu"), FP32) is None
    train(load_config(None, TINY), progress=False)
    steps = [r for r in read_metrics(home / "runs" / "tiny") if r["kind"] == "step"]
    assert steps and all("mfu" not in r and r["tokens_per_s"] > 0 for r in steps)


def test_a_finished_run_run_again_says_so_instead_of_0_tokens_per_s(home):
    first = train(load_config(None, TINY), progress=False)
    assert first.steps_run == 2 and "2 steps at" in first.summary() and "tokens/s" in first.summary()
    again = train(load_config(None, TINY), progress=False)  # mode auto: the finished run, resumed
    assert again.steps_run == 0 and again.step == 2
    assert "no step left to train" in again.summary() and "tokens/s" not in again.summary()
    assert "run folder runs/tiny" in again.summary()  # relative to the project home, like every message
