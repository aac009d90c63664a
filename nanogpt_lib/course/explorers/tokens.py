"""The tokenizer explorer: text cut into GPT-2 tokens with their ids, and byte-level BPE merges step by step.

The plain functions do the work and are checked against the library's tokenizer (``nanogpt_lib.tokenizer``):
:func:`token_pieces` (each token's id, bytes and text), :func:`tokens_html` (the tokens coloured, ids below),
:func:`count_line` (the "N tokens" line), :func:`pre_tokens` (GPT-2's pre-split) and :func:`merge_steps`
(the merges applied to one pre-token, one merge a step, ending on exactly the ids ``encode`` gives), with
:func:`merges_figure` to draw them. :func:`explorer` only wires ipywidgets controls to them (notebook 02).

The merges use tiktoken's form of GPT-2's table, the *mergeable ranks*: every token's bytes mapped to its rank,
which for GPT-2 is its id (the 256 single bytes first, then one token per merge in the order learned). A pair
of neighbouring pieces can merge when their concatenation is a token, and the lowest rank merges first.
"""

from __future__ import annotations

import functools
import html
from dataclasses import dataclass
from typing import Any

import regex

from ...tokenizer import EOT_ID, GPT2_PAT_STR, encode, get_tokenizer

# Pastel backgrounds cycled over the tokens, so that neighbouring tokens always differ.
COLOURS = ("#fde68a", "#bfdbfe", "#bbf7d0", "#fbcfe8", "#ddd6fe", "#fed7aa")
# Merge steps: a single byte, a piece made by an earlier merge, and the piece this step made.
BYTE, MERGED, NEW = "#e5e7eb", "#bfdbfe", "#fde68a"


def _step_colour(piece: bytes, new: bool) -> str:
    return NEW if new else MERGED if len(piece) > 1 else BYTE


@dataclass(frozen=True)
class TokenPiece:
    """One token of a text: its id, the bytes it stands for, and those bytes as text.

    ``text`` is ``None`` when the bytes are not valid UTF-8 on their own: part of a character that GPT-2 split
    across tokens (a CJK character or an emoji); its neighbours hold the rest of that character's bytes.
    """

    id: int
    bytes: bytes
    text: str | None

    @property
    def label(self) -> str:
        """How the piece is shown: its text with space and newline made visible, or its bytes in hex."""
        return _label(self.bytes)


def _as_text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _label(data: bytes) -> str:
    text = _as_text(data)
    if text is None:
        return "<" + " ".join(f"{b:02X}" for b in data) + ">"
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")


def token_pieces(text: str) -> list[TokenPiece]:
    """The tokens of ``text`` as ``encode`` makes them, each with the bytes and text it covers.

    The pieces' bytes joined are ``text``'s UTF-8 bytes, and their ids are ``encode(text)``.
    """
    enc = get_tokenizer()
    pieces = []
    for token_id in encode(text):
        data = enc.decode_single_token_bytes(token_id)
        pieces.append(TokenPiece(token_id, data, _as_text(data)))
    return pieces


def count_line(text: str) -> str:
    """The line the explorer shows under the tokens: ``"N tokens"`` (``"1 token"``), N = ``len(encode(text))``."""
    n = len(encode(text))
    return f"{n} token" if n == 1 else f"{n} tokens"


def tokens_html(text: str) -> str:
    """``text``'s tokens as coloured boxes, each showing its piece (hex bytes for part of a character) over its id."""
    boxes = []
    for n, piece in enumerate(token_pieces(text)):
        colour = COLOURS[n % len(COLOURS)]
        tip = html.escape(f"id {piece.id}, bytes {piece.bytes!r}", quote=True)
        boxes.append(
            f'<span class="nanogpt-token" title="{tip}" style="display:inline-block;margin:1px;padding:0 3px;'
            f'background:{colour};border-radius:3px;text-align:center;font-family:monospace">'
            f'<span style="white-space:pre">{html.escape(piece.label)}</span><br>'
            f'<small style="color:#555">{piece.id}</small></span>'
        )
    return '<div style="line-height:1.2">' + "".join(boxes) + "</div>"


@functools.lru_cache(maxsize=1)
def mergeable_ranks() -> dict[bytes, int]:
    """GPT-2's mergeable ranks as tiktoken holds them: each token's bytes -> its rank (= its id).

    Built through tiktoken's public API from the library's offline encoding; ``<|endoftext|>`` is a special
    token, not a merge, so it is left out.
    """
    enc = get_tokenizer()
    return {enc.decode_single_token_bytes(i): i for i in range(enc.n_vocab) if i != EOT_ID}


@functools.lru_cache(maxsize=1)
def _splitter() -> regex.Pattern:
    return regex.compile(GPT2_PAT_STR)


def pre_tokens(text: str) -> list[str]:
    """GPT-2's pre-split: the chunks (a word with its leading space, a number, punctuation, whitespace) that
    BPE merges inside, never across."""
    return _splitter().findall(text)


@dataclass(frozen=True)
class MergeStep:
    """The pieces of a chunk after some merges; ``merged`` is the merge that made this step (None at step 0)."""

    pieces: tuple[bytes, ...]
    merged: tuple[bytes, bytes] | None = None  # the two neighbours joined at this step
    rank: int | None = None  # the rank of the joined token (lower merges earlier)
    at: int | None = None  # index in ``pieces`` of the joined token

    @property
    def ids(self) -> list[int]:
        """The pieces' token ids (every piece, at every step, is a token: single bytes are ids 0-255)."""
        ranks = mergeable_ranks()
        return [ranks[p] for p in self.pieces]


def merge_steps(chunk: str) -> list[MergeStep]:
    """Byte-level BPE on ``chunk``, one merge per step, the way tiktoken applies GPT-2's ranks.

    Step 0 is the chunk's UTF-8 bytes, one piece each. Each step joins the neighbouring pair whose
    concatenation has the lowest rank (the leftmost such pair on a tie); it stops when no neighbouring pair
    is a token. For a single pre-token (see :func:`pre_tokens`) the last step's ``ids`` equal ``encode(chunk)``;
    on a longer text merges may cross the boundaries that the pre-split would have kept.
    """
    data = chunk.encode("utf-8")
    if not data:
        raise ValueError("chunk is empty: give a word (or any non-empty text) to merge")
    ranks = mergeable_ranks()
    pieces = [data[i : i + 1] for i in range(len(data))]
    steps = [MergeStep(tuple(pieces))]
    while len(pieces) > 1:
        best_rank, best_at = None, -1
        for i in range(len(pieces) - 1):
            rank = ranks.get(pieces[i] + pieces[i + 1])
            if rank is not None and (best_rank is None or rank < best_rank):
                best_rank, best_at = rank, i
        if best_rank is None:
            break
        pair = (pieces[best_at], pieces[best_at + 1])
        pieces[best_at : best_at + 2] = [pair[0] + pair[1]]
        steps.append(MergeStep(tuple(pieces), pair, best_rank, best_at))
    return steps


def bpe_encode(text: str) -> list[int]:
    """Pre-split, then merge each chunk: the whole encoder by hand, equal to ``encode(text)``."""
    return [i for chunk in pre_tokens(text) for i in merge_steps(chunk)[-1].ids]


def describe_step(steps: list[MergeStep], k: int) -> str:
    """One line for step ``k``: which pair was merged into which token, at what rank."""
    step = steps[k]
    if step.merged is None:
        return f"step 0 of {len(steps) - 1}: {len(step.pieces)} single bytes"
    a, b = step.merged
    return (
        f"step {k} of {len(steps) - 1}: {_label(a)} + {_label(b)} -> {_label(a + b)} "
        f"(rank {step.rank}), {len(step.pieces)} pieces"
    )


def merge_step_html(steps: list[MergeStep], k: int) -> str:
    """Step ``k``'s pieces as boxes with their ids, the piece just made outlined, under a line saying what merged."""
    step = steps[k]
    boxes = []
    for i, (piece, token_id) in enumerate(zip(step.pieces, step.ids)):
        outline = "outline:2px solid #dc2626;" if i == step.at else ""
        colour = _step_colour(piece, i == step.at)
        boxes.append(
            f'<span style="display:inline-block;margin:1px;padding:0 3px;background:{colour};'
            f'{outline}border-radius:3px;text-align:center;font-family:monospace">'
            f'<span style="white-space:pre">{html.escape(_label(piece))}</span><br>'
            f'<small style="color:#555">{token_id}</small></span>'
        )
    return f"<div>{html.escape(describe_step(steps, k))}</div><div>{''.join(boxes)}</div>"


def merges_figure(chunk: str) -> Any:
    """A matplotlib Figure: one row per merge step, each piece a box as wide as its bytes, labelled.

    Grey: a single byte; blue: a piece made by an earlier merge; yellow, outlined: the piece this step made.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    steps = merge_steps(chunk)
    n_bytes = len(steps[0].pieces)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * n_bytes), 0.35 * len(steps) + 1.0))
    for row, step in enumerate(steps):
        x = 0
        for i, piece in enumerate(step.pieces):
            edge = "#dc2626" if i == step.at else "white"
            ax.add_patch(
                Rectangle(
                    (x, row),
                    len(piece),
                    0.9,
                    facecolor=_step_colour(piece, i == step.at),
                    edgecolor=edge,
                    linewidth=1.5,
                )
            )
            ax.text(
                x + len(piece) / 2, row + 0.45, _label(piece), ha="center", va="center", fontsize=8, family="monospace"
            )
            x += len(piece)
    ax.set_xlim(0, n_bytes)
    ax.set_ylim(len(steps), 0)
    ax.set_yticks(
        [r + 0.45 for r in range(len(steps))],
        [f"{r}" if r == 0 else f"{r} (rank {s.rank})" for r, s in enumerate(steps)],
        fontsize=7,
    )
    ax.set_xticks([])
    ax.set_xlabel("bytes")
    ax.set_ylabel("merge step")
    ax.set_title(f"BPE merges of {chunk!r}: {n_bytes} bytes -> {len(steps[-1].pieces)} tokens")
    fig.tight_layout()
    return fig


def _default_word(text: str) -> str | None:
    chunks = [c for c in pre_tokens(text) if c.strip()]
    return max(chunks, key=lambda c: len(c.encode("utf-8")), default=None)  # the longest: the most merges


def explorer(text: str = "To be, or not to be: 東京 🎭", word: str | None = None) -> Any:
    """A widget: a text box, its coloured tokens and "N tokens", and a slider over one word's merge steps.

    ``word`` is the pre-token whose merges the slider walks through (default: the longest in ``text``); the
    word list follows the text box. The returned ``VBox`` carries its controls as attributes (``text``,
    ``tokens``, ``count``, ``word``, ``step``, ``merges``) and stable CSS classes (``nanogpt-tokens-*``).
    """
    try:
        import ipywidgets as widgets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('the tokenizer explorer needs ipywidgets: pip install -e ".[notebooks]"') from e

    text_box = widgets.Textarea(
        value=text, description="text", continuous_update=True, layout=widgets.Layout(width="95%", height="70px")
    )
    tokens = widgets.HTML()
    count = widgets.HTML()
    words = widgets.Dropdown(description="word", options=[])
    step = widgets.IntSlider(
        description="merge step", min=0, max=0, value=0, continuous_update=True, layout=widgets.Layout(width="60%")
    )
    merges = widgets.HTML()
    for w, part in (
        (text_box, "text"),
        (tokens, "view"),
        (count, "count"),
        (words, "word"),
        (step, "merge-step"),
        (merges, "merges"),
    ):
        w.add_class(f"nanogpt-tokens-{part}")
    state: dict[str, Any] = {"steps": [], "busy": False}

    def show_step(_change: Any = None) -> None:
        if state["busy"]:
            return
        if state["steps"]:
            merges.value = merge_step_html(state["steps"], min(step.value, len(state["steps"]) - 1))
        else:
            merges.value = "<div>(no word to merge)</div>"

    def show_word(_change: Any = None) -> None:
        if state["busy"]:  # the word list is being refilled: show_text calls us once it is done
            return
        state["steps"] = merge_steps(words.value) if words.value else []
        last = max(len(state["steps"]) - 1, 0)
        state["busy"] = True
        try:
            step.max = last
            step.value = last  # start on the result; slide left to undo the merges
        finally:
            state["busy"] = False
        show_step()

    def show_text(_change: Any = None) -> None:
        tokens.value = tokens_html(text_box.value)
        count.value = count_line(text_box.value)
        options = list(dict.fromkeys(c for c in pre_tokens(text_box.value) if c.strip()))
        chosen = words.value if words.value in options else _default_word(text_box.value)
        state["busy"] = True
        try:
            words.options = options
            words.value = chosen
        finally:
            state["busy"] = False
        show_word()

    if word is not None and word not in pre_tokens(text):
        raise ValueError(f"word {word!r} is not one of the text's pre-tokens {pre_tokens(text)}")
    show_text()
    if word is not None:
        words.value = word
        show_word()
    text_box.observe(show_text, "value")
    words.observe(show_word, "value")
    step.observe(show_step, "value")
    box = widgets.VBox([text_box, tokens, count, widgets.HBox([words, step]), merges])
    box.add_class("nanogpt-tokens")
    box.text, box.tokens, box.count, box.word, box.step, box.merges = text_box, tokens, count, words, step, merges
    return box
