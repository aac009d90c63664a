"""Notebooks as papermill runs them headless, with small parameters: 05 (the README's overnight command)
and 07 (the experiments, on the tiny grid).

nbval (``python -m pytest`` collects ``notebooks/``) runs every notebook with its committed defaults; these
tests inject parameters instead, in a throwaway ``NANOGPT_HOME``, and check what the runs left on disk.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from nanogpt_lib import paths

papermill = pytest.importorskip("papermill")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_training_notebook_under_papermill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh project home holding only the shipped plays: the notebook prepares data/ and writes runs/ there.
    home = tmp_path / "home"
    shutil.copytree(paths.shakespeare_dir(), home / "data" / "shakespeare" / "plays")
    monkeypatch.setenv("NANOGPT_HOME", str(home))  # inherited by the papermill kernel
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert paths.runs_dir() == home / "runs"

    out = tmp_path / "05_training.out.ipynb"
    parameters = dict(run_name="papermill-test", mode="reset", max_steps=6, eval_every=2, eval_batches=1,
                      batch_size=4, warmup_steps=0, device="cpu", dtype="float32", demo_pause_at=4)
    papermill.execute_notebook(str(NOTEBOOKS / "05_training.ipynb"), str(out), parameters=parameters,
                               kernel_name="python3", cwd=str(NOTEBOOKS), progress_bar=False)

    assert (home / "data" / "shakespeare" / "train.bin").is_file()  # the notebook prepared the data
    run_dir = home / "runs" / "papermill-test"
    assert sorted(p.name for p in run_dir.iterdir()) == ["best", "ckpt.pt", "config.json", "loss.png", "metrics.jsonl"]

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4, 6]  # once each: the resume after the pause at 4 adds no repeats
    assert all(r["val_loss"] > 0 for r in evals)
    assert [r["step"] for r in records if r["kind"] == "step"] == [2, 4, 6]  # log_every=2

    ckpt = torch.load(run_dir / "ckpt.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == 6
    assert ckpt["config"]["name"] == "papermill-test" and ckpt["config"]["max_steps"] == 6
    assert ckpt["config"]["batch_size"] == 4 and ckpt["config"]["device"] == "cpu"

    assert (run_dir / "loss.png").read_bytes()[:8] == PNG_SIGNATURE
    assert (run_dir / "best" / "config.json").is_file()

    # The executed notebook shows the injected parameters, the demonstration pause and the resume.
    nb = json.loads(out.read_text())
    assert any("injected-parameters" in cell["metadata"].get("tags", []) for cell in nb["cells"])
    printed = "".join(
        "".join(o.get("text", "")) for cell in nb["cells"] if cell["cell_type"] == "code" for o in cell["outputs"]
    )
    assert "status 'paused' at step 4" in printed
    assert "status 'finished' at step 6" in printed


def test_experiments_notebook_tiny_grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The experiments notebook at tiny scale, in a fresh project home holding only the shipped plays: every
    # stage runs, the report lands in out_dir, and a second execution reads the finished runs instead of
    # training them again.
    home = tmp_path / "home"
    shutil.copytree(paths.shakespeare_dir(), home / "data" / "shakespeare" / "plays")
    monkeypatch.setenv("NANOGPT_HOME", str(home))  # inherited by the papermill kernel
    monkeypatch.setenv("TQDM_DISABLE", "1")

    out_dir = tmp_path / "exp"
    parameters = dict(scale="tiny", out_dir=str(out_dir), workers=1)
    first = tmp_path / "07_experiments.out.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / "07_experiments.ipynb"), str(first), parameters=parameters,
                               kernel_name="python3", cwd=str(NOTEBOOKS), progress_bar=False)

    assert (home / "data" / "shakespeare" / "train.bin").is_file()  # the notebook prepared the data
    for name in ("summary.json", "results.md", "lr_range.json", "lr_sweep.png", "val_curves.png",
                 "steps_to_target.png"):
        assert (out_dir / name).is_file(), name
    for name in ("lr_sweep.png", "val_curves.png", "steps_to_target.png"):
        assert (out_dir / name).read_bytes()[:8] == PNG_SIGNATURE
    summary = json.loads((out_dir / "summary.json").read_text())
    assert {"lr", "target", "baseline_label", "winners"} <= set(summary["decisions"])

    # The executed notebook shows the results table exactly as results.md holds it.
    table = (out_dir / "results.md").read_text().strip()
    assert table.startswith("Target: val loss") and "| stage | run |" in table
    nb = json.loads(first.read_text())
    shown = ["".join(o.get("data", {}).get("text/markdown", "")) for cell in nb["cells"]
             if cell["cell_type"] == "code" for o in cell["outputs"]]
    assert any(table in text for text in shown)

    # Run again into another file: every run is finished, so none is trained again.
    stamps = {p: p.stat().st_mtime_ns for p in out_dir.glob("*/result.json")}
    assert len(stamps) >= 16  # lr stage (2 rates x 2 seeds) and variants (6 x 2 seeds) at least
    second = tmp_path / "07_experiments.again.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / "07_experiments.ipynb"), str(second), parameters=parameters,
                               kernel_name="python3", cwd=str(NOTEBOOKS), progress_bar=False)
    assert {p: p.stat().st_mtime_ns for p in out_dir.glob("*/result.json")} == stamps
    again = json.loads(second.read_text())
    printed = "".join("".join(o.get("text", "")) for cell in again["cells"] if cell["cell_type"] == "code"
                      for o in cell["outputs"])
    assert "starting new run" not in printed and "range test read from" in printed
