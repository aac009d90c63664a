"""`nanogpt doctor`: every topic a learner or teacher checks before class, ok or a FIX with its command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nanogpt_lib import doctor
from nanogpt_lib.model import GPT, GPTConfig
from nanogpt_lib.prepare import PrepareConfig, prepare

REPO = Path(__file__).resolve().parents[1]
TOPICS = (
    "nanogpt",
    "python",
    "torch",
    "device",
    "cpu",
    "bf16",
    "threads",
    "project home",
    "corpus",
    "data",
    "weights",
    "notebooks",
)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A project home with three of the shipped plays and a copy of the shipped weights, nothing prepared."""
    home = tmp_path / "home"
    plays = home / "data" / "shakespeare" / "plays"
    plays.mkdir(parents=True)
    for play in sorted((REPO / "data" / "shakespeare" / "plays").glob("*.txt"))[:3]:
        shutil.copy(play, plays)
    shutil.copytree(REPO / "trained_model", home / "trained_model")
    monkeypatch.setenv("NANOGPT_HOME", str(home))
    return home


def lines(out: str) -> dict[str, str]:
    """{topic: its line} from the report."""
    found = {}
    for line in out.splitlines():
        for topic in TOPICS:
            if line[6:].startswith(topic + " "):
                found.setdefault(topic, line)
    return found


def test_a_ready_home_is_all_set(home, capsys):
    prepare(PrepareConfig(progress=False, val_every=2))  # 3 plays: 1 validation, 2 train
    assert doctor.report(extensions=False) is True
    out = capsys.readouterr().out
    found = lines(out)
    assert set(found) == set(TOPICS), out
    assert all(line.startswith(("ok", "note")) for line in found.values()), out
    assert out.rstrip().endswith("all set")
    assert "3 plays" in found["corpus"] and "data/shakespeare prepared" in found["data"]
    shipped = json.loads((REPO / "trained_model" / "config.json").read_text())
    n_params = GPT(GPTConfig(**shipped["model"])).num_params()  # what the shipped shape gives
    assert "sha256 verified" in found["weights"] and f"{n_params:,} parameters" in found["weights"]
    assert "class " in found["cpu"] and f"({doctor.TORCH_TESTED})" not in found["torch"]
    assert f"CI tests {doctor.TORCH_TESTED}" in found["torch"]


def test_what_needs_doing_is_a_fix_with_its_command(home, capsys):
    """Nothing prepared, and the shipped weights replaced (what an export with --force into trained_model/
    would do): two FIX lines, each with the command, and the report says it is not ready."""
    weights = home / "trained_model" / "gpt2_trained_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    assert doctor.report(extensions=False) is False
    out = capsys.readouterr().out
    found = lines(out)
    assert found["data"].startswith("FIX") and "-> nanogpt prepare" in out
    assert found["weights"].startswith("FIX") and "sha256" in found["weights"]
    assert "-> git checkout -- trained_model/" in out
    assert out.rstrip().endswith("2 thing(s) to fix, each with its command above")


LISTING = (
    "JupyterLab v4.6.6\n"
    "/venv/share/jupyter/labextensions\n"
    "        jupyterlab_pygments v0.3.0 \x1b[32menabled\x1b[0m \x1b[32mOK\x1b[0m (python, jupyterlab_pygments)\n"
    "        jupyterlab-rise v0.43.1 \x1b[32menabled\x1b[0m \x1b[32mOK\x1b[0m (python, jupyterlab_rise)\n"
    "        @jupyterlab/mathjax3-extension v4.3.0 \x1b[32menabled\x1b[0m \x1b[31m X\x1b[0m "
    "(python, jupyterlab-mathjax3)\n"
    "        @jupyter-widgets/jupyterlab-manager v5.0.16 \x1b[31mdisabled\x1b[0m \x1b[32mOK\x1b[0m "
    "(python, jupyterlab_widgets)\n"
)


def test_the_extension_listing_is_read_as_jupyterlab_prints_it():
    assert doctor.parse_labextensions(LISTING) == {
        "jupyterlab_pygments": (True, True),
        "jupyterlab-rise": (True, True),
        "@jupyterlab/mathjax3-extension": (True, False),
        "@jupyter-widgets/jupyterlab-manager": (False, True),
    }
