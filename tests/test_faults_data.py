"""Fault injection for data sets and checkpoints: errors and SIGKILL between writes, damaged bytes, full disks.

Each test breaks things the way a user's machine does and checks the promise: the old data set intact or
the new one complete (never a mix, and a mix is refused), a loadable checkpoint after any crash, damaged
checkpoints replaced by the previous good one, and a one-line error naming the file and the fix.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from nanogpt_lib import files
from nanogpt_lib import prepare as prep
from nanogpt_lib.checkpoint import CheckpointError, checkpoint_problem, load_checkpoint, previous_path, save_checkpoint
from nanogpt_lib.cli import main
from nanogpt_lib.data import DatasetError, TokenData, verify_dataset
from nanogpt_lib.files import AtomicWriteError, atomic_write_text
from nanogpt_lib.prepare import PrepareConfig, PrepareError, prepare

from fault_helpers import KILL_AT_NTH_REPLACE, Crash, crash_at

DATA_FILES = ["meta.json", "train.bin", "val.bin"]


def splits_of(folder: Path) -> dict[str, np.ndarray]:
    """What a trainer reads from ``folder``: the split files meta.json names, checked by TokenData."""
    data = TokenData(folder, block_size=4)
    return {split: np.array(data.splits[split]) for split in ("train", "val")}


def which_set(got: dict[str, np.ndarray], refs: dict[int, dict[str, np.ndarray]]) -> list[int]:
    return [seed for seed, ref in refs.items() if all(np.array_equal(got[s], ref[s]) for s in ref)]


@pytest.fixture
def two_sets(txt_dir, tmp_path) -> dict[int, dict[str, np.ndarray]]:
    """The corpus prepared with seeds 0 and 1: different validation documents, so both splits differ."""
    refs = {}
    for seed in (0, 1):
        prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / f"ref{seed}", seed=seed))
        refs[seed] = splits_of(tmp_path / f"ref{seed}" / "txt")
    for split in ("train", "val"):  # a mix of the two would show in sizes and in content
        assert refs[0][split].size != refs[1][split].size
    return refs


# ---- prepare publishes a data set as one unit ------------------------------------------------------


def test_crash_at_every_step_of_a_rebuild_leaves_the_old_or_the_new_set(txt_dir, tmp_path, monkeypatch, two_sets):
    data_dir, out = tmp_path / "d", tmp_path / "d" / "txt"
    outcomes = []
    for at in range(1, 40):
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.copytree(tmp_path / "ref0", data_dir)  # the old set, as prepare(seed=0) wrote it
        with monkeypatch.context() as m:  # every rename and link prepare makes, in turn, is a crash point
            crash_at(at, m)
            try:
                prepare(PrepareConfig(source=str(txt_dir), data_dir=data_dir, seed=1, force=True))
                finished = True
            except Crash:
                finished = False
        found = which_set(splits_of(out), two_sets)
        assert len(found) == 1, f"crash at step {at}: the files TokenData opened are neither set"
        outcomes.append(found[0])
        prepare(PrepareConfig(source=str(txt_dir), data_dir=data_dir, seed=1))  # finishes or redoes the job
        assert sorted(p.name for p in out.iterdir()) == DATA_FILES
        assert which_set(splits_of(out), two_sets) == [1]
        if finished:
            break
    assert finished
    # the old set until the commit, the new one from then on; at least 3 crash points on each side
    assert outcomes[:-1] == sorted(outcomes[:-1]) and outcomes.count(0) >= 3 and outcomes.count(1) >= 3


KILL_SCRIPT = (
    KILL_AT_NTH_REPLACE
    + """
from nanogpt_lib.prepare import PrepareConfig, prepare
prepare(PrepareConfig(source=sys.argv[1], data_dir=sys.argv[2], seed=1, force=True))
"""
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX")
@pytest.mark.parametrize("at, expected", [(2, 0), (5, 1)], ids=["before-commit", "after-commit-mid-rename"])
def test_sigkill_between_writes(txt_dir, tmp_path, two_sets, at, expected):
    """A real kill (no finally blocks run): rename 2 is before meta.json commits the new set; rename 5 is
    after train.bin got the new content and before val.bin did."""
    data_dir, out = tmp_path / "d", tmp_path / "d" / "txt"
    prepare(PrepareConfig(source=str(txt_dir), data_dir=data_dir, seed=0))
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(at), str(txt_dir), str(data_dir)], capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert sorted(p.name for p in out.iterdir()) != DATA_FILES  # the killed run left its files behind
    assert which_set(splits_of(out), two_sets) == [expected]
    if expected == 1:  # train.bin and val.bin by name are a mix here; meta.json names the complete set
        mixed = {s: np.fromfile(out / f"{s}.bin", dtype=np.uint16) for s in ("train", "val")}
        assert which_set(mixed, two_sets) == []
    prepare(PrepareConfig(source=str(txt_dir), data_dir=data_dir, seed=1))  # tidies up after the dead run
    assert sorted(p.name for p in out.iterdir()) == DATA_FILES
    assert which_set(splits_of(out), two_sets) == [1]


def test_tokendata_refuses_a_mixed_set(txt_dir, tmp_path, two_sets):
    """What an unsafe prepare leaves (new train.bin beside the old val.bin and meta.json) is refused."""
    old, new = tmp_path / "ref0" / "txt", tmp_path / "ref1" / "txt"
    shutil.copy(new / "train.bin", old / "train.bin")
    with pytest.raises(
        DatasetError,
        match=r"train\.bin has [\d,]+ bytes but meta.json records .*"
        r"interrupted or mixed prepare.*nanogpt prepare .* --name txt --force",
    ):
        TokenData(old, 4)


def test_odd_byte_count_names_the_file(tmp_path, txt_dir):
    prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d"))
    with open(tmp_path / "d" / "txt" / "train.bin", "ab") as fh:
        fh.write(b"\x07")
    with pytest.raises(DatasetError, match=r"txt/train\.bin has [\d,]+ bytes, an odd count for 2-byte tokens"):
        TokenData(tmp_path / "d" / "txt", 4)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.pop("splits"), "has no 'splits' entry"),
        (lambda m: m.pop("vocab_size"), "has no 'vocab_size' entry"),
        (lambda m: m["splits"].pop("val"), "split 'val' is missing"),
        (lambda m: m["splits"]["train"].update(file="../elsewhere.bin"), "not a file in"),
        (lambda m: m.update(dtype="float32"), "unknown dtype 'float32'"),
    ],
)
def test_incomplete_meta_is_a_one_line_error(tmp_path, txt_dir, edit, message):
    prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d"))
    path = tmp_path / "d" / "txt" / "meta.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=f"meta.json.*{message}.*--force") as info:
        TokenData(tmp_path / "d" / "txt", 4)
    assert "\n" not in str(info.value)
    path.write_text("[1, 2]")
    with pytest.raises(DatasetError, match="holds a JSON list, not a data set description"):
        TokenData(tmp_path / "d" / "txt", 4)


def test_token_ids_beyond_the_model_vocab(tmp_path, txt_dir):
    meta = prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d"))
    top = max(meta["splits"][s]["max_id"] for s in ("train", "val"))
    assert top == max(
        int(np.fromfile(tmp_path / "d" / "txt" / f"{s}.bin", dtype=np.uint16).max()) for s in ("train", "val")
    )
    TokenData(tmp_path / "d" / "txt", 4, vocab_size=top + 1)  # the largest id just fits
    with pytest.raises(DatasetError, match=f"token ids up to {top}, beyond the model's vocab_size {top}"):
        TokenData(tmp_path / "d" / "txt", 4, vocab_size=top)


def test_verify_reads_every_byte(tmp_path, txt_dir, capsys):
    prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d"))
    folder = tmp_path / "d" / "txt"
    assert verify_dataset(folder)["name"] == "txt"
    assert main(["info", "--data-dir", str(tmp_path / "d"), "--verify"]) == 0
    assert "verified" in capsys.readouterr().out
    tokens = np.fromfile(folder / "train.bin", dtype=np.uint16)
    tokens[len(tokens) // 2] = 11 if tokens[len(tokens) // 2] != 11 else 13  # a valid id: opening cannot notice
    tokens.tofile(folder / "train.bin")
    TokenData(folder, 4)
    with pytest.raises(DatasetError, match=r"train\.bin does not match the sha256 in meta.json.*--force"):
        TokenData(folder, 4).verify()
    assert main(["info", "--data-dir", str(tmp_path / "d"), "--verify"]) == 2
    out, err = capsys.readouterr()
    assert "FAILED" in out and err.startswith("error: 1 data set(s) failed verification (txt)") and err.count("\n") == 1
    meta = json.loads((folder / "meta.json").read_text())
    del meta["splits"]["train"]["sha256"]  # without a hash to compare, the id scan still catches it
    (folder / "meta.json").write_text(json.dumps(meta))
    tokens[len(tokens) // 2] = 60000
    tokens.tofile(folder / "train.bin")
    with pytest.raises(DatasetError, match=r"train\.bin holds token id 60000, beyond the vocabulary of 50257"):
        verify_dataset(folder)


def test_disk_full_during_prepare_keeps_the_previous_set(txt_dir, tmp_path, monkeypatch, capsys):
    prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d", chunk_chars=200))
    out = tmp_path / "d" / "txt"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_write, calls = prep._SplitWriter.write, {"n": 0}

    def write(self, docs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what a write to a full disk raises
        real_write(self, docs)

    monkeypatch.setattr(prep._SplitWriter, "write", write)
    with pytest.raises(
        PrepareError, match=f"{os.strerror(errno.ENOSPC)}: {out}: free some space.*previous data set, if any, is intact"
    ):
        prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d", chunk_chars=200, force=True))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    calls["n"] = 2  # the next write fails: the command line says the same in one line
    assert main(["prepare", str(txt_dir), "--data-dir", str(tmp_path / "d"), "--force"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "intact" in err


# ---- stale temporary files ----------------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_stale_tmp_files_of_dead_writers_are_removed(tmp_path):
    """Only our own temporary files (tagged nanogpt-tmp) of the file being written, and only once their writer
    is gone: another program's temporary files in the same folder survive (issue 25)."""
    dead, alive = dead_pid(), os.getppid()
    ours_dead = f".config.json.nanogpt-tmp-{dead}"
    kept = [
        f".config.json.nanogpt-tmp-{alive}",
        f".other.json.nanogpt-tmp-{dead}",
        f".draft.txt.tmp-{dead}",
        ".draft.txt.tmp-999999",
        f".config.json.tmp-{dead}",
        "notes.tmp-1",
    ]
    for name in [ours_dead, *kept]:
        (tmp_path / name).write_bytes(b"partial")
    atomic_write_text(tmp_path / "config.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["config.json", *kept])
    assert files.clean_stale_tmp(tmp_path) == [tmp_path / f".other.json.nanogpt-tmp-{dead}"]  # a folder we own
    assert (tmp_path / ".draft.txt.tmp-999999").exists()


# ---- checkpoints: verified, rotated, fallen back on ----------------------------------------------


def state(step: int) -> dict:
    """A small training-checkpoint-shaped state; the tensor fills the middle of the file."""
    return {"model": {"w": torch.full((64, 64), float(step))}, "step": step, "config": {"model": {}}}


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip-middle":
        for i in range(len(data) // 2, len(data) // 2 + 8):
            data[i] ^= 0xFF
    elif how == "flip-pickle":  # damaged bytes inside data.pkl: unpickling them fails like a refused object
        with zipfile.ZipFile(path) as zf:
            info = next(i for i in zf.infolist() if i.filename.endswith("data.pkl"))
        name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
        start = info.header_offset + 30 + name_len + extra_len  # torch pads the local header for alignment
        data[start + 2] = ord("~")  # an opcode pickle does not know
    elif how == "truncated":
        data = data[: len(data) // 2]
    elif how == "empty":
        data = bytearray()
    path.write_bytes(bytes(data))


HOW = ["flip-middle", "flip-pickle", "truncated", "empty"]


@pytest.mark.parametrize("how", HOW)
def test_damaged_newest_falls_back_to_the_previous(tmp_path, capsys, how):
    ckpt = tmp_path / "ckpt.pt"
    save_checkpoint(ckpt, state(1))
    save_checkpoint(ckpt, state(2))
    assert load_checkpoint(previous_path(ckpt))["step"] == 1
    damage(ckpt, how)
    assert checkpoint_problem(ckpt)
    loaded = load_checkpoint(ckpt)
    assert loaded["step"] == 1 and torch.equal(loaded["model"]["w"], state(1)["model"]["w"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "using the previous checkpoint ckpt.prev.pt (step 1)" in err
    assert "pickled" not in err


@pytest.mark.parametrize("how", HOW)
def test_damaged_without_a_previous_is_a_clear_error(tmp_path, how):
    ckpt = tmp_path / "ckpt.pt"
    save_checkpoint(ckpt, state(1))
    damage(ckpt, how)
    with pytest.raises(CheckpointError, match=r"corrupt or truncated .*no previous checkpoint ckpt\.prev\.pt") as info:
        load_checkpoint(ckpt)
    assert "pickled" not in str(info.value) and "\n" not in str(info.value)


def test_real_pickled_objects_are_refused_not_fallen_back_on(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    ckpt = tmp_path / "ckpt.pt"
    save_checkpoint(ckpt, state(1))
    save_checkpoint(ckpt, state(2))
    torch.save({"model": Evil()}, ckpt)
    assert checkpoint_problem(ckpt) is None  # intact bytes: it is the content that is refused
    with pytest.raises(CheckpointError, match="pickled Python objects, which are refused"):
        load_checkpoint(ckpt)


def test_rotation_never_keeps_a_damaged_checkpoint_as_previous(tmp_path, capsys):
    ckpt = tmp_path / "ckpt.pt"
    for step in (1, 2, 3):
        save_checkpoint(ckpt, state(step))
    assert load_checkpoint(previous_path(ckpt))["step"] == 2
    damage(ckpt, "flip-middle")
    save_checkpoint(ckpt, state(4))  # the damaged step 3 is not rotated in: step 2 stays the fallback
    assert load_checkpoint(ckpt)["step"] == 4 and load_checkpoint(previous_path(ckpt))["step"] == 2
    assert capsys.readouterr().err == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.prev.pt", "ckpt.pt"]


def test_a_runs_first_save_drops_a_previous_left_by_an_earlier_run(tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    save_checkpoint(ckpt, state(7))
    save_checkpoint(ckpt, state(8))
    ckpt.unlink()  # what --mode reset does
    save_checkpoint(ckpt, state(1))
    assert not previous_path(ckpt).exists()


def test_crash_at_every_step_of_a_save_leaves_a_good_checkpoint(tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "ckpt.pt"
    for at in range(1, 20):
        for p in tmp_path.iterdir():
            p.unlink()
        save_checkpoint(ckpt, state(1))
        save_checkpoint(ckpt, state(2))
        with monkeypatch.context() as m:
            crash_at(at, m)
            try:
                save_checkpoint(ckpt, state(3))
                finished = True
            except Crash:
                finished = False
        newest, prev = load_checkpoint(ckpt)["step"], load_checkpoint(previous_path(ckpt))["step"]
        assert (newest, prev) in ((2, 1), (2, 2), (3, 2)), f"crash at step {at}"
        assert capsys.readouterr().err == ""  # never a damaged newest
        if finished:
            break
    assert finished and (newest, prev) == (3, 2) and at >= 3


class FullDisk(io.FileIO):
    """A file on a disk with 4 KiB free."""

    def write(self, data) -> int:
        if self.tell() + len(data) > 4096:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_disk_full_during_a_checkpoint_write(tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt.pt"
    save_checkpoint(ckpt, state(1))
    monkeypatch.setattr(files, "open", lambda path, mode: FullDisk(path, "w"), raising=False)
    with pytest.raises(
        AtomicWriteError, match=f"{os.strerror(errno.ENOSPC)}: {ckpt}: free some space.*the previous ckpt.pt is intact"
    ) as info:
        save_checkpoint(ckpt, state(2))
    assert info.value.errno == errno.ENOSPC and "\n" not in str(info.value)
    monkeypatch.undo()
    assert load_checkpoint(ckpt)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs, where mounting is allowed (root on Linux); the injected-ENOSPC tests run everywhere."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if (
        sys.platform != "linux"
        or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode
    ):
        pytest.skip("mounting a tmpfs needs root on Linux")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_real_full_disk(small_disk, tmp_path):
    corpus = tmp_path / "big"  # about 120 KiB of tokens: more than the disk holds
    corpus.mkdir()
    for i in range(12):
        (corpus / f"{i}.txt").write_text(f"doc {i} " + " ".join(f"w{j}" for j in range(2500)))
    prepare(PrepareConfig(source=str(corpus), data_dir=small_disk, max_docs=2, val_every=2))
    with pytest.raises(PrepareError, match=r"No space left on device: .*big.*previous data set, if any, is intact"):
        prepare(PrepareConfig(source=str(corpus), data_dir=small_disk, val_every=2, force=True))
    assert sorted(p.name for p in (small_disk / "big").iterdir()) == DATA_FILES
    assert verify_dataset(small_disk / "big")["request"]["max_docs"] == 2
    ckpt = small_disk / "ckpt.pt"
    save_checkpoint(ckpt, state(1))
    with pytest.raises(AtomicWriteError, match=r"No space left on device: .*ckpt\.pt.*the previous ckpt\.pt is intact"):
        save_checkpoint(ckpt, {**state(2), "big": torch.zeros(64 * 1024)})
    assert load_checkpoint(ckpt)["step"] == 1
