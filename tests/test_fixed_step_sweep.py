"""tools/fixed_step_sweep.py: runs to their steps, each measured on the whole val split, one JSON line each."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from nanogpt_lib.data import text_stats

from tiny import TINY_RUN, prepared_home

ROOT = Path(__file__).resolve().parents[1]


def _sweep(home: Path, runs: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NANOGPT_HOME": str(home), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    command = [sys.executable, str(ROOT / "tools" / "fixed_step_sweep.py"), "--runs", str(runs), "--out", str(out)]
    command += ["--config", str(ROOT / "configs" / "ten_minutes.toml"), "--workers", "1", "--device", "cpu"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=home)


def test_runs_reach_their_steps_and_a_bad_run_is_a_line(tmp_path):
    home = prepared_home(tmp_path)
    runs = tmp_path / "runs.json"
    tiny = [*TINY_RUN, "model.vocab_size=50304"]  # the config's own 4,096 tokens would refuse GPT-2's ids
    good = {"name": "good", "steps": 10, "set": [*tiny, "warmup_steps=1"]}
    bad = {"name": "bad", "steps": 3, "set": [*tiny, "model.n_head=3"]}  # 16 dimensions in 3 heads
    runs.write_text(json.dumps([good, bad]))
    out = tmp_path / "results.jsonl"
    done = _sweep(home, runs, out)
    assert done.returncode == 0, done.stderr[-2000:]
    results = {r["name"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(results) == {"good", "bad"}
    assert "n_head" in results["bad"]["error"] and "val_bpc" not in results["bad"]
    run = results["good"]
    assert run["steps"] == 10 and run["device"] == "cpu" and run["set"] == good["set"]
    # its bits per character are its whole-val nats over the val text's characters, the unit runs compare in
    folder = home / "data" / "txt"
    stats = text_stats(folder, "val")
    assert run["val_bpc"] == stats.bits_per_char(run["val_loss"])
    assert run["val_loss"] < math.log(50257) - 0.1  # trained: below a uniform guess over GPT-2's tokens
    # a second sweep of the same list trains nothing: both are recorded
    again = _sweep(home, runs, out)
    assert again.returncode == 0 and "0 runs (2 recorded already)" in again.stdout
    assert len(out.read_text().splitlines()) == 2
    assert not list(Path(tempfile.gettempdir()).glob("fixed-step-*/good"))  # its run folders removed (mkdtemp's)
