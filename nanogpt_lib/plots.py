"""The figures the library draws, all from data on disk.

- A run's loss curves (``loss_figure``, ``save_loss_plot``): train and val loss over steps from its
  ``metrics.jsonl``, with a second axis in bits per character of the val text where the run logged it.
- The experiments' figures (``experiment_figures``): the learning-rate sweep beside the range test
  (``lr_figure``), val curves against the target (``curves_figure``), steps to the target (``speedup_figure``).
- Committed PNGs that stay put (``save_png_if_changed``): each PNG carries a fingerprint of its data and of
  the drawing code in a text chunk, and is redrawn only when one of them changes, so re-reading a finished
  experiment leaves ``git status`` clean whatever matplotlib version renders it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator
from PIL import Image

from .files import atomic_write
from .rundir import RunDir, read_metrics


def bits_per_nat_token(records: list[dict[str, Any]]) -> float | None:
    """Bits per character per nat per token for the run's val text (``val_bpc / val_loss`` of an evaluation:
    the same factor at every step, ``tokens / chars / ln 2``), or None for a run that logged no ``val_bpc``."""
    for r in reversed(records):
        if r.get("kind") == "eval" and r.get("val_bpc") is not None and r.get("val_loss"):
            return r["val_bpc"] / r["val_loss"]
    return None


def loss_figure(records: list[dict[str, Any]], title: str = "loss") -> Figure:
    """Train loss (every logged step, light) and eval train/val loss (every eval, bold) against step; the
    right axis reads the same curves in bits per character of the val text, when the run logged it."""
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    steps = [r for r in records if r.get("kind") == "step"]
    evals = [r for r in records if r.get("kind") == "eval"]
    if steps:
        ax.plot(
            [r["step"] for r in steps],
            [r["loss"] for r in steps],
            color="tab:blue",
            alpha=0.3,
            lw=1,
            label="train (batch)",
        )
    if evals:
        ax.plot(
            [r["step"] for r in evals],
            [r["train_loss"] for r in evals],
            "o-",
            color="tab:blue",
            ms=3,
            label="train (eval)",
        )
        ax.plot(
            [r["step"] for r in evals],
            [r["val_loss"] for r in evals],
            "o-",
            color="tab:orange",
            ms=3,
            label="val (eval)",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    factor = bits_per_nat_token(records)
    if factor is not None:  # a linear change of unit: a second scale, not a second set of curves
        right = ax.secondary_yaxis("right", functions=(lambda x: x * factor, lambda y: y / factor))
        right.set_ylabel("bits per character (val text)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if steps or evals:
        ax.legend()
    fig.tight_layout()
    return fig


def save_loss_plot(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``loss.png`` for a run folder (atomically) and return its path."""
    run = RunDir(run_dir)
    out = Path(out) if out else run.plot
    fig = loss_figure(read_metrics(run.metrics), title=f"loss — {run.name}")
    atomic_write(out, lambda fh: fig.savefig(fh, format="png"))
    return out


# ---- experiments (see experiments.py) ------------------------------------------------------------------


def _mean_curve(runs: list[dict[str, Any]]) -> tuple[list[int], list[float]]:
    """Val-loss curve averaged over seeds (runs of one label share their eval steps)."""
    steps = [s for s, _ in runs[0]["curve"]]
    curves = [dict(r["curve"]) for r in runs]
    steps = [s for s in steps if all(s in c for c in curves)]
    return steps, [sum(c[s] for c in curves) / len(curves) for s in steps]


def curves_figure(
    groups: dict[str, list[dict[str, Any]]],
    target: float | None = None,
    title: str = "validation loss (mean over seeds)",
) -> Figure:
    """Val loss against step, one line per label (seeds averaged), with the target as a dashed line."""
    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.add_subplot()
    for label, runs in groups.items():
        steps, losses = _mean_curve(runs)
        ax.plot(steps, losses, lw=2 if "baseline" in label or "combo" in label else 1.2, label=label)
    if target is not None:
        ax.axhline(target, color="black", ls="--", lw=1, label=f"target {target:.3f}")
    low = min(min(_mean_curve(r)[1]) for r in groups.values())
    ax.set_ylim(low - 0.1, low + 1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("val loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def lr_figure(results: list[dict[str, Any]], range_test: dict[str, list[float]] | None = None) -> Figure:
    """Final val loss against learning rate (each seed a dot, the mean a line); beside it, the range test."""
    fig = Figure(figsize=(10 if range_test else 5.5, 4), dpi=100)
    ax = fig.add_subplot(1, 2 if range_test else 1, 1)
    by_lr: dict[float, list[float]] = {}
    for r in results:
        by_lr.setdefault(r["config"]["lr"], []).append(r["final"]["val_loss"])
    lrs = sorted(by_lr)
    for lr in lrs:
        ax.plot([lr] * len(by_lr[lr]), by_lr[lr], "o", color="tab:blue", alpha=0.5, ms=4)
    ax.plot(lrs, [sum(by_lr[lr]) / len(by_lr[lr]) for lr in lrs], "-", color="tab:blue", label="mean over seeds")
    ax.set_xscale("log")
    ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs], minor=False)  # the swept rates, not 2x10^-3-style labels
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("final val loss")
    ax.set_title("learning-rate sweep (baseline)")
    ax.grid(alpha=0.3)
    ax.legend()
    if range_test:
        ax2 = fig.add_subplot(1, 2, 2)
        ax2.plot(range_test["lr"], range_test["loss"])
        ax2.set_xscale("log")
        ax2.set_xlabel("learning rate (raised every step)")
        ax2.set_ylabel("train loss (smoothed)")
        ax2.set_title("learning-rate range test")
        ax2.set_ylim(min(range_test["loss"]) - 0.2, range_test["loss"][0] + 0.5)
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def speedup_figure(rows: list[dict[str, Any]], title: str = "steps to the baseline's final val loss") -> Figure:
    """Bars of mean steps-to-target per run label, min-max over seeds as error bars; shorter is faster."""
    import math

    rows = [r for r in rows if math.isfinite(r["steps"])]
    fig = Figure(figsize=(8, 0.4 * len(rows) + 1.5), dpi=100)
    ax = fig.add_subplot()
    y = list(range(len(rows)))
    means = [r["steps"] for r in rows]
    err = [[m - r["steps_min"] for m, r in zip(means, rows)], [r["steps_max"] - m for m, r in zip(means, rows)]]
    colors = [
        "tab:gray" if "baseline" in r["label"] else "tab:green" if r["speedup"] >= 2 else "tab:blue" for r in rows
    ]
    ax.barh(y, means, xerr=err, color=colors, capsize=3)
    for yi, r in zip(y, rows):
        ax.text(r["steps_max"], yi, f"  {r['speedup']:.2f}x", va="center", fontsize=8)
    ax.set_yticks(y, [r["label"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("steps (mean over seeds; bars: min-max)")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def experiment_figures(exp: Any, out_dir: str | Path) -> list[Path]:
    """``lr_sweep.png``, ``val_curves.png`` and ``steps_to_target.png`` for an :class:`Experiments`.

    Returns the three paths. A figure is drawn and written only when its PNG is missing or was drawn from
    other data or by other drawing code: each PNG carries a fingerprint of both in a text chunk, and no
    timestamp or library version. Re-reading a finished experiment therefore rewrites no figure, whatever
    matplotlib would render today (fonts and versions change pixels, not the data).
    """
    out_dir = Path(out_dir)
    range_file = out_dir / "lr_range.json"
    range_test = json.loads(range_file.read_text()) if range_file.is_file() else None
    groups: dict[str, list[dict[str, Any]]] = {exp.decisions["baseline_label"]: exp.baseline_results()}
    for stage in ("variant", "combo", "half"):
        for r in exp.results.get(stage, []):
            groups.setdefault(r["label"], []).append(r)
    figures: dict[str, tuple[Callable[..., Figure], tuple[Any, ...]]] = {
        "lr_sweep.png": (lr_figure, (exp.results["lr"], range_test)),
        "val_curves.png": (curves_figure, (groups, exp.decisions["target"])),
        "steps_to_target.png": (speedup_figure, (exp.all_rows(),)),
    }
    for name, (draw, args) in figures.items():
        save_png_if_changed(
            out_dir / name, lambda draw=draw, args=args: draw(*args), (name, args), code=(draw, _mean_curve)
        )
    return [out_dir / name for name in figures]


FINGERPRINT_KEY = "nanogpt fingerprint"  # the PNG text chunk holding what a figure was drawn from


def figure_fingerprint(data: Any, code: tuple[Callable[..., Any], ...] = ()) -> str:
    """sha256 of ``data`` (JSON-able) and of the source of the functions in ``code`` that draw it, so new
    data and new drawing code both count as a change (line endings normalised: a Windows checkout agrees)."""
    source = "".join(inspect.getsource(f) for f in code).replace("\r\n", "\n")
    blob = json.dumps(data, sort_keys=True, default=str) + "\0" + source
    return hashlib.sha256(blob.encode()).hexdigest()


def png_text(path: str | Path) -> dict[str, str]:
    """The text chunks of a PNG file ({} when it is missing or not a PNG)."""
    try:
        with Image.open(path) as image:
            return dict(getattr(image, "text", {}))
    except (OSError, ValueError):
        return {}


def save_png_if_changed(
    path: str | Path, draw: Callable[[], Figure], data: Any, code: tuple[Callable[..., Any], ...] = ()
) -> bool:
    """Draw and write ``path`` unless it already holds a figure fingerprinted with ``data`` and ``code`` (see
    :func:`figure_fingerprint`); True if written.

    The PNG is written atomically with the fingerprint as its only metadata (matplotlib's default
    ``Software`` entry names its version, which would change the bytes on every upgrade).
    """
    key = figure_fingerprint(data, code)
    if png_text(path).get(FINGERPRINT_KEY) == key:
        return False
    fig = draw()
    atomic_write(
        Path(path), lambda fh: fig.savefig(fh, format="png", metadata={"Software": None, FINGERPRINT_KEY: key})
    )
    return True
