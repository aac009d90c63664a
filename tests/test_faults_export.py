"""Exports published as one unit and verified at load (issue 25; the destination from issue 21).

An export used to be two renames (weights, then config.json): a crash between them left new weights beside the
old shape, a folder that loaded neither model. Here a crash is injected at every rename and link an export makes
(``export_weights`` as the trainer's ``best/`` uses it, and ``nanogpt export --which best/last``), and a real
SIGKILL at several points; after each, the folder must load the old model or the new one, whole, with its own
config.json, and the next export must leave the folder tidy.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from nanogpt_lib import cli, paths
from nanogpt_lib.checkpoint import CheckpointError, export_weights, load_weights
from nanogpt_lib.export import CONFIG_FILE, WEIGHTS_FILE, read_export, sign_legacy
from nanogpt_lib.model import GPT, GPTConfig

from fault_helpers import KILL_AT_NTH_REPLACE, Crash, crash_at
from tiny import SMALL_MODEL, TINY_MODEL

ROOT = Path(__file__).resolve().parents[1]
BIGGER = replace(SMALL_MODEL, block_size=8)  # another shape than TINY_MODEL's: a mix would not load


def model(seed: int, cfg: GPTConfig = TINY_MODEL) -> GPT:
    torch.manual_seed(seed)
    return GPT(cfg)


def same(a: GPT, b: GPT) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def which(folder: Path, refs: dict[int, GPT]) -> list[int]:
    """Which reference model the export in ``folder`` loads as (its config.json's step must agree)."""
    loaded, meta = load_weights(folder)
    found = [step for step, ref in refs.items() if ref.config == loaded.config and same(loaded, ref)]
    assert found == [meta["step"]], f"the weights are step {found}, config.json says step {meta['step']}"
    return found


def test_a_crash_at_every_step_of_an_export_leaves_the_old_or_the_new_one_whole(tmp_path, monkeypatch):
    """The trainer's best/ and `nanogpt export` both publish with export_weights: old step 5, new step 10."""
    old, new = model(5), model(10, BIGGER)
    folder = tmp_path / "best"
    outcomes = []
    for at in range(1, 40):
        shutil.rmtree(folder, ignore_errors=True)
        export_weights(old, TINY_MODEL, folder, {"step": 5})
        with monkeypatch.context() as m:
            crash_at(at, m)
            try:
                export_weights(new, BIGGER, folder, {"step": 10}, also={"metrics.jsonl": lambda fh: fh.write(b"{}\n")})
                finished = True
            except Crash:
                finished = False
        outcomes += which(folder, {5: old, 10: new})
        export_weights(new, BIGGER, folder, {"step": 10})  # the next export tidies up after the crashed one
        assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
        if finished:
            break
    assert finished
    # the old export until the commit, the new one from then on; at least 2 crash points on each side
    assert outcomes == sorted(outcomes) and outcomes.count(5) >= 2 and outcomes.count(10) >= 2, outcomes


@pytest.fixture
def run(tmp_path, monkeypatch) -> Path:
    """A run folder as the trainer leaves it: best/ (step 4), ckpt.pt is not needed for --which best."""
    monkeypatch.setenv("NANOGPT_HOME", str(tmp_path / "home"))
    run = tmp_path / "home" / "runs" / "r"
    export_weights(model(4, BIGGER), BIGGER, run / "best", {"step": 4, "val_loss": 7.0, "run": "r"})
    (run / "metrics.jsonl").write_text('{"kind": "eval", "step": 4, "val_loss": 7.0}\n')
    (run / "loss.png").write_bytes(b"\x89PNG new plot")
    return run


def legacy_export(folder: Path, m: GPT, step: int) -> None:
    """What trained_model/ held before exports recorded their files: weights, config, metrics, plot, notebook."""
    export_weights(m, m.config, folder, {"step": step})
    record = json.loads((folder / CONFIG_FILE).read_text())
    del record["files"]
    (folder / CONFIG_FILE).write_text(json.dumps(record))
    for name, data in {
        "metrics.jsonl": b"old metrics\n",
        "loss.png": b"old plot",
        "training_run.ipynb": b"{}",
        "README.md": b"# the shipped model\n",
    }.items():
        (folder / name).write_bytes(data)


def test_cli_export_crash_at_every_step_keeps_the_shipped_model_or_replaces_it_whole(
    run, tmp_path, monkeypatch, capsys
):
    shipped = paths.trained_model_dir()
    old, new = model(1), load_weights(run / "best")[0]
    outcomes = []
    for at in range(1, 40):
        shutil.rmtree(shipped, ignore_errors=True)
        legacy_export(shipped, old, 1)
        with monkeypatch.context() as m:
            crash_at(at, m)
            try:
                cli.main(["export", str(run), "--out", str(shipped), "--force"])
                finished = True
            except Crash:
                finished = False
        outcomes += which(shipped, {1: old, 4: new})
        if finished:
            break
    assert finished and outcomes == sorted(outcomes) and outcomes.count(1) >= 2 and outcomes.count(4) >= 1
    # the old metrics, plot and notebook are not left beside the new weights; the run's own came with them
    assert sorted(p.name for p in shipped.iterdir()) == [
        "README.md",
        CONFIG_FILE,
        WEIGHTS_FILE,
        "loss.png",
        "metrics.jsonl",
    ]
    assert (shipped / "loss.png").read_bytes() == b"\x89PNG new plot"
    assert (shipped / "metrics.jsonl").read_text() == (run / "metrics.jsonl").read_text()
    assert sorted(read_export(shipped)[1]) == [WEIGHTS_FILE, "loss.png", "metrics.jsonl"]


KILLER = (
    KILL_AT_NTH_REPLACE
    + """
from nanogpt_lib import cli
cli.main(sys.argv[1:])
"""
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX")
@pytest.mark.parametrize("at", [1, 4, 5, 8])
def test_sigkill_during_export_last_leaves_a_whole_export(run, tmp_path, at):
    """A real kill (no finally, no clean-up) at the at-th rename of `nanogpt export --which last`."""
    out = tmp_path / "out"
    legacy_export(out, model(1), 1)
    from nanogpt_lib.checkpoint import save_checkpoint

    new = model(9, BIGGER)
    save_checkpoint(run / "ckpt.pt", {"model": new.state_dict(), "step": 9, "config": {"model": BIGGER.to_dict()}})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NANOGPT_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(at), "export", str(run), "--which", "last", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    found = which(out, {1: model(1), 9: new})
    # renames 1-3 write the new weights, metrics and plot; 4 commits config.json; 5-7 give them their names;
    # 8 rewrites config.json with those names
    assert found == ([1] if at <= 4 else [9])
    assert cli.main(["export", str(run), "--which", "last", "--out", str(out)]) == 0  # tidies up
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        CONFIG_FILE,
        WEIGHTS_FILE,
        "loss.png",
        "metrics.jsonl",
    ]
    assert which(out, {9: new}) == [9]


def test_a_flipped_byte_in_the_weights_is_refused_with_one_line(run, capfd):
    assert cli.main(["export", str(run)]) == 0  # the default destination: RUN/export/
    weights = run / "export" / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight: it would load silently and write other text
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"corrupt or truncated.*sha256"):
        load_weights(run / "export")
    capfd.readouterr()
    assert cli.main(["sample", "--ckpt", str(run / "export"), "--device", "cpu", "--max-new-tokens", "2"]) == 2
    err = capfd.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and WEIGHTS_FILE in err
    weights.write_bytes(weights.read_bytes()[:-10])  # truncated: also refused
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_weights(weights)  # named as a file, beside its config.json


def test_export_goes_to_the_run_folder_by_default_and_says_where(run, capsys):
    assert cli.main(["export", str(run)]) == 0
    out = capsys.readouterr().out
    assert "runs/r/export/" in out and "step 4" in out
    assert sorted(p.name for p in (run / "export").iterdir()) == [
        CONFIG_FILE,
        WEIGHTS_FILE,
        "loss.png",
        "metrics.jsonl",
    ]
    assert not paths.trained_model_dir().exists()
    assert cli.main(["export", str(run), "--out", str(paths.trained_model_dir())]) == 2  # the shipped model
    assert "--force" in capsys.readouterr().err and not paths.trained_model_dir().exists()
    (run / "elsewhere").mkdir()
    (run / "elsewhere" / "notes.txt").write_text("mine")
    assert cli.main(["export", str(run), "--out", str(run / "elsewhere")]) == 2  # a folder of other files
    assert "not empty and holds no export" in capsys.readouterr().err


def test_the_shipped_model_records_and_passes_its_checksum():
    """Every file of trained_model/ is recorded (the weights, its own tokenizer's ranks, the run's metrics and
    plot) and passes its sha256; the weights are the best-val checkpoint of the metrics shipped with them."""
    record, live = read_export(ROOT / "trained_model")
    assert sorted(live) == sorted(record["files"]) and WEIGHTS_FILE in live
    assert all(len(entry["sha256"]) == 64 for entry in record["files"].values())
    assert record["tokenizer"]["file"] in live  # the model's own BPE travels with it
    _model, meta = load_weights(ROOT / "trained_model")
    evals = [json.loads(line) for line in (ROOT / "trained_model" / "metrics.jsonl").read_text().splitlines()]
    best = min((r for r in evals if r["kind"] == "eval"), key=lambda r: r["val_loss"])
    assert meta["step"] == best["step"] and meta["val_loss"] == best["val_loss"]


def test_a_legacy_export_without_a_record_still_loads_and_can_be_signed(tmp_path):
    legacy_export(tmp_path / "old", model(3), 3)
    assert read_export(tmp_path / "old") is None
    assert which(tmp_path / "old", {3: model(3)}) == [3]
    sign_legacy(tmp_path / "old")
    assert list(read_export(tmp_path / "old")[1]) == [WEIGHTS_FILE]
