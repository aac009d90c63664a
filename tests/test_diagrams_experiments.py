"""Chapter 08's diagram: one box per row of each stage, with the runs' real seeds, steps and tokens."""

from __future__ import annotations

import matplotlib
import matplotlib.colors as mcolors

matplotlib.use("Agg")

import pytest

from nanogpt_lib.course.diagrams.experiments import CHOSEN, OTHER, experiment_grid_figure, stage_rows


def _run(stage: str, label: str, seed: int, steps: int, batch: int = 8, block: int = 16) -> dict:
    config = {"max_steps": steps, "batch_size": batch, "grad_accum": 1, "model": {"block_size": block}}
    return {"stage": stage, "label": label, "seed": seed, "config": config}


def _results(steps: int = 100) -> dict[str, list[dict]]:
    return {
        "lr": [_run("lr", f"baseline lr={lr}", s, steps) for lr in ("0.001", "0.002") for s in (1, 2)],
        "variant": [_run("variant", name, s, steps) for name in ("rope", "muon", "softcap") for s in (1, 2)],
        "recipe": [_run("recipe", "winner", 1, steps // 4), _run("recipe", "batch 4", 1, steps // 2, batch=4)],
    }


def _box_texts(fig) -> dict[str, str]:
    """Each box's text, keyed by its first line (the row's label)."""
    texts = [t.get_text() for t in fig.axes[0].texts]
    return {t.split("\n")[0]: t for t in texts}


def _box_colours(fig) -> list:
    return [tuple(p.get_facecolor()) for p in fig.axes[0].patches if hasattr(p, "get_boxstyle")]


def test_rows_group_seeds_and_count_tokens() -> None:
    rows = stage_rows(_results()["recipe"] + [_run("recipe", "winner", 2, 25)])
    assert [(r["label"], r["seeds"], r["steps"], r["tokens"]) for r in rows] == [
        ("winner", [1, 2], 25, 25 * 8 * 16),
        ("batch 4", [1], 50, 50 * 4 * 16),
    ]


def test_figure_shows_the_runs_it_was_given() -> None:
    fig = experiment_grid_figure(
        _results(), {"baseline_label": "baseline lr=0.002", "winners": ["rope", "muon"], "recipe": {"label": "batch 4"}}
    )
    texts = _box_texts(fig)
    assert texts["baseline lr=0.001"] == "baseline lr=0.001\n2 seeds x 100 steps\n0.01M tokens a run"
    assert texts["batch 4"] == "batch 4\n1 seed x 50 steps\n0.00M tokens a run"
    assert "1. learning rate\n4 runs" in texts["1. learning rate"] and "5. the recipe\n2 runs" in texts["5. the recipe"]
    assert "3. the combination" not in texts  # a stage without runs is left out
    chosen, other = mcolors.to_rgba(CHOSEN), mcolors.to_rgba(OTHER)
    # boxes in order: 2 lr rows, 3 variants, 2 recipe rows; the chosen ones are green
    assert _box_colours(fig) == [other, chosen, chosen, chosen, other, other, chosen]


def test_figure_changes_with_the_runs() -> None:
    assert (
        _box_texts(experiment_grid_figure(_results(1500)))["rope"] == "rope\n2 seeds x 1,500 steps\n0.19M tokens a run"
    )
    assert _box_texts(experiment_grid_figure(_results(100)))["rope"] == "rope\n2 seeds x 100 steps\n0.01M tokens a run"


def test_nothing_to_draw_is_an_error() -> None:
    with pytest.raises(ValueError, match="no runs"):
        experiment_grid_figure({"lr": []})
