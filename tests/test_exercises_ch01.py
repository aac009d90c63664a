"""Chapter 01's exercise checks: right answers pass, typical wrong ones fail with a reason, placeholders are
"not answered", and no reason gives a number away."""

from __future__ import annotations

import json
import re
import tempfile

import numpy as np
import torch

from nanogpt_lib.course.exercises import ch01, exercises, verdict
from nanogpt_lib.prepare import is_val
from nanogpt_lib.tokenizer import EOT_ID, encode

from exercise_helpers import todo, wrong


def right_count_split(path):
    ids = np.fromfile(path, dtype=np.uint16)
    return len(ids), int((ids == EOT_ID).sum())


def right_seen_fraction(train, val, n):
    seen = {tuple(w) for w in np.lib.stride_tricks.sliding_window_view(train, n).tolist()}
    windows = np.lib.stride_tricks.sliding_window_view(val, n).tolist()
    return sum(tuple(w) in seen for w in windows) / len(windows)


def right_split_tokens(docs, seed, val_every):
    out = {"train": [], "val": []}
    for i, doc in enumerate(docs):
        out["val" if is_val(i, seed, val_every) else "train"] += [*encode(doc), EOT_ID]
    return out["train"], out["val"]


def right_get_batch(data, k, batch_size, block_size, seed):
    rng = np.random.default_rng([seed, k])  # a generator of its own, from (seed, k) alone
    starts = rng.integers(0, len(data) - block_size, size=batch_size)
    rows = torch.from_numpy(np.stack([data[s : s + block_size + 1] for s in starts]).astype(np.int64))
    return rows[:, :-1], rows[:, 1:]


RIGHT = {
    "01.1": right_count_split,
    "01.2": right_seen_fraction,
    "01.3": lambda *a: right_split_tokens(*a),
    "01.4": right_get_batch,
}


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
    for reason in (why, wrong("01.1", lambda p: (right_count_split(p)[0] - 1, right_count_split(p)[1]))):
        assert not re.search(r"\d{3,}", reason)  # no token count in the reason


def test_01_1_alternatives():
    def by_size(path):  # tokens from the file size, documents by a search
        ids = np.memmap(path, dtype=np.uint16, mode="r")
        return path.stat().st_size // 2, int(np.count_nonzero(ids == EOT_ID))

    def by_bytes(path):  # read as bytes, viewed as little-endian uint16
        ids = np.frombuffer(path.read_bytes(), dtype="<u2")
        return ids.size, sum(1 for t in ids.tolist() if t == 50256)

    assert verdict("01.1", by_size)[0] is True
    assert verdict("01.1", by_bytes)[0] is True


def test_01_2_leakage():
    ok, remark = verdict("01.2", right_seen_fraction)
    assert ok is True and "random cut" in remark

    def with_numpy(train, val, n):  # windows as bytes keys
        def key(a):
            return [w.tobytes() for w in np.lib.stride_tricks.sliding_window_view(a.astype(np.int64), n)]

        seen = set(key(train))
        return float(np.mean([w in seen for w in key(val)]))

    def with_torch(train, val, n):  # unfold, then a sorted search
        t, v = torch.as_tensor(train).long().unfold(0, n, 1), torch.as_tensor(val).long().unfold(0, n, 1)
        both = torch.cat([t, v]).unique(dim=0, return_inverse=True)[1]
        return torch.isin(both[len(t) :], both[: len(t)]).float().mean().item()

    assert verdict("01.2", with_numpy)[0] is True
    assert verdict("01.2", with_torch)[0] is True

    def distinct(train, val, n):  # each distinct val window once
        seen = {tuple(w) for w in np.lib.stride_tricks.sliding_window_view(train, n).tolist()}
        windows = {tuple(w) for w in np.lib.stride_tricks.sliding_window_view(val, n).tolist()}
        return len(windows & seen) / len(windows)

    def short_scan(train, val, n):  # stops one window early in both arrays
        seen = {tuple(train[i : i + n]) for i in range(len(train) - n)}
        windows = [tuple(val[i : i + n]) for i in range(len(val) - n)]
        return sum(w in seen for w in windows) / len(windows)

    truths = {int(100 * right_seen_fraction(t, v, n)) for _, t, v, n in ch01._leak_cases()}
    assert "distinct window" in wrong("01.2", distinct, hidden=tuple(truths - {0}))
    assert "first and the last window" in wrong("01.2", short_scan)
    assert "between 0 and 1" in wrong("01.2", lambda t, v, n: 100 * right_seen_fraction(t, v, n))


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
            out["val" if i % val_every == 0 else "train"] += [*encode(doc), EOT_ID]
        return out["train"], out["val"]

    assert "first differ" in wrong("01.3", every_tenth)


def test_01_3_alternatives():
    def own_rule(docs, seed, val_every):  # the split rule rewritten from meta.json's description, numpy arrays
        import hashlib

        def picked(i):
            digest = hashlib.blake2b(f"{seed}:{i // val_every}".encode(), digest_size=8).digest()
            return i % val_every == int.from_bytes(digest, "little") % val_every

        parts = {True: [], False: []}
        for i, doc in enumerate(docs):
            parts[picked(i)].append(np.array([*encode(doc), EOT_ID], dtype=np.uint16))
        return np.concatenate(parts[False]), np.concatenate(parts[True])

    def batch_encoded(docs, seed, val_every):  # tiktoken's batch encoder, then the routing
        from nanogpt_lib.tokenizer import get_tokenizer

        ids = get_tokenizer().encode_ordinary_batch(list(docs))
        train = [t for i, d in enumerate(ids) if not is_val(i, seed, val_every) for t in [*d, EOT_ID]]
        val = [t for i, d in enumerate(ids) if is_val(i, seed, val_every) for t in [*d, EOT_ID]]
        return train, val

    assert verdict("01.3", own_rule)[0] is True
    assert verdict("01.3", batch_encoded)[0] is True


def test_01_4_stateless_loader():
    ok, remark = verdict("01.4", right_get_batch)
    assert ok is True and "uniformly" in remark

    def with_torch(data, k, batch_size, block_size, seed):  # torch's generator, a gather of windows
        g = torch.Generator().manual_seed(seed * 1_000_003 + k)
        starts = torch.randint(0, len(data) - block_size, (batch_size,), generator=g)
        d = torch.from_numpy(data.astype(np.int64))
        rows = d[starts[:, None] + torch.arange(block_size + 1)]
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()

    def with_hash(data, k, batch_size, block_size, seed):  # Python's random, seeded by a string of (seed, k)
        import random

        rng = random.Random(f"{seed}/{k}")
        starts = [rng.randrange(len(data) - block_size) for _ in range(batch_size)]
        rows = torch.tensor(np.stack([data[s : s + block_size + 1] for s in starts]).astype(np.int64))
        return rows[:, :-1], rows[:, 1:]

    assert verdict("01.4", with_torch)[0] is True
    assert verdict("01.4", with_hash)[0] is True

    def global_rng(data, k, batch_size, block_size, seed):
        starts = np.random.randint(0, len(data) - block_size, size=batch_size)
        rows = torch.from_numpy(np.stack([data[s : s + block_size + 1] for s in starts]).astype(np.int64))
        return rows[:, :-1], rows[:, 1:]

    def one_short(data, k, batch_size, block_size, seed):  # the last window can never be drawn
        starts = np.random.default_rng([seed, k]).integers(0, len(data) - block_size - 1, size=batch_size)
        rows = torch.from_numpy(np.stack([data[s : s + block_size + 1] for s in starts]).astype(np.int64))
        return rows[:, :-1], rows[:, 1:]

    def first_half_twice(data, k, batch_size, block_size, seed):  # starts in the first half twice as likely
        rng = np.random.default_rng([seed, k])
        n = len(data) - block_size
        starts = np.where(
            rng.random(batch_size) < 0.5, rng.integers(0, max(n // 2, 1), batch_size), rng.integers(0, n, batch_size)
        )
        rows = torch.from_numpy(np.stack([data[s : s + block_size + 1] for s in starts]).astype(np.int64))
        return rows[:, :-1], rows[:, 1:]

    def ignores_k(data, k, batch_size, block_size, seed):
        return right_get_batch(data, 0, batch_size, block_size, seed)

    assert "global seed" in wrong("01.4", global_rng)
    assert "exactly one window fits" in wrong("01.4", one_short)
    assert "not uniform" in wrong("01.4", first_half_twice)
    assert "k must change" in wrong("01.4", ignores_k)
    assert "int64" in wrong("01.4", lambda *a: tuple(t.int() for t in right_get_batch(*a)))
    assert "NEXT" in wrong("01.4", lambda *a: (right_get_batch(*a)[0], right_get_batch(*a)[0]))
    assert "not a torch tensor" in wrong("01.4", lambda *a: tuple(t.numpy() for t in right_get_batch(*a)))


def test_01_4_leaves_the_global_rngs_as_they_were():
    import random

    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    assert verdict("01.4", right_get_batch)[0] is True
    assert torch.equal(torch.get_rng_state(), states[0]) and (np.random.get_state()[1] == states[1]).all()
    assert random.getstate() == states[2]


def test_checks_leave_no_files_behind(tmp_path, monkeypatch):
    # the data sets are prepared in a temporary folder that is gone when the check returns, right or wrong
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert verdict("01.3", right_split_tokens)[0] is True
    assert verdict("01.1", lambda p: (0, 0))[0] is False
    assert list(tmp_path.iterdir()) == []
    folder = ch01.dataset(tmp_path, 1, 3)  # the helper itself prepares where it is told
    assert json.loads((folder / "meta.json").read_text())["request"]["seed"] == 1
