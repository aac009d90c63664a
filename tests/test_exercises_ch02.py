"""Chapter 02's exercise checks: right answers pass, typical wrong ones fail with a reason, placeholders are
"not answered", and no reason gives a number away."""

from __future__ import annotations

import codecs
import re

from nanogpt_lib.exercises import exercises, verdict
from nanogpt_lib.explorers.tokens import mergeable_ranks
from nanogpt_lib.tokenizer import decode, encode, get_tokenizer

from exercise_helpers import todo, wrong


def right_ratio(text):
    return len(text.encode("utf-8")) / len(encode(text))


def right_release(ids):
    enc, decoder = get_tokenizer(), codecs.getincrementaldecoder("utf-8")()
    return [decoder.decode(enc.decode_single_token_bytes(i)) for i in ids]


def library_release(ids):
    """nanogpt_lib.sample.stream_text's rule: show all new text once the tokens so far decode cleanly."""
    out, shown = [], ""
    for t in range(len(ids)):
        text = decode(ids[:t + 1])
        if text.endswith("\ufffd"):
            out.append("")
        else:
            out.append(text[len(shown):])
            shown = text
    return out


def right_bpe(chunk):
    ranks = mergeable_ranks()
    parts = [bytes([b]) for b in chunk.encode("utf-8")]
    while True:
        pairs = [(ranks.get(a + b), i) for i, (a, b) in enumerate(zip(parts, parts[1:])) if a + b in ranks]
        if not pairs:
            return [ranks[p] for p in parts]
        _, i = min(pairs)
        parts[i:i + 2] = [parts[i] + parts[i + 1]]


def greedy_longest(chunk):
    """A typical wrong BPE: take the longest token that starts here (WordPiece-like), not merges by rank."""
    ranks, data, out, i = mergeable_ranks(), chunk.encode("utf-8"), [], 0
    while i < len(data):
        j = max(j for j in range(i + 1, len(data) + 1) if data[i:j] in ranks)
        out.append(ranks[data[i:j]])
        i = j
    return out


def test_chapter_has_five_exercises_in_order():
    assert [e.id for e in exercises(2)] == ["02.1", "02.2", "02.3", "02.4", "02.5"]
    for e in exercises(2):  # 02.2 and 02.5 ask for a str: their placeholder is `answer = None`
        assert verdict(e.id, None)[0] is None and verdict(e.id, ...)[0] is None
        if e.id not in ("02.2", "02.5"):
            assert verdict(e.id, todo)[0] is None


def test_02_1_bytes_per_token():
    ok, remark = verdict("02.1", right_ratio)
    assert ok is True and "English" in remark
    why = wrong("02.1", lambda t: len(t) / len(encode(t)))
    assert "characters" in why and not re.search(r"\d\.\d", why)
    assert "other way up" in wrong("02.1", lambda t: len(encode(t)) / len(t.encode("utf-8")))
    assert "too high" in wrong("02.1", lambda t: len(t.encode("utf-8")) / len(t.split()))


def test_02_2_leading_space():
    assert len(encode(" Rosencrantz")) < len(encode("Rosencrantz"))
    assert verdict("02.2", "Rosencrantz")[0] is True
    assert "as many tokens" in wrong("02.2", "question")
    assert len(encode(" ness")) > len(encode("ness"))
    assert "MORE" in wrong("02.2", "ness")
    assert "letters only" in wrong("02.2", " Rosencrantz")
    assert "str" in wrong("02.2", 42)


def test_02_3_release():
    assert verdict("02.3", right_release)[0] is True
    assert verdict("02.3", library_release)[0] is True  # the library's own, more patient, rule is right too
    assert "\\ufffd" in wrong("02.3", lambda ids: [decode([i]) for i in ids])
    assert "held back" in wrong("02.3", lambda ids: [""] * (len(ids) - 1) + [decode(ids)])
    assert "not arrived" in wrong("02.3", lambda ids: [decode(ids)] + [""] * (len(ids) - 1))
    assert "one str per token" in wrong("02.3", lambda ids: [decode(ids)])


def test_02_4_bpe():
    assert verdict("02.4", right_bpe)[0] is True
    why = wrong("02.4", greedy_longest)
    assert "LOWEST rank" in why
    assert "itself" in wrong("02.4", encode)
    assert "do not spell" in wrong("02.4", lambda chunk: right_bpe(chunk)[:-1] if len(chunk) > 3 else right_bpe(chunk))


def test_02_5_pre_split():
    ok, remark = verdict("02.5", "a\n\nb")
    assert ok is True and "spans a boundary" in remark
    assert "exactly encode's tokens" in wrong("02.5", "To be, or not to be")
    assert "at most 200" in wrong("02.5", "a\n\nb" * 100)
    assert "non-empty" in wrong("02.5", "")
