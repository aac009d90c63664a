"""Chapter 01 (data prep): count a split from its file, measure leakage, predict prepare's files, and a
stateless batch loader of your own.

The checks build their own small data sets with ``prepare`` (a few dozen documents, in a temporary folder
removed when the check ends), or arrays of their own the learner never sees, run the learner's function on
them, and compare with what the library wrote, with an exact count, or with the properties a loader must have.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import paths
from ... import prepare as prepare_module
from ...bench.baseline import naive_get_batch
from ...data import TokenData
from ...prepare import PrepareConfig, is_val, prepare
from ...tokenizer import EOT_ID, encode
from . import Wrong, chi2_tail, exercise, expect, one_thread
from .guard import fn

PUBLIC = ("check_documents",)  # a learner may read the checks' documents; every other function here is off


def _prepare_twins() -> list:
    """prepare() and its writer: running them would write the files the answer is asked to predict."""
    return [fn(prepare), fn(prepare_module._tokenize_into), fn(prepare_module._SplitWriter.write)]


# Words for the checks' documents: plain English, a few accents and a CJK word (several bytes per character).
_WORDS = [
    "the",
    "king",
    "is",
    "dead",
    "long",
    "live",
    "the",
    "queen",
    "to",
    "be",
    "or",
    "not",
    "that",
    "question",
    "naïve",
    "façade",
    "café",
    "東京",
    "Horatio",
    "Rosencrantz",
    "whither",
    "art",
    "thou",
    "1603",
    "'tis",
    "o'clock",
]
N_DOCS = 30


@functools.lru_cache(maxsize=1)
def check_documents() -> tuple[str, ...]:
    """The documents the checks prepare: 30 of them, 10 to 70 words each, the same in every process."""
    rng = random.Random(1603)
    return tuple(
        f"Document {i}.\n" + " ".join(rng.choice(_WORDS) for _ in range(rng.randint(10, 70))) for i in range(N_DOCS)
    )


def _in_scratch(checker: Callable[[Any, Path], str]) -> Callable[[Any], str]:
    """Run ``checker(answer, root)`` with a fresh temporary folder ``root``, removed when the check ends."""

    @functools.wraps(checker)
    def run(answer: Any) -> str:
        # ignore_cleanup_errors: a memmap the learner left open must not turn a verdict into a crash
        with tempfile.TemporaryDirectory(prefix="nanogpt-ex01-", ignore_cleanup_errors=True) as root:
            return checker(answer, Path(root))

    return run


def dataset(root: Path, seed: int = 0, val_every: int = 10) -> Path:
    """A data set prepared by the library under ``root`` from :func:`check_documents`, with this split."""
    source = root / "docs.jsonl"
    if not source.exists():
        source.write_text("".join(json.dumps({"text": t}) + "\n" for t in check_documents()), encoding="utf-8")
    name = f"docs-seed{seed}-every{val_every}"
    with contextlib.redirect_stdout(io.StringIO()):  # prepare() says what it wrote; the check prints its own line
        prepare(
            PrepareConfig(
                source=str(source),
                name=name,
                data_dir=root / "data",
                seed=seed,
                val_every=val_every,
                progress=False,
                num_threads=1,
            )
        )
    return root / "data" / name


def _meta(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "meta.json").read_text())


def _split_ids(folder: Path, split: str) -> np.ndarray:
    return np.fromfile(folder / f"{split}.bin", dtype=np.uint16).astype(np.int64)


# ---- 01.1 -----------------------------------------------------------------------------------------------


@exercise(
    "01.1",
    "Count a split's tokens and documents from its .bin file",
    "a function count_split(path) -> (n_tokens, n_docs) that reads one .bin file",
    off=_prepare_twins,
    why="read the counts off the file itself",
)
@_in_scratch
def _count_split(count_split: Any, root: Path) -> str:
    for seed, val_every in ((0, 10), (1, 3)):
        folder = dataset(root, seed, val_every)
        meta = _meta(folder)
        for split in ("train", "val"):
            # A copy on its own, so the answer must come from the file, not from the meta.json beside it.
            alone = root / "alone" / f"{split}-{seed}-{val_every}"
            alone.mkdir(parents=True, exist_ok=True)
            path = alone / f"{split}.bin"
            shutil.copyfile(folder / f"{split}.bin", path)
            got = count_split(path)
            expect(
                isinstance(got, (tuple, list)) and len(got) == 2,
                f"count_split should return a pair (n_tokens, n_docs), it returned {type(got).__name__}",
            )
            tokens, docs = (int(v) for v in got)
            where = f"{split}.bin of a data set with {N_DOCS} documents (seed {seed}, val_every {val_every})"
            truth = meta["splits"][split]
            expect(
                tokens != 2 * truth["tokens"],
                f"on {where}: twice as many tokens as meta.json records: a token is 2 bytes (uint16), not 1",
            )
            expect(tokens == truth["tokens"], f"on {where}: not the number of tokens meta.json records")
            expect(
                docs != truth["docs"] + 1,
                f"on {where}: one document more than meta.json: every document ENDS with <|endoftext|>, "
                "so count the separators, not the stretches between them",
            )
            expect(docs == truth["docs"], f"on {where}: not the number of documents meta.json records")
    return "both splits of two data sets match meta.json."


# ---- 01.2 -----------------------------------------------------------------------------------------------


def _seen(train: np.ndarray, val: np.ndarray, n: int) -> float:
    """The share of val's n-token windows (every start, repeats counted) that occur somewhere in train."""
    seen = {tuple(w) for w in np.lib.stride_tricks.sliding_window_view(train, n).tolist()}
    windows = np.lib.stride_tricks.sliding_window_view(val, n).tolist()
    return sum(tuple(w) in seen for w in windows) / len(windows)


def _leak_cases() -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    """Held-back pairs (the learner never sees them): few symbols (many repeats), a window only at train's
    very end or val's very start, val longer than train, and n = 1."""
    g = np.random.default_rng(1603)
    a = g.integers(0, 3, 400)
    b = g.integers(0, 3, 150)
    c = np.concatenate([g.integers(10, 50, 60), [7, 8, 9]])  # [7, 8, 9] only at train's end
    d = np.concatenate([[7, 8, 9], g.integers(50, 90, 40)])  # ... and at val's start
    e = g.integers(0, 1000, 30)
    return [
        ("two arrays over 3 symbols, n = 3", a, b, 3),
        ("the same, n = 5", a, b, 5),
        ("a window found only at train's last tokens and val's first, n = 3", c, d, 3),
        ("val longer than train, repeated lines in val, n = 2", e, np.tile(e[5:15], 12), 2),
        ("n = 1", b, g.integers(0, 5, 90), 1),
        ("nothing shared, n = 4", e, g.integers(2000, 3000, 50), 4),
    ]


@functools.lru_cache(maxsize=1)
def _plays(k: int = 6) -> tuple[np.ndarray, ...]:
    """The first ``k`` shipped plays as token ids, one array each."""
    files = sorted(paths.shakespeare_dir().glob("*.txt"))[:k]
    return tuple(np.asarray(encode(f.read_text(encoding="utf-8")), dtype=np.int64) for f in files)


@exercise(
    "01.2",
    "Measure leakage: a random cut against the by-document split",
    "a function seen_fraction(train_ids, val_ids, n) -> float: the share of val_ids' n-token windows "
    "(every start, repeats counted) that also occur somewhere in train_ids",
    off=lambda: [fn(is_val), fn(prepare)],
    why="the answer is about windows of tokens, not the split rule",
)
def _leakage(seen_fraction: Any) -> str:
    for what, train, val, n in _leak_cases():
        got = seen_fraction(train.copy(), val.copy(), n)
        expect(
            isinstance(got, (int, float, np.floating)) or (torch.is_tensor(got) and got.numel() == 1),
            f"seen_fraction returned {type(got).__name__}, not a number",
        )
        got, truth = float(got), _seen(train, val, n)
        expect(0.0 <= got <= 1.0, f"on {what}: {got:g} is not a share between 0 and 1")
        # A ratio of two counts (at most 150 windows, so counting anything else moves it by >= 1/150); a float32
        # mean of 0/1 flags is within 1e-7 of it: 1e-6 accepts that and nothing else.
        if abs(got - truth) <= 1e-6:
            continue
        distinct = {tuple(w) for w in np.lib.stride_tricks.sliding_window_view(val, n).tolist()}
        seen = {tuple(w) for w in np.lib.stride_tricks.sliding_window_view(train, n).tolist()}
        expect(
            abs(got - len(distinct & seen) / len(distinct)) > 1e-6,
            f"on {what}: you counted each distinct window of val once; count every window (a line that "
            "comes back twice leaks twice)",
        )
        expect(
            False,
            f"on {what}: your share is not that of val's windows found in train: does your scan reach "
            "the first and the last window of each array?",
        )
    # The experiment: the same plays cut two ways, measured with the learner's own function.
    plays = _plays()
    val_docs = [i for i in range(len(plays)) if is_val(i, 0, len(plays))]
    by_doc = (
        np.concatenate([p for i, p in enumerate(plays) if i not in val_docs]),
        np.concatenate([plays[i] for i in val_docs]),
    )
    stream = np.concatenate(plays)
    chunks = np.array_split(stream, len(stream) // 256)
    picked = set(np.random.default_rng(0).choice(len(chunks), len(chunks) // 6, replace=False).tolist())
    random_cut = (
        np.concatenate([c for i, c in enumerate(chunks) if i not in picked]),
        np.concatenate([chunks[i] for i in sorted(picked)]),
    )
    with one_thread():
        leak_random, leak_doc = (float(seen_fraction(t, v, 8)) for t, v in (random_cut, by_doc))
    return (
        f"On {len(plays)} plays, a sixth held out: a random cut of 256-token pieces leaves {leak_random:.1%} of "
        f"the validation 8-grams already in training, whole plays held out {leak_doc:.1%}. The gap is "
        "text the model could recall rather than predict: names, stage formulas, refrains."
    )


# ---- 01.3 -----------------------------------------------------------------------------------------------


def _first_difference(got: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """The first token position where ``got`` and ``truth`` differ, and the document it falls in."""
    n = min(len(got), len(truth))
    diff = np.flatnonzero(got[:n] != truth[:n])
    pos = int(diff[0]) if diff.size else n
    return pos, int(np.count_nonzero(truth[:pos] == EOT_ID))


@exercise(
    "01.3",
    "Predict prepare's token files",
    "a function split_tokens(docs, seed, val_every) -> (train_ids, val_ids): what prepare writes to "
    "train.bin and val.bin for this list of document texts",
    off=_prepare_twins,
    why="tokenize and route the documents yourself (encode and is_val are allowed)",
)
@_in_scratch
def _split_tokens(split_tokens: Any, root: Path) -> str:
    docs = check_documents()
    for seed, val_every in ((0, 10), (1, 3), (5, 2)):
        folder = dataset(root, seed, val_every)
        got = split_tokens(list(docs), seed, val_every)
        expect(
            isinstance(got, (tuple, list)) and len(got) == 2,
            f"split_tokens should return a pair (train_ids, val_ids), it returned {type(got).__name__}",
        )
        for split, ids in zip(("train", "val"), got):
            mine = np.asarray(ids, dtype=np.int64).ravel()
            truth = _split_ids(folder, split)
            n_docs = int(np.count_nonzero(truth == EOT_ID))
            where = f"seed {seed}, val_every {val_every}: your {split} ids"
            expect(
                len(mine) != len(truth) - n_docs,
                f"{where} are one token per document short of {split}.bin: each document is followed by "
                f"<|endoftext|> (id {EOT_ID})",
            )
            pos, doc = _first_difference(mine, truth)
            if len(mine) != len(truth) or pos < len(truth):
                size = (
                    "the same length as"
                    if len(mine) == len(truth)
                    else f"{'longer' if len(mine) > len(truth) else 'shorter'} than"
                )
                expect(
                    False,
                    f"{where} are {size} {split}.bin and first differ from it at token {pos}, in the "
                    f"split's document {doc}: is that document in the right split, and tokenized with "
                    "nanogpt_lib.tokenizer.encode?",
                )
    return "train.bin and val.bin predicted exactly, for three split settings."


# ---- 01.4 -----------------------------------------------------------------------------------------------

LOADER_DATA = 101  # tokens in the coverage test's array: windows of 8 + 1 tokens start at 0..92, 93 of them
LOADER_BATCHES = 300  # x 32 rows: 9,600 starts, about 103 per start


def _loader_twins() -> list:
    return [fn(TokenData.get_batch), fn(TokenData.batch_starts), fn(naive_get_batch)]


@exercise(
    "01.4",
    "A stateless batch loader of your own",
    "a function my_get_batch(data, k, batch_size, block_size, seed) -> (x, y): batch k of a 1-D token "
    "array, int64 tensors (batch_size, block_size), y the next tokens, a function of (seed, k) alone, every "
    "window equally likely",
    off=_loader_twins,
    why="draw the windows yourself",
)
def _get_batch(my_get_batch: Any) -> str:
    # Distinct token ids, so a row's first token names its start.
    data = np.random.default_rng(7).permutation(50_000)[:LOADER_DATA].astype(np.uint16)
    B, T = 32, 8
    n_starts = LOADER_DATA - T  # a window of T inputs and 1 target: starts 0 .. LOADER_DATA - T - 1
    position = {int(t): i for i, t in enumerate(data)}

    def batch(k: int, seed: int, b: int = B, t: int = T) -> tuple[torch.Tensor, torch.Tensor]:
        got = my_get_batch(data, k, b, t, seed)
        expect(
            isinstance(got, (tuple, list)) and len(got) == 2,
            f"my_get_batch should return a pair (x, y), it returned {type(got).__name__}",
        )
        where = f"batch {k} (batch_size {b}, block_size {t}, seed {seed})"
        for name, v in zip("xy", got):
            expect(isinstance(v, torch.Tensor), f"{where}: {name} is a {type(v).__name__}, not a torch tensor")
            expect(
                v.dtype == torch.int64,
                f"{where}: {name} has dtype {v.dtype}; token ids for embedding lookups are int64 (torch.long)",
            )
            expect(
                tuple(v.shape) == (b, t), f"{where}: {name} has shape {tuple(v.shape)}, not (batch_size, block_size)"
            )
        x, y = got
        expect(not torch.equal(x, y), f"{where}: y equals x; the targets are the NEXT tokens")
        for r in range(b):
            start = position.get(int(x[r, 0]), -1)
            window = torch.from_numpy(data[start : start + t + 1].astype(np.int64))
            expect(
                start >= 0 and len(window) == t + 1 and torch.equal(x[r], window[:-1]),
                f"{where}: row {r} of x is not {t} consecutive tokens of the data followed by one more",
            )
            expect(torch.equal(y[r], window[1:]), f"{where}: row {r} of y is not x's window moved one token on")
        return x, y

    # A function of (seed, k) alone: the same batch whatever was drawn before and whatever the global RNGs hold.
    # The global RNGs are set to other states around the two calls (and restored after the check), so a loader
    # that draws from them cannot pass by chance.
    def global_seeds(seed: int) -> None:
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)

    with torch.random.fork_rng(devices=[]):
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            global_seeds(1)
            first = batch(3, 0)
            for k in range(6):
                batch(k, 1)
            global_seeds(2)
            again = batch(3, 0)
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
    expect(
        torch.equal(first[0], again[0]),
        "batch 3 (seed 0) came out different the second time, after other "
        "batches and another global seed: a resumed run could not see the batches the first run saw. Seed "
        "a generator of your own from (seed, k)",
    )
    rows = {k: batch(k, 0)[0] for k in range(8)}
    expect(
        len({tuple(v[:, 0].tolist()) for v in rows.values()}) == len(rows),
        "two batch numbers k gave the same batch: k must change what is drawn",
    )
    expect(
        not torch.equal(batch(3, 5)[0], first[0]),
        "seed 5 gave the same batch 3 as seed 0: the seed must change what is drawn",
    )
    try:  # block_size = len(data) - 1: one window fits, at start 0; a draw range one short fails here
        batch(0, 0, b=1, t=LOADER_DATA - 1)
    except (ValueError, RuntimeError) as e:
        raise Wrong(
            f"with block_size one less than the data's length exactly one window fits, yet your loader "
            f"failed ({type(e).__name__}: {e}): check the range the starts are drawn from"
        ) from None
    # Every window equally likely: 9,600 starts over 93 positions. Each position is missed by a uniform draw
    # with probability (1 - 1/93)^9600 < 1e-43; the chi-square test below fails a uniform loader with
    # probability 1e-6, and a loader that never draws one window, or draws the first ones twice as often, fails.
    counts = np.zeros(n_starts, dtype=np.int64)
    for k in range(LOADER_BATCHES):
        x, _ = batch(k, 2)
        for t0 in x[:, 0].tolist():
            counts[position[t0]] += 1
    expect(
        counts[-1] > 0,
        f"in {LOADER_BATCHES} batches the window that ends at the data's last token was never "
        "drawn: check the range the starts are drawn from",
    )
    expect(counts[0] > 0, f"in {LOADER_BATCHES} batches the window at the data's first token was never drawn")
    expected = counts.sum() / n_starts
    stat = float(((counts - expected) ** 2 / expected).sum())
    p = chi2_tail(stat, n_starts - 1)
    expect(
        p > 1e-6,
        f"the {counts.sum():,} starts of {LOADER_BATCHES} batches are not uniform over the "
        f"{n_starts} windows (chi-square p = {p:.1e}, below the test's 1e-6): draw every start equally likely",
    )
    return (
        f"batch k depends on (seed, k) alone, every row is a window and its next tokens, and {counts.sum():,} "
        f"draws cover all {n_starts} windows uniformly (chi-square p = {p:.2f}): a resumed run sees the same "
        "batches with no loader state in the checkpoint."
    )
