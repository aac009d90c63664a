"""The run folder's one owner (nanogpt_lib/rundir.py): its names, the rule that tells a training checkpoint
from look-alikes, metrics reading and checkpoint removal."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nanogpt_lib.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nanogpt_lib.rundir import RUN_FILES, RunDir, is_training_checkpoint, read_metrics


def test_the_names_of_a_run_folder(tmp_path):
    run = RunDir(str(tmp_path / "runs" / "r"))  # a str is taken as a Path
    assert run.path == tmp_path / "runs" / "r" and run.name == "r"
    assert [
        p.name for p in (run.ckpt, run.prev_ckpt, run.metrics, run.config, run.plot, run.best, run.export, run.result)
    ] == ["ckpt.pt", "ckpt.prev.pt", "metrics.jsonl", "config.json", "loss.png", "best", "export", "result.json"]
    assert all(p.parent == run.path for p in run.run_files()) and len(run.run_files()) == len(RUN_FILES)
    assert run.lock == tmp_path / "runs" / ".r.lock"  # beside the folder: a reset never removes it
    assert run.ckpt.name in RUN_FILES and run.result.name not in RUN_FILES  # a fresh start keeps no result


@pytest.mark.parametrize(
    "name, is_ckpt",
    [
        ("ckpt.pt", True),
        ("ckpt.prev.pt", True),
        ("ckpt_500.pt", True),  # the trainer's, and a renamed copy
        ("ckpt.pth", False),
        ("ckpt.pt.bak", False),
        ("best.pt", False),
        ("my_ckpt.pt", False),
        (".ckpt.pt.nanogpt-tmp-123", False),  # an atomic write's temporary file
    ],
)
def test_one_rule_tells_a_training_checkpoint(tmp_path, name, is_ckpt):
    assert is_training_checkpoint(tmp_path / name) is is_ckpt
    assert is_training_checkpoint(name) is is_ckpt


def test_loading_applies_the_rule(tmp_path):
    """A file holding no weights and config is refused under a checkpoint's name, and read as it is under a
    look-alike name (``best.pt``): the same rule, not a second spelling of it, decides in load_checkpoint."""
    state = {"weights": torch.zeros(2)}
    for name in ("ckpt.pt", "best.pt"):
        save_checkpoint(tmp_path / name, state)
    with pytest.raises(CheckpointError, match="not written by `nanogpt train`"):
        load_checkpoint(tmp_path / "ckpt.pt")
    assert torch.equal(load_checkpoint(tmp_path / "best.pt")["weights"], state["weights"])


def test_remove_checkpoints_keeps_the_record(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    for path in (run.ckpt, run.prev_ckpt, run.metrics, run.result):
        path.write_text("x")
    assert run.has_checkpoint()
    run.remove_checkpoints()
    assert not run.ckpt.exists() and not run.prev_ckpt.exists() and not run.has_checkpoint()
    assert run.metrics.is_file() and run.result.is_file()
    run.remove_checkpoints()  # nothing left to remove: no error


def test_has_checkpoint_counts_the_previous_one(tmp_path):
    """A run whose newest checkpoint was lost still resumes from the previous one (load_checkpoint's fallback)."""
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    assert not run.has_checkpoint()
    run.prev_ckpt.write_text("x")
    assert run.has_checkpoint()


def test_metrics_skip_a_torn_last_line(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.metrics.write_text('{"kind": "step", "step": 1}\n{"kind": "eval", "step": 2}\n{"kind": "st')
    expected = [{"kind": "step", "step": 1}, {"kind": "eval", "step": 2}]
    assert run.read_metrics() == read_metrics(run.path) == read_metrics(run.metrics) == expected
    assert isinstance(run.path, Path)
