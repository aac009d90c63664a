"""Reference losses: unigram counts, whole-split val loss, the eval command."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from nanogpt_lib import cli
from nanogpt_lib.checkpoint import export_weights
from nanogpt_lib.data import TokenData
from nanogpt_lib.evaluate import own_dataset, reference_losses, unigram_loss, val_loss
from nanogpt_lib.model import GPT
from nanogpt_lib.tokenizer import N_VOCAB

from tiny import TINY_MODEL


@pytest.fixture
def data(home) -> TokenData:
    return TokenData(home / "data" / "txt", 8)


def test_unigram_loss_is_the_smoothed_frequency_cross_entropy(data):
    train, val = np.asarray(data.splits["train"]), np.asarray(data.splits["val"])
    counts = np.bincount(train, minlength=N_VOCAB) + 1.0
    expected = -np.mean([math.log(counts[t] / counts.sum()) for t in val])
    assert unigram_loss(data) == pytest.approx(expected, rel=1e-9)
    assert unigram_loss(data) < math.log(N_VOCAB)


def test_val_loss_covers_the_whole_split_in_windows(data):
    torch.manual_seed(0)
    model = GPT(TINY_MODEL)
    tokens = torch.from_numpy(np.asarray(data.splits["val"]).astype(np.int64))
    n = (len(tokens) - 1) // 8
    logits, _ = model(tokens[: n * 8].view(n, 8), all_logits=True)
    expected = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens[1 : n * 8 + 1])
    assert val_loss(model, data, batch_size=7) == pytest.approx(expected.item(), rel=1e-5)


def test_eval_command_prints_and_writes_the_references(data, home, tmp_path, capsys):
    import json

    torch.manual_seed(0)
    model = GPT(TINY_MODEL)
    export_weights(model, model.config, tmp_path / "w")
    assert (
        cli.main(["eval", "--weights", str(tmp_path / "w"), "--dataset", "txt", "--json", str(tmp_path / "ref.json")])
        == 0
    )
    out = capsys.readouterr().out
    assert "unigram" in out and "untrained" in out
    ref = json.loads((tmp_path / "ref.json").read_text())
    assert ref["uniform"] == pytest.approx(math.log(N_VOCAB))
    assert ref["untrained"] == pytest.approx(ref["trained"], abs=0.05)  # two random inits: both near ln V
    assert abs(ref["untrained"] - math.log(50304)) < 0.1
    assert reference_losses(model, "txt", home / "data")["trained"] == pytest.approx(ref["trained"])


def test_eval_scores_a_model_on_the_plays_under_its_own_tokenizer():
    """`nanogpt eval` with no --dataset: GPT-2's tokens for GPT-2's weights, shakespeare-bpeN for a model of our
    own BPE (the shipped one), never the GPT-2 files for a model whose ids mean other text."""
    model = GPT(TINY_MODEL)
    assert own_dataset(model) == "shakespeare"  # built by hand: no tokenizer recorded, GPT-2's
    model.meta = {"step": 10}  # exported by the trainer from GPT-2 data: no entry
    assert own_dataset(model) == "shakespeare"
    model.meta = {"tokenizer": {"name": "bpe-4096", "sha256": "0" * 64, "vocab_size": 4096}}
    assert own_dataset(model) == "shakespeare-bpe4096"
    assert own_dataset(model, "owt") == "owt-bpe4096"
    assert cli.build_parser().parse_args(["eval"]).dataset is None  # decided from the model, not fixed
