"""Chapter 01's exercise checks: right answers pass, typical wrong ones fail with a reason, placeholders are
"not answered", and no reason gives a number away."""

from __future__ import annotations

import hashlib
import json
import re
import tempfile

import numpy as np
import pytest
import torch

from nanogpt_lib.data import SPLIT_IDS
from nanogpt_lib.exercises import ch01, exercises, verdict
from nanogpt_lib.prepare import is_val
from nanogpt_lib.tokenizer import EOT_ID, encode

from exercise_helpers import todo, wrong


def right_count_split(path):
    ids = np.fromfile(path, dtype=np.uint16)
    return len(ids), int((ids == EOT_ID).sum())


def right_is_val(i, seed, val_every):
    group, slot = divmod(i, val_every)
    digest = hashlib.blake2b(f"{seed}:{group}".encode(), digest_size=8).digest()
    return slot == int.from_bytes(digest, "little") % val_every


def right_split_tokens(docs, seed, val_every):
    out = {"train": [], "val": []}
    for i, doc in enumerate(docs):
        out["val" if is_val(i, seed, val_every) else "train"] += encode(doc) + [EOT_ID]
    return out["train"], out["val"]


def right_get_batch(folder, split, k, batch_size, block_size, seed):
    data = np.memmap(folder / f"{split}.bin", dtype=np.uint16, mode="r")
    rng = np.random.default_rng([seed, SPLIT_IDS[split], k, 0])
    starts = rng.integers(0, len(data) - block_size, size=batch_size)
    rows = torch.from_numpy(np.stack([data[s:s + block_size + 1] for s in starts]).astype(np.int64))
    return rows[:, :-1], rows[:, 1:]


def test_chapter_has_four_exercises_in_order():
    assert [e.id for e in exercises(1)] == ["01.1", "01.2", "01.3", "01.4"]
    for e in exercises(1):
        assert verdict(e.id, todo)[0] is None and verdict(e.id, None)[0] is None


def test_01_1_count_split():
    assert verdict("01.1", right_count_split)[0] is True
    # bytes instead of tokens: caught, and the reason explains the 2 bytes a token
    why = wrong("01.1", lambda p: (len(np.fromfile(p, dtype=np.uint8)), right_count_split(p)[1]))
    assert "2 bytes" in why
    why = wrong("01.1", lambda p: (right_count_split(p)[0], right_count_split(p)[1] + 1))
    assert "ENDS with <|endoftext|>" in why
    wrong("01.1", lambda p: right_count_split(p)[0])  # not a pair
    for why in (why, wrong("01.1", lambda p: (right_count_split(p)[0] - 1, right_count_split(p)[1]))):
        assert not re.search(r"\d{3,}", why)  # no token count in the reason


def test_01_2_split_rule():
    assert verdict("01.2", right_is_val)[0] is True
    assert "itself" in wrong("01.2", is_val)

    def big_endian(i, seed, val_every):
        digest = hashlib.blake2b(f"{seed}:{i // val_every}".encode(), digest_size=8).digest()
        return i % val_every == int.from_bytes(digest, "big") % val_every

    assert "byte order" in wrong("01.2", big_endian)
    assert "exactly one" in wrong("01.2", lambda i, seed, val_every: i % val_every == 0 or i % 7 == 3)


def test_01_3_split_tokens():
    assert verdict("01.3", right_split_tokens)[0] is True

    def no_separator(docs, seed, val_every):
        train, val = right_split_tokens(docs, seed, val_every)
        return [t for t in train if t != EOT_ID], [t for t in val if t != EOT_ID]

    assert "one token per document short" in wrong("01.3", no_separator)

    def swapped(docs, seed, val_every):
        return right_split_tokens(docs, seed, val_every)[::-1]

    why = wrong("01.3", swapped)
    assert "train ids" in why and not re.search(r"\d{3,}", why)

    def every_tenth(docs, seed, val_every):  # a plausible but different rule
        out = {"train": [], "val": []}
        for i, doc in enumerate(docs):
            out["val" if i % val_every == 0 else "train"] += encode(doc) + [EOT_ID]
        return out["train"], out["val"]

    assert "first differ" in wrong("01.3", every_tenth)


def test_01_4_get_batch():
    assert verdict("01.4", right_get_batch)[0] is True

    def int32(*args):
        x, y = right_get_batch(*args)
        return x.int(), y.int()

    assert "int64" in wrong("01.4", int32)

    def same(*args):
        x, _ = right_get_batch(*args)
        return x, x.clone()

    assert "NEXT" in wrong("01.4", same)

    def plain_seed(folder, split, k, batch_size, block_size, seed):
        data = np.memmap(folder / f"{split}.bin", dtype=np.uint16, mode="r")
        starts = np.random.default_rng(seed + k).integers(0, len(data) - block_size, size=batch_size)
        rows = torch.from_numpy(np.stack([data[s:s + block_size + 1] for s in starts]).astype(np.int64))
        return rows[:, :-1], rows[:, 1:]

    assert "other offsets" in wrong("01.4", plain_seed)

    def numpy_out(*args):
        x, y = right_get_batch(*args)
        return x.numpy(), y.numpy()

    assert "not a torch tensor" in wrong("01.4", numpy_out)


def test_checks_leave_no_files_behind(tmp_path, monkeypatch):
    # the data sets are prepared in a temporary folder that is gone when the check returns, right or wrong
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert verdict("01.4", right_get_batch)[0] is True
    assert verdict("01.1", lambda p: (0, 0))[0] is False
    assert list(tmp_path.iterdir()) == []
    folder = ch01.dataset(tmp_path, 1, 3)  # the helper itself prepares where it is told
    assert json.loads((folder / "meta.json").read_text())["request"]["seed"] == 1
