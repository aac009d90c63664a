"""The per-minute experiment runner (issue 23 part 4) on a tiny grid: two tokenizers x one budget x two seeds,
each run ``train --minutes`` under a clock that ticks evenly (the budget then does not depend on how busy the
machine is). Results are written as data, a paused grid resumes its unfinished run from its checkpoint with
the budget it decided, finished runs are never trained again, and the table and plot come from the results."""

from __future__ import annotations

import json
import os
import signal
import statistics
from pathlib import Path

import pytest
from test_minutes import Tick

from nanogpt_lib import laptop
from nanogpt_lib.cli import main
from nanogpt_lib.config import ConfigError, load_config
from nanogpt_lib.data import text_stats
from nanogpt_lib.train import Trainer

from tiny import write_docs

MINUTES = 0.6  # one reading of the clock is 1 "s": about 25 tiny steps, the budget decided at step 15
BASE = [
    "model.block_size=16",
    "batch_size=4",
    "eval_batches=1",
    "warmup_steps=2",
    "dtype=float32",
    "device=cpu",
    "eval_every=10",
    "ckpt_every=4",
    "log_every=1",
    "threads=1",
]
GRID = f"""
source = "SOURCE"
base = {json.dumps(BASE)}
minutes = [{MINUTES}]
seeds = [0, 1]
[recipes]
gpt2 = {{ vocab = "gpt2", set = ["model.n_layer=1", "model.n_embd=32", "model.n_head=2"] }}
bpe300-2x64 = {{ vocab = 300, set = ["model.n_layer=2", "model.n_embd=64", "model.n_head=2"] }}
"""


@pytest.fixture
def grid(tmp_path) -> tuple[laptop.MinutesGrid, Path]:
    source = write_docs(tmp_path / "txt")
    (tmp_path / "grid.toml").write_text(GRID.replace("SOURCE", str(source)))
    return laptop.load_grid(tmp_path / "grid.toml"), tmp_path


def run(grid: laptop.MinutesGrid, root: Path, clocks, lines: list[str] | None = None) -> list[dict]:
    return laptop.run_grid(
        grid,
        root / "out",
        root / "runs",
        root / "data",
        clock_factory=clocks,
        progress=False,
        say=(lines if lines is not None else []).append,
    )


def test_the_grid_runs_pauses_resumes_and_reports(grid, monkeypatch, capsys):
    grid, root = grid
    # The first run is paused by a signal (as Ctrl-C would) at step 18, after its budget was decided at 15.
    real_log = Trainer._log

    def pause_at_18(self, record):
        real_log(self, record)
        if record["kind"] == "step" and record["step"] == 18 and self.cfg.name == "gpt2-0.6min-s0":
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Trainer, "_log", pause_at_18)
    lines: list[str] = []
    assert run(grid, root, lambda: Tick(1.0), lines) == []
    assert lines[0].startswith("4 run(s) to train (0 of 4 finished earlier)")
    assert "paused in gpt2-0.6min-s0" in lines[-1]
    assert (root / "runs" / "gpt2-0.6min-s0" / "ckpt.pt").is_file() and not list((root / "out").glob("*.json"))

    # Again: the paused run resumes under a clock 100 times slower; had it measured again, it would decide far
    # fewer steps (or none at all), so equal step counts show the kept budget. The other runs start fresh.
    clocks = iter([Tick(100.0), Tick(1.0), Tick(1.0), Tick(1.0)])
    results = {r["run"]: r for r in run(grid, root, lambda: next(clocks))}
    assert sorted(results) == ["bpe300-2x64-0.6min-s0", "bpe300-2x64-0.6min-s1", "gpt2-0.6min-s0", "gpt2-0.6min-s1"]
    assert results["gpt2-0.6min-s0"]["steps"] == results["gpt2-0.6min-s1"]["steps"] > 18
    own, gpt2 = results["bpe300-2x64-0.6min-s0"], results["gpt2-0.6min-s0"]
    assert (own["model"]["vocab_size"], gpt2["model"]["vocab_size"]) == (320, 50304)  # fitted to each data set
    assert own["dataset"] == "txt-bpe300" and own["model"]["n_layer"] == 2  # the recipe's shape
    stats = text_stats(root / "data" / "txt-bpe300", "val")
    assert own["val_bpc"] == stats.bits_per_char(own["val_loss"]) and own["val_chars"] == stats.chars
    assert own["tokens"] == own["steps"] * 4 * 16 and own["s_per_step"] == 1.0  # the ticking clock's step
    assert own["recipe"] == "bpe300-2x64" and own["batch_size"] == 4
    assert {"cpu_class", "cpu_capability", "cpu_model", "emulated", "torch", "threads"} <= set(own)
    assert not list((root / "runs").glob("*/ckpt*.pt"))  # recorded runs keep no checkpoint

    # Finished runs are never trained again: a clock that is read fails the test.
    report = {p.name: p.read_bytes() for p in (root / "out").glob("*") if p.suffix in (".md", ".png")}
    lines = []
    again = run(grid, root, lambda: pytest.fail("a finished run trained again"), lines)
    assert lines[0].startswith("0 run(s) to train (4 of 4 finished earlier)") and len(again) == 4
    assert {p.name: p.read_bytes() for p in (root / "out").glob("*") if p.suffix in (".md", ".png")} == report

    # The table: one row per recipe, the mean and range over the two seeds of the budget's column.
    table = report[laptop.RESULTS_MD].decode()
    bpc = [results[f"bpe300-2x64-0.6min-s{s}"]["val_bpc"] for s in (0, 1)]
    row = next(line for line in table.splitlines() if line.startswith("| bpe300-2x64 | bpe300 | 2x64, T16, B4 |"))
    assert f"{statistics.fmean(bpc):.3f} ({min(bpc):.3f}–{max(bpc):.3f}, 2 seeds)" in row
    assert "| 0.6 min |" in table and "| gpt2 | gpt2 | 1x32, T16, B4 |" in table
    assert report[laptop.FIGURE].startswith(b"\x89PNG")
    # `nanogpt laptop --report` prints the same table from the results alone, training nothing
    capsys.readouterr()
    assert main(["laptop", "--report", "--out", str(root / "out")]) == 0
    assert capsys.readouterr().out.strip() == table.strip()


def test_selection_and_bad_grids_are_one_line(grid, tmp_path, capsys):
    grid, root = grid
    part = laptop.select(grid, ["bpe300-2x64"], [5.0], [1])
    assert [r.name for r in part.runs()] == ["bpe300-2x64-5min-s1"]
    with pytest.raises(ConfigError, match="not in the grid"):
        laptop.select(grid, ["bpe4096"])
    bad = root / "bad.toml"
    bad.write_text(GRID.replace("SOURCE", "x").replace("vocab = 300", 'vocab = "x300"'))
    with pytest.raises(ConfigError, match="'x300' is neither 'gpt2' nor a vocabulary size"):
        laptop.load_grid(bad)
    bad.write_text(GRID.replace("SOURCE", "x").replace("bpe300-2x64 =", '"Bpe 300" ='))
    with pytest.raises(ConfigError, match="a recipe's name is letters, digits"):
        laptop.load_grid(bad)
    bad.write_text(GRID.replace("SOURCE", "x").replace("vocab = 300,", "vocab = 300, layers = 2,"))
    with pytest.raises(ConfigError, match=r"\[recipes\] bpe300-2x64 must be \{ vocab"):
        laptop.load_grid(bad)
    assert main(["laptop", "--grid", str(root / "grid.toml"), "--recipes", "gpt2,bpe4096", "--plan"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--recipes bpe4096: not in the grid (it has gpt2, bpe300-2x64)" in err
    assert (
        main(
            [
                "laptop",
                "--grid",
                str(root / "grid.toml"),
                "--out",
                str(root / "o"),
                "--minutes",
                "5,10",
                "--seeds",
                "0",
                "--plan",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    # 2 runs of 5 minutes and 2 of 10, plus a minute each to start and evaluate
    assert out.startswith("4 run(s) to train (0 of 4 finished earlier): about 0 h 34 min")


ROOT = Path(__file__).resolve().parents[1]
# What a config learns with: the keys that must match between the shipped recipe and the grid's run of it
# (name, seed, threads and the logging cadence say how a run is named or placed, not what it learns).
LEARNING = ("dataset", "batch_size", "grad_accum", "lr", "min_lr", "warmup_steps", "schedule", "decay_frac")
LEARNING += ("weight_decay", "beta1", "beta2", "grad_clip", "optimizer", "muon_lr", "muon_momentum")
LEARNING += ("muon_weight_decay", "dtype")
LEARNING += ("eval_every", "eval_batches", "ckpt_every", "minutes")  # evaluations spend the minutes too


def test_the_ten_minute_recipe_is_the_measured_winner():
    """configs/ten_minutes.toml is the recipe of the committed grid whose ten-minute runs ended lowest in
    bits/char (mean over seeds) on the issue's 2-core AVX512-BF16 machine, as the grid ran it."""
    results = laptop.read_results(ROOT / "experiments" / "minutes")
    rows = laptop.summarize(results)
    table = (ROOT / "experiments" / "minutes" / laptop.RESULTS_MD).read_text(encoding="utf-8")
    assert table == laptop.markdown(rows), "results.md is stale: run `nanogpt laptop --report`"
    tens = [r for r in rows if r["minutes"] == 10 and r["cpu"] == "AVX512-BF16" and len(r["seeds"]) >= 2]
    assert len(tens) >= 2, "the committed grid has at least two recipes with two seeds of ten minutes"
    best = min(tens, key=lambda r: r["bpc"])
    grid = laptop.load_grid(ROOT / "configs" / "laptop_grid.toml")
    recipe = next(r for r in grid.recipes if r.name == best["recipe"])  # the winner is a recipe of the grid
    ran = load_config(grid.config, grid.overrides(laptop.MinutesRun(recipe, 10.0, 0))).to_dict()
    shipped = load_config(ROOT / "configs" / "ten_minutes.toml").to_dict()
    assert {k: shipped[k] for k in LEARNING} == {k: ran[k] for k in LEARNING}
    trained = [r["model"] for r in results if r["recipe"] == recipe.name and r["minutes"] == 10]
    assert all(model == shipped["model"] for model in trained)  # the model as its runs trained it (vocab fitted)
    assert shipped["name"] == "ten_minutes" and shipped["threads"] == 0  # torch's own threads on the user's machine


def test_another_cpu_class_in_a_subfolder_gets_its_own_table(tmp_path):
    model = {"n_layer": 4, "n_embd": 128, "block_size": 128}
    run = {"recipe": "r", "vocab": "2048", "minutes": 10.0, "seed": 0, "model": model, "batch_size": 32}
    run |= {"val_bpc": 1.8, "s_per_step": 0.2, "params": 1e6, "steps": 3000, "tokens": 3000 * 32 * 128}
    (tmp_path / "avx2").mkdir()
    (tmp_path / "r-10min-s0.json").write_text(json.dumps({**run, "cpu_class": "AVX512-BF16"}))
    emulated = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    (tmp_path / "avx2" / "r-10min-s0.json").write_text(
        json.dumps({**run, "cpu_class": "AVX2", "emulated": emulated, "val_bpc": 1.9})
    )
    table = laptop.markdown(laptop.summarize(laptop.read_results(tmp_path)))
    assert "CPU class AVX512-BF16:" in table and "CPU class AVX2 (emulated: ATEN_CPU_CAPABILITY=avx2" in table
    assert "| r | bpe2048 | 4x128, T128, B32 | 1.00M | 0.2 | 1.800 (1.800–1.800, 1 seed) |" in table
    assert "| r | bpe2048 | 4x128, T128, B32 | 1.00M | 0.2 | 1.900 (1.900–1.900, 1 seed) |" in table
