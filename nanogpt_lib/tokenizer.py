"""GPT-2's BPE tokenizer, built offline.

tiktoken's ``get_encoding("gpt2")`` downloads ``encoder.json`` and ``vocab.bpe`` on first use, which
fails without internet. This package ships byte-identical copies of both files in ``gpt2_bpe/`` (OpenAI's
GPT-2 files, MIT; see ``gpt2_bpe/LICENSE``), so we verify them against the sha256 hashes tiktoken itself
uses for gpt2 and build the same Encoding from them with tiktoken's own data-gym loader. Nothing here
touches the network, and no third package is needed for two data files.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

EOT_TOKEN = "<|endoftext|>"
EOT_ID = 50256
N_VOCAB = 50257
NAME = "gpt2"

# The hashes tiktoken_ext.openai_public.gpt2 checks its downloads against (a test keeps them in sync).
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"

# GPT-2's pre-tokenisation split pattern (contractions, letters, numbers, other, whitespace).
GPT2_PAT_STR = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)


class TokenizerFilesError(RuntimeError):
    """The GPT-2 BPE files are missing or are not the genuine ones."""


def bpe_files_dir() -> Path:
    """Folder holding ``encoder.json`` and ``vocab.bpe``, shipped inside this package."""
    return Path(__file__).resolve().parent / "gpt2_bpe"


def _verified(path: Path, expected_sha256: str) -> str:
    if not path.is_file():
        raise TokenizerFilesError(f"GPT-2 BPE file not found: {path} (restore it: git checkout -- nanogpt_lib/gpt2_bpe, or reinstall nanogpt-workbook)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected_sha256:
        raise TokenizerFilesError(
            f"GPT-2 BPE file {path} has sha256 {digest}, expected {expected_sha256}: "
            "the file is altered or not GPT-2's (restore it: git checkout -- nanogpt_lib/gpt2_bpe, or reinstall nanogpt-workbook)"
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


def for_data(meta: dict) -> tiktoken.Encoding:
    """The Encoding a prepared data set's ids belong to, from its ``meta.json`` (``data.load_meta``).

    A data set without a ``"tokenizer"`` entry is GPT-2's. (Interface for issue 23: data sets with their own
    trained tokenizer name it in meta.json, and this returns that Encoding.)
    """
    entry = meta.get("tokenizer")
    if entry is None or entry == NAME or (isinstance(entry, dict) and entry.get("name") == NAME):
        return get_tokenizer()
    raise TokenizerFilesError(f"unknown tokenizer entry in meta.json: {entry!r}")
