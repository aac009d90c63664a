"""The trainer: artefacts, exact resume after a pause, modes, NaN, bad input, DDP (SIGKILL and the other
faults: test_faults_train.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nanogpt_lib import train as train_mod
from nanogpt_lib.checkpoint import CheckpointError, load_checkpoint, load_weights
from nanogpt_lib.config import load_config
from nanogpt_lib.data import DatasetError
from nanogpt_lib.plots import read_metrics
from nanogpt_lib.train import Trainer, TrainError, lr_at, train

from fault_helpers import TIMING
from tiny import TWO_LAYER_RUN

TINY = [*TWO_LAYER_RUN, "lr=3e-3"]


def cfg(*extra: str):
    return load_config(None, [*TINY, *extra])


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "ckpt.pt")["model"]


def losses(run_dir: Path) -> list[tuple]:
    return [(r["kind"], r["step"], r.get("loss"), r.get("val_loss")) for r in read_metrics(run_dir)]


def test_lr_schedule():
    c = cfg("max_steps=100", "warmup_steps=10", "lr=1.0", "min_lr=0.1", "schedule=cosine")
    assert lr_at(0, c) == pytest.approx(0.1) and lr_at(9, c) == pytest.approx(1.0)
    assert lr_at(55, c) == pytest.approx(0.55) and lr_at(100, c) == pytest.approx(0.1)


def test_a_run_writes_metrics_plot_checkpoint_and_best(home):
    result = train(cfg("max_steps=20", "eval_every=10", "log_every=5", "ckpt_every=10", "name=r"), progress=False)
    run = home / "runs" / "r"
    assert result.status == "finished" and result.step == 20
    records = read_metrics(run)
    assert [r["step"] for r in records if r["kind"] == "step"] == [5, 10, 15, 20]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [10, 20]
    assert evals[-1]["val_loss"] < 10.0  # from ~10.8 = ln(50304) at init
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    ckpt = torch.load(run / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 20 and set(ckpt) >= {"model", "optimizer", "rng", "config"}
    _model, meta = load_weights(run / "best")
    assert meta["step"] == result.step and meta["val_loss"] == pytest.approx(result.best_val_loss)
    assert json.loads((run / "config.json").read_text())["name"] == "r"


def _pause_at(step: int):
    def hook(record):
        if record["step"] == step:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C (or a notebook interrupt) sends

    return hook


VARIANT_RUN = [
    "optimizer=muon",
    "muon_lr=0.03",
    "schedule=wsd",
    "model.pos=rope",
    "model.mlp=relu2",
    "model.qk_norm=true",
    "model.tie_head=false",
    "model.logit_softcap=15",
]


@pytest.mark.parametrize("extra", [[], VARIANT_RUN], ids=["gpt2-adamw", "variants-muon"])
def test_pause_then_resume_is_bitwise_exact(home, capsys, extra):
    straight = train(cfg("max_steps=12", "eval_every=3", "log_every=1", "name=straight", *extra), progress=False)
    trainer = Trainer(
        cfg("max_steps=12", "eval_every=3", "log_every=1", "name=split", *extra), progress=False, on_eval=_pause_at(6)
    )
    first = trainer.run()
    assert first.status == "paused" and first.step == 6
    assert "Resume with: nanogpt train --name split --mode resume" in capsys.readouterr().out
    second = train(
        cfg("max_steps=12", "eval_every=3", "log_every=1", "name=split", *extra), mode="resume", progress=False
    )
    assert second.status == "finished" and second.step == 12
    a, b = home / "runs" / "straight", home / "runs" / "split"
    assert losses(a) == losses(b)
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert straight.best_val_loss == second.best_val_loss
    assert straight.last_eval["val_loss"] < 10.0


def test_resuming_with_another_optimizer_is_refused(home):
    train(cfg("max_steps=2", "name=opt", "optimizer=muon"), progress=False)
    with pytest.raises(TrainError, match="optimizer"):
        Trainer(cfg("max_steps=4", "name=opt", "optimizer=adamw"), mode="resume", progress=False)


def test_modes(home, capsys):
    c = cfg("max_steps=4", "eval_every=2", "name=m")
    with pytest.raises(TrainError, match="nothing to resume"):
        train(c, mode="resume", progress=False)
    train(c, mode="auto", progress=False)
    assert "starting new run" in capsys.readouterr().out
    with pytest.raises(TrainError, match=r"already exists.*--mode resume.*--mode reset"):
        train(c, mode="new", progress=False)
    more = cfg("max_steps=6", "eval_every=2", "name=m")
    assert train(more, mode="auto", progress=False).step == 6
    assert "resuming" in capsys.readouterr().out
    run = home / "runs" / "m"
    assert [r["step"] for r in read_metrics(run) if r["kind"] == "eval"] == [2, 4, 6]
    train(c, mode="reset", progress=False)
    assert [r["step"] for r in read_metrics(run) if r["kind"] == "eval"] == [2, 4]
    with pytest.raises(TrainError, match="unknown mode"):
        train(c, mode="restart", progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(home, monkeypatch):
    real = train_mod.Trainer._train_step

    def poisoned(self):
        loss = real(self)
        return loss * float("nan") if self.step == 5 else loss

    monkeypatch.setattr(train_mod.Trainer, "_train_step", poisoned)
    with pytest.raises(TrainError, match=r"loss is nan at step 5.*last good checkpoint"):
        train(cfg("max_steps=10", "ckpt_every=2", "eval_every=2", "name=nan"), progress=False)
    assert load_checkpoint(home / "runs" / "nan" / "ckpt.pt")["step"] == 4


def test_resume_with_another_model_shape_is_refused(home):
    train(cfg("max_steps=2", "eval_every=2", "name=s"), progress=False)
    with pytest.raises(TrainError, match="holds a model of shape"):
        train(cfg("max_steps=4", "model.n_layer=3", "name=s"), progress=False)


def test_missing_dataset_and_too_long_block(home):
    with pytest.raises(DatasetError, match=r"no prepared dataset.*nanogpt prepare"):
        train(cfg("dataset=nowhere"), progress=False)
    with pytest.raises(DatasetError, match="fewer than one block"):
        train(cfg("model.block_size=100000"), progress=False)


def test_unavailable_device_lists_available(home):
    with pytest.raises(TrainError, match="device 'cuda' is not available here; available: cpu"):
        train(cfg("device=cuda"), progress=False)


def test_corrupt_and_pickled_checkpoints_are_refused(home, tmp_path):
    train(cfg("max_steps=2", "eval_every=2", "name=c"), progress=False)
    ckpt = home / "runs" / "c" / "ckpt.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        train(cfg("max_steps=4", "name=c"), progress=False)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"model": Evil()}, ckpt)
    with pytest.raises(CheckpointError, match="pickled Python objects, which are refused"):
        train(cfg("max_steps=4", "name=c"), progress=False)


def test_cli_train_export_sample(home, capsys):
    from nanogpt_lib.cli import main

    sets = [x for kv in TINY for x in ("--set", kv)]
    assert (
        main(
            [
                "train",
                *sets,
                "--set",
                "max_steps=4",
                "--set",
                "eval_every=2",
                "--name",
                "cli",
                "--no-progress",
                "--export",
                str(home / "exported"),
            ]
        )
        == 0
    )
    assert (home / "exported" / "gpt2_trained_weights.safetensors").is_file()
    capsys.readouterr()
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(home / "exported"),
                "--prompt",
                "ROMEO:",
                "--max-new-tokens",
                "5",
                "--temperature",
                "0",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("ROMEO:")
    assert main(["sample", "--ckpt", str(home / "exported"), "--prompt", ""]) == 2
    assert "prompt is empty" in capsys.readouterr().err
    assert main(["sample", "--ckpt", str(home / "exported"), "--temperature", "-1"]) == 2
    assert main(["train", "--set", "bogus=1"]) == 2
    assert "unknown config key" in capsys.readouterr().err
    assert main(["train", *sets, "--set", "dataset=none"]) == 2
    assert "nanogpt prepare" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_ddp_two_processes_match_one_process_with_accumulation(home, optimizer):
    """torchrun --nproc_per_node 2 (gloo) with batch 4 each == one process with 2 micro-batches of 4, bitwise.

    Why bitwise, in fp32 with the same kernels (one thread per process on both sides: a different thread
    count changes matmul reduction order, which Muon's Newton-Schulz then amplifies, e.g. 1.5e-5 in the loss
    on AVX2): each micro-batch's gradient is the same on both sides; scaling a loss by 1/2 halves every
    gradient exactly (a power of two); DDP averages the two ranks' gradients as g1/2 + g2/2, which is what
    accumulation adds, and a sum of two terms has one order. With more than two ranks the all-reduce may add
    in another order than accumulation does, and agreement drops to fp32 rounding (about 1e-7 relative).
    """
    common = [*TINY, "max_steps=4", "eval_every=2", "log_every=1", f"optimizer={optimizer}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "nanogpt_lib.cli",
        "train",
        "--no-progress",
        "--name",
        "ddp",
        *[x for kv in common for x in ("--set", kv)],
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    train(load_config(None, [*common, "grad_accum=2", "threads=1", "name=single"]), progress=False)
    ddp, single = read_metrics(home / "runs" / "ddp"), read_metrics(home / "runs" / "single")
    assert [{k: v for k, v in r.items() if k not in TIMING} for r in ddp] == [
        {k: v for k, v in r.items() if k not in TIMING} for r in single
    ]
    a, b = load_checkpoint(home / "runs" / "ddp" / "ckpt.pt"), load_checkpoint(home / "runs" / "single" / "ckpt.pt")
    torch.testing.assert_close(a["model"], b["model"], rtol=0, atol=0)
    torch.testing.assert_close(
        [o["state"] for o in a["optimizer"]], [o["state"] for o in b["optimizer"]], rtol=0, atol=0
    )


def test_cli_sample_into_a_closed_pipe_exits_quietly():
    """`nanogpt sample | head -1` must not print a BrokenPipeError traceback."""
    proc = subprocess.run(
        f"{sys.executable} -m nanogpt_lib.cli sample --prompt ROMEO: --max-new-tokens 60 --seed 0 | head -c 1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
