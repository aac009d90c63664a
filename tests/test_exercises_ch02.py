"""Chapter 02's exercise checks: right answers pass, typical wrong ones fail with a reason, placeholders are
"not answered", and no reason gives a number away."""

from __future__ import annotations

import codecs
import itertools
import re

from nanogpt_lib.course.exercises import exercises, verdict
from nanogpt_lib.course.explorers.tokens import mergeable_ranks
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
        text = decode(ids[: t + 1])
        if text.endswith("\ufffd"):
            out.append("")
        else:
            out.append(text[len(shown) :])
            shown = text
    return out


def right_bpe(chunk):
    ranks = mergeable_ranks()
    parts = [bytes([b]) for b in chunk.encode("utf-8")]
    while True:
        pairs = [(ranks.get(a + b), i) for i, (a, b) in enumerate(itertools.pairwise(parts)) if a + b in ranks]
        if not pairs:
            return [ranks[p] for p in parts]
        _, i = min(pairs)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]


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
    assert "not bytes / tokens" in wrong("02.1", lambda t: len(t.encode("utf-8")) / len(t.split()))
    # alternatives: tiktoken's decode of each token's bytes, and the explorer's token pieces' byte lengths
    assert (
        verdict(
            "02.1", lambda t: sum(len(get_tokenizer().decode_single_token_bytes(i)) for i in encode(t)) / len(encode(t))
        )[0]
        is True
    )
    assert verdict("02.1", lambda t: len(bytearray(t, "utf-8")) / float(len(encode(t))))[0] is True


def test_02_2_leading_space():
    assert len(encode(" Rosencrantz")) < len(encode("Rosencrantz"))
    assert verdict("02.2", "Rosencrantz")[0] is True
    assert "as many tokens" in wrong("02.2", "question")
    assert len(encode(" ness")) > len(encode("ness"))
    assert "MORE" in wrong("02.2", "ness")
    assert "letters only" in wrong("02.2", " Rosencrantz")
    assert "str" in wrong("02.2", 42)
    for alternative in ("Guildenstern", "Rosencrantz"):
        assert verdict("02.2", alternative)[0] is True, alternative


def test_02_3_release():
    assert verdict("02.3", right_release)[0] is True
    assert verdict("02.3", library_release)[0] is True  # the library's own, more patient, rule is right too
    assert "\\ufffd" in wrong("02.3", lambda ids: [decode([i]) for i in ids])
    assert "held back" in wrong("02.3", lambda ids: [""] * (len(ids) - 1) + [decode(ids)])
    assert "not arrived" in wrong("02.3", lambda ids: [decode(ids)] + [""] * (len(ids) - 1))
    assert "one str per token" in wrong("02.3", lambda ids: [decode(ids)])

    def by_byte_count(ids):  # count the bytes of incomplete characters at the end, by UTF-8's lead bits
        out, pending = [], b""
        for i in ids:
            pending += get_tokenizer().decode_single_token_bytes(i)
            cut = len(pending)
            for back in range(1, min(4, len(pending)) + 1):
                b = pending[-back]
                if b >> 6 != 0b10:  # a lead byte: is its character complete?
                    need = 1 if b < 0x80 else 2 if b >> 5 == 0b110 else 3 if b >> 4 == 0b1110 else 4
                    cut = len(pending) - back if need > back else len(pending)
                    break
            out.append(pending[:cut].decode("utf-8"))
            pending = pending[cut:]
        return out

    assert verdict("02.3", by_byte_count)[0] is True


def test_02_4_bpe():
    assert verdict("02.4", right_bpe)[0] is True
    why = wrong("02.4", greedy_longest)
    assert "LOWEST rank" in why
    assert "switches off" in wrong("02.4", encode)

    def heap_free_by_ranks(chunk):  # one merge at a time, every occurrence of the best pair merged at once
        ranks = mergeable_ranks()
        parts = [bytes([b]) for b in chunk.encode("utf-8")]
        while len(parts) > 1:
            best = (
                min((ranks[a + b], a + b) for a, b in itertools.pairwise(parts) if a + b in ranks)
                if any(a + b in ranks for a, b in itertools.pairwise(parts))
                else None
            )
            if best is None:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] + parts[i + 1] == best[1]:
                    merged.append(best[1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return [ranks[p] for p in parts]

    def recursive(chunk):
        ranks = mergeable_ranks()

        def merge(parts):
            pairs = [(ranks[a + b], i) for i, (a, b) in enumerate(itertools.pairwise(parts)) if a + b in ranks]
            if not pairs:
                return parts
            i = min(pairs)[1]
            return merge([*parts[:i], parts[i] + parts[i + 1], *parts[i + 2 :]])

        return [ranks[p] for p in merge([bytes([b]) for b in chunk.encode("utf-8")])]

    assert verdict("02.4", heap_free_by_ranks)[0] is True
    assert verdict("02.4", recursive)[0] is True
    assert "do not spell" in wrong("02.4", lambda chunk: right_bpe(chunk)[:-1] if len(chunk) > 3 else right_bpe(chunk))


def test_02_5_pre_split():
    ok, remark = verdict("02.5", "a\n\nb")
    assert ok is True and "spans a boundary" in remark
    assert "exactly encode's tokens" in wrong("02.5", "To be, or not to be")
    assert "at most 200" in wrong("02.5", "a\n\nb" * 100)
    assert "non-empty" in wrong("02.5", "")
    for alternative in ("A\n\n\n\nB", "x\n\n\n\ny"):  # other boundaries a merge crosses
        assert verdict("02.5", alternative)[0] is True, alternative
