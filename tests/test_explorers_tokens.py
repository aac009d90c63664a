"""The tokenizer explorer: its plain functions against the library's tokenizer, and the widget headless."""

from __future__ import annotations

import html
import itertools
import random
import re

import pytest

from nanogpt_lib import paths
from nanogpt_lib.course.explorers import tokens as tx
from nanogpt_lib.tokenizer import EOT_ID, N_VOCAB, decode, encode

TRICKY = [
    "To be, or not to be: that is the question:",
    "Naïve façade, Zürich — ¿qué tal? 東京 🎭",
    "We've   waited 1603 years; it's 3.14159...\n\n\n",
    "<|endoftext|> is ordinary text here",
    "  leading spaces, trailing tabs\t\t",
    "e\u0301 (a combining accent) and ÿ",
    "HORATIO:\nWell, 'tis 12 o'clock!!",
]


def _strings() -> list[str]:
    """Many strings: the tricky ones, every distinct pre-token of a play, and random mixes of awkward symbols."""
    play = (paths.shakespeare_dir() / "hamlet.txt").read_text(encoding="utf-8")[:60_000]
    rng = random.Random(0)
    alphabet = "ab  東京🎭é\n\t'sxyz.,!0123 ÿ\u0301Ġ"
    mixes = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24))) for _ in range(500)]
    return TRICKY + sorted(set(tx.pre_tokens(play))) + mixes


def test_pieces_are_the_library_tokens():
    for text in TRICKY:
        pieces = tx.token_pieces(text)
        assert [p.id for p in pieces] == encode(text)
        assert b"".join(p.bytes for p in pieces) == text.encode("utf-8")  # the pieces cover the text, in order
        for p in pieces:
            assert (p.text is None) == (
                decode([p.id]) != p.bytes.decode("utf-8", errors="replace") or "\ufffd" in decode([p.id])
            )
            assert p.text is None or p.text == decode([p.id])
    # a CJK character split across tokens: no piece of it is text on its own, and its label shows the bytes
    split = [p for p in tx.token_pieces(" 東") if p.text is None]
    assert split and all(re.fullmatch(r"<[0-9A-F]{2}( [0-9A-F]{2})*>", p.label) for p in split)
    assert tx.token_pieces("a b\n")[-1].label == "↵" and tx.token_pieces(" b")[0].label == "␣b"
    assert tx.token_pieces("") == []


def test_count_line_is_the_library_count():
    for text in [*TRICKY, "", "a"]:
        n = len(encode(text))
        assert tx.count_line(text) == (f"{n} token" if n == 1 else f"{n} tokens")
    assert tx.count_line("a") == "1 token" and tx.count_line("") == "0 tokens"


def test_html_shows_every_token_with_its_id():
    text = "O Romeo, Romeo! <b>東京</b>"
    page = tx.tokens_html(text)
    ids = encode(text)
    assert page.count('class="nanogpt-token"') == len(ids)
    shown_ids = [int(i) for i in re.findall(r'<small style="color:#555">(\d+)</small>', page)]
    assert shown_ids == ids
    labels = re.findall(r'<span style="white-space:pre">(.*?)</span>', page)
    assert labels == [html.escape(p.label) for p in tx.token_pieces(text)]
    assert "␣&lt;" in labels and not any("<" in label for label in labels)  # escaped, never rendered as markup
    colours = re.findall(r"background:(#[0-9a-f]{6})", page)
    assert all(a != b for a, b in itertools.pairwise(colours))  # neighbours always differ


def test_ranks_are_tiktoken_gpt2():
    ranks = tx.mergeable_ranks()
    assert len(ranks) == N_VOCAB - 1 and EOT_ID not in ranks.values()  # every token but <|endoftext|>
    assert {ranks[bytes([b])] for b in range(256)} == set(range(256))  # ids 0-255: the single bytes
    assert ranks[b" the"] == encode(" the")[0] and ranks[b" t"] == 256  # rank 0 of vocab.bpe is ' t'


def test_merge_steps_end_on_the_library_ids():
    strings = _strings()
    assert len(strings) > 2000
    for text in strings:
        assert tx.bpe_encode(text) == encode(text), text  # pre-split, then merges: the whole encoder
    for chunk in tx.pre_tokens("".join(TRICKY)):
        assert tx.merge_steps(chunk)[-1].ids == encode(chunk), chunk


def test_merge_steps_are_single_lowest_rank_merges():
    steps = tx.merge_steps(" Rosencrantz")
    assert steps[0].pieces == tuple(bytes([b]) for b in b" Rosencrantz") and steps[0].merged is None
    ranks = tx.mergeable_ranks()
    for before, after in itertools.pairwise(steps):
        assert len(after.pieces) == len(before.pieces) - 1
        assert b"".join(after.pieces) == b" Rosencrantz"
        a, b = after.merged
        assert after.pieces[after.at] == a + b and after.rank == ranks[a + b]
        candidates = [ranks[x + y] for x, y in zip(before.pieces, before.pieces[1:]) if x + y in ranks]
        assert after.rank == min(candidates)  # the lowest-ranked pair merged first
    for text in _strings()[:800]:  # a merge never makes a pair rank lower than the one just merged
        ranks_in_order = [s.rank for s in tx.merge_steps(text)[1:]]
        assert ranks_in_order == sorted(ranks_in_order), text
    assert len(steps[-1].pieces) == len(encode(" Rosencrantz"))
    with pytest.raises(ValueError, match="empty"):
        tx.merge_steps("")


def test_without_the_pre_split_merges_can_differ():
    # merging a whole text as one chunk is not the encoder: a token can then cross a pre-split boundary
    text = "a\n\nb"  # the pre-split keeps the newline before a word apart: "\n", "\n", "b"
    assert tx.pre_tokens(text) == ["a", "\n", "\n", "b"]
    assert tx.merge_steps(text)[-1].ids == [encode("a")[0], encode("\n\n")[0], encode("b")[0]] != encode(text)
    assert tx.bpe_encode(text) == encode(text)


def test_step_text_and_figure():
    steps = tx.merge_steps(" Rosencrantz")
    assert tx.describe_step(steps, 0) == "step 0 of 8: 12 single bytes"
    line = tx.describe_step(steps, 3)
    assert line.startswith("step 3 of 8: ") and f"(rank {steps[3].rank})" in line
    page = tx.merge_step_html(steps, 3)
    assert [int(i) for i in re.findall(r"<small[^>]*>(\d+)</small>", page)] == steps[3].ids
    assert page.count("outline:2px") == 1

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = tx.merges_figure(" Rosencrantz")
    (ax,) = fig.axes
    assert ax.get_title() == "BPE merges of ' Rosencrantz': 12 bytes -> 4 tokens"
    assert ax.get_ylabel() == "merge step" and len(ax.get_yticklabels()) == len(steps)
    assert len(ax.patches) == sum(len(s.pieces) for s in steps)
    plt.close(fig)


def test_widget_follows_its_controls():
    widgets = pytest.importorskip("ipywidgets")
    box = tx.explorer("To be, or not to be", word=" not")
    assert isinstance(box, widgets.VBox)
    for part in ("text", "view", "count", "word", "merge-step", "merges"):
        found = [
            w
            for w in (box.text, box.tokens, box.count, box.word, box.step, box.merges)
            if f"nanogpt-tokens-{part}" in w._dom_classes
        ]
        assert len(found) == 1, part
    assert box.count.value == tx.count_line("To be, or not to be")
    assert box.word.value == " not" and box.step.value == box.step.max == len(tx.merge_steps(" not")) - 1

    box.text.value = "Rosencrantz and Guildenstern are dead 東京"
    assert box.count.value == f"{len(encode(box.text.value))} tokens"
    assert box.tokens.value == tx.tokens_html(box.text.value)
    assert box.word.value == " Guildenstern"  # " not" is gone: the longest word is chosen
    steps = tx.merge_steps(" Guildenstern")
    assert box.step.max == len(steps) - 1 and box.merges.value == tx.merge_step_html(steps, len(steps) - 1)

    box.step.value = 2
    assert box.merges.value == tx.merge_step_html(steps, 2)
    box.word.value = " dead"
    assert box.step.value == box.step.max == len(tx.merge_steps(" dead")) - 1
    box.text.value = "   "  # nothing to merge: the view says so instead of failing
    assert box.count.value == tx.count_line("   ") and "no word" in box.merges.value
    with pytest.raises(ValueError, match="pre-tokens"):
        tx.explorer("To be", word="not")


def test_plain_functions_need_no_widgets():
    # ipywidgets is an extra: importing the module and its plain functions must not pull it in
    import subprocess
    import sys

    code = (
        "import sys, nanogpt_lib.course.explorers.tokens as t; t.tokens_html('To be'); t.merge_steps(' be'); "
        "assert 'ipywidgets' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
