"""The attention explorer: its weights are the model's own (weights @ v through c_proj gives each layer's output,
with learned positions, RoPE and QK-norm), its figures show what they say, and the widget redraws on change."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from nanogpt_lib.course.explorers.attention import (
    attention_weights,
    figure_png,
    layer_attention,
    plot_head,
    plot_heads,
    token_labels,
)
from nanogpt_lib.model import GPT, GPTConfig
from nanogpt_lib.tokenizer import decode, encode, get_tokenizer

from tiny import SMALL_MODEL

TINY = replace(SMALL_MODEL, n_head=4, block_size=24)  # four heads to tell apart, a context longer than a line
VARIANTS = {"learned": TINY, "rope": replace(TINY, pos="rope"), "rope+qk_norm": replace(TINY, pos="rope", qk_norm=True)}


def sharp_model(config: GPTConfig, seed: int = 0) -> GPT:
    """A model whose heads are far from uniform: GPT-2's 0.02 init makes every score about 0 and every head a plain
    average, which would hide a wrong scale or a wrong rotation. Scaling c_attn by 30 (QK-norm's gains by 3) gives
    scores of size ~1-10."""
    torch.manual_seed(seed)
    model = GPT(config).eval()
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_attn.weight.mul_(30)
            block.attn.c_attn.bias.normal_()
            if config.qk_norm:  # unit-RMS queries and keys: their gains set the scores' size
                block.attn.q_norm.weight.fill_(3.0)
                block.attn.k_norm.weight.fill_(3.0)
    return model


def layer_inputs(model: GPT, idx: torch.Tensor) -> list[torch.Tensor]:
    """Each block's attention input (its ln_1 output), walked by hand: independent of the hooks under test."""
    tf = model.transformer
    x = tf.wte(idx)
    if "wpe" in tf:
        x = x + tf.wpe(torch.arange(idx.size(1)))
    inputs = []
    for block in tf.h:
        inputs.append(block.ln_1(x))
        x, _ = block(x)
    return inputs


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@torch.no_grad()
def test_weights_times_values_give_each_layers_output(variant):
    model = sharp_model(VARIANTS[variant])
    idx = torch.randint(0, 50257, (2, 19), generator=torch.Generator().manual_seed(1))
    for block, x in zip(model.transformer.h, layer_inputs(model, idx)):
        w, v = layer_attention(block.attn, x)
        B, H, T, _ = w.shape
        assert w.shape == (2, 4, 19, 19) and v.shape == (2, 4, 19, 8)
        assert torch.allclose(w.sum(-1), torch.ones(B, H, T))  # each row a distribution (float32 rounding)
        assert (w.triu(1) == 0).all()  # causal: no weight on later keys
        assert w.max(-1).values.mean() > 0.5  # sharp heads: the comparison below is not between plain averages
        y = (w @ v).transpose(1, 2).reshape(B, T, -1) @ block.attn.c_proj.weight.T + block.attn.c_proj.bias
        y_lib, _ = block.attn(x)
        # float32 in another summation order than the fused kernel: ~1e-7 relative per sum; 1e-5 of the
        # largest output leaves room and nothing more (a missing rotation or scale moves outputs by ~1e-1)
        assert (y - y_lib).abs().max() <= 1e-5 * y_lib.abs().max(), variant


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_attention_weights_are_the_models_own(variant):
    model = sharp_model(VARIANTS[variant])
    ids = encode("To be, or not to be: that is the question:")
    maps = attention_weights(model, ids)
    assert maps.shape == (2, 4, len(ids), len(ids)) and maps.dtype == torch.float32
    with torch.no_grad():
        by_walk = [
            layer_attention(b.attn, x)[0][0]
            for b, x in zip(model.transformer.h, layer_inputs(model, torch.tensor([ids])))
        ]
    for layer, w in enumerate(by_walk):
        assert torch.equal(maps[layer], w)  # the same inputs and the same operations: bitwise
    assert torch.equal(attention_weights(model, torch.tensor(ids)), maps)  # a tensor of ids works the same


def test_dropout_is_off_and_the_mode_restored():
    model = sharp_model(replace(TINY, pos="rope", dropout=0.5)).train()
    ids = encode("HAMLET:\nTo be")
    first = attention_weights(model, ids)
    assert model.training  # put back as found
    assert torch.equal(first, attention_weights(model, ids))  # dropout off while the weights were computed
    with pytest.raises(ValueError, match="no tokens"):
        attention_weights(model, [])
    with pytest.raises(ValueError, match="longer than block_size"):
        attention_weights(model, list(range(TINY.block_size + 1)))


def test_shipped_model_has_a_previous_token_head():
    from nanogpt_lib.sample import load_model

    model = load_model(device="cpu")
    passage = "HAMLET:\nTo be, or not to be: that is the question:\nWhether 'tis nobler in the mind to suffer"
    ids = model.tokenizer.encode_ordinary(passage)  # the shipped model reads its own BPE, not GPT-2's
    maps = attention_weights(model, ids)
    c = model.config
    assert maps.shape == (c.n_layer, c.n_head, len(ids), len(ids))
    previous = maps.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)  # (layer, head): weight on the token before
    assert previous.max() > 0.6  # notebook 03 finds 0.66 (layer 0); the same model untrained gives at most 0.15


def test_token_labels_show_each_tokens_text():
    ids = encode("HAMLET:\nTo\tbe")
    labels = token_labels(ids)
    assert len(labels) == len(ids) and "\\n" in "".join(labels) and "\\t" in "".join(labels)
    assert [s.replace("\\n", "\n").replace("\\t", "\t") for s in labels] == [decode([i]) for i in ids]
    assert token_labels(ids, get_tokenizer()) == labels


def test_plot_head_shows_that_head_with_the_tokens():
    maps = torch.rand(2, 3, 5, 5).tril()
    labels = ["To", " be", ",", " or", "\\n"]
    fig = plot_head(maps, labels, layer=1, head=2)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == labels == [t.get_text() for t in ax.get_yticklabels()]
    assert torch.equal(torch.as_tensor(ax.images[0].get_array().data), maps[1, 2])
    assert "layer 1, head 2" in ax.get_title() and "key" in ax.get_xlabel() and "query" in ax.get_ylabel()
    assert len(fig.axes) == 2  # the map and its colour bar
    for bad in (dict(layer=2, head=0), dict(layer=0, head=3)):
        with pytest.raises(ValueError, match="must be in"):
            plot_head(maps, labels, **bad)
    with pytest.raises(ValueError, match="4 labels for 5 tokens"):
        plot_head(maps, labels[:4], 0, 0)


def test_plot_heads_shows_every_head_of_the_layer():
    maps = torch.rand(2, 6, 4, 4)
    labels = list("abcd")
    fig = plot_heads(maps, labels, layer=1)
    shown = [ax for ax in fig.axes if ax.images and ax.get_visible()]
    assert [ax.get_title() for ax in shown] == [f"head {h}" for h in range(6)]
    for h, ax in enumerate(shown):
        assert torch.equal(torch.as_tensor(ax.images[0].get_array().data), maps[1, h])
    assert fig.get_suptitle() == "layer 1: all 6 heads"
    assert figure_png(fig).startswith(b"\x89PNG")


# ---- the widget, headless --------------------------------------------------------------------------------------


@pytest.fixture
def explorer_and_model():
    pytest.importorskip("ipywidgets")
    from nanogpt_lib.course.explorers.attention import explorer

    model = sharp_model(replace(TINY, pos="rope"))
    return explorer(model, prompt="To be, or not to be"), model


def test_widget_parts_have_their_css_classes(explorer_and_model):
    box, _ = explorer_and_model
    for part in ("prompt", "layer", "head", "compare", "plot", "status"):
        assert f"nanogpt-attention-{part}" in getattr(box, part)._dom_classes


def test_widget_redraws_on_layer_head_and_compare(explorer_and_model):
    box, model = explorer_and_model
    ids = encode("To be, or not to be")
    assert box.ids == ids and box.labels == token_labels(ids) and box.status.value == f"{len(ids)} tokens"
    assert torch.equal(box.weights, attention_weights(model, ids))
    assert box.plot.value == figure_png(plot_head(box.weights, box.labels, 0, 0))  # rendering is deterministic
    seen = [box.plot.value]
    box.layer.value = 1
    box.head.value = 3
    assert box.plot.value == figure_png(plot_head(box.weights, box.labels, 1, 3))
    seen.append(box.plot.value)
    box.compare.value = True
    assert box.head.disabled and box.plot.value == figure_png(plot_heads(box.weights, box.labels, 1))
    seen.append(box.plot.value)
    assert len(set(seen)) == 3  # each change drew something else


def test_widget_recomputes_on_a_new_prompt(explorer_and_model):
    box, model = explorer_and_model
    before = box.plot.value
    box.prompt.value = "HAMLET:\nWhether 'tis nobler"
    ids = encode("HAMLET:\nWhether 'tis nobler")
    assert box.ids == ids and torch.equal(box.weights, attention_weights(model, ids))
    assert box.plot.value != before and box.status.value == f"{len(ids)} tokens"
    box.prompt.value = "the" + " the" * 39  # 40 tokens, block_size 24: the first 24 are kept
    assert len(box.ids) == TINY.block_size and box.weights.shape[-1] == TINY.block_size
    assert "first 24 of 40" in box.status.value
    shown = box.plot.value
    box.prompt.value = ""
    assert "no tokens" in box.status.value and box.plot.value == shown  # nothing to draw: the last plot stays


def test_widget_reads_with_the_models_own_tokenizer():
    """A model from load_model carries its tokenizer (the shipped one reads a BPE of its own): the widget's
    default must be that one, not GPT-2's, or its ids would index the wrong rows of the embedding."""
    pytest.importorskip("ipywidgets")
    from nanogpt_lib.course.explorers.attention import explorer

    class Letters:  # a tiktoken-like tokenizer of one id per character: unlike GPT-2's on any word
        def encode_ordinary(self, text):
            return [ord(ch) % TINY.vocab_size for ch in text]

        def decode(self, ids):
            return "".join(chr(i) for i in ids)

    model = sharp_model(replace(TINY, pos="rope"))
    model.tokenizer = Letters()
    box = explorer(model, prompt="To be")
    assert box.ids == Letters().encode_ordinary("To be") != encode("To be")
    assert box.labels == list("To be") and box.status.value == "5 tokens"
