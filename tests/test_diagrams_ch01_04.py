"""The diagrams of chapters 01-04 show the real numbers they are given, and change when those change."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import torch

from nanogpt_lib.course.diagrams._draw import texts
from nanogpt_lib.course.diagrams.attention import attention_figure
from nanogpt_lib.course.diagrams.block import block_figure, shapes
from nanogpt_lib.course.diagrams.bpe import apply_merge, merges_figure
from nanogpt_lib.course.diagrams.data import pipeline_figure
from nanogpt_lib.model import GPT, CausalSelfAttention, GPTConfig


def _joined(fig) -> str:
    return "\n".join(texts(fig))


META = {
    "splits": {
        "train": {"docs": 34, "tokens": 1_320_910, "bytes": 2_641_820},
        "val": {"docs": 4, "tokens": 145_921, "bytes": 291_842},
    },
    "eot_id": 50256,
    "tokenizer": "gpt2",
    "vocab_size": 50257,
    "dtype": "uint16",
    "request": {"seed": 0, "val_every": 10},
}


def test_the_pipeline_shows_the_datasets_counts_and_the_batchs_shape():
    x = torch.zeros(4, 16, dtype=torch.long)
    shown = _joined(pipeline_figure(META, x, x, 5_123_456))
    for number in (
        "38 documents",
        "train 34 / val 4",
        "1,320,910",
        "145,921",
        "2,641,820",
        "5,123,456",
        "x (4, 16)",
        "T=16",
        "id 50256",
    ):
        assert number in shown, number
    other = dict(META, splits={**META["splits"], "val": {"docs": 5, "tokens": 7, "bytes": 14}})
    shown_other = _joined(pipeline_figure(other, x[:2, :8], x[:2, :8], 10))
    assert "train 34 / val 5" in shown_other and "x (2, 8)" in shown_other and "x (4, 16)" not in shown_other


def test_the_merges_rows_replay_the_merges_given():
    merges = [(b"t", b"h"), (b"th", b"e"), (b" ", b"the")]
    shown = _joined(merges_figure("the then there", merges))
    # 14 bytes; "th" three times: 11; "the" three times: 8; " the" twice: 6
    assert "bytes: 14 symbols" in shown and "merge 1: t + h → 11" in shown and "merge 3: ␣ + the → 6" in shown
    assert "3 merges turn 14 bytes into 6 symbols" in shown
    assert "1 merges turn 5 bytes into 3 symbols" in _joined(merges_figure("ththe", merges[:1]))  # th, th, e
    assert apply_merge([b"a", b"a", b"a"], (b"a", b"a")) == [b"aa", b"a"]  # left to right, no overlap


def test_the_attention_panels_carry_the_layers_shapes():
    for C, n_head, T in ((16, 4, 13), (24, 2, 5)):
        attn = CausalSelfAttention(GPTConfig(n_embd=C, n_head=n_head, block_size=T, pos="rope"))
        shown = _joined(attention_figure(attn, torch.randn(2, T, C), head=1, row=1))
        hd = C // n_head
        assert f"q ({T}, {hd})" in shown and f"weights softmax ({T}, {T})" in shown
        assert f"x (B=2, T={T}, C={C}) → {n_head} heads of {hd}" in shown


def test_the_block_diagram_shows_the_shapes_a_forward_pass_gives():
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=8, vocab_size=96, mlp="relu2", pos="rope")
    model = GPT(config)
    idx = torch.zeros(3, 8, dtype=torch.long)
    seen = shapes(model, idx)
    assert seen["c_fc"] == (3, 8, 128) and seen["lm_head"] == (3, 8, 96) and seen["attn"] == (3, 8, 32)
    shown = _joined(block_figure(model, idx))
    for text in (
        "Block × 2",
        "c_fc → (3, 8, 128)",
        "logits",
        "(3, 8, 96)",
        "2 heads × 16",
        "ReLU²",
        "residual stream (3, 8, 32)",
    ):
        assert text in shown, text
    gelu = _joined(block_figure(GPT(GPTConfig.gpt2(n_layer=1, n_head=2, n_embd=32, block_size=8, vocab_size=96)), idx))
    assert "GELU" in gelu and "ReLU²" not in gelu and "Block × 1" in gelu
