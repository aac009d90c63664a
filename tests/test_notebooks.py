"""Notebooks as papermill runs them headless, with small parameters: 06 (the lesson, and the README's
overnight command killed and run again) and 08 (the experiments, on the tiny grid).

nbval (``python -m pytest`` collects ``notebooks/``) runs every notebook with its committed defaults; these
tests inject parameters instead, in a throwaway ``NANOGPT_HOME``, and check what the runs left on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nanogpt_lib import paths

papermill = pytest.importorskip("papermill")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _home(tmp_path: Path) -> Path:
    """A throwaway project home: the shipped plays (the notebook prepares data/ from them), the configs, and
    links to the notebooks, the shipped model and the committed experiments (read only: §7 plots a run of them)."""
    home = tmp_path / "home"
    shutil.copytree(paths.shakespeare_dir(), home / "data" / "shakespeare" / "plays")
    shutil.copytree(ROOT / "configs", home / "configs")
    (home / "notebooks").symlink_to(NOTEBOOKS, target_is_directory=True)
    (home / "trained_model").symlink_to(ROOT / "trained_model", target_is_directory=True)
    (home / "experiments").symlink_to(ROOT / "experiments", target_is_directory=True)
    return home


SMALL_MODEL = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32}  # the seed's is 4, 4, 128, 64


def _shrink(config: Path, values: dict[str, int]) -> None:
    """Set ``key = value`` lines of a TOML config in place (every key must be there once): the same recipe,
    smaller, so a papermill run takes seconds."""
    text = config.read_text()
    for key, value in values.items():
        text, n = re.subn(rf"^{key} = \S+", f"{key} = {value}", text, flags=re.M)
        assert n == 1, key
    config.write_text(text)


def _printed(notebook: Path) -> str:
    nb = json.loads(notebook.read_text())
    return "".join(
        "".join(o.get("text", "")) for cell in nb["cells"] if cell["cell_type"] == "code" for o in cell["outputs"]
    )


@pytest.mark.slow
def test_training_notebook_under_papermill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh project home: the notebook prepares data/ and writes runs/ there; the recipe's model is shrunk
    # (nbval runs the notebook at full size).
    home = _home(tmp_path)
    _shrink(home / "configs" / "default.toml", SMALL_MODEL)
    monkeypatch.setenv("NANOGPT_HOME", str(home))  # inherited by the papermill kernel
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert paths.runs_dir() == home / "runs"

    out = tmp_path / "06_training_run.out.ipynb"
    parameters = dict(
        run_name="papermill-test",
        mode="reset",
        max_steps=6,
        eval_every=2,
        eval_batches=1,
        batch_size=4,
        warmup_steps=0,
        device="cpu",
        dtype="float32",
        demo_pause_at=4,
        ladder_live=True,
        ladder_steps=2,
        ladder_batch=2,
    )
    papermill.execute_notebook(
        str(NOTEBOOKS / "06_training_run.ipynb"),
        str(out),
        parameters=parameters,
        kernel_name="python3",
        cwd=str(NOTEBOOKS),
        progress_bar=False,
    )

    assert (home / "data" / "shakespeare" / "train.bin").is_file()  # the notebook prepared the data
    run_dir = home / "runs" / "papermill-test"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "best",
        "ckpt.prev.pt",
        "ckpt.pt",
        "config.json",
        "loss.png",
        "metrics.jsonl",
    ]

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
    printed = _printed(out)
    assert "status 'paused' at step 4" in printed
    assert "finished at step 6: best val loss" in printed  # the Trainer's summary line


def _overnight_command() -> str:
    """The README's overnight command (the fenced block that runs papermill over 06 into runs/overnight.ipynb)."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    found = [b.strip() for b in blocks if "papermill notebooks/06_training_run.ipynb runs/overnight.ipynb" in b]
    assert len(found) == 1, "README.md: expected one overnight command block"
    return found[0]


def test_overnight_command_is_the_same_in_readme_and_notebook() -> None:
    # Notebook 06 prints the same command as the README, and it is the real run: the default recipe as
    # written (full_run), its own run name, and mode auto, so running it again resumes instead of wiping.
    command = _overnight_command()
    nb = json.loads((NOTEBOOKS / "06_training_run.ipynb").read_text())
    markdown = "".join("".join(cell["source"]) for cell in nb["cells"] if cell["cell_type"] == "markdown")
    assert command in markdown
    params = dict(re.findall(r"-p (\S+) (\S+)", command))
    assert params["run_name"] == "overnight" and params["mode"] == "auto" and params["full_run"] == "True"
    assert params["ladder_live"] == "True"  # the overnight run trains the ladder (the lesson plots the committed one)
    assert "config_file" not in params  # the notebook's default: configs/default.toml
    for key in ("max_steps", "batch_size", "eval_batches", "eval_every", "demo_pause_at"):
        assert key not in params, f"{key}: full_run trains the config's own value"


def _kill_tree(proc: subprocess.Popen) -> int:
    """SIGKILL a process and everything under it (papermill, and the kernel it started in its own session);
    return the process's exit status."""
    import psutil  # a dependency of ipykernel, which runs the notebooks

    children = psutil.Process(proc.pid).children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    proc.kill()
    psutil.wait_procs(children, timeout=30)
    return proc.wait()  # reaped here, so the status is the real one


@pytest.mark.slow
def test_overnight_command_resumes_after_kill(tmp_path: Path) -> None:
    # The README's overnight command, run from a throwaway project home whose configs/default.toml is the
    # real one shrunk (same keys, smaller sizes) and with a two-step ladder. Killed once a checkpoint exists
    # (as a closed laptop or a killed kernel would), then run again unchanged: it must resume, not restart.
    home = _home(tmp_path)
    small = {
        "max_steps": 60,
        "batch_size": 2,
        "eval_every": 30,
        "eval_batches": 1,
        "log_every": 1,
        "ckpt_every": 5,
        "warmup_steps": 5,
        **SMALL_MODEL,
    }
    _shrink(home / "configs" / "default.toml", small)
    command = re.sub(r"-p ladder_steps \S+", "-p ladder_steps 2", _overnight_command())
    command = re.sub(r"-p ladder_batch \S+", "-p ladder_batch 2", command)
    env = {
        **os.environ,
        "NANOGPT_HOME": str(home),
        "TQDM_DISABLE": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }  # this env's papermill
    run_dir, log = home / "runs" / "overnight", tmp_path / "first.log"

    with open(log, "w") as out:
        first = subprocess.Popen(["bash", "-c", command], cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 240
            while not (run_dir / "ckpt.pt").exists():
                assert first.poll() is None, f"the first run ended before its first checkpoint:\n{log.read_text()}"
                assert time.monotonic() < deadline, "no checkpoint within 240 s"
                time.sleep(0.02)
        finally:
            status = _kill_tree(first)
    assert status == -9, status  # killed, not finished
    killed_at = torch.load(run_dir / "ckpt.pt", map_location="cpu", weights_only=True)["step"]
    last = small["max_steps"]
    assert 0 < killed_at < last

    second = subprocess.run(["bash", "-c", command], cwd=home, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    printed = _printed(home / "runs" / "overnight.ipynb")
    assert "resuming in runs/overnight" in printed
    # In 06 the ladder (section 8) comes after the run, so the kill landed before it: the resumed run trains all
    # of it and saves it rung by rung (reading a finished ladder back is tests/test_experiments.py's).
    assert "ladder read from" not in printed
    saved = json.loads((home / "runs" / "overnight-ladder.json").read_text())
    assert [r["rung"] for r in saved["ladder"]] == saved["settings"]["rungs"] and len(saved["ladder"]) == 6
    assert f"resumed overnight at step {killed_at}" in printed
    assert f"steps {killed_at}->{last}" in printed
    assert f"status 'finished' at step {last}" in printed

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(1, last + 1))  # each step once
    assert [r["step"] for r in records if r["kind"] == "eval"] == [last // 2, last]
    ckpt = torch.load(run_dir / "ckpt.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == last and ckpt["config"]["name"] == "overnight" and ckpt["config"]["batch_size"] == 2


@pytest.mark.slow
def test_experiments_notebook_tiny_grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The experiments notebook at tiny scale, in a fresh project home holding only the shipped plays: every
    # stage runs, the report lands in out_dir, and a second execution reads the finished runs instead of
    # training them again.
    home = tmp_path / "home"
    shutil.copytree(paths.shakespeare_dir(), home / "data" / "shakespeare" / "plays")
    monkeypatch.setenv("NANOGPT_HOME", str(home))  # inherited by the papermill kernel
    monkeypatch.setenv("TQDM_DISABLE", "1")

    out_dir = tmp_path / "exp"
    parameters = dict(
        scale="tiny", out_dir=str(out_dir), workers=1, laptop_minutes=0
    )  # 0 skips §9's minutes run (nbval runs it)
    first = tmp_path / "08_experiments.out.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / "08_experiments.ipynb"),
        str(first),
        parameters=parameters,
        kernel_name="python3",
        cwd=str(NOTEBOOKS),
        progress_bar=False,
    )

    assert (home / "data" / "shakespeare" / "train.bin").is_file()  # the notebook prepared the data
    for name in (
        "summary.json",
        "results.md",
        "lr_range.json",
        "lr_sweep.png",
        "val_curves.png",
        "steps_to_target.png",
    ):
        assert (out_dir / name).is_file(), name
    for name in ("lr_sweep.png", "val_curves.png", "steps_to_target.png"):
        assert (out_dir / name).read_bytes()[:8] == PNG_SIGNATURE
    summary = json.loads((out_dir / "summary.json").read_text())
    assert {"lr", "target", "baseline_label", "winners"} <= set(summary["decisions"])

    # The executed notebook shows the results table exactly as results.md holds it.
    table = (out_dir / "results.md").read_text().strip()
    assert table.startswith("Target: val loss") and "| stage | run |" in table
    nb = json.loads(first.read_text())
    shown = [
        "".join(o.get("data", {}).get("text/markdown", ""))
        for cell in nb["cells"]
        if cell["cell_type"] == "code"
        for o in cell["outputs"]
    ]
    assert any(table in text for text in shown)

    # Run again into another file: every run is finished, so none is trained again.
    stamps = {p: p.stat().st_mtime_ns for p in out_dir.glob("*/result.json")}
    assert len(stamps) >= 16  # lr stage (2 rates x 2 seeds) and variants (6 x 2 seeds) at least
    second = tmp_path / "08_experiments.again.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / "08_experiments.ipynb"),
        str(second),
        parameters=parameters,
        kernel_name="python3",
        cwd=str(NOTEBOOKS),
        progress_bar=False,
    )
    assert {p: p.stat().st_mtime_ns for p in out_dir.glob("*/result.json")} == stamps
    again = json.loads(second.read_text())
    printed = "".join(
        "".join(o.get("text", "")) for cell in again["cells"] if cell["cell_type"] == "code" for o in cell["outputs"]
    )
    assert "starting new run" not in printed and "range test read from" in printed
