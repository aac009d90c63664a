"""Chapter 01 (data prep): count a split from its file, the train/val rule, prepare's files and a batch by hand.

The checks build their own small data sets with ``prepare`` (a few dozen documents, in a temporary folder
removed when the check ends), run the learner's function on them, and compare with what the library wrote or
reads: ``meta.json``, ``train.bin``/``val.bin``, ``prepare.is_val`` and ``TokenData.get_batch``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import random
import shutil
import tempfile
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..data import TokenData
from ..prepare import PrepareConfig, is_val, prepare
from ..tokenizer import EOT_ID
from . import expect, exercise

# Words for the checks' documents: plain English, a few accents and a CJK word (several bytes per character).
_WORDS = ("the king is dead long live the queen to be or not that question naïve façade café 東京 "
          "Horatio Rosencrantz whither art thou 1603 'tis o'clock").split()
N_DOCS = 30


@functools.lru_cache(maxsize=1)
def check_documents() -> tuple[str, ...]:
    """The documents the checks prepare: 30 of them, 10 to 70 words each, the same in every process."""
    rng = random.Random(1603)
    return tuple(f"Document {i}.\n" + " ".join(rng.choice(_WORDS) for _ in range(rng.randint(10, 70)))
                 for i in range(N_DOCS))


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
        prepare(PrepareConfig(source=str(source), name=name, data_dir=root / "data", seed=seed,
                              val_every=val_every, progress=False, num_threads=1))
    return root / "data" / name


def _meta(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "meta.json").read_text())


def _split_ids(folder: Path, split: str) -> np.ndarray:
    return np.fromfile(folder / f"{split}.bin", dtype=np.uint16).astype(np.int64)


# ---- 01.1 -----------------------------------------------------------------------------------------------

@exercise("01.1", "Count a split's tokens and documents from its .bin file",
          "a function count_split(path) -> (n_tokens, n_docs) that reads one .bin file")
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
            expect(isinstance(got, (tuple, list)) and len(got) == 2,
                   f"count_split should return a pair (n_tokens, n_docs), it returned {type(got).__name__}")
            tokens, docs = (int(v) for v in got)
            where = f"{split}.bin of a data set with {N_DOCS} documents (seed {seed}, val_every {val_every})"
            truth = meta["splits"][split]
            expect(tokens != 2 * truth["tokens"],
                   f"on {where}: twice as many tokens as meta.json records: a token is 2 bytes (uint16), not 1")
            expect(tokens == truth["tokens"],
                   f"on {where}: {'more' if tokens > truth['tokens'] else 'fewer'} tokens than meta.json records")
            expect(docs != truth["docs"] + 1,
                   f"on {where}: one document more than meta.json: every document ENDS with <|endoftext|>, "
                   "so count the separators, not the stretches between them")
            expect(docs == truth["docs"],
                   f"on {where}: {'more' if docs > truth['docs'] else 'fewer'} documents than meta.json records")
    return "both splits of two data sets match meta.json."


# ---- 01.2 -----------------------------------------------------------------------------------------------

@exercise("01.2", "The train/val split rule, written yourself",
          "a function my_is_val(doc_index, seed, val_every) -> bool, the same rule as prepare.is_val")
def _split_rule(my_is_val: Any) -> str:
    expect(my_is_val is not is_val, "that is prepare.is_val itself: write the rule yourself")
    n = 0
    for val_every in (2, 3, 7, 10):
        for seed in range(6):
            flags = [bool(my_is_val(i, seed, val_every)) for i in range(12 * val_every)]
            for group in range(12):
                picked = sum(flags[group * val_every:(group + 1) * val_every])
                expect(picked == 1, f"with seed {seed}, val_every {val_every}: group {group} (documents "
                       f"{group * val_every}-{(group + 1) * val_every - 1}) has {picked} validation documents; "
                       "each group of val_every documents has exactly one")
            for i, flag in enumerate(flags):
                expect(flag == is_val(i, seed, val_every),
                       f"document {i} (seed {seed}, val_every {val_every}) is routed to the other split than "
                       "prepare routes it: one per group, but not the same one (check the hash input, the "
                       "digest size and the byte order)")
                n += 1
    return f"all {n:,} (document, seed, val_every) cases agree with prepare.is_val."


# ---- 01.3 -----------------------------------------------------------------------------------------------

def _first_difference(got: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """The first token position where ``got`` and ``truth`` differ, and the document it falls in."""
    n = min(len(got), len(truth))
    diff = np.flatnonzero(got[:n] != truth[:n])
    pos = int(diff[0]) if diff.size else n
    return pos, int(np.count_nonzero(truth[:pos] == EOT_ID))


@exercise("01.3", "Predict prepare's token files",
          "a function split_tokens(docs, seed, val_every) -> (train_ids, val_ids): what prepare writes to "
          "train.bin and val.bin for this list of document texts")
@_in_scratch
def _split_tokens(split_tokens: Any, root: Path) -> str:
    docs = check_documents()
    for seed, val_every in ((0, 10), (1, 3), (5, 2)):
        folder = dataset(root, seed, val_every)
        got = split_tokens(list(docs), seed, val_every)
        expect(isinstance(got, (tuple, list)) and len(got) == 2,
               f"split_tokens should return a pair (train_ids, val_ids), it returned {type(got).__name__}")
        for split, ids in zip(("train", "val"), got):
            mine = np.asarray(ids, dtype=np.int64).ravel()
            truth = _split_ids(folder, split)
            n_docs = int(np.count_nonzero(truth == EOT_ID))
            where = f"seed {seed}, val_every {val_every}: your {split} ids"
            expect(len(mine) != len(truth) - n_docs,
                   f"{where} are one token per document short of {split}.bin: each document is followed by "
                   f"<|endoftext|> (id {EOT_ID})")
            pos, doc = _first_difference(mine, truth)
            if len(mine) != len(truth) or pos < len(truth):
                size = ("the same length as" if len(mine) == len(truth)
                        else f"{'longer' if len(mine) > len(truth) else 'shorter'} than")
                expect(False, f"{where} are {size} {split}.bin and first differ from it at token {pos}, in the "
                       f"split's document {doc}: is that document in the right split, and tokenized with "
                       "nanogpt_lib.tokenizer.encode?")
    return "train.bin and val.bin predicted exactly, for three split settings."


# ---- 01.4 -----------------------------------------------------------------------------------------------

def _is_window(row: np.ndarray, data: np.ndarray) -> bool:
    windows = np.lib.stride_tricks.sliding_window_view(data, len(row))
    return bool((windows == row).all(axis=1).any())


@exercise("01.4", "A training batch by hand from the memmap",
          "a function my_get_batch(folder, split, k, batch_size, block_size, seed) -> (x, y), int64 tensors "
          "equal to TokenData(folder, block_size).get_batch(split, k, batch_size, seed=seed)")
@_in_scratch
def _get_batch(my_get_batch: Any, root: Path) -> str:
    folder = dataset(root, 0, 10)
    cases = (("train", 0, 4, 8, 0), ("val", 3, 5, 16, 7), ("train", 11, 3, 1, 3), ("train", 2, 6, 32, 1))
    for split, k, batch_size, block_size, seed in cases:
        x_true, y_true = TokenData(folder, block_size).get_batch(split, k, batch_size, seed=seed)
        got = my_get_batch(folder, split, k, batch_size, block_size, seed)
        expect(isinstance(got, (tuple, list)) and len(got) == 2,
               f"my_get_batch should return a pair (x, y), it returned {type(got).__name__}")
        x, y = got
        where = f"batch {k} of {split} (batch_size {batch_size}, block_size {block_size}, seed {seed})"
        for name, t in (("x", x), ("y", y)):
            expect(isinstance(t, torch.Tensor), f"{where}: {name} is a {type(t).__name__}, not a torch tensor")
            expect(t.dtype == torch.int64, f"{where}: {name} has dtype {t.dtype}; token ids for embedding "
                   "lookups are int64 (torch.long)")
            expect(tuple(t.shape) == (batch_size, block_size),
                   f"{where}: {name} has shape {tuple(t.shape)}, not (batch_size, block_size)")
        data = _split_ids(folder, split)
        expect(not torch.equal(x, y), f"{where}: y equals x; the targets are the NEXT tokens")
        expect(all(_is_window(row, data) for row in x.numpy()),
               f"{where}: a row of x is not a run of consecutive tokens of {split}.bin")
        if not torch.equal(x, x_true):
            wrong_rows = [r for r in range(batch_size) if not torch.equal(x[r], x_true[r])]
            expect(False, f"{where}: rows {wrong_rows} of x are windows of {split}.bin at other offsets than "
                   "get_batch draws (read TokenData.batch_starts in nanogpt_lib/data.py: what seeds its "
                   "generator, and from which range are the starts drawn?)")
        expect(torch.equal(y[:, :-1], x[:, 1:]), f"{where}: y is not x moved one token to the left")
        expect(torch.equal(y, y_true), f"{where}: the last column of y is not the token after each window")
    return "four batches, both splits, equal to TokenData.get_batch."
