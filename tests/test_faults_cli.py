"""Bad inputs at the command line (issue 25): each ends in one line naming what to fix, exit 2, no traceback and
no library log line before it, and nothing created or left behind (the whole tree is compared before and
after). Each case is one that used to end in a traceback, a vague message, or files left behind.

The table in docs/reliability.md ("Bad inputs tried") lists these cases with their outcome.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from nanogpt_lib import cli, limits
from nanogpt_lib.checkpoint import export_weights, model_state, save_checkpoint
from nanogpt_lib.config import load_config
from nanogpt_lib.model import GPT

from tiny import TINY_MODEL, TINY_RUN, prepared_home

SETS = [*TINY_RUN, "max_steps=2"]
SMALL = [x for kv in SETS for x in ("--set", kv)]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A root with the corpus, a project home with data/txt prepared, and exported tiny weights."""
    root = tmp_path_factory.mktemp("cli-faults")
    prepared_home(root)
    torch.manual_seed(0)
    export_weights(GPT(TINY_MODEL), TINY_MODEL, root / "weights")
    return root


@pytest.fixture
def root(base, tmp_path, monkeypatch) -> Path:
    """A fresh copy of ``base`` per case, with NANOGPT_HOME pointing into it."""
    root = tmp_path / "root"
    shutil.copytree(base, root, symlinks=True)
    monkeypatch.setenv("NANOGPT_HOME", str(root / "home"))
    return root


def tree(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under ``root``, files with (size, mtime): what a case may not change. (A folder's own mtime
    may move: a lock file taken and removed inside it leaves nothing, but touches the folder.)"""
    out: dict[str, tuple[int, int] | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = None if p.is_dir() else (st.st_size, st.st_mtime_ns)
    return out


def edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def fake_run(root: Path) -> Path:
    """A run folder with best weights, as the trainer leaves it (no training needed to export it)."""
    run = root / "home" / "runs" / "r"
    torch.manual_seed(1)
    export_weights(GPT(TINY_MODEL), TINY_MODEL, run / "best", {"step": 2, "run": "r"})
    return run


def train_ckpt_without_rng(root: Path) -> list[str]:
    cfg = load_config(None, [*SETS, "name=norng"])
    state = {
        "model": model_state(GPT(cfg.model)),
        "optimizer": [],
        "step": 1,
        "best_val": None,
        "config": cfg.to_dict(),
    }  # everything but "rng"
    save_checkpoint(root / "home" / "runs" / "norng" / "ckpt.pt", state)
    return ["train", *SMALL, "--name", "norng"]


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def nan_weights(root: Path) -> list[str]:
    model = GPT(TINY_MODEL)
    with torch.no_grad():
        model.transformer.h[0].attn.c_attn.weight[0, 0] = float("nan")
    export_weights(model, TINY_MODEL, root / "nan")
    return ["sample", "--ckpt", str(root / "nan"), "--device", "cpu", "--max-new-tokens", "2"]


def token_beyond_vocab(root: Path) -> list[str]:
    path = root / "home" / "data" / "txt" / "train.bin"
    tokens = np.fromfile(path, dtype=np.uint16)
    tokens[5] = 60000  # same size, meta.json unchanged: it now understates the largest id
    tokens.tofile(path)
    return ["train", *SMALL]


def understated_max_id(root: Path) -> list[str]:
    meta = root / "home" / "data" / "txt" / "meta.json"
    edit_json(meta, lambda m: m["splits"]["val"].update(max_id=m["splits"]["val"]["max_id"] - 1))
    return ["train", *SMALL]


def shape_mismatch(command: str) -> Callable[[Path], list[str]]:
    def setup(root: Path) -> list[str]:
        edit_json(root / "weights" / "config.json", lambda c: c["model"].update(n_embd=32))
        option = "--ckpt" if command == "sample" else "--weights"
        extra = ["--max-new-tokens", "2"] if command == "sample" else ["--dataset", "txt"]
        return [command, option, str(root / "weights"), "--device", "cpu", *extra]

    return setup


CASES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("train --device bogus", lambda r: ["train", *SMALL, "--device", "bogus"], "device 'bogus' is not available"),
    (
        "sample --device bogus",
        lambda r: ["sample", "--ckpt", str(r / "weights"), "--device", "bogus"],
        "device 'bogus' is not available",
    ),
    (
        "eval --device bogus",
        lambda r: ["eval", "--weights", str(r / "weights"), "--dataset", "txt", "--device", "bogus"],
        "device 'bogus' is not available",
    ),
    (
        "eval --device cuda",
        lambda r: ["eval", "--weights", str(r / "weights"), "--dataset", "txt", "--device", "cuda"],
        "device 'cuda' is not available",
    ),
    (
        "sweep --set device=cuda",
        lambda r: ["sweep", "--scale", "tiny", "--out", str(r / "sweep"), "--set", "device=cuda", "--no-progress"],
        "device 'cuda' is not available",
    ),
    ("sample: weights of another shape", shape_mismatch("sample"), "does not fit the model its config describes"),
    ("eval: weights of another shape", shape_mismatch("eval"), "does not fit the model its config describes"),
    ("--config naming a folder", lambda r: ["train", "--config", str(r / "txt")], "is a folder"),
    (
        "TOML model = 5",
        lambda r: ["train", "--config", str(write(r / "m.toml", "model = 5\n"))],
        "model must be a table",
    ),
    (
        "TOML n_embd = 10**12",
        lambda r: [
            "train",
            "--config",
            str(write(r / "big.toml", "[model]\nn_embd = 1000000000000\n")),
            "--set",
            "dataset=txt",
            "--set",
            "device=cpu",
        ],
        "needs at least",
    ),
    (
        "config.json n_embd = 10**7",
        lambda r: (
            edit_json(r / "weights" / "config.json", lambda c: c["model"].update(n_embd=10**7)),
            ["sample", "--ckpt", str(r / "weights"), "--device", "cpu"],
        )[1],
        "needs at least",
    ),
    (
        "sample --num-samples 100000",
        lambda r: [
            "sample",
            "--ckpt",
            str(r / "weights"),
            "--device",
            "cpu",
            "--num-samples",
            "100000",
            "--max-new-tokens",
            "2",
        ],
        "sampling 100,000 texts at once needs at least",
    ),
    (
        "export --out naming a file",
        lambda r: ["export", str(fake_run(r)), "--out", str(write(r / "f", "x"))],
        "is a file, not a folder",
    ),
    (
        "train --export naming a file",
        lambda r: ["train", *SMALL, "--name", "t", "--export", str(write(r / "f", "x"))],
        "is a file, not a folder",
    ),
    (
        "eval --json naming a folder",
        lambda r: [
            "eval",
            "--weights",
            str(r / "weights"),
            "--dataset",
            "txt",
            "--device",
            "cpu",
            "--json",
            str(r / "txt"),
        ],
        "--json",
    ),
    (
        "prepare --data-dir naming a file",
        lambda r: ["prepare", str(r / "txt"), "--data-dir", str(write(r / "f", "x"))],
        "--data-dir",
    ),
    (
        "runs is a file",
        lambda r: (write(r / "home" / "runs", "x"), ["train", *SMALL])[1],
        "is a file, not the folder of runs",
    ),
    (
        "the lock path is a folder",
        lambda r: ((r / "home" / "runs" / ".default.lock").mkdir(parents=True), ["train", *SMALL])[1],
        "is a folder",
    ),
    (
        "a fake .parquet",
        lambda r: ["prepare", str(write(r / "fake.parquet", "not parquet at all\n")), "--data-dir", str(r / "d")],
        "fake.parquet",
    ),
    ("sampling from NaN weights", nan_weights, "NaN or infinite weights"),
    ("token id >= vocab in train.bin", token_beyond_vocab, "holds token id 60000"),
    ("understated max_id in meta.json", understated_max_id, "meta.json records"),
    ("checkpoint without rng", train_ckpt_without_rng, "lacks rng"),
    ("--set seed=-1", lambda r: ["train", *SMALL, "--set", "seed=-1"], "seed must be a whole number from 0"),
    ("--set seed=2**70", lambda r: ["train", *SMALL, "--set", f"seed={2**70}"], "seed must be a whole number from 0"),
    (
        "non-UTF-8 TOML",
        lambda r: ["train", "--config", str(write(r / "latin.toml", b"lr = 1e-3 # \xe9t\xe9\n"))],
        "latin.toml is not UTF-8",
    ),
    (
        'TOML string "4" for an int',
        lambda r: ["train", "--config", str(write(r / "s.toml", 'batch_size = "4"\n'))],
        "batch_size expects int, got the string '4'",
    ),
    (
        "model.logit_softcap=inf",
        lambda r: ["train", *SMALL, "--set", "model.logit_softcap=inf"],
        "model.logit_softcap must be a finite number",
    ),
    ("--mode resume with nothing to resume", lambda r: ["train", *SMALL, "--mode", "resume"], "nothing to resume"),
    ("export runs/nope", lambda r: ["export", str(r / "home" / "runs" / "nope")], "no run folder"),
    (
        "export --out trained_model/ without --force",
        lambda r: ["export", str(fake_run(r)), "--out", str(r / "home" / "trained_model")],
        "--force",
    ),
    ("prepare --name ..", lambda r: ["prepare", str(r / "txt"), "--name", ".."], "plain folder name"),
    (
        "--set dataset=/abs/path",
        lambda r: ["train", *SMALL, "--set", f"dataset={r / 'home' / 'data' / 'txt'}"],
        "dataset must be a plain folder name",
    ),
]


@pytest.mark.parametrize("setup, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_line_exit_2_and_leaves_nothing(root, setup, fragment, capfd, monkeypatch):
    if "cuda" in fragment and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv = setup(root)
    monkeypatch.setattr(limits, "physical_memory", lambda: 16 * 2**30)  # the same refusals on every machine
    before = tree(root)
    capfd.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capfd.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err[-3000:]
    assert fragment in err, err
    assert tree(root) == before, "the refused command created, changed or left files behind"


def test_a_refused_resume_leaves_no_lock_and_a_live_pids_lock_is_not_called_ended(root, capsys):
    runs = root / "home" / "runs"
    runs.mkdir(parents=True)
    assert cli.main(["train", *SMALL, "--mode", "resume"]) == 2
    assert list(runs.iterdir()) == []  # before: runs/.default.lock stayed
    write(runs / ".live.lock", f"{os.getppid()}\n")  # a live process's pid, which holds no lock
    from nanogpt_lib.runctl import RunLock

    lock = RunLock(runs / ".live.lock", "live")
    lock.acquire()
    out = capsys.readouterr().out
    lock.release()
    assert f"stale lock of process {os.getppid()}" in out and "ended" not in out and "running" in out
    assert not (runs / ".live.lock").exists()


def test_the_toml_checks_do_not_refuse_what_overrides_make_valid(tmp_path):
    """The file's types are checked alone; its values only with the overrides (min_lr <= lr holds once lr is set)."""
    toml = write(tmp_path / "c.toml", "min_lr = 5e-3\n[model]\nn_layer = 2\n")
    cfg = load_config(toml, ["lr=1e-2", "batch_size=4"])
    assert (cfg.min_lr, cfg.lr, cfg.batch_size, cfg.model.n_layer) == (5e-3, 1e-2, 4, 2)


def test_no_library_log_line_comes_before_the_error_line(root):
    """In a real process (pytest captures log records, so the in-process cases above cannot see them): datasets
    logs "Failed to read schema from ..." at ERROR level for a fake .parquet before our exception."""
    import subprocess
    import sys

    fake = write(root / "fake.parquet", "not parquet at all\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "nanogpt_lib.cli", "prepare", str(fake), "--data-dir", str(root / "d")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: could not read ") and proc.stderr.count("\n") == 1, (
        proc.stderr
    )
