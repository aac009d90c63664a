"""Sweeps and experiments: resumable grids, steps-to-target, the staged plan and its report (tiny scale)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from nanogpt_lib import cli
from nanogpt_lib.experiments import SCALES, Experiments, markdown_table, run_experiments, write_report
from nanogpt_lib.plots import experiment_figures, read_metrics
from nanogpt_lib.sweep import Grid, RunSpec, run_grid, steps_to_target

TINY = SCALES["tiny"]


@pytest.fixture
def data_dir(home):
    return home / "data"  # NANOGPT_HOME is home: the CLI finds the data there too


def grid(tmp_path, data_dir, **kw) -> Grid:
    return Grid(
        tmp_path / "grid", base=(*TINY.base, "dataset=txt", "max_steps=4"), data_dir=data_dir, progress=False, **kw
    )


def test_steps_to_target_interpolates_between_evaluations():
    curve = [(10, 5.0), (20, 4.0), (30, 3.0), (40, 3.5)]
    assert steps_to_target(curve, 4.0) == 20
    assert steps_to_target(curve, 3.5) == pytest.approx(25.0)
    assert steps_to_target(curve, 6.0) == 10  # already there at the first evaluation
    assert steps_to_target(curve, 2.9) == math.inf


def test_grid_runs_each_spec_once_and_resumes(tmp_path, data_dir):
    g = grid(tmp_path, data_dir)
    specs = [RunSpec("a", "lr=1e-3", ("lr=1e-3",), seed=1), RunSpec("b", "lr=1e-3", ("lr=1e-3",), seed=2)]
    first = run_grid(specs, g)
    assert [r["name"] for r in first] == ["a", "b"] and all(r["step"] == 4 for r in first)
    assert first[0]["final"]["val_loss"] != first[1]["final"]["val_loss"]  # seeds differ
    assert len(first[0]["curve"]) == 2 and not (g.out_dir / "a" / "ckpt.pt").exists()
    stamp = (g.out_dir / "a" / "result.json").stat().st_mtime_ns
    (g.out_dir / "b" / "result.json").unlink()  # as if b had been interrupted
    again = run_grid(specs, g)
    assert (g.out_dir / "a" / "result.json").stat().st_mtime_ns == stamp  # finished: not redone
    assert again[1]["final"] == first[1]["final"]  # redone from scratch, same seed, same result


def test_a_run_keeps_its_checkpoint_until_its_result_is_written(tmp_path, data_dir, monkeypatch):
    from nanogpt_lib import sweep

    g = grid(tmp_path, data_dir)
    real = sweep.atomic_write_text

    def disk_full_for_results(path, text):
        if Path(path).name == "result.json":
            raise OSError(28, "No space left on device")
        real(path, text)

    monkeypatch.setattr(sweep, "atomic_write_text", disk_full_for_results)
    with pytest.raises(RuntimeError, match="No space left on device"):
        run_grid([RunSpec("a", "a", ())], g)
    run = g.out_dir / "a"
    assert (run / "ckpt.pt").is_file() and not (run / "result.json").exists()  # the trained run is not lost
    monkeypatch.setattr(sweep, "atomic_write_text", real)
    result = run_grid([RunSpec("a", "a", ())], g)[0]  # resumes at the end: records the result, no training
    last = [r for r in read_metrics(run) if r["kind"] == "eval"][-1]
    final = {k: last[k] for k in ("train_loss", "val_loss", "val_bpc", "val_bpb")}  # val also in bits/char, /byte
    assert result["step"] == 4 and result["final"] == final
    assert not (run / "ckpt.pt").exists()


def test_a_failing_run_is_reported_and_the_others_finish(tmp_path, data_dir):
    g = grid(tmp_path, data_dir)
    specs = [RunSpec("bad", "bad", ("model.pos=nowhere",)), RunSpec("good", "good", ())]
    with pytest.raises(RuntimeError, match=r"(?s)1 run\(s\) failed.*bad: ConfigError"):
        run_grid(specs, g)
    assert (g.out_dir / "good" / "result.json").is_file()
    with pytest.raises(ValueError, match="unique"):
        run_grid([RunSpec("x", "x"), RunSpec("x", "y")], g)


@pytest.mark.slow
def test_parallel_workers_give_the_same_results(tmp_path, data_dir):
    specs = [RunSpec(f"r{i}", "same", (), seed=i) for i in (1, 2)]
    serial = run_grid(specs, grid(tmp_path / "serial", data_dir))
    parallel = run_grid(specs, grid(tmp_path / "parallel", data_dir, workers=2))
    for a, b in zip(serial, parallel):
        assert a["final"]["val_loss"] == pytest.approx(b["final"]["val_loss"], abs=1e-4)


@pytest.mark.slow
def test_all_stages_and_the_report(tmp_path, data_dir):
    scale = replace(TINY, base=(*TINY.base, "dataset=txt"), recipe=True)
    exp = Experiments(Grid(tmp_path / "exp", base=scale.base, data_dir=data_dir, progress=False), scale)
    lr = exp.lr_stage()
    assert lr in TINY.lrs and len(exp.results["lr"]) == len(TINY.lrs) * 2
    base = exp.baseline_results()
    assert exp.decisions["target"] == pytest.approx(sum(r["final"]["val_loss"] for r in base) / 2)
    assert all(
        r["config"]["optimizer"] == "adamw"
        and r["config"]["model"]["pos"] == "learned"
        and r["config"]["model"]["mlp"] == "gelu"
        for r in exp.results["lr"]
    )  # GPT-2, whatever the defaults
    exp.variant_stage()
    rope = next(r for r in exp.results["variant"] if r["label"] == "rope")
    assert rope["config"]["model"]["pos"] == "rope" and rope["config"]["optimizer"] == "adamw"
    assert {r["label"] for r in exp.results["variant"]} == {"rope", "relu2", "qk_norm", "untied", "softcap", "muon"}
    exp.decisions["winners"] = ["rope", "muon"]  # whatever measured best at this scale, the combo must run
    combo = exp.combo_stage()
    assert {"model.pos=rope", "optimizer=muon", "muon_lr=0.02"} <= set(combo["overrides"])
    half = exp.half_stage()
    assert half["max_steps"] == TINY.max_steps // 2
    recipe = exp.recipe_stage()
    assert [r["label"] for r in exp.results["recipe"]] == [
        "winner (cosine, batch 4, dropout 0)",
        "wsd schedule",
        "batch 2, 4 steps",
        "dropout 0.1",
    ]
    assert recipe["best_val_loss"] == min(r["best_val_loss"] for r in exp.results["recipe"])
    tokens = {r["tokens"] for r in exp.results["recipe"]}
    assert len(tokens) == 1  # every recipe run sees the same number of tokens
    write_report(exp)
    table = (exp.grid.out_dir / "results.md").read_text()
    assert "| lr | baseline lr=" in table and "| half |" in table and "| variant | muon |" in table
    summary = json.loads((exp.grid.out_dir / "summary.json").read_text())
    assert summary["decisions"]["winners"] == ["rope", "muon"]
    for png in experiment_figures(exp, exp.grid.out_dir):
        assert png.read_bytes()[:4] == b"\x89PNG"


def test_markdown_table_marks_targets_not_reached():
    row = dict(
        stage="variant",
        label="x",
        max_steps=10,
        seeds=[1, 2],
        val=3.0,
        val_min=2.9,
        val_max=3.1,
        steps=math.inf,
        steps_min=4.0,
        steps_max=math.inf,
        steps_each=[4.0, math.inf],
        speedup=0.0,
        speedup_min=0.0,
        speedup_max=2.5,
    )
    fast = dict(
        row,
        label="y",
        steps=5.0,
        steps_min=4.0,
        steps_max=6.0,
        steps_each=[4.0, 6.0],
        speedup=2.0,
        speedup_min=10 / 6,
        speedup_max=2.5,
    )
    table = markdown_table([row, fast], 3.05)
    assert "not reached (1/2 seeds did)" in table and "| 5 (4–6) | 2.00x (1.67–2.50) |" in table
    assert "val loss 3.0500" in table


def test_cli_sweep_tiny_writes_results(tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.setitem(SCALES, "tiny", replace(TINY, lrs=(3e-3,), seeds=(1,), recipe=False, range_steps=5))
    out = tmp_path / "cli"
    assert cli.main(["sweep", "--scale", "tiny", "--out", str(out), "--set", "dataset=txt", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| lr | baseline lr=0.003 |" in printed and (out / "lr_range.json").is_file()
    for name in ("val_curves.png", "lr_sweep.png", "steps_to_target.png", "summary.json"):
        assert (out / name).is_file()


REPORT = ("summary.json", "results.md", "lr_range.json", "lr_sweep.png", "val_curves.png", "steps_to_target.png")


@pytest.mark.slow
def test_run_experiments_is_resumable(tmp_path, data_dir):
    scale = replace(TINY, base=(*TINY.base, "dataset=txt"), lrs=(3e-3,), seeds=(1,), recipe=False, range_steps=5)
    out = tmp_path / "again"
    first = run_experiments(out, scale, data_dir=data_dir, progress=False, say=lambda _: None)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/result.json")}
    report = {name: ((out / name).read_bytes(), (out / name).stat().st_mtime_ns) for name in REPORT}
    second = run_experiments(out, scale, data_dir=data_dir, progress=False, say=lambda _: None)
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/result.json")} == stamps
    assert second.decisions["target"] == first.decisions["target"]
    # Nothing trained, so no file is rewritten (a committed experiment stays clean in git), and the summary
    # keeps the first call's wall times.
    assert "stage_seconds" not in second.decisions
    assert {name: ((out / name).read_bytes(), (out / name).stat().st_mtime_ns) for name in REPORT} == report
    timings = json.loads((out / "summary.json").read_text())["decisions"]
    assert timings["stage_seconds"] == first.decisions["stage_seconds"]
    assert set(timings["stage_seconds"]) >= {"lr", "variant"}
    assert timings["seconds"] == first.decisions["seconds"]

    # One variant run redone: its stage's time is new, the other stages' times are kept.
    next(out.glob("variant-rope-*/result.json")).unlink()
    third = run_experiments(out, scale, data_dir=data_dir, progress=False, say=lambda _: None)
    assert set(third.decisions["stage_seconds"]) == {"variant"}
    timings = json.loads((out / "summary.json").read_text())["decisions"]
    assert timings["stage_seconds"] == {**first.decisions["stage_seconds"], **third.decisions["stage_seconds"]}
    assert timings["seconds"] == third.decisions["seconds"]
    assert next(iter(timings)) == "stage_seconds" and list(timings)[-1] == "seconds"  # the order a fresh run writes


def test_figures_are_redrawn_only_when_their_data_changes(tmp_path):
    from PIL import Image

    from nanogpt_lib import plots

    drawn = []

    def draw():
        drawn.append(1)
        return plots.speedup_figure(rows)

    rows = [dict(label="baseline", steps=10.0, steps_min=9.0, steps_max=11.0, speedup=1.0)]
    png = tmp_path / "fig.png"
    assert plots.save_png_if_changed(png, draw, rows, code=(plots.speedup_figure,)) and len(drawn) == 1
    first = png.read_bytes()
    with Image.open(png) as image:  # the fingerprint is the only metadata: no matplotlib version, no date
        assert set(image.text) == {plots.FINGERPRINT_KEY}
    assert not plots.save_png_if_changed(png, draw, rows, code=(plots.speedup_figure,))
    assert len(drawn) == 1 and png.read_bytes() == first  # same data, same code: not even drawn
    rows[0]["steps"] = 9.5
    assert plots.save_png_if_changed(png, draw, rows, code=(plots.speedup_figure,)) and len(drawn) == 2
    assert not plots.save_png_if_changed(png, draw, rows, code=(plots.speedup_figure,))
    assert plots.save_png_if_changed(png, draw, rows, code=(plots.lr_figure,))  # other drawing code: redrawn
    png.write_bytes(b"not a png")
    assert plots.save_png_if_changed(png, draw, rows) and png.read_bytes()[:4] == b"\x89PNG"


def test_update_readme_replaces_only_the_marked_block(tmp_path):
    from nanogpt_lib.experiments import update_readme

    readme = tmp_path / "README.md"
    readme.write_text("# T\nbefore\n<!-- experiments:start -->\nold\n<!-- experiments:end -->\nafter\n")
    assert update_readme("| new | table |", readme)
    assert (
        readme.read_text()
        == "# T\nbefore\n<!-- experiments:start -->\n| new | table |\n<!-- experiments:end -->\nafter\n"
    )
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    assert not update_readme("x", plain) and plain.read_text() == "no markers\n"


def test_the_ablation_ladder_trains_each_rung_once_and_resumes(tmp_path):
    """Notebook 05's ladder under the overnight command: interrupted after two rungs, run again, it trains
    only the third; run once more (the run resumed or finished), it trains none; other settings retrain."""
    from nanogpt_lib.experiments import resumable_ladder

    trained: list[str] = []

    def rung(label, fail=False):
        def train():
            if fail:
                raise KeyboardInterrupt  # the kernel interrupted during this rung
            trained.append(label)
            return {"val": float(len(label))}

        return label, train

    path, settings = tmp_path / "overnight-ladder.json", {"steps": 400}
    with pytest.raises(KeyboardInterrupt):
        resumable_ladder(path, settings, [rung("a"), rung("bb"), rung("ccc", fail=True)], say=lambda _: None)
    assert trained == ["a", "bb"]
    ladder = resumable_ladder(path, settings, [rung("a"), rung("bb"), rung("ccc")], say=lambda _: None)
    assert trained == ["a", "bb", "ccc"] and [r["val"] for r in ladder] == [1.0, 2.0, 3.0]
    said = []
    assert resumable_ladder(path, settings, [rung("a"), rung("bb"), rung("ccc")], say=said.append) == ladder
    assert trained == ["a", "bb", "ccc"] and said[0].startswith("ladder read from") and "all 3 rungs" in said[0]
    resumable_ladder(path, {"steps": 8}, [rung("a")], say=lambda _: None)  # other settings: trained again
    resumable_ladder(path, {"steps": 8}, [rung("a")], reuse=False, say=lambda _: None)  # mode reset: again
    assert trained == ["a", "bb", "ccc", "a", "a"]


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_the_range_test_runs_adamw_at_the_rate_it_reports(data_dir, monkeypatch, optimizer):
    """AdamW's groups step at the swept rate itself; Muon's at its own rate in the config's proportion."""
    from nanogpt_lib import step
    from nanogpt_lib.config import load_config
    from nanogpt_lib.experiments import lr_range_test
    from nanogpt_lib.optim import Muon

    applied: list[tuple[float, float | None]] = []
    real = step.train_step

    def spy(model, optimizers, *args, **kwargs):
        adamw = {g["lr"] for o in optimizers if not isinstance(o, Muon) for g in o.param_groups}
        muon = {g["lr"] for o in optimizers if isinstance(o, Muon) for g in o.param_groups}
        assert len(adamw) == 1 and len(muon) <= 1
        applied.append((adamw.pop(), muon.pop() if muon else None))
        return real(model, optimizers, *args, **kwargs)

    monkeypatch.setattr(step, "train_step", spy)
    cfg = load_config(None, [*TINY.base, "dataset=txt", f"optimizer={optimizer}", "lr=3e-3", "muon_lr=0.03"])
    out = lr_range_test(cfg, lr_min=1e-4, lr_max=1e-2, steps=5, data_dir=data_dir, stop_factor=1e9)
    assert len(applied) == len(out["lr"]) == 5
    for lr, (adamw, muon) in zip(out["lr"], applied):
        # one product and one division in float64 on the way: a few ulps
        assert adamw == pytest.approx(lr, rel=1e-12)
        assert muon is None if optimizer == "adamw" else muon == pytest.approx(lr * 10, rel=1e-12)
