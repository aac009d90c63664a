"""Resume and stop at the edges (issue 25): a changed seed or batch size is named, a signal in the last step
finishes the run, a full disk while appending a metric names the file, and a Trainer leaves its caller's
thread count alone (notebook 05 checks a hand-written step against it bitwise)."""

from __future__ import annotations

import errno
import os
import signal

import torch

from nanogpt_lib import train as train_mod
from nanogpt_lib.cli import main
from nanogpt_lib.config import load_config
from nanogpt_lib.plots import read_metrics
from nanogpt_lib.train import Trainer, train

from tiny import TINY_RUN

SETS = [*TINY_RUN, "log_every=1"]


def test_a_changed_seed_or_batch_size_on_resume_is_named(home, capsys):
    base = [*SETS, "eval_every=2", "name=data-change"]
    train(load_config(None, [*base, "max_steps=2"]), progress=False)
    capsys.readouterr()
    trainer = Trainer(load_config(None, [*base, "max_steps=4", "seed=7", "batch_size=3"]), progress=False)
    trainer.close()
    line = next(x for x in capsys.readouterr().out.splitlines() if "replace the checkpoint's" in x)
    assert "seed 1337 -> 7" in line and "batch_size 2 -> 3" in line, line
    Trainer(load_config(None, [*base, "max_steps=4"]), progress=False).close()  # unchanged: nothing said
    assert "replace the checkpoint's" not in capsys.readouterr().out


def test_a_signal_during_the_last_step_finishes_the_run(home, monkeypatch, capsys):
    real = train_mod.Trainer._train_step

    def step_then_ctrl_c(self):
        loss = real(self)
        if self.step == self.cfg.max_steps:
            signal.raise_signal(signal.SIGINT)  # arrives while the last step runs
        return loss

    monkeypatch.setattr(train_mod.Trainer, "_train_step", step_then_ctrl_c)
    sets = [x for kv in [*SETS, "max_steps=3", "eval_every=3"] for x in ("--set", kv)]
    assert main(["train", *sets, "--name", "last", "--no-progress"]) == 0  # before: "paused", exit 75
    out = capsys.readouterr().out
    assert "finished at step 3" in out and "paused" not in out.split("received")[-1]
    assert max(r["step"] for r in read_metrics(home / "runs" / "last")) == 3


def test_a_full_disk_while_appending_a_metric_names_the_file(home, monkeypatch, capfd):
    real_open = open

    def full(path, mode="r", *args, **kwargs):
        if str(path).endswith("metrics.jsonl") and "a" in mode:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what a write to a full disk raises
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(train_mod, "open", full, raising=False)
    sets = [x for kv in [*SETS, "max_steps=2", "eval_every=2"] for x in ("--set", kv)]
    assert main(["train", *sets, "--name", "full", "--no-progress"]) == 2
    err = capfd.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert f"{os.strerror(errno.ENOSPC)}: {home / 'runs' / 'full' / 'metrics.jsonl'}: free some space" in err


def test_a_trainer_leaves_the_callers_thread_count_alone(home):
    """Set by a config, the count used to stay changed after the Trainer: a by-hand step run before it and
    compared with it bitwise (notebook 05) then ran on another count, with another reduction order."""
    before = torch.get_num_threads()
    other = 1 if before > 1 else 2
    cfg = load_config(None, [*SETS, "max_steps=1", "eval_every=1", f"threads={other}", "name=threads"])
    trainer = Trainer(cfg, progress=False)
    assert torch.get_num_threads() == before and trainer.threads == before
    trainer.run()
    trainer.close()
    assert torch.get_num_threads() == before
    seen = {}
    train(
        load_config(None, [*SETS, "max_steps=1", "eval_every=1", f"threads={other}", "name=threads2"]),
        progress=False,
        on_eval=lambda record: seen.update(threads=torch.get_num_threads()),
    )  # inside the run
    assert seen["threads"] == other and torch.get_num_threads() == before  # train() applies it, then restores
