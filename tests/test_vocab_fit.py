"""Issue 23: the model's vocabulary comes from its data set's tokenizer (padded to a multiple of 64) unless the
config names one; a named one too small for the data is one line, exit 2; evaluation's baselines count the
data set's vocabulary, and data of another tokenizer than the model's is refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nanogpt_lib.cli import main
from nanogpt_lib.config import AUTO_VOCAB, fit_vocab, load_config, padded_vocab
from nanogpt_lib.data import TokenData
from nanogpt_lib.evaluate import reference_losses
from nanogpt_lib.prepare import PrepareConfig, prepare
from nanogpt_lib.sample import load_model

from tiny import SMALL_RUN

OWN_VOCAB = 300  # a few dozen merges of the shared test corpus: trained in milliseconds
TINY = [*SMALL_RUN, "eval_every=2", "ckpt_every=2", "log_every=1", "warmup_steps=1", "max_steps=2", "threads=1"]


@pytest.fixture(scope="module")
def home(module_home: Path) -> Path:
    """NANOGPT_HOME with the shared corpus prepared twice: GPT-2's ids (``txt``) and an own 300-token BPE (``own``)."""
    prepare(
        PrepareConfig(
            source=str(module_home.parent / "txt"),
            data_dir=module_home / "data",
            name="own",
            vocab=OWN_VOCAB,
            progress=False,
        )
    )
    return module_home


def test_the_rule_pads_the_data_vocab_and_keeps_a_named_one():
    assert [padded_vocab(n) for n in (50257, 300, 4096, 4097, 64)] == [50304, 320, 4096, 4160, 64]
    default = load_config(None, [])
    assert default.model.vocab_size == AUTO_VOCAB == 50304
    assert fit_vocab(default, 50257) is default  # GPT-2's data: exactly the model every shipped test expects
    assert fit_vocab(default, OWN_VOCAB).model.vocab_size == 320
    named = load_config(None, ["model.vocab_size=1000"])
    assert fit_vocab(named, OWN_VOCAB) is named  # the user's choice stands (a larger one is allowed)


def test_train_with_no_vocab_set_gets_the_data_sets(home, monkeypatch):
    monkeypatch.setenv("NANOGPT_HOME", str(home))
    assert main(["train", "--no-progress", "--name", "own", *(f"--set={o}" for o in TINY), "--set", "dataset=own"]) == 0
    run = home / "runs" / "own"
    assert json.loads((run / "config.json").read_text())["model"]["vocab_size"] == 320
    model = load_model(run, device="cpu")
    assert model.config.vocab_size == 320 and model.transformer.wte.weight.shape[0] == 320
    # resumed with the same (unset) config: the fitted shape matches the checkpoint's, nothing is refused
    assert (
        main(
            [
                "train",
                "--no-progress",
                "--name",
                "own",
                *(f"--set={o}" for o in TINY),
                "--set",
                "dataset=own",
                "--set",
                "max_steps=3",
            ]
        )
        == 0
    )


def test_a_named_vocab_below_the_data_ids_is_one_line_exit_2(home, monkeypatch, capsys):
    monkeypatch.setenv("NANOGPT_HOME", str(home))
    top = max(s["max_id"] for s in json.loads((home / "data" / "own" / "meta.json").read_text())["splits"].values())
    code = main(
        [
            "train",
            "--no-progress",
            "--name",
            "small",
            *(f"--set={o}" for o in TINY),
            "--set",
            "dataset=own",
            "--set",
            f"model.vocab_size={top}",
        ]
    )  # one row short of the largest id
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"beyond the model's vocab_size {top}" in err
    assert not (home / "runs" / "small" / "ckpt.pt").exists()


def test_eval_baselines_use_the_data_vocab_and_refuse_another_tokenizer(home, monkeypatch, capsys):
    monkeypatch.setenv("NANOGPT_HOME", str(home))
    if not (home / "runs" / "own" / "ckpt.pt").exists():  # run alone (-k): train the own-vocab model here
        assert (
            main(["train", "--no-progress", "--name", "own", *(f"--set={o}" for o in TINY), "--set", "dataset=own"])
            == 0
        )
    model = load_model(home / "runs" / "own", device="cpu")
    with torch.random.fork_rng():
        ref = reference_losses(model, "own", home / "data")
    assert ref["uniform"] == math.log(OWN_VOCAB)  # the tokenizer's 300 tokens, not the model's 320 rows
    data = TokenData(home / "data" / "own", 16)
    counts = np.bincount(np.asarray(data.splits["train"]), minlength=OWN_VOCAB) + 1.0
    assert len(counts) == OWN_VOCAB  # add-one smoothing spreads over exactly the data set's tokens
    expected = -np.mean(np.log(counts / counts.sum())[np.asarray(data.splits["val"])])
    assert ref["unigram"] == pytest.approx(expected, rel=1e-9)  # float64 sums of a few hundred logs
    code = main(["eval", "--no-progress", "--weights", str(home / "runs" / "own"), "--dataset", "txt"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "tokenized with 'gpt2', the model expects 'bpe-300'" in err
