"""A regular (non-editable) `pip install .`: the package then lives in site-packages, away from the clone's
shipped corpus and weights. The project home is then the current folder (or NANOGPT_HOME): run from the
clone, it works; run elsewhere, each command says in one line what to do. The install is real (pip, into
a folder of its own, no dependencies: they are this environment's), about 2 s."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """nanogpt-workbook installed by pip, not editable, into a folder of its own."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "nanogpt_lib", src / "nanogpt_lib", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-compile",
            "--target",
            str(tmp / "site"),
            str(src),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp / "site"


def nanogpt(site: Path, cwd: Path, *argv: str, home: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NANOGPT_HOME"}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1", **({"NANOGPT_HOME": str(home)} if home else {}))
    return subprocess.run(
        [sys.executable, "-m", "nanogpt_lib.cli", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_installed_package_carries_the_tokenizer_files(site):
    files = {p.name for p in (site / "nanogpt_lib" / "gpt2_bpe").iterdir()}
    assert files == {"encoder.json", "vocab.bpe", "LICENSE"}
    assert not (site / "nanogpt_lib" / "trained_model").exists()  # the weights stay in the clone


@pytest.mark.parametrize(
    "argv, what",
    [
        (["sample", "--max-new-tokens", "3"], "the shipped weights (trained_model/) not found"),
        (["prepare"], "the shipped corpus not found"),
    ],
)
def test_away_from_the_clone_a_command_says_what_to_do_in_one_line(site, tmp_path, argv, what):
    proc = nanogpt(site, tmp_path, *argv)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"error: {what}")
    assert f"the project home is {tmp_path} (the current folder" in proc.stderr
    assert "cd into it" in proc.stderr and "NANOGPT_HOME" in proc.stderr


def test_from_the_clone_or_with_nanogpt_home_it_samples(site, tmp_path):
    argv = ("sample", "--prompt", "ROMEO:", "--max-new-tokens", "5", "--seed", "0", "--device", "cpu")
    here = nanogpt(site, REPO, *argv)
    assert here.returncode == 0, here.stderr
    assert here.stdout.startswith("ROMEO:") and len(here.stdout) > len("ROMEO:\n")
    away = nanogpt(site, tmp_path, *argv, home=REPO)
    assert away.returncode == 0 and away.stdout == here.stdout, away.stderr
    where = subprocess.run(
        [sys.executable, "-c", "import nanogpt_lib; print(nanogpt_lib.__file__)"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(site)  # the installed copy ran, not the clone's
