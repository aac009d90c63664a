"""A run folder's layout: the one place that spells its file names, reads its metrics, tells a training
checkpoint from other files and removes checkpoints.

``runs/NAME/`` holds ``ckpt.pt`` (and ``ckpt.prev.pt``, the previous good one), ``metrics.jsonl`` (one JSON
record a line), ``config.json`` (the run's settings), ``loss.png``, ``best/`` (the best weights, an export),
and, once it is published, ``export/``; a sweep's finished run adds ``result.json``. The run lock sits
beside the folder (``runs/.NAME.lock``), so a reset never removes it and listings of the run stay clean.

This module only names and reads files: it imports nothing of the library above ``files``, so every module
that touches a run folder (the trainer, checkpoints, sweeps, exports, the command line) can use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CKPT = "ckpt.pt"
PREV_CKPT = "ckpt.prev.pt"  # the previous good checkpoint, kept by checkpoint.save_checkpoint
METRICS = "metrics.jsonl"
CONFIG = "config.json"
PLOT = "loss.png"
BEST = "best"  # a folder: the best weights so far, exported at each improving evaluation
EXPORT = "export"  # a folder: `nanogpt export`'s default destination
RESULT = "result.json"  # a sweep's or the laptop grid's record of a finished run, written last
NOTEBOOK = "training_run.ipynb"  # notebook 06 run by papermill into the folder
# What a fresh start removes: everything a run writes into its folder while it trains.
RUN_FILES = (CKPT, PREV_CKPT, METRICS, PLOT, CONFIG, BEST)


def is_training_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` names a checkpoint of the trainer (``ckpt*.pt``: ``ckpt.pt``, ``ckpt.prev.pt`` or a
    renamed copy such as ``ckpt_500.pt``), which must hold the weights and their config, as opposed to
    exported weights (``.safetensors``, ``.pth``) that take their shape from a ``config.json`` beside them.
    The name decides, before the file is opened, so a refused file is never unpickled."""
    path = Path(path)
    return path.suffix == ".pt" and path.name.startswith("ckpt")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (a run folder or the file itself); a torn last line is skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


@dataclass(frozen=True)
class RunDir:
    """The folder of one run (``RunDir(runs / name)``): its files by name, so none is spelled elsewhere."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))  # a str is accepted, a Path kept

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def ckpt(self) -> Path:
        return self.path / CKPT

    @property
    def prev_ckpt(self) -> Path:
        return self.path / PREV_CKPT

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def plot(self) -> Path:
        return self.path / PLOT

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def export(self) -> Path:
        return self.path / EXPORT

    @property
    def result(self) -> Path:
        return self.path / RESULT

    @property
    def lock(self) -> Path:
        """Beside the folder, not in it: ``reset`` empties the folder while the lock is held."""
        return self.path.parent / f".{self.path.name}.lock"

    def run_files(self) -> list[Path]:
        """The paths a fresh start removes (whether they exist or not)."""
        return [self.path / name for name in RUN_FILES]

    def has_checkpoint(self) -> bool:
        """Whether the run can resume: its checkpoint, or the previous one that loading falls back to."""
        return self.ckpt.is_file() or self.prev_ckpt.is_file()

    def read_metrics(self) -> list[dict[str, Any]]:
        """The run's metrics records (see :func:`read_metrics`)."""
        return read_metrics(self.metrics)

    def remove_checkpoints(self) -> None:
        """Delete the checkpoint and the previous one: a finished, recorded run keeps its metrics and result,
        and drops what only a resume would need (not before the record is written: it must stay resumable)."""
        for path in (self.ckpt, self.prev_ckpt):
            path.unlink(missing_ok=True)
