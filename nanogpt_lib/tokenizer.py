"""Tokenizers: GPT-2's BPE built offline, and byte-level BPEs trained on a data set's own text.

tiktoken's ``get_encoding("gpt2")`` downloads ``encoder.json`` and ``vocab.bpe`` on first use, which
fails without internet. This package ships byte-identical copies of both files in ``gpt2_bpe/`` (OpenAI's
GPT-2 files, MIT; see ``gpt2_bpe/LICENSE``), so we verify them against the sha256 hashes tiktoken itself
uses for gpt2 and build the same Encoding from them with tiktoken's own data-gym loader. Nothing here
touches the network, and no third package is needed for two data files.

A data set may bring its own tokenizer instead (``nanogpt prepare --vocab N``): ``rustbpe`` trains the merges
on the train split with GPT-2's pre-split pattern, and the ranks are kept as a small text file in tiktoken's
format (one ``base64(token) rank`` line each). Its entry (:func:`entry_for`) names the file and its sha256;
:func:`resolve` turns an entry into the ``tiktoken.Encoding`` after checking the checksum, whether the ranks
lie in a data folder, an export folder, or inline in a training checkpoint (:func:`portable`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from .errors import NanoGPTError

EOT_TOKEN = "<|endoftext|>"
EOT_ID = 50256
N_VOCAB = 50257
NAME = "gpt2"

# The hashes tiktoken_ext.openai_public.gpt2 checks its downloads against (a test keeps them in sync).
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"

# GPT-2's pre-tokenisation split pattern (contractions, letters, numbers, other, whitespace).
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


class TokenizerFilesError(NanoGPTError, RuntimeError):
    """The GPT-2 BPE files are missing or are not the genuine ones."""


def bpe_files_dir() -> Path:
    """Folder holding ``encoder.json`` and ``vocab.bpe``, shipped inside this package."""
    return Path(__file__).resolve().parent / "gpt2_bpe"


def _verified(path: Path, expected_sha256: str) -> str:
    if not path.is_file():
        raise TokenizerFilesError(
            f"GPT-2 BPE file not found: {path} "
            "(restore it: git checkout -- nanogpt_lib/gpt2_bpe, or reinstall nanogpt-workbook)"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected_sha256:
        raise TokenizerFilesError(
            f"GPT-2 BPE file {path} has sha256 {digest}, expected {expected_sha256}: "
            "the file is altered or not GPT-2's "
            "(restore it: git checkout -- nanogpt_lib/gpt2_bpe, or reinstall nanogpt-workbook)"
        )
    return str(path)


def load_gpt2(files_dir: str | Path | None = None) -> tiktoken.Encoding:
    """Build tiktoken's GPT-2 Encoding from verified local files (``files_dir`` defaults to the package's)."""
    folder = Path(files_dir) if files_dir is not None else bpe_files_dir()
    vocab_bpe = _verified(folder / "vocab.bpe", VOCAB_BPE_SHA256)
    encoder_json = _verified(folder / "encoder.json", ENCODER_JSON_SHA256)
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=vocab_bpe,
        encoder_json_file=encoder_json,
        vocab_bpe_hash=VOCAB_BPE_SHA256,
        encoder_json_hash=ENCODER_JSON_SHA256,
    )
    return tiktoken.Encoding(
        name=NAME,
        explicit_n_vocab=N_VOCAB,
        pat_str=GPT2_PAT_STR,
        mergeable_ranks=ranks,
        special_tokens={EOT_TOKEN: EOT_ID},
    )


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> tiktoken.Encoding:
    """The shared GPT-2 Encoding (built once per process)."""
    return load_gpt2()


def encode(text: str) -> list[int]:
    """Token ids of ordinary text; ``<|endoftext|>`` inside the text is encoded as plain text, not the special id."""
    return get_tokenizer().encode_ordinary(text)


def decode(ids: list[int]) -> str:
    """Text of token ids; invalid UTF-8 from a partial multi-byte token is replaced, never raised."""
    return get_tokenizer().decode(ids, errors="replace")


MIN_VOCAB = 257  # the 256 byte tokens and <|endoftext|>: every text encodes, with no merge at all
MAX_VOCAB = 65_535  # ids are stored as uint16 (data.DTYPES); the bound, one below 2**16
RANKS_FILE = re.compile(r"^tokenizer-[0-9a-f]{12}\.tiktoken$")  # named by content: never replaced in place
_REBUILD = "prepare the data set again (nanogpt prepare --vocab N --force), or export the weights again"


def is_gpt2(entry: Any) -> bool:
    """Whether a tokenizer entry (meta.json, config.json, checkpoint) means GPT-2's (absent means GPT-2)."""
    return entry is None or entry == NAME or (isinstance(entry, dict) and entry.get("name") == NAME)


def train_ranks(texts: Iterable[str], vocab_size: int, pattern: str = GPT2_PAT_STR) -> dict[bytes, int]:
    """Byte-level BPE ranks learned by ``rustbpe`` from ``texts``: 256 byte tokens, then merges in order.

    ``vocab_size`` counts ``<|endoftext|>`` too, so at most ``vocab_size - 1`` ranks come back (fewer when the
    text runs out of pairs to merge). The caller checks the range (rustbpe panics below 256 ranks).
    """
    import rustbpe  # only prepare --vocab trains; loading a tokenizer needs tiktoken alone

    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(texts), vocab_size - 1, pattern=pattern)
    ranks = dict(trainer.get_mergeable_ranks())
    if sorted(ranks.values()) != list(range(len(ranks))):  # tiktoken needs ranks 0..n-1, each once
        raise TokenizerFilesError("rustbpe returned ranks that are not 0..n-1: upgrade or reinstall rustbpe")
    return ranks


def ranks_text(ranks: Mapping[bytes, int]) -> str:
    """The ranks in tiktoken's file format: ``base64(token) rank`` per line, in rank order."""
    return "".join(
        f"{base64.b64encode(tok).decode('ascii')} {rank}\n" for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1])
    )


def parse_ranks(text: str, where: str) -> dict[bytes, int]:
    """The ranks of a :func:`ranks_text` file (``where`` names it in the one-line error)."""
    try:
        return {
            base64.b64decode(tok, validate=True): int(rank)
            for tok, rank in (line.split() for line in text.splitlines() if line)
        }
    except ValueError as e:
        raise TokenizerFilesError(f"{where} is not a tokenizer ranks file (base64 token, space, rank): {e}") from None


def entry_for(text: str, pattern: str = GPT2_PAT_STR) -> dict[str, Any]:
    """The record naming a ranks file: what meta.json, an export's config.json and a checkpoint carry."""
    sha = hashlib.sha256(text.encode()).hexdigest()
    n_vocab = text.count("\n") + 1  # one line per rank, plus <|endoftext|>
    return {
        "name": f"bpe-{n_vocab}",
        "file": f"tokenizer-{sha[:12]}.tiktoken",
        "sha256": sha,
        "vocab_size": n_vocab,
        "pattern": pattern,
    }


def identity(entry: Any) -> str:
    """What two tokenizers must share to give the same ids: ``"gpt2"``, or the own ranks' sha256."""
    return NAME if is_gpt2(entry) else str(entry.get("sha256")) if isinstance(entry, dict) else repr(entry)


def _ranks_of(entry: dict[str, Any], folder: str | Path | None) -> str:
    """The ranks text an entry names, read inline (a checkpoint) or from ``folder/entry["file"]``, verified."""
    if isinstance(entry.get("ranks"), str):
        text, where = entry["ranks"], "the checkpoint's tokenizer"
    else:
        file = entry.get("file")
        if folder is None or not isinstance(file, str) or not RANKS_FILE.match(file):
            raise TokenizerFilesError(
                f"tokenizer entry {entry.get('name')!r} names no ranks file ({file!r}): {_REBUILD}"
            )
        path = Path(folder) / file
        try:
            text = path.read_bytes().decode()
        except FileNotFoundError:
            raise TokenizerFilesError(
                f"tokenizer file {path} is missing: the ids cannot be read without it; {_REBUILD}"
            ) from None
        except (OSError, UnicodeDecodeError) as e:
            raise TokenizerFilesError(f"tokenizer file {path} is unreadable ({e}): {_REBUILD}") from None
        where = str(path)
    digest = hashlib.sha256(text.encode()).hexdigest()
    if digest != entry.get("sha256"):
        recorded = str(entry.get("sha256"))[:12]
        raise TokenizerFilesError(
            f"{where} has sha256 {digest[:12]}..., its record says {recorded}...: "
            "it is not the tokenizer these ids were made with (altered or replaced): "
            f"restore it, or {_REBUILD}"
        )
    return text


@functools.lru_cache(maxsize=8)
def _own_encoding(text: str, name: str, pattern: str) -> tiktoken.Encoding:
    ranks = parse_ranks(text, name)
    return tiktoken.Encoding(
        name=name,
        pat_str=pattern,
        mergeable_ranks=ranks,
        special_tokens={EOT_TOKEN: len(ranks)},
        explicit_n_vocab=len(ranks) + 1,
    )


def resolve(entry: Any, folder: str | Path | None = None) -> tiktoken.Encoding:
    """The Encoding of a tokenizer entry: GPT-2's for ``None``/``"gpt2"``, else the own ranks, checksum
    verified, from the entry itself (``"ranks"``, in checkpoints) or from ``folder``."""
    if is_gpt2(entry):
        return get_tokenizer()
    if not isinstance(entry, dict):
        raise TokenizerFilesError(f"unknown tokenizer entry {entry!r}: expected 'gpt2' or a ranks file record")
    text = _ranks_of(entry, folder)
    enc = _own_encoding(text, str(entry.get("name")), str(entry.get("pattern", GPT2_PAT_STR)))
    if entry.get("vocab_size") not in (None, enc.n_vocab):
        raise TokenizerFilesError(
            f"tokenizer {entry.get('name')!r} has {enc.n_vocab} tokens, its record says "
            f"{entry.get('vocab_size')}: {_REBUILD}"
        )
    return enc


def portable(entry: Any, folder: str | Path | None = None) -> Any:
    """The entry with its ranks inline (verified), for a training checkpoint; GPT-2's stays ``"gpt2"``."""
    if is_gpt2(entry):
        return NAME
    resolve(entry, folder)  # an unknown entry, a missing or altered file: refused before it travels
    return {**entry, "ranks": _ranks_of(entry, folder)}


def for_data(meta: dict, folder: str | Path | None = None) -> tiktoken.Encoding:
    """The Encoding a prepared data set's ids belong to, from its ``meta.json`` (``data.load_meta``).

    A data set without a ``"tokenizer"`` entry, or with ``"gpt2"``, is GPT-2's; one with its own tokenizer
    names its ranks file, read from ``folder`` (the data set's) and checked against the recorded sha256.
    """
    return resolve(meta.get("tokenizer"), folder)
