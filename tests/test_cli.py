"""The command line: answers --help without heavy imports, one-line user errors (exit 2), real bugs keep
their traceback, NANOGPT_DEBUG=1 shows it for user errors too."""

from __future__ import annotations

import argparse
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import pytest
import torch

from nanogpt_lib import cli
from nanogpt_lib.checkpoint import CheckpointError, export_weights, save_checkpoint
from nanogpt_lib.data import DatasetError
from nanogpt_lib.model import GPT

from tiny import TINY_MODEL

HEAVY = ("torch", "datasets", "numpy", "tiktoken", "tqdm", "safetensors", "nanogpt_lib.train")

PARSE_ONLY = f"""
import sys
from nanogpt_lib.cli import main
for argv in (["--help"], ["sample", "--help"], ["train", "--help"], ["train", "--mode", "bogus"], ["nonsense"]):
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == (0 if "--help" in argv else 2), (argv, e.code)
    else:
        raise AssertionError(f"{{argv}} did not exit")
print("loaded:", [m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)
"""


def test_help_and_argument_errors_import_nothing_heavy():
    """--help and argument errors are answered by argparse before any command imports torch or datasets."""
    proc = subprocess.run([sys.executable, "-c", PARSE_ONLY], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "loaded: []"
    assert "invalid choice: 'bogus'" in proc.stderr and "usage: nanogpt sample" in proc.stdout


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str, *fragments: str) -> None:
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


@pytest.fixture
def exported(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "weights"
    export_weights(GPT(TINY_MODEL), TINY_MODEL, folder)
    return folder


def test_empty_checkpoint(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "ckpt.pt").write_bytes(b"")
    assert_one_line(
        *run_cli(capsys, "sample", "--weights", str(tmp_path / "run"), "--device", "cpu"),
        "ckpt.pt is corrupt or truncated (the file is empty)",
    )


def test_checkpoint_without_config(tmp_path, capsys):
    save_checkpoint(tmp_path / "run" / "ckpt.pt", {"model": {"w": torch.zeros(2)}, "step": 3})
    assert_one_line(
        *run_cli(capsys, "sample", "--weights", str(tmp_path / "run"), "--device", "cpu"),
        "ckpt.pt has no 'config' entry",
    )


def test_config_json_that_is_a_list(exported, capsys):
    (exported / "config.json").write_text(json.dumps([1, 2, 3]))
    assert_one_line(
        *run_cli(capsys, "sample", "--weights", str(exported), "--device", "cpu"),
        "config.json holds a list, not an object",
    )


def test_config_json_with_bad_settings(exported, capsys):
    (exported / "config.json").write_text(json.dumps({"model": {**TINY_MODEL.to_dict(), "n_layers": 2}}))
    assert_one_line(
        *run_cli(capsys, "sample", "--weights", str(exported), "--device", "cpu"),
        "config.json: bad model settings: unknown GPTConfig key(s) n_layers",
    )


def test_odd_byte_count_in_train_bin(home, exported, capsys):
    with open(home / "data" / "txt" / "train.bin", "ab") as fh:
        fh.write(b"\x01")
    assert_one_line(
        *run_cli(capsys, "eval", "--weights", str(exported), "--dataset", "txt", "--device", "cpu"),
        "train.bin has",
        "an odd count",
        "--force",
    )


def test_meta_json_without_splits(home, exported, capsys):
    meta_file = home / "data" / "txt" / "meta.json"
    meta = json.loads(meta_file.read_text())
    del meta["splits"]
    meta_file.write_text(json.dumps(meta))
    assert_one_line(
        *run_cli(capsys, "eval", "--weights", str(exported), "--dataset", "txt", "--device", "cpu"),
        "meta.json has no 'splits' entry",
        "--force",
    )


@pytest.mark.parametrize(
    "code, fix",
    [
        (errno.ENOSPC, "free some space"),
        (errno.EACCES, "check the permissions"),
        (errno.EROFS, "the file system is read-only"),
    ],
)
def test_os_errors_the_user_can_fix_name_the_path(monkeypatch, capsys, code, fix):
    def fail(args):
        raise OSError(code, os.strerror(code), "/data/x/train.bin")

    monkeypatch.setitem(cli.COMMANDS, "prepare", fail)
    assert_one_line(*run_cli(capsys, "prepare"), f"{os.strerror(code)}: /data/x/train.bin: {fix}")


def test_a_user_error_without_a_message_still_prints_one_line(monkeypatch, capsys):
    def fail(args):
        raise DatasetError()  # the old handler itself failed with IndexError on an empty message

    monkeypatch.setitem(cli.COMMANDS, "prepare", fail)
    assert_one_line(*run_cli(capsys, "prepare"), "error: DatasetError")


def test_unexpected_errors_keep_their_traceback(monkeypatch):
    for exc in (ZeroDivisionError("a bug"), OSError(errno.EIO, "I/O error", "/x")):
        monkeypatch.setitem(cli.COMMANDS, "prepare", lambda args, exc=exc: (_ for _ in ()).throw(exc))
        with pytest.raises(type(exc)):
            cli.main(["prepare"])


def test_nanogpt_debug_shows_the_traceback_of_user_errors(tmp_path, monkeypatch):
    (tmp_path / "ckpt.pt").write_bytes(b"")
    monkeypatch.setenv("NANOGPT_DEBUG", "1")
    with pytest.raises(CheckpointError, match="the file is empty"):
        cli.main(["sample", "--weights", str(tmp_path), "--device", "cpu"])


# ---- one command line: descriptions, defaults, --no-progress, --version ------------------------------

LONG_COMMANDS = ("prepare", "train", "sweep", "eval", "bench")  # minutes on a CPU: each shows progress


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_command_has_a_description_and_every_option_help_with_its_default():
    """Each `nanogpt COMMAND --help` says what the command does, and what each option means and defaults to
    (a flag defaults to off; an option without a fixed default says in words what it does by default)."""
    commands = subparsers()
    assert set(commands) == set(cli.COMMANDS)
    for name, parser in commands.items():
        assert parser.description and len(parser.description) > 30, name
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            shown = formatter._expand_help(action) if action.help else ""
            assert shown, (name, action.option_strings)
            if not isinstance(action, argparse._StoreTrueAction):
                assert "default" in shown, (name, action.option_strings, shown)


def test_help_shows_the_defaults_themselves(capsys):
    with pytest.raises(SystemExit):
        cli.main(["sample", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 200)" in out and "(default: 0.8)" in out and "(default: auto)" in out
    with pytest.raises(SystemExit):
        cli.main(["prepare", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--val-offset" in out and "(default: 0)" in out and "--seed" not in out  # the old spelling is hidden


@pytest.mark.parametrize("command", LONG_COMMANDS)
def test_every_long_command_takes_no_progress(command):
    args = cli.build_parser().parse_args([command, "--no-progress"])
    assert args.no_progress is True


def test_version_names_the_package(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert capsys.readouterr().out.strip() == f"{pyproject['name']} {pyproject['version']}"


@pytest.mark.parametrize("text, expected", [("0", None), ("none", None), ("None", None), ("40", 40)])
def test_top_k_can_be_turned_off(text, expected):
    assert cli.build_parser().parse_args(["sample", "--top-k", text]).top_k == expected


def test_a_negative_top_k_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["sample", "--top-k", "-3"])
    assert exit_.value.code == 2 and "must be positive" in capsys.readouterr().err


def test_one_name_per_option_and_the_old_spellings_still_parse():
    """--weights on sample and eval; --json for a file of figures; prepare's split number is --val-offset.
    The old spellings (sample --ckpt, bench --out, prepare --seed) still work, hidden from --help."""
    parse = cli.build_parser().parse_args
    assert parse(["sample", "--weights", "w"]).weights == Path("w") == parse(["sample", "--ckpt", "w"]).weights
    assert parse(["eval", "--weights", "w", "--json", "f.json"]).json == Path("f.json")
    assert parse(["bench", "--json", "b.json"]).json == Path("b.json") == parse(["bench", "--out", "b.json"]).json
    assert parse(["prepare", "--val-offset", "3"]).val_offset == 3 == parse(["prepare", "--seed", "3"]).val_offset
    assert parse(["prepare"]).val_offset == 0


def test_one_sample_runs_on_one_thread_by_default(exported, capsys):
    """The measured default (cli.SAMPLE_THREADS); --threads overrides it."""
    argv = ["sample", "--weights", str(exported), "--device", "cpu", "--max-new-tokens", "2", "--prompt", "a"]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert cli.main([*argv, "--seed", "0"]) == 0
        assert torch.get_num_threads() == cli.SAMPLE_THREADS == 1
        assert cli.main([*argv, "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
