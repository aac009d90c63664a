"""The batch loader: deterministic batches from (seed, split, k, rank), correct targets, clear refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nanogpt_lib.bench.baseline import naive_get_batch
from nanogpt_lib.data import DatasetError, TokenData


@pytest.fixture
def prepared(home):
    return home / "data" / "txt"


def test_batch_shapes_and_targets(prepared):
    data = TokenData(prepared, block_size=16)
    x, y = data.get_batch("train", k=0, batch_size=8)
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    assert x.is_contiguous() and y.is_contiguous()
    tokens = np.fromfile(prepared / "train.bin", dtype=np.uint16)
    starts = data.batch_starts("train", 0, 8)
    for row, s in enumerate(starts):
        assert x[row].tolist() == tokens[s : s + 16].tolist()
        assert y[row].tolist() == tokens[s + 1 : s + 17].tolist()


def test_batches_are_a_function_of_seed_k_rank(prepared):
    a, b = TokenData(prepared, 16), TokenData(prepared, 16)
    # a second loader (a resumed run) jumping straight to batch 7 sees what the first saw
    for k in range(5):
        a.get_batch("train", k, 4)
    assert torch.equal(a.get_batch("train", 7, 4)[0], b.get_batch("train", 7, 4)[0])
    x0 = a.get_batch("train", 7, 4, seed=0)[0]
    assert not torch.equal(x0, a.get_batch("train", 8, 4, seed=0)[0])
    assert not torch.equal(x0, a.get_batch("train", 7, 4, seed=1)[0])
    assert not torch.equal(x0, a.get_batch("train", 7, 4, rank=1)[0])
    assert not torch.equal(x0, a.get_batch("val", 7, 4)[0])


def test_every_window_stays_inside_the_split(prepared):
    data = TokenData(prepared, 16)
    n = len(data.splits["val"])
    for k in range(200):
        starts = data.batch_starts("val", k, 32)
        assert starts.min() >= 0 and starts.max() + 16 < n


def test_naive_loader_draws_the_same_kind_of_windows(prepared):
    x, y = naive_get_batch(prepared, "train", 4, 16, np.random.default_rng(0))
    assert x.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1])


def test_missing_dataset_names_prepare(tmp_path):
    with pytest.raises(DatasetError, match=r"no prepared dataset.*`nanogpt prepare SOURCE --name nothing`"):
        TokenData(tmp_path / "nothing", 16)
    # an own-BPE data set's name says its vocabulary: the command prepares exactly that one
    with pytest.raises(DatasetError, match=r"`nanogpt prepare --vocab 2048`$"):
        TokenData(tmp_path / "shakespeare-bpe2048", 16)
    with pytest.raises(DatasetError, match=r"`nanogpt prepare SOURCE --vocab 512 --name txt-bpe512`$"):
        TokenData(tmp_path / "txt-bpe512", 16)
    with pytest.raises(DatasetError, match=r"`nanogpt prepare`$"):
        TokenData(tmp_path / "shakespeare", 16)


def test_missing_split(prepared):
    (prepared / "val.bin").unlink()
    with pytest.raises(DatasetError, match=r"missing split .*val\.bin.*nanogpt prepare"):
        TokenData(prepared, 16)


def test_wrong_tokenizer_or_vocab(prepared):
    with pytest.raises(DatasetError, match="beyond the model's vocab_size 1000"):
        TokenData(prepared, 16, vocab_size=1000)
    meta = json.loads((prepared / "meta.json").read_text())
    meta["tokenizer"] = "cl100k_base"
    (prepared / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="tokenized with 'cl100k_base'"):
        TokenData(prepared, 16)


def test_split_shorter_than_a_block(prepared):
    n_val = len(np.fromfile(prepared / "val.bin", dtype=np.uint16))
    with pytest.raises(DatasetError, match=r"split 'val'.*fewer than one block"):
        TokenData(prepared, block_size=n_val)
    TokenData(prepared, block_size=n_val - 1)  # exactly one block + 1 token is enough


def test_unknown_split(prepared):
    with pytest.raises(ValueError, match="unknown split 'test'"):
        TokenData(prepared, 16).get_batch("test", 0, 2)
