"""Loss curves from a run's ``metrics.jsonl``: train and val loss over steps, like the seed's plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .files import atomic_write


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (a run folder or the file itself); a torn last line is skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def loss_figure(records: list[dict[str, Any]], title: str = "loss") -> Figure:
    """Train loss (every logged step, light) and eval train/val loss (every eval, bold) against step."""
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    steps = [r for r in records if r.get("kind") == "step"]
    evals = [r for r in records if r.get("kind") == "eval"]
    if steps:
        ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], color="tab:blue", alpha=0.3,
                lw=1, label="train (batch)")
    if evals:
        ax.plot([r["step"] for r in evals], [r["train_loss"] for r in evals], "o-", color="tab:blue",
                ms=3, label="train (eval)")
        ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", color="tab:orange",
                ms=3, label="val (eval)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if steps or evals:
        ax.legend()
    fig.tight_layout()
    return fig


def save_loss_plot(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``loss.png`` for a run folder (atomically) and return its path."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "loss.png"
    fig = loss_figure(read_metrics(run_dir), title=f"loss — {run_dir.name}")
    atomic_write(out, lambda fh: fig.savefig(fh, format="png"))
    return out
