"""No file touched outside the project's folders (issue 25), and the run lock on every platform (issue 21).

Planted symbolic links (the run lock, a run folder, its best/, an export folder) are refused with one line and
their targets stay as they were; the stale-temp clean-up leaves other programs' files alone; data-set names
are plain folder names; `info --verify` fails on a damaged meta.json; the run lock works where fcntl does not
exist (simulated: filelock then uses its marker file).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from nanogpt_lib import cli
from nanogpt_lib.checkpoint import export_weights
from nanogpt_lib.model import GPT
from nanogpt_lib.prepare import PrepareConfig, PrepareError, prepare

from tiny import TINY_MODEL, TINY_RUN

ROOT = Path(__file__).resolve().parents[1]
SMALL = [x for kv in [*TINY_RUN, "max_steps=2", "eval_every=2"] for x in ("--set", kv)]
needs_symlinks = pytest.mark.skipif(os.name == "nt", reason="creating symbolic links needs privileges on Windows")


@pytest.fixture
def victim(tmp_path) -> Path:
    """Files outside the project that a planted link points at; they must survive byte for byte."""
    folder = tmp_path / "victim"
    folder.mkdir()
    for name in ("precious.txt", "config.json", "metrics.jsonl", "loss.png", "ckpt.prev.pt"):
        (folder / name).write_text(f"the user's own {name}\n")
    (folder / "best").mkdir()
    (folder / "best" / "notes.txt").write_text("mine\n")
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(capfd, *fragments: str) -> None:
    err = capfd.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err[-2000:]
    for fragment in fragments:
        assert fragment in err, err


@needs_symlinks
def test_a_planted_lock_link_is_refused_and_its_target_untouched(home, victim, capfd):
    (home / "runs").mkdir()
    (home / "runs" / ".default.lock").symlink_to(victim / "precious.txt")
    before = snapshot(victim)
    assert cli.main(["train", *SMALL]) == 2
    one_line(capfd, ".default.lock is a symbolic link")
    assert snapshot(victim) == before  # before: truncated to the trainer's pid
    assert not (home / "runs" / "default").exists()


@needs_symlinks
@pytest.mark.parametrize("mode", ["reset", "auto", "new"])
def test_a_planted_run_folder_link_is_refused_and_reset_deletes_nothing(home, victim, capfd, mode):
    (home / "runs").mkdir()
    (home / "runs" / "default").symlink_to(victim, target_is_directory=True)
    before = snapshot(victim)
    assert cli.main(["train", *SMALL, "--mode", mode]) == 2
    one_line(capfd, "runs/default is a symbolic link")
    assert snapshot(victim) == before  # before: reset deleted config.json, metrics.jsonl, ..., best/


@needs_symlinks
def test_a_link_inside_the_run_folder_is_refused_before_reset_deletes_through_it(home, victim, capfd):
    run = home / "runs" / "default"
    run.mkdir(parents=True)
    (run / "best").symlink_to(victim / "best", target_is_directory=True)
    (run / "config.json").write_text("{}")
    before = snapshot(victim)
    assert cli.main(["train", *SMALL, "--mode", "reset"]) == 2
    one_line(capfd, "best is a symbolic link")
    assert snapshot(victim) == before


@needs_symlinks
def test_an_export_into_a_planted_link_is_refused(home, victim, capfd):
    run = home / "runs" / "r"
    export_weights(GPT(TINY_MODEL), TINY_MODEL, run / "best", {"step": 1})
    (run / "export").symlink_to(victim, target_is_directory=True)
    before = snapshot(victim)
    assert cli.main(["export", str(run)]) == 2
    one_line(capfd, "export is a symbolic link")
    assert cli.main(["export", str(run), "--out", str(run / "export")]) == 2
    capfd.readouterr()
    assert snapshot(victim) == before


def test_eval_json_leaves_another_programs_temp_file_alone(home, tmp_path, capfd):
    torch.manual_seed(0)
    export_weights(GPT(TINY_MODEL), TINY_MODEL, tmp_path / "weights")
    out = tmp_path / "reports"
    out.mkdir()
    foreign = [out / ".draft.txt.tmp-999999", out / f".e.json.tmp-{os.getpid() + 10**6}"]
    for f in foreign:
        f.write_text("someone else's half-written file")
    assert (
        cli.main(
            [
                "eval",
                "--weights",
                str(tmp_path / "weights"),
                "--dataset",
                "txt",
                "--device",
                "cpu",
                "--json",
                str(out / "e.json"),
            ]
        )
        == 0
    )
    assert all(f.exists() for f in foreign)  # before: the clean-up deleted the first
    assert json.loads((out / "e.json").read_text())["dataset"] == "txt"


@pytest.mark.parametrize("name", ["/tmp/x", "../../x", "..", ".", "a/b", "", "a\\b"])
def test_prepare_name_is_a_plain_folder_name(home, txt_dir, tmp_path, name, capfd):
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(PrepareError, match="plain folder name"):
        prepare(PrepareConfig(source=str(txt_dir), name=name, data_dir=home / "data", progress=False))
    assert cli.main(["prepare", str(txt_dir), "--name", name]) == 2
    one_line(capfd, "plain folder name")
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written outside data/ (or inside it)


def test_train_dataset_is_a_plain_folder_name(home, capfd):
    for dataset in ("/etc", "../data/txt", ".."):
        assert cli.main(["train", *SMALL, "--set", f"dataset={dataset}"]) == 2
        one_line(capfd, "dataset must be a plain folder name")
    assert not (home / "runs").exists()


@pytest.mark.parametrize(
    "content",
    [b'{"version": 1, "spl', b"", b"[]", b"{}", b'{"name": "t\xe9xt"}'],
    ids=["truncated", "empty", "list", "empty-object", "non-utf8"],
)
def test_info_verify_fails_on_a_damaged_meta_json(home, content, capfd):
    (home / "data" / "txt" / "meta.json").write_bytes(content)
    assert cli.main(["info", "--verify"]) == 2  # before: "no prepared datasets", exit 0
    captured = capfd.readouterr()
    assert "DAMAGED" in captured.out and "txt" in captured.out
    assert captured.err.startswith("error: 1 data set(s) failed verification (txt)") and captured.err.count("\n") == 1


NO_FCNTL = textwrap.dedent("""
    # a platform without fcntl (as on Windows, or a Python built without it): filelock falls back to a marker file
    import sys, warnings
    sys.modules["fcntl"] = None
    warnings.simplefilter("ignore")
    import os, signal
    from pathlib import Path
    import filelock
    assert filelock.FileLock.__name__ == "SoftFileLock", filelock.FileLock
    from nanogpt_lib.runctl import RunLock, TrainError
    path, action = Path(sys.argv[1]), sys.argv[2]
    lock = RunLock(path, "r")
    try:
        lock.acquire()
    except TrainError as e:
        print("refused:", e, flush=True)
        sys.exit(3)
    print("held", flush=True)
    if action == "hold":
        sys.stdin.readline()
        lock.release()
        print("released", flush=True)
    elif action == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    else:
        lock.release()
""")


def test_the_run_lock_works_without_fcntl(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    lock = tmp_path / "runs" / ".r.lock"

    def other(action: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", NO_FCNTL, str(lock), action], capture_output=True, text=True, env=env, timeout=120
        )

    holder = subprocess.Popen(
        [sys.executable, "-c", NO_FCNTL, str(lock), "hold"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout.readline().strip() == "held", holder.stderr.read()
        second = other("release")
        assert second.returncode == 3 and f"in use by another trainer (pid {holder.pid}" in second.stdout, second
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
    finally:
        holder.kill()
        holder.communicate(timeout=60)
    assert other("release").returncode == 0 and not lock.exists()  # free again; the marker is removed
    if hasattr(signal, "SIGKILL"):
        assert other("die").returncode == -signal.SIGKILL and lock.exists()  # a killed holder's marker stays
        assert other("release").returncode == 0  # ... and is taken over: its process is gone


def test_the_command_line_loads_no_lock_or_export_code_to_answer_help():
    """filelock costs about 0.1 s to import (2-core AMD EPYC): the run lock loads it only when taken."""
    code = (
        "import sys; from nanogpt_lib.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('filelock', 'nanogpt_lib.export', 'nanogpt_lib.limits') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout.strip() == "[]", proc.stderr
