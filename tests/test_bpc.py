"""Bits per character and per byte (issue 23): a split's text counted on a hand-made data set whose answer is
known, the conversion of a known loss by hand, and the figures in the trainer's metrics, the summary line,
the loss plot and ``nanogpt eval``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nanogpt_lib import cli, data
from nanogpt_lib.checkpoint import export_weights
from nanogpt_lib.config import load_config
from nanogpt_lib.data import TextStats, text_stats
from nanogpt_lib.model import GPT
from nanogpt_lib.plots import loss_figure, read_metrics
from nanogpt_lib.tokenizer import EOT_ID, N_VOCAB, get_tokenizer
from nanogpt_lib.train import train

from tiny import TINY_MODEL, TINY_RUN

# Two documents with characters of 1, 2 and 3 UTF-8 bytes, so characters, bytes and tokens all differ.
VAL_DOCS = ["Hello wörld, naïve café!", "漢字 and kana かな."]


def hand_made(folder: Path, docs: list[str], meta_extra: dict | None = None) -> list[int]:
    """A data set written by hand: each split is the docs' GPT-2 ids, each document followed by end-of-text."""
    enc = get_tokenizer()
    ids = [t for d in docs for t in [*enc.encode_ordinary(d), EOT_ID]]
    folder.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split in ("train", "val"):
        np.asarray(ids, dtype=np.uint16).tofile(folder / f"{split}.bin")
        splits[split] = {"bytes": 2 * len(ids), **(meta_extra or {})}
    meta = {"vocab_size": N_VOCAB, "tokenizer": "gpt2", "dtype": "uint16", "eot_id": EOT_ID, "splits": splits}
    (folder / "meta.json").write_text(json.dumps(meta))
    return ids


def test_a_split_is_its_documents_text_without_the_separators(tmp_path, monkeypatch):
    ids = hand_made(tmp_path / "a", VAL_DOCS)
    chars, utf8 = sum(len(d) for d in VAL_DOCS), sum(len(d.encode()) for d in VAL_DOCS)
    assert chars < utf8 < len("".join(VAL_DOCS).encode()) + 2 * len("<|endoftext|>")  # the docs differ in each
    assert text_stats(tmp_path / "a", "val") == TextStats(len(ids), chars, utf8)  # 2 separators: 0 characters
    # Decoded one token at a time, a character split across tokens is cut between chunks: still counted once.
    enc = get_tokenizer()
    assert any(_not_utf8(enc.decode_single_token_bytes(t)) for t in ids if t != EOT_ID)  # the case arises
    monkeypatch.setattr(data, "DECODE_CHUNK", 1)
    hand_made(tmp_path / "b", VAL_DOCS)
    assert text_stats(tmp_path / "b", "val") == TextStats(len(ids), chars, utf8)


def test_meta_counts_are_used_and_a_changed_file_is_counted_again(tmp_path):
    ids = hand_made(tmp_path / "m", VAL_DOCS, {"chars": 1000, "text_bytes": 2000})  # what prepare records
    assert text_stats(tmp_path / "m", "val") == TextStats(len(ids), 1000, 2000)
    hand_made(tmp_path / "c", VAL_DOCS)
    first = text_stats(tmp_path / "c", "val")
    ids = hand_made(tmp_path / "c", VAL_DOCS[:1])  # the file changes: the cache, keyed by its identity, misses
    assert text_stats(tmp_path / "c", "val") == TextStats(len(ids), len(VAL_DOCS[0]), len(VAL_DOCS[0].encode()))
    assert first != text_stats(tmp_path / "c", "val")


def test_bits_of_a_known_loss_by_hand():
    stats = TextStats(tokens=4, chars=10, bytes=16)
    # 2 ln 2 nats per token are 2 bits per token; 4 tokens over 10 characters, 16 bytes. A few roundings of
    # ln 2 and the ratio: equal within 1e-12 relative.
    assert stats.bits_per_char(2 * math.log(2)) == pytest.approx(2 * 4 / 10, rel=1e-12)
    assert stats.bits_per_byte(2 * math.log(2)) == pytest.approx(2 * 4 / 16, rel=1e-12)


def decoded_val(home: Path) -> tuple[int, str]:
    """The prepared val split's token count and its documents' text, decoded by the test itself."""
    ids = np.fromfile(home / "data" / "txt" / "val.bin", dtype=np.uint16)
    return len(ids), get_tokenizer().decode([int(t) for t in ids if t != EOT_ID])


def test_the_trainer_logs_plots_and_sums_up_bits_per_character(home):
    result = train(
        load_config(None, [*TINY_RUN, "warmup_steps=1", "max_steps=2", "eval_every=2", "name=b"]), progress=False
    )
    n_tokens, text = decoded_val(home)
    [record] = [r for r in read_metrics(home / "runs" / "b") if r["kind"] == "eval"]
    # the definition, computed here apart from the library (its order of operations: 1e-12 relative)
    assert record["val_bpc"] == pytest.approx(record["val_loss"] / math.log(2) * n_tokens / len(text), rel=1e-12)
    assert record["val_bpb"] == pytest.approx(
        record["val_loss"] / math.log(2) * n_tokens / len(text.encode()), rel=1e-12
    )
    assert result.best_val_bpc == record["val_bpc"] and f"({record['val_bpc']:.4f} bits/char)" in result.summary()
    fig = loss_figure(read_metrics(home / "runs" / "b"))
    fig.canvas.draw()  # a secondary axis takes its limits from its parent's when drawn
    [ax] = fig.axes
    [right] = ax.child_axes  # the second scale of the same axes
    assert right.get_ylabel() == "bits per character (val text)"
    factor = record["val_bpc"] / record["val_loss"]  # the right scale is the left one times this (1e-9: floats)
    assert right.get_ylim() == pytest.approx([y * factor for y in ax.get_ylim()], rel=1e-9)
    old = [{k: v for k, v in r.items() if k not in ("val_bpc", "val_bpb")} for r in read_metrics(home / "runs" / "b")]
    assert not loss_figure(old).axes[0].child_axes  # a run logged before bits/char still plots, without it


def test_eval_gives_every_reference_in_bits_per_character_and_byte(home, tmp_path, capsys):
    torch.manual_seed(0)
    export_weights(GPT(TINY_MODEL), TINY_MODEL, tmp_path / "w")
    assert (
        cli.main(
            [
                "eval",
                "--weights",
                str(tmp_path / "w"),
                "--dataset",
                "txt",
                "--device",
                "cpu",
                "--json",
                str(tmp_path / "ref.json"),
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    ref = json.loads((tmp_path / "ref.json").read_text())
    n_tokens, text = decoded_val(home)
    assert (ref["val_tokens"], ref["val_chars"], ref["val_bytes"]) == (n_tokens, len(text), len(text.encode()))
    assert "bits/char" in out and "bits/byte" in out
    for key in ("uniform", "unigram", "untrained", "trained"):
        bpc = ref[key] / math.log(2) * n_tokens / len(text)  # 1e-12 relative: the order of the same operations
        assert ref["bpc"][key] == pytest.approx(bpc, rel=1e-12)
        assert ref["bpb"][key] == pytest.approx(bpc * len(text) / len(text.encode()), rel=1e-12)
        assert f"{ref['bpc'][key]:.4f}" in out


def _not_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False
