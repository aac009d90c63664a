"""Fault injection for the trainer (issue 12): SIGKILL at a random step, pauses under torchrun on one node and
on two, two trainers on one run, changed hyperparameters on resume, restarts before the first checkpoint.

Exact means bitwise here (CPU, fp32 set explicitly): weights, optimizer state, RNG state and every metric
except the two timing figures. The torchrun tests run gloo on 127.0.0.1 only, and every wait is bounded.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from nanogpt_lib import train as train_mod
from nanogpt_lib.checkpoint import load_checkpoint
from nanogpt_lib.cli import main
from nanogpt_lib.config import load_config
from nanogpt_lib.plots import read_metrics
from nanogpt_lib.train import EXIT_PAUSED, Trainer, TrainError, lr_at, train

from fault_helpers import TRAIN_KILLER, assert_same_run
from tiny import TWO_LAYER_RUN, sizes_only

ROOT = Path(__file__).resolve().parents[1]
GPT2_DROPOUT = [
    *TWO_LAYER_RUN,
    "optimizer=adamw",
    "lr=3e-3",
    "model.pos=learned",
    "model.mlp=gelu",
    "schedule=cosine",
    "model.dropout=0.1",
]
WAIT = 180  # seconds: the bound on any one subprocess in this module


@pytest.fixture
def env(module_home, monkeypatch) -> dict[str, str]:
    """NANOGPT_HOME for this process and its children; gloo on the loopback device (torchrun tests)."""
    monkeypatch.setenv("NANOGPT_HOME", str(module_home))
    return {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(ROOT)}


# ---- SIGKILL at a random step --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, extra",
    [
        (None, GPT2_DROPOUT),
        (
            ROOT / "configs" / "default.toml",
            [*sizes_only(TWO_LAYER_RUN), "model.dropout=0.1"],
        ),  # Muon, RoPE, ReLU^2, WSD
    ],
    ids=["gpt2-dropout", "default-recipe-dropout"],
)
def test_sigkill_at_a_random_step_then_resume_is_bitwise_the_straight_run(env, module_home, config, extra):
    # The same thread count in the killed subprocess as here: it sets the kernels' reduction order.
    args = [*extra, "max_steps=6", "eval_every=3", "ckpt_every=2", "log_every=1", f"threads={torch.get_num_threads()}"]
    kill_at = random.randint(3, 5)  # after the step-2 checkpoint (and maybe the step-4 one), before the end
    tag = "default" if config else "gpt2"
    proc = subprocess.run(
        [sys.executable, "-c", TRAIN_KILLER, str(kill_at), "0", str(config or ""), *args, f"name=killed-{tag}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=WAIT,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    killed = module_home / "runs" / f"killed-{tag}"
    # the kill comes as step kill_at is logged, before that step's checkpoint
    assert load_checkpoint(killed / "ckpt.pt")["step"] == 2 * ((kill_at - 1) // 2), f"killed at step {kill_at}"
    train(load_config(config, [*args, f"name=killed-{tag}"]), progress=False)  # mode auto resumes
    train(load_config(config, [*args, f"name=straight-{tag}"]), progress=False)
    assert_same_run(killed, module_home / "runs" / f"straight-{tag}")


# ---- pauses under torchrun ---------------------------------------------------------------------------------

WORKER = textwrap.dedent("""
    # `python -m nanogpt_lib.cli` as a torchrun worker, recording its pid and its exit status for the test
    import os, sys
    from nanogpt_lib.cli import main
    out = sys.argv[1]
    open(os.path.join(out, f"pid-{os.environ['RANK']}"), "w").write(str(os.getpid()))
    try:
        code = main(sys.argv[2:])
    except SystemExit as e:
        code = e.code
    open(os.path.join(out, f"exit-{os.environ['RANK']}"), "w").write(str(code))
    sys.exit(code)
""")
# No dropout here: every rank draws the same masks, so 2 ranks would not equal 2 accumulated micro-batches.
# 60 steps: long enough that a signal sent after the third record lands mid-run on a fast machine too (at
# 12 steps the whole run could end before the signals arrived).
DDP_STEPS = 60
DDP_RUN = [*GPT2_DROPOUT, "model.dropout=0.0", f"max_steps={DDP_STEPS}", "eval_every=20", "log_every=1", "ckpt_every=5"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(tmp: Path, env: dict[str, str], name: str, nodes: str = "") -> subprocess.Popen:
    """Start one torchrun launcher of the DDP_RUN job in a session of its own (as a terminal job would be).

    ``nodes`` = "PORT:ID" makes it one of two single-process nodes meeting at a c10d rendezvous on 127.0.0.1.
    """
    script = tmp / "worker.py"
    script.write_text(WORKER)
    env = {**env, "OMP_NUM_THREADS": "1"}  # two workers on a small machine
    if nodes:
        port, rdzv_id = nodes.split(":")
        launch = [
            "--nnodes",
            "2",
            "--nproc_per_node",
            "1",
            "--rdzv_backend",
            "c10d",
            "--rdzv_endpoint",
            f"127.0.0.1:{port}",
            "--rdzv_id",
            rdzv_id,
            "--local_addr",
            "127.0.0.1",
            "--rdzv_conf",
            "join_timeout=60,read_timeout=60",
        ]
    else:
        launch = ["--standalone", "--nproc_per_node", "2"]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *launch,
        str(script),
        str(tmp),
        "train",
        "--no-progress",
        "--name",
        name,
        *[x for kv in DDP_RUN for x in ("--set", kv)],
    ]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )


def finish(*launchers: subprocess.Popen) -> list[str]:
    """Each launcher's output once it exits; past WAIT, SIGTERM (torchrun then stops its workers, which live in
    sessions of their own), and SIGKILL a minute later."""
    outputs = []
    for p in launchers:
        try:
            outputs.append(p.communicate(timeout=WAIT)[0])
        except subprocess.TimeoutExpired:
            for q in launchers:
                if q.poll() is None:
                    os.killpg(q.pid, signal.SIGTERM)
            for q in launchers:
                try:
                    q.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(q.pid, signal.SIGKILL)
            raise
    return outputs


def wait_for_records(run: Path, n: int, launchers: tuple[subprocess.Popen, ...]) -> None:
    deadline = time.monotonic() + WAIT
    while not ((run / "metrics.jsonl").is_file() and len(read_metrics(run)) >= n):
        assert time.monotonic() < deadline and all(p.poll() is None for p in launchers), finish(*launchers)
        time.sleep(0.05)


@pytest.fixture(scope="module")
def straight_ddp(module_home) -> Path:
    """The DDP_RUN job from start to end in one go, as one process accumulating 2 micro-batches on one thread:
    bitwise what 2 ranks compute (test_train.py::test_ddp_two_processes_match_one_process_with_accumulation)."""
    train(
        load_config(None, [*DDP_RUN, "grad_accum=2", "threads=1", "name=ddp-straight"]),
        runs_dir=module_home / "runs",
        data_dir=module_home / "data",
        progress=False,
    )
    return module_home / "runs" / "ddp-straight"


@pytest.mark.slow
def test_ctrl_c_under_torchrun_pauses_every_rank_at_one_step_and_resumes_exactly(
    env, module_home, tmp_path, straight_ddp
):
    """The signal reaches torchrun and, directly, both workers; torchrun forwards it once more to each worker."""
    run = module_home / "runs" / "ddp-paused"
    launcher = torchrun(tmp_path, env, "ddp-paused")
    wait_for_records(run, 3, (launcher,))
    os.killpg(launcher.pid, signal.SIGINT)
    for rank in (0, 1):
        os.killpg(int((tmp_path / f"pid-{rank}").read_text()), signal.SIGINT)
    out = finish(launcher)[0]
    # Each worker saw SIGINT twice (ours, then torchrun's); before, the second one aborted the save.
    assert [(tmp_path / f"exit-{r}").read_text() for r in (0, 1)] == [str(EXIT_PAUSED)] * 2, out[-3000:]
    step = load_checkpoint(run / "ckpt.pt")["step"]
    assert 3 <= step < DDP_STEPS and f"paused at step {step}" in out
    assert max(r["step"] for r in read_metrics(run)) == step

    resumed = torchrun(tmp_path, env, "ddp-paused")
    out = finish(resumed)[0]
    assert resumed.returncode == 0, out[-3000:]
    assert_same_run(run, straight_ddp)


@pytest.mark.slow
def test_two_nodes_pause_when_one_node_is_signalled_and_resume_exactly(env, module_home, tmp_path, straight_ddp):
    """Two launchers on this machine act as two nodes; Ctrl-C on node B alone pauses both at one step."""
    run = module_home / "runs" / "two-nodes"
    port = free_port()
    a, b = (torchrun(tmp_path, env, "two-nodes", nodes=f"{port}:pause") for _ in range(2))
    wait_for_records(run, 3, (a, b))
    os.killpg(b.pid, signal.SIGINT)  # node A's launcher and worker get no signal at all
    out = "\n".join(finish(a, b))
    assert [(tmp_path / f"exit-{r}").read_text() for r in (0, 1)] == [str(EXIT_PAUSED)] * 2, out[-3000:]
    assert "exitcode  : 75" in out  # node A's torchrun reports its worker as pre-empted (75), not crashed
    step = load_checkpoint(run / "ckpt.pt")["step"]
    assert 3 <= step < DDP_STEPS and f"paused at step {step}" in out

    port = free_port()
    a, b = (torchrun(tmp_path, env, "two-nodes", nodes=f"{port}:resume") for _ in range(2))
    out = "\n".join(finish(a, b))
    assert a.returncode == b.returncode == 0, out[-3000:]
    assert f"resumed two-nodes at step {step}" in out
    assert_same_run(run, straight_ddp)


# ---- one trainer per run -------------------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    # a trainer that stops after its first evaluation (the on_eval callback), holding the run lock, until told
    # to go on
    import sys
    from nanogpt_lib import train as t
    from nanogpt_lib.config import load_config
    def wait(record):
        print("evaluating", flush=True)
        sys.stdin.readline()
    t.train(load_config(None, sys.argv[1:]), progress=False, on_eval=wait)
""")


def test_a_second_trainer_on_a_run_is_refused_and_a_dead_holders_lock_is_taken_over(env, module_home, capsys):
    args = [*GPT2_DROPOUT, "max_steps=2", "eval_every=1", "name=locked"]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    deadline = threading.Timer(WAIT, holder.kill)  # bounds the reads below
    deadline.start()
    try:
        lines = iter(holder.stdout.readline, "")  # ends when the holder's stdout closes
        assert any(line.strip() == "evaluating" for line in lines)
        with pytest.raises(TrainError, match=f"run 'locked' is in use by another trainer \\(pid {holder.pid}"):
            Trainer(load_config(None, args), progress=False)
        sets = [x for kv in args for x in ("--set", kv)]
        assert main(["train", *sets, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "in use by another trainer" in err  # one line, no traceback
        holder.kill()  # SIGKILL: the OS drops the flock, the pid stays in the file
        holder.wait(timeout=WAIT)
    finally:
        deadline.cancel()
        holder.kill()
        holder.communicate(timeout=WAIT)
    result = train(load_config(None, args), progress=False)
    assert result.status == "finished"
    assert f"taking over the stale lock of process {holder.pid}" in capsys.readouterr().out


def test_a_trainer_refuses_to_go_on_after_another_one_wrote_its_run(env):
    """A notebook's paused Trainer holds no lock between calls; if another trainer wrote the run meanwhile,
    going on would log the same steps twice."""
    cfg = load_config(None, [*GPT2_DROPOUT, "max_steps=2", "eval_every=2", "name=stale"])
    first = Trainer(cfg, progress=False)
    train(cfg, progress=False)
    with pytest.raises(TrainError, match=r"changed by another trainer.*mode resume"):
        first.run()
    first.close()


# ---- resume with changed hyperparameters; restarts; NaN; exit codes ------------------------------------------


def test_changed_hyperparameters_on_resume_are_applied_said_and_logged(env, capsys):
    base = [*TWO_LAYER_RUN, "optimizer=muon", "eval_every=3", "log_every=1", "name=hp"]
    train(load_config(None, [*base, "max_steps=3", "lr=1e-3"]), progress=False)  # a checkpoint at step 3
    new = load_config(
        None, [*base, "max_steps=6", "lr=2e-3", "weight_decay=0.05", "beta2=0.95", "muon_lr=0.03", "muon_momentum=0.9"]
    )
    trainer = Trainer(new, progress=False)
    said = capsys.readouterr().out
    line = next(x for x in said.splitlines() if "hyperparameters" in x)
    for change in (
        "AdamW base_lr 0.001 -> 0.002",
        "AdamW weight_decay 0.1 -> 0.05",
        "AdamW betas (0.9, 0.99) -> (0.9, 0.95)",
        "Muon base_lr 0.02 -> 0.03",
        "Muon momentum 0.95 -> 0.9",
    ):
        assert change in line, line
    trainer.run()
    trainer.close()
    adamw, muon = trainer.optimizers
    assert [g["base_lr"] for g in adamw.param_groups] == [2e-3, 2e-3] and muon.param_groups[0]["base_lr"] == 0.03
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.05, 0.0] and muon.param_groups[0]["momentum"] == 0.9
    for r in [r for r in read_metrics(trainer.run_dir) if r["kind"] == "step" and r["step"] > 3]:
        scale = lr_at(r["step"] - 1, new) / new.lr
        assert r["lr"] == 2e-3 * scale and r["muon_lr"] == 0.03 * scale  # logged == applied, bitwise


def test_a_restart_before_the_first_checkpoint_owns_its_metrics(env, module_home, capsys):
    args = [*GPT2_DROPOUT, "max_steps=4", "eval_every=2", "log_every=1", "ckpt_every=100", "name=restart"]

    def crash(record):
        if record["step"] == 2:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        Trainer(load_config(None, args), progress=False, on_eval=crash).run()
    run = module_home / "runs" / "restart"
    assert not (run / "ckpt.pt").exists() and [r["step"] for r in read_metrics(run) if r["kind"] == "eval"] == [2]
    train(load_config(None, args), progress=False)
    assert "removing metrics.jsonl" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(run) if r["kind"] == "eval"] == [2, 4]
    assert [r["step"] for r in read_metrics(run) if r["kind"] == "step"] == [1, 2, 3, 4]


def test_nan_before_any_checkpoint_does_not_claim_one(env, module_home, monkeypatch):
    real = train_mod.Trainer._train_step
    monkeypatch.setattr(
        train_mod.Trainer, "_train_step", lambda self: real(self) * (float("nan") if self.step == 2 else 1.0)
    )
    with pytest.raises(TrainError, match=r"loss is nan at step 2.*no checkpoint was written yet") as e:
        train(load_config(None, [*GPT2_DROPOUT, "max_steps=6", "ckpt_every=4", "name=nan0"]), progress=False)
    assert "last good checkpoint" not in str(e.value) and not (module_home / "runs" / "nan0" / "ckpt.pt").exists()


def test_cli_pause_exits_75_and_export_best_without_best_is_one_line(env, module_home, monkeypatch, capsys):
    real_log = train_mod.Trainer._log

    def log_then_interrupt(self, record):
        real_log(self, record)
        if record["step"] == 2:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C sends

    monkeypatch.setattr(train_mod.Trainer, "_log", log_then_interrupt)
    sets = [x for kv in [*GPT2_DROPOUT, "max_steps=6", "eval_every=100", "log_every=1"] for x in ("--set", kv)]
    with pytest.raises(SystemExit) as e:
        main(["train", *sets, "--name", "cli-pause", "--no-progress"])
    assert e.value.code == EXIT_PAUSED == 75
    run = module_home / "runs" / "cli-pause"
    assert load_checkpoint(run / "ckpt.pt")["step"] == 2 and not (run / "best").exists()
    capsys.readouterr()
    assert main(["export", str(run), "--which", "best", "--out", str(module_home / "exported")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no best weights" in err and "--which last" in err
    assert not (module_home / "exported").exists()
    assert main(["export", str(run), "--which", "last", "--out", str(module_home / "exported")]) == 0
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert f"{EXIT_PAUSED} paused" in " ".join(capsys.readouterr().out.split())  # in `nanogpt train --help`


@pytest.mark.parametrize("name", ["/tmp/x", "../x", "a/b", "..", "", " ", "a\\b"])
def test_cli_refuses_a_run_name_that_is_not_a_plain_folder(env, capsys, name):
    assert main(["train", "--name", name, "--set", "dataset=txt"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plain folder name" in err


def test_a_second_ctrl_c_waits_for_the_checkpoint_being_written_and_a_launchers_is_ignored():
    from nanogpt_lib.runctl import PauseSignals

    by_hand = PauseSignals(launched=False)
    written = False
    with by_hand.installed():
        signal.raise_signal(signal.SIGINT)
        assert by_hand.requested
        with pytest.raises(KeyboardInterrupt), by_hand.saving():
            signal.raise_signal(signal.SIGINT)  # mid-save: noted, not raised here
            written = True  # the rest of the save still runs
        assert written
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # outside a save, the second Ctrl-C aborts at once
    under_torchrun = PauseSignals(launched=True)
    with under_torchrun.installed():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):
            signal.raise_signal(sig)  # the launcher's forwarded signal, its SIGTERM to survivors: no abort
        assert under_torchrun.requested
