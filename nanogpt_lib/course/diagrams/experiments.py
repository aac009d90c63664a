"""The experiment's layout drawn from its real runs (chapter 08): the stages, their grids, and what each chose.

The full experiment is 36 runs in five stages, each stage's grid set by what the one before decided. A table
lists them; a picture shows the shape at once: which stage has how many rows of how many seeds and steps,
and which row each stage handed on. Everything is read from the runs' records (``result.json``: label,
seed, config), so the picture is the experiment that ran, not a description of it.
"""

from __future__ import annotations

import textwrap
from typing import Any

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

STAGE_TITLES = {
    "lr": "1. learning rate",
    "variant": "2. each variant alone",
    "combo": "3. the combination",
    "half": "4. half the steps",
    "recipe": "5. the recipe",
}
CHOSEN, OTHER = "#b7e4c7", "#eeeeee"  # the row a stage handed on, and the rest


def stage_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per label, in run order: the label, its seeds, and its steps and tokens per run.

    Tokens per run are steps x batch_size x grad_accum x block_size, read from each run's config: the
    recipe stage changes the batch and the steps together, and the picture shows that it kept the tokens.
    """
    rows: dict[str, dict[str, Any]] = {}
    for r in runs:
        cfg = r["config"]
        tokens = cfg["max_steps"] * cfg["batch_size"] * cfg.get("grad_accum", 1) * cfg["model"]["block_size"]
        row = rows.setdefault(
            r["label"], {"label": r["label"], "seeds": [], "steps": cfg["max_steps"], "tokens": tokens}
        )
        row["seeds"].append(r["seed"])
    return list(rows.values())


def chosen_labels(decisions: dict[str, Any]) -> dict[str, set[str]]:
    """The labels each stage handed on, from ``Experiments.decisions`` (missing keys: nothing chosen)."""

    def label(key: str) -> set[str]:
        value = decisions.get(key)
        return {value["label"]} if isinstance(value, dict) and "label" in value else set()

    return {
        "lr": {decisions["baseline_label"]} if "baseline_label" in decisions else set(),
        "variant": set(decisions.get("winners", [])),
        "combo": label("combo"),
        "half": label("half"),
        "recipe": label("recipe"),
    }


def experiment_grid_figure(results: dict[str, list[dict[str, Any]]], decisions: dict[str, Any] | None = None) -> Figure:
    """The stages side by side, one box per row (label, seeds x steps, tokens per run), chosen rows green.

    ``results`` maps a stage to its runs' records, as ``Experiments.results`` does; stages without runs
    are left out. ``decisions`` (``Experiments.decisions``) marks what each stage handed on.
    """
    stages = [s for s in STAGE_TITLES if results.get(s)] + [s for s in results if s not in STAGE_TITLES and results[s]]
    if not stages:
        raise ValueError("no runs to draw: every stage of `results` is empty")
    chosen = chosen_labels(decisions or {})
    columns = {s: stage_rows(results[s]) for s in stages}
    depth = max(len(rows) for rows in columns.values())
    width, height, gap = 1.0, 0.8, 0.35

    fig = Figure(figsize=(2.3 * len(stages), 1.0 + 0.62 * depth))
    ax = fig.add_subplot()
    for i, stage in enumerate(stages):
        x = i * (width + gap)
        rows = columns[stage]
        ax.text(
            x + width / 2,
            0.35,
            f"{STAGE_TITLES.get(stage, stage)}\n{len(results[stage])} runs",
            ha="center",
            va="bottom",
            fontsize=8,
            fontweight="bold",
        )
        for j, row in enumerate(rows):
            y = -j - height
            face = CHOSEN if row["label"] in chosen.get(stage, set()) else OTHER
            ax.add_patch(FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0.02", fc=face, ec="gray"))
            seeds = f"{len(row['seeds'])} seed{'s' if len(row['seeds']) > 1 else ''}"
            ax.text(
                x + width / 2,
                y + height / 2,
                f"{textwrap.fill(row['label'], 30)}\n{seeds} x {row['steps']:,} steps\n"
                f"{row['tokens'] / 1e6:.2f}M tokens a run",
                ha="center",
                va="center",
                fontsize=6,
            )
        if i:  # each stage starts from what the one before chose
            ax.add_patch(
                FancyArrowPatch(
                    (x - gap + 0.03, 0.15), (x - 0.03, 0.15), arrowstyle="-|>", mutation_scale=10, color="gray"
                )
            )
    ax.set_xlim(-0.1, len(stages) * (width + gap) - gap + 0.1)
    ax.set_ylim(-depth - 0.1, 1.0)
    ax.axis("off")
    ax.set_title("the experiment as it ran: one box per row of a stage, green = what the stage handed on", fontsize=9)
    fig.tight_layout()
    return fig
