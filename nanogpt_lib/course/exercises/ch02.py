"""Chapter 02 (the tokenizer): compression, a leading space, decoding a stream of tokens, BPE by hand, and why
GPT-2 pre-splits.

Every check recomputes the truth with the library's tokenizer (``nanogpt_lib.tokenizer``: ``encode``,
``decode``, and the token bytes of its tiktoken encoding) or with the tokenizer explorer's merges
(``nanogpt_lib.course.explorers.tokens``, itself tested against ``encode``).
"""

from __future__ import annotations

import codecs
import functools
from typing import Any

import tiktoken
import tiktoken.core

from ... import paths, sample
from ...tokenizer import decode, encode, get_tokenizer
from ..explorers import tokens as explorer
from ..explorers.tokens import bpe_encode, merge_steps, pre_tokens
from . import exercise, expect
from .guard import attr, fn

PUBLIC = ("SAMPLES", "STREAM_TEXTS", "bpe_chunks")


def _encoder_twins() -> list:
    """Every route to GPT-2's merges done for you: the library's encode and its explorer's BPE, tiktoken's
    encode methods, its compiled CoreBPE (the shared encoding's, and the class a new Encoding would build)."""
    methods = [
        fn(f, f"tiktoken.Encoding.{n}")
        for n, f in vars(tiktoken.core.Encoding).items()
        if "encode" in n and callable(f)
    ]
    return [
        fn(encode),
        fn(bpe_encode),
        fn(merge_steps),
        fn(explorer.token_pieces),
        fn(explorer.count_line),
        *methods,
        attr(get_tokenizer(), "_core_bpe", "tiktoken's compiled BPE (Encoding._core_bpe)", only=("encode",)),
        attr(tiktoken.core._tiktoken, "CoreBPE", "tiktoken's compiled BPE (CoreBPE)"),
        fn(tiktoken.get_encoding),
    ]


# Texts in several scripts: English verse, accented French and German, Japanese, emoji, code, digits.
SAMPLES = {
    "English verse": "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer",
    "French": "Être ou ne pas être, telle est la question. Où es-tu, mon cœur ? Déjà l'été.",
    "German": "Sein oder Nichtsein, das ist hier die Frage. Grüße aus Köln, die Straße entlang.",
    "Japanese": "生きるべきか死ぬべきか、それが問題だ。東京の夜は静かです。",
    "emoji": "Exit, pursued by a bear 🐻🎭 — all the world's a stage 🌍✨",
    "Python": "def merge(ids, pair, new_id):\n    return [new_id if p == pair else p for p in ids]\n",
    "digits": "In 1603 the play ran 4,042 lines; 3.14159 * 2 = 6.28318",
}


def _pieces(ids: list[int]) -> list[str]:
    return [decode([i]) for i in ids]


# ---- 02.1 -----------------------------------------------------------------------------------------------


@exercise(
    "02.1",
    "Bytes per token: how much GPT-2 compresses a text",
    "a function bytes_per_token(text) -> float: UTF-8 bytes of text divided by its number of GPT-2 tokens",
    off=lambda: [fn(explorer.count_line), fn(explorer.token_pieces)],
    why="count the bytes and tokens yourself",
)
def _bytes_per_token(bytes_per_token: Any) -> str:
    ratios = {}
    for name, text in SAMPLES.items():
        n_bytes, n_tokens, n_chars = len(text.encode("utf-8")), len(encode(text)), len(text)
        got = float(bytes_per_token(text))
        truth = n_bytes / n_tokens
        # A right answer divides the same two integers: any difference beyond rounding (1e-9 relative) is a
        # different quantity, not floating-point noise.
        if abs(got - truth) <= 1e-9 * truth:
            ratios[name] = truth
            continue
        expect(
            abs(got - n_chars / n_tokens) > 1e-9 * truth,
            f"on the {name} text you counted characters: count UTF-8 bytes (text.encode('utf-8')); "
            "outside ASCII a character takes 2 to 4 bytes",
        )
        expect(
            abs(got - n_tokens / n_bytes) > 1e-9,
            f"on the {name} text you gave tokens per byte: the ratio is the other way up",
        )
        expect(
            False,
            f"on the {name} text your ratio is not bytes / tokens: count the tokens with nanogpt_lib.tokenizer.encode",
        )
    best, worst = max(ratios, key=ratios.get), min(ratios, key=ratios.get)
    return (
        f"GPT-2 packs {ratios[best]:.2f} bytes per token into {best} but only {ratios[worst]:.2f} into "
        f"{worst}: its merges were learned on mostly English web text."
    )


# ---- 02.2 -----------------------------------------------------------------------------------------------


@exercise(
    "02.2",
    "A word that is cheaper with a leading space",
    "a word (a str of letters only) that takes fewer tokens as ' word' than as 'word'",
)
def _leading_space(word: Any) -> str:
    expect(isinstance(word, str), f"give a str, not a {type(word).__name__}")
    expect(word != "" and word.isalpha(), f"{word!r} is not a word: letters only, no spaces or punctuation")
    bare, spaced = len(encode(word)), len(encode(" " + word))
    expect(
        spaced != bare,
        f"{word!r} takes as many tokens with a leading space as without: look for a "
        "common word that starts a sentence rarely, or a name",
    )
    expect(spaced < bare, f"{word!r} takes MORE tokens with the leading space: you need the opposite")
    return (
        f"{word!r} is {_pieces(encode(word))} but {' ' + word!r} is {_pieces(encode(' ' + word))}: GPT-2 "
        "pre-splits a word with the space before it, so most words were learned in their ' word' form."
    )


# ---- 02.3 -----------------------------------------------------------------------------------------------


def _released(ids: list[int]) -> list[str]:
    """After each token, the characters its bytes complete (an incremental UTF-8 decoder's output)."""
    enc, decoder = get_tokenizer(), codecs.getincrementaldecoder("utf-8")()
    return [decoder.decode(enc.decode_single_token_bytes(i)) for i in ids]


STREAM_TEXTS = (
    "東京 🎭 and Zürich",
    "生きるべきか死ぬべきか",
    "Exit, pursued by a bear 🐻🎭",
    "naïve café",
    "plain ASCII text",
)


@exercise(
    "02.3",
    "Decode a stream of tokens without showing broken characters",
    "a function release(ids) -> list[str], one str per token: the new text to show once that token has "
    "arrived ('' while a character is incomplete; all of it once the tokens so far decode cleanly)",
    off=lambda: [fn(sample.stream_text), fn(sample.generate_stream)],
    why="hold back the bytes yourself",
)
def _release(release: Any) -> str:
    for text in STREAM_TEXTS:
        ids = encode(text)
        got = release(list(ids))
        expect(
            isinstance(got, (list, tuple)) and all(isinstance(s, str) for s in got),
            f"release should return a list of str, it returned {type(got).__name__}",
        )
        expect(
            len(got) == len(ids),
            f"on {text!r}: {len(ids)} tokens but {len(got)} pieces: give one str per "
            "token, '' when a token completes no character",
        )
        broken = [t for t, s in enumerate(got) if "\ufffd" in s]
        expect(
            not broken,
            f"on {text!r}: the piece after token {broken[0] if broken else 0} shows '\\ufffd': part "
            "of a character was shown before its last byte arrived",
        )
        expect("".join(got) == decode(ids), f"on {text!r}: your pieces joined are not the decoded text")
        complete = _released(ids)
        shown = ""
        for t, mine in enumerate(got):
            # Bounds, not one answer: never more than the characters whose bytes have all arrived, and at least
            # everything whenever the tokens so far decode cleanly (the rule nanogpt_lib.sample.stream_text uses).
            shown, arrived = shown + mine, get_tokenizer().decode_single_token_bytes(ids[t])
            expect(
                len(shown) <= len("".join(complete[: t + 1])),
                f"on {text!r}: after token {t} ({arrived!r}) "
                "you show text whose bytes have not arrived yet: a stream only knows the tokens so far",
            )
            so_far = decode(ids[: t + 1])
            expect(
                "\ufffd" in so_far or shown == so_far,
                f"on {text!r}: after token {t} ({arrived!r}) the "
                "tokens so far decode cleanly, but part of that text is held back",
            )
    return "no broken character ever shows, and text is never held back once it decodes cleanly."


# ---- 02.4 -----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def bpe_chunks() -> tuple[str, ...]:
    """Chunks to check BPE on: every distinct pre-token of the opening of Hamlet, and some non-ASCII ones."""
    play = (paths.shakespeare_dir() / "hamlet.txt").read_text(encoding="utf-8")[:30_000]
    extra = pre_tokens("".join(SAMPLES.values()) + " Rosencrantz Guildenstern   \n\n 1603 'tis")
    return tuple(sorted(set(pre_tokens(play)) | set(extra)))


@exercise(
    "02.4",
    "GPT-2's BPE by hand, from tiktoken's ranks",
    "a function bpe(chunk) -> list[int]: the token ids of one pre-token, by merging its bytes with the "
    "mergeable ranks (nanogpt_lib.course.explorers.tokens.mergeable_ranks())",
    off=_encoder_twins,
    why="write the merges yourself, from mergeable_ranks()",
)
def _bpe(bpe: Any) -> str:
    chunks = bpe_chunks()
    for chunk in chunks:
        got = bpe(chunk)
        expect(isinstance(got, (list, tuple)), f"bpe({chunk!r}) returned {type(got).__name__}, not a list of ids")
        got = [int(i) for i in got]
        if got == encode(chunk):
            continue
        pieces = (
            [get_tokenizer().decode_single_token_bytes(i) for i in got]
            if all(0 <= i < get_tokenizer().n_vocab for i in got)
            else None
        )
        expect(
            pieces is not None and b"".join(pieces) == chunk.encode("utf-8"),
            f"bpe({chunk!r}) gives ids whose bytes do not spell the chunk",
        )
        expect(
            False,
            f"bpe({chunk!r}) splits it as {pieces}, which is not GPT-2's split: at every step merge "
            "the neighbouring pair whose joined bytes have the LOWEST rank, until no pair is a token",
        )
    return f"all {len(chunks):,} chunks tokenized exactly as encode() does."


# ---- 02.5 -----------------------------------------------------------------------------------------------


def _crossing(text: str) -> str | None:
    """The first token of ``text`` merged as one chunk that spans a pre-split boundary, as shown text."""
    bounds, at = set(), 0
    for chunk in pre_tokens(text):
        at += len(chunk.encode("utf-8"))
        bounds.add(at)
    start = 0
    for piece in merge_steps(text)[-1].pieces:
        if any(start < b < start + len(piece) for b in bounds):
            return piece.decode("utf-8", errors="replace")
        start += len(piece)
    return None


@exercise(
    "02.5",
    "Find a text where skipping the pre-split changes the tokens",
    "a str of at most 200 characters whose bytes, merged as ONE chunk (no pre-split), give other token "
    "ids than encode(text)",
)
def _pre_split(text: Any) -> str:
    expect(isinstance(text, str) and text != "", "give a non-empty str")
    expect(len(text) <= 200, f"keep it short: {len(text)} characters, at most 200")
    whole = merge_steps(text)[-1].ids
    expect(
        whole != encode(text),
        f"merged as one chunk, {text!r} gives exactly encode's tokens: no merge crossed "
        "a boundary of the pre-split. Look at the regex's alternatives: where could a merge go across?",
    )
    crossing = _crossing(text)
    how = (
        f"without the pre-split the token {crossing!r} spans a boundary the regex keeps"
        if crossing
        else "without the pre-split the merges ran in another order"
    )
    return f"{how}: {_pieces(whole)} instead of {_pieces(encode(text))}."
