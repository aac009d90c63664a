"""Batches from prepared token files, opened only when they match their ``meta.json``.

Each split is memory-mapped once (nanoGPT reopens the memmap for every batch). Batch ``k`` of a run is a
pure function of ``(seed, split, k, rank)``: a resumed run, or each rank of a distributed one, draws
exactly the batches an uninterrupted run would, and the loader keeps no hidden state to checkpoint.

``meta.json`` vouches for the split files it names: their byte size, dtype, largest token id and sha256, and
for a data set with its own tokenizer, the ranks file and its sha256 (checked at open: ids read with another
tokenizer would train and sample as nonsense without a word of warning).
Opening checks the sizes and the recorded ids, and scans the ids of every split up to
:data:`SCAN_AT_OPEN` tokens (a token id beyond the vocabulary, or a ``max_id`` that understates the data,
would otherwise be an IndexError mid-training); a larger split's batches are checked as they are drawn.
:func:`verify_dataset` (``nanogpt info --verify``) reads every byte to check the hashes and ids. A set that
disagrees is refused with the command that rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import NanoGPTError
from .tokenizer import TokenizerFilesError, for_data, identity, portable

SPLIT_IDS = {"train": 0, "val": 1}
DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
VERIFY_CHUNK = 1 << 24  # bytes read at a time by verify_dataset
DECODE_CHUNK = 1 << 20  # tokens decoded at a time by text_stats (bounded memory on a large split)
SCAN_AT_OPEN = 1 << 27  # tokens (256 MiB of uint16): a split up to this size has its ids checked at open


class DatasetError(NanoGPTError):
    """The prepared dataset is missing or does not fit the request; the message says how to fix it."""


def rebuild_hint(folder: Path, meta: Any = None) -> str:
    """The command that rebuilds the data set in ``folder`` (from its recorded source when known)."""
    source = meta.get("source") if isinstance(meta, dict) else None
    name = folder.name
    if source in (None, "shakespeare") and name == "shakespeare":
        return "rebuild it with `nanogpt prepare --force`"
    return f"rebuild it with `nanogpt prepare {source or 'SOURCE'} --name {name} --force`"


OWN_BPE_NAME = re.compile(r"(.+)-bpe(\d+)")  # a data set of our own BPE: SOURCE-bpeN


def own_bpe_name(base: str, vocab: int) -> str:
    """The data set name of ``base``'s text under our own BPE of ``vocab`` tokens (``shakespeare-bpe2048``):
    ``prepare --vocab N``'s default, the per-minute grid's and the ten-minute recipe's, never GPT-2's own name."""
    return f"{base}-bpe{vocab}"


def prepare_command(name: str) -> str:
    """The command that prepares data set ``name`` (``NAME-bpeN``: source NAME with our own BPE of N tokens)."""
    own = OWN_BPE_NAME.fullmatch(name)
    source, vocab = (own.group(1), f" --vocab {own.group(2)}") if own else (name, "")
    if source == "shakespeare":
        return f"nanogpt prepare{vocab}"
    return f"nanogpt prepare SOURCE{vocab} --name {name}"


def load_meta(folder: str | Path) -> dict[str, Any]:
    """``folder/meta.json``, checked to hold what readers rely on, or a one-line :class:`DatasetError`."""
    folder = Path(folder)
    path = folder / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"no prepared dataset at {folder}: run `{prepare_command(folder.name)}`") from None
    except (ValueError, OSError) as e:
        raise DatasetError(f"{path} is unreadable or not valid JSON ({e}): {rebuild_hint(folder)}") from None
    if not isinstance(meta, dict):
        raise DatasetError(
            f"{path} holds a JSON {type(meta).__name__}, not a data set description: {rebuild_hint(folder)}"
        )
    hint = rebuild_hint(folder, meta)
    for key in ("splits", "vocab_size"):
        if key not in meta:
            raise DatasetError(f"{path} has no {key!r} entry: {hint}")
    if not isinstance(meta["vocab_size"], int) or meta["vocab_size"] <= 0:
        raise DatasetError(f"{path}: vocab_size {meta['vocab_size']!r} is not a positive whole number: {hint}")
    if meta.get("dtype", "uint16") not in DTYPES:
        raise DatasetError(f"{path}: unknown dtype {meta.get('dtype')!r} (expected {' or '.join(DTYPES)}): {hint}")
    splits = meta["splits"]
    for split in SPLIT_IDS:
        info = splits.get(split) if isinstance(splits, dict) else None
        if not isinstance(info, dict) or not isinstance(info.get("bytes"), int):
            raise DatasetError(f"{path}: split {split!r} is missing or has no byte count: {hint}")
        name = info.get("file", f"{split}.bin")
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise DatasetError(f"{path}: split {split!r} names {name!r}, not a file in {folder}: {hint}")
    return meta


def split_file(folder: str | Path, meta: dict[str, Any], split: str) -> Path:
    """The file holding ``split``: the one ``meta.json`` names (``train.bin`` unless a prepare was cut short)."""
    return Path(folder) / meta["splits"][split].get("file", f"{split}.bin")


def check_files(folder: str | Path, meta: dict[str, Any]) -> None:
    """Each split file exists and has the byte size ``meta.json`` records (a whole number of tokens).

    A size mismatch means the files are not the set ``meta.json`` describes: a half-finished or mixed
    prepare, a copy cut short, or an edited file.
    """
    folder = Path(folder)
    hint = rebuild_hint(folder, meta)
    itemsize = np.dtype(DTYPES[meta.get("dtype", "uint16")]).itemsize
    for split in SPLIT_IDS:
        path = split_file(folder, meta, split)
        if not path.is_file():
            raise DatasetError(f"missing split {path}: {hint}")
        size = path.stat().st_size
        if size % itemsize:
            raise DatasetError(
                f"{path} has {size:,} bytes, an odd count for {itemsize}-byte tokens "
                f"(cut short or not a token file): {hint}"
            )
        expected = meta["splits"][split]["bytes"]
        if size != expected:
            raise DatasetError(
                f"{path} has {size:,} bytes but meta.json records {expected:,}: the files are not "
                f"the set meta.json describes (an interrupted or mixed prepare?): {hint}"
            )


def max_token_id(meta: dict[str, Any]) -> int:
    """The largest token id in the data set, as recorded at prepare (``vocab_size - 1`` for older files)."""
    ids = [meta["splits"][s].get("max_id") for s in SPLIT_IDS]
    return max(ids) if all(isinstance(i, int) for i in ids) else meta["vocab_size"] - 1


def data_tokenizer(folder: Path, meta: dict[str, Any]) -> Any:
    """The data set's tokenizer entry with its ranks inline (checked against meta.json's sha256), so that a
    checkpoint can carry it; ``"gpt2"`` for GPT-2's. A missing, altered or unknown one is a DatasetError."""
    entry = meta.get("tokenizer")
    try:
        return portable(entry, folder)
    except TokenizerFilesError as e:
        if isinstance(entry, dict):
            raise DatasetError(str(e)) from None
        raise DatasetError(
            f"{folder} was tokenized with {entry!r}, which this library cannot read: {rebuild_hint(folder, meta)}"
        ) from None


def verify_dataset(folder: str | Path, vocab_size: int | None = None) -> dict[str, Any]:
    """Read every byte of both splits and the tokenizer's ranks: sha256 and largest id must match ``meta.json``
    (and fit ``vocab_size``).

    Returns the meta on success; raises a one-line :class:`DatasetError` naming the file otherwise.
    """
    folder = Path(folder)
    meta = load_meta(folder)
    check_files(folder, meta)
    data_tokenizer(folder, meta)  # an own tokenizer's ranks file: present and the one meta.json names
    hint = rebuild_hint(folder, meta)
    dtype = DTYPES[meta.get("dtype", "uint16")]
    limit = min(meta["vocab_size"], vocab_size or meta["vocab_size"])
    for split in SPLIT_IDS:
        info, path = meta["splits"][split], split_file(folder, meta, split)
        sha, top = hashlib.sha256(), -1
        with open(path, "rb") as fh:
            while chunk := fh.read(VERIFY_CHUNK):
                sha.update(chunk)
                ids = np.frombuffer(chunk, dtype=dtype)
                if ids.size:
                    top = max(top, int(ids.max()))
        if "sha256" in info and sha.hexdigest() != info["sha256"]:
            raise DatasetError(f"{path} does not match the sha256 in meta.json (damaged or replaced): {hint}")
        if top >= limit:
            raise DatasetError(f"{path} holds token id {top}, beyond the vocabulary of {limit}: {hint}")
        if isinstance(info.get("max_id"), int) and top != info["max_id"]:
            raise DatasetError(f"{path}: largest token id {top}, meta.json records {info['max_id']}: {hint}")
    return meta


def _shown(entry: Any) -> str:
    """A tokenizer entry for a message: its name (an own one's ranks are not printed)."""
    return repr(entry.get("name") if isinstance(entry, dict) else entry)


class TokenData:
    """Both splits of ``data/<name>/``, opened once, checked against ``meta.json`` and the model's vocab."""

    def __init__(
        self, folder: str | Path, block_size: int, vocab_size: int | None = None, tokenizer: Any = None
    ) -> None:
        """``tokenizer``: the entry of the tokenizer the model was trained with (``"gpt2"``, or an own one's
        record from a checkpoint or export); None takes the data set's own, whichever it is."""
        self.folder = Path(folder)
        self.meta = load_meta(self.folder)
        self.tokenizer = data_tokenizer(self.folder, self.meta)
        if tokenizer is not None and identity(tokenizer) != identity(self.tokenizer):
            raise DatasetError(
                f"{self.folder} was tokenized with {_shown(self.tokenizer)}, the model expects "
                f"{_shown(tokenizer)}: {rebuild_hint(self.folder, self.meta)} with the model's "
                "tokenizer, or use data tokenized as the model was"
            )
        check_files(self.folder, self.meta)
        top = max_token_id(self.meta)
        if vocab_size is not None and top >= vocab_size:
            raise DatasetError(
                f"{self.folder} has token ids up to {top}, beyond the model's vocab_size {vocab_size}: "
                "raise model.vocab_size or prepare the data with the model's tokenizer"
            )
        self.block_size = block_size
        self.vocab_size = vocab_size
        self.limit = min(self.meta["vocab_size"], vocab_size or self.meta["vocab_size"])  # ids must stay below
        dtype = DTYPES[self.meta.get("dtype", "uint16")]
        self.splits: dict[str, np.memmap] = {}
        self._unscanned: set[str] = set()  # splits too large to scan at open: their batches are checked
        for split in SPLIT_IDS:
            path = split_file(self.folder, self.meta, split)
            n_tokens = path.stat().st_size // np.dtype(dtype).itemsize
            if n_tokens < block_size + 1:
                raise DatasetError(
                    f"split {split!r} of {self.folder} has {n_tokens} tokens, fewer than one block of "
                    f"{block_size} + 1: prepare more text or lower block_size"
                )
            self.splits[split] = np.memmap(path, dtype=dtype, mode="r")
            if n_tokens <= SCAN_AT_OPEN:
                self._check_ids(split, int(self.splits[split].max()), "")
            else:
                self._unscanned.add(split)

    def _check_ids(self, split: str, top: int, where: str) -> None:
        """A largest id ``top`` beyond the vocabulary, or beyond the ``max_id`` meta.json records, is refused."""
        path = split_file(self.folder, self.meta, split)
        hint = rebuild_hint(self.folder, self.meta)
        if top >= self.limit:
            raise DatasetError(f"{path} holds token id {top}{where}, beyond the vocabulary of {self.limit}: {hint}")
        recorded = self.meta["splits"][split].get("max_id")
        if isinstance(recorded, int) and top > recorded:
            raise DatasetError(
                f"{path} holds token id {top}{where} but meta.json records {recorded} as the "
                f"largest: the files are not the set meta.json describes: {hint}"
            )

    def verify(self) -> None:
        """Check every byte against ``meta.json`` (sha256, largest id): see :func:`verify_dataset`."""
        verify_dataset(self.folder, self.vocab_size)

    def __len__(self) -> int:
        return len(self.splits["train"])

    def batch_starts(self, split: str, k: int, batch_size: int, seed: int = 0, rank: int = 0) -> np.ndarray:
        """Start offsets of batch ``k``: drawn from a generator seeded by (seed, split, k, rank) alone."""
        rng = np.random.default_rng([seed, SPLIT_IDS[split], k, rank])
        return rng.integers(0, len(self.splits[split]) - self.block_size, size=batch_size)

    def get_batch(
        self, split: str, k: int, batch_size: int, seed: int = 0, rank: int = 0, device: str | torch.device = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs ``x`` and next-token targets ``y``, int64 ``(batch_size, block_size)``, on ``device``."""
        if split not in SPLIT_IDS:
            raise ValueError(f"unknown split {split!r}; use one of {sorted(SPLIT_IDS)}")
        starts = self.batch_starts(split, k, batch_size, seed, rank)
        # One vectorised gather of (B, T+1) windows, split into contiguous x and y.
        window = self.splits[split][starts[:, None] + np.arange(self.block_size + 1)]
        if split in self._unscanned:
            self._check_ids(split, int(window.max()), f" (in batch {k})")
        xy = torch.from_numpy(window.astype(np.int64))
        x, y = xy[:, :-1].contiguous(), xy[:, 1:].contiguous()
        device = torch.device(device)
        if device.type == "cuda":
            x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        elif device.type != "cpu":
            x, y = x.to(device), y.to(device)
        return x, y


# ---- text statistics: bits per character and per byte ------------------------------------------------------


@dataclass(frozen=True)
class TextStats:
    """How much text a split's tokens stand for: its token count and the characters and UTF-8 bytes of its
    documents' text.

    A loss in nats per token depends on the tokenizer (a bigger vocabulary packs more text into a token), so
    runs with different tokenizers compare only per unit of text. With ``L`` the mean loss in nats per token
    of the split, ``N`` its tokens and ``C`` its characters::

        bits/char = L / ln 2 * N / C        (and bits/byte the same with UTF-8 bytes for C)

    ``N`` counts every token of the split file, the end-of-text separators between documents included: the
    model predicts them and the loss counts them. ``C`` counts the documents' text alone: a separator stands
    for 0 characters. (Example: the shipped Shakespeare val split's 145,921 tokens decode to 493,108
    characters of its 4 plays, 3.38 per token; issue 23's 493,160 also counted the separators' 52 characters
    of ``<|endoftext|>`` text, which no model ever has to spell out.)
    """

    tokens: int
    chars: int
    bytes: int

    def bits_per_char(self, nats_per_token: float) -> float:
        """A mean loss in nats per token of this split, as bits per character of its text."""
        return nats_per_token / math.log(2) * self.tokens / self.chars

    def bits_per_byte(self, nats_per_token: float) -> float:
        """A mean loss in nats per token of this split, as bits per UTF-8 byte of its text."""
        return nats_per_token / math.log(2) * self.tokens / self.bytes


_TEXT_STATS: dict[tuple[str, int, int, int], TextStats] = {}  # per process, keyed by the split file's identity


def text_stats(folder: str | Path, split: str = "val") -> TextStats:
    """The :class:`TextStats` of ``split`` of the prepared data set in ``folder``.

    ``meta.json`` may record the split's text size at prepare time (``chars``, and ``text_bytes`` for its
    UTF-8 bytes: ``bytes`` there is the token file's own size); otherwise the split file is decoded with the
    data set's tokenizer and counted, once per process for a given file (path, inode, size, mtime).
    """
    folder = Path(folder)
    meta = load_meta(folder)
    path = split_file(folder, meta, split)
    dtype = np.dtype(DTYPES[meta.get("dtype", "uint16")])
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DatasetError(f"missing split {path}: {rebuild_hint(folder, meta)}") from None
    n_tokens = st.st_size // dtype.itemsize
    info = meta["splits"][split]
    if isinstance(info.get("chars"), int) and isinstance(info.get("text_bytes"), int):
        return _checked(TextStats(n_tokens, info["chars"], info["text_bytes"]), path)
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _TEXT_STATS:
        _TEXT_STATS[key] = _checked(_count_text(path, dtype, meta), path)
    return _TEXT_STATS[key]


def _count_text(path: Path, dtype: np.dtype, meta: dict[str, Any]) -> TextStats:
    """Decode the split file chunk by chunk, without its separators, and count its text's bytes and characters.

    A chunk may end inside a multi-byte character, so characters are counted as the bytes that begin one
    (every byte but UTF-8's continuation bytes 0b10xxxxxx): for the valid UTF-8 that documents decode to, the
    length of the decoded text.
    """
    enc = for_data(meta, path.parent)
    eot = meta.get("eot_id", enc.eot_token)
    tokens = np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size else np.zeros(0, dtype)
    n_bytes = n_chars = 0
    for start in range(0, len(tokens), DECODE_CHUNK):
        ids = np.asarray(tokens[start : start + DECODE_CHUNK])
        raw = np.frombuffer(enc.decode_bytes(ids[ids != eot].tolist()), dtype=np.uint8)
        n_bytes += raw.size
        n_chars += int(np.count_nonzero((raw & 0xC0) != 0x80))
    return TextStats(len(tokens), n_chars, n_bytes)


def _checked(stats: TextStats, path: Path) -> TextStats:
    if stats.chars <= 0 or stats.bytes <= 0:
        raise DatasetError(f"{path} holds no text (only separators): bits per character are undefined")
    return stats
