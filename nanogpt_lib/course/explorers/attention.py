"""The attention explorer: which earlier tokens each head of a model reads, as heat maps with the tokens as labels.

The library's layer never hands out its attention weights: ``F.scaled_dot_product_attention`` computes them
inside one fused call. So :func:`layer_attention` recomputes them from the queries and keys the layer itself
makes (``CausalSelfAttention.qkv``, which its forward calls too);
tests/test_explorers_attention.py checks that these weights times the values, through ``c_proj``, give the
layer's own output, with and without RoPE. :func:`attention_weights` catches each layer's input with a hook
while the model runs, so the weights are those of the model as it ran.

The drawing functions return a matplotlib ``Figure`` not registered with pyplot (no global state, nothing to
close); :func:`explorer` only wires ipywidgets controls to them (notebook 03 shows it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from matplotlib.figure import Figure

from ...model import GPT, CausalSelfAttention
from ...sample import encoding_of
from ...tokenizer import get_tokenizer
from . import figure_png

DEFAULT_PROMPT = "HAMLET:\nTo be, or not to be: that is the question:\nWhether 'tis nobler in the mind to suffer"


def layer_attention(layer: CausalSelfAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weights, v)`` of ``layer`` on its input ``x`` (B, T, C), the output of its block's ``ln_1``.

    ``weights`` (B, n_head, T, T): row i is how query i shares its attention among keys 0..i (it sums to 1);
    ``v`` (B, n_head, T, C / n_head): the values they average. Dropout is not applied (as in eval mode).
    """
    T = x.size(1)
    q, k, v = layer.qkv(x)  # as the layer's forward makes them (QK-norm, RoPE from position 0)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    return scores.masked_fill(~mask, float("-inf")).softmax(dim=-1), v


@torch.no_grad()
def attention_weights(model: GPT, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Every head's attention weights on the token ids ``ids`` (one sequence): float32 (n_layer, n_head, T, T),
    indexed (layer, head, query, key), on the CPU. The model runs in eval mode (no dropout) for the call."""
    idx = torch.as_tensor(ids, dtype=torch.long).view(1, -1)
    if idx.numel() == 0:
        raise ValueError("no tokens: give a prompt of at least one token")
    device = next(model.parameters()).device
    caught: list[tuple[CausalSelfAttention, torch.Tensor]] = []
    hooks = [
        block.attn.register_forward_pre_hook(lambda layer, args: caught.append((layer, args[0])))
        for block in model.transformer.h
    ]
    was_training = model.training
    model.eval()
    try:
        model.hidden(idx.to(device))  # the trunk only: the LM head plays no part in attention
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return torch.stack([layer_attention(layer, x)[0][0] for layer, x in caught]).float().cpu()


def token_labels(ids: Sequence[int] | torch.Tensor, tokenizer: Any = None) -> list[str]:
    """One tick label per token: its text, with newlines and tabs shown as ``\\n`` and ``\\t``."""
    tok = tokenizer or get_tokenizer()
    return [tok.decode([int(i)]).replace("\n", "\\n").replace("\t", "\\t") for i in ids]


def _check_layer(weights: torch.Tensor, labels: Sequence[str], layer: int) -> None:
    if weights.dim() != 4 or weights.size(-1) != weights.size(-2):
        raise ValueError(f"weights must be (n_layer, n_head, T, T), got {tuple(weights.shape)}")
    if len(labels) != weights.size(-1):
        raise ValueError(f"{len(labels)} labels for {weights.size(-1)} tokens")
    if not 0 <= layer < weights.size(0):
        raise ValueError(f"layer must be in 0..{weights.size(0) - 1}, got {layer}")


def _heatmap(ax: Any, w: torch.Tensor, labels: Sequence[str], fontsize: float) -> Any:
    im = ax.imshow(w.numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(len(labels)), labels, fontsize=fontsize)
    return im


def _fontsize(n_tokens: int) -> float:
    return max(5.0, min(9.0, 320.0 / max(n_tokens, 1)))


def plot_head(weights: torch.Tensor, labels: Sequence[str], layer: int, head: int) -> Figure:
    """Heat map of one head: ``weights[layer, head]`` with the tokens on both axes (queries down, keys across)."""
    _check_layer(weights, labels, layer)
    if not 0 <= head < weights.size(1):
        raise ValueError(f"head must be in 0..{weights.size(1) - 1}, got {head}")
    T = len(labels)
    side = min(9.0, 3.0 + 0.16 * T)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    im = _heatmap(ax, weights[layer, head], labels, _fontsize(T))
    ax.set_xlabel("key (the token attended to)")
    ax.set_ylabel("query (the token attending)")
    ax.set_title(f"layer {layer}, head {head}: where each token looks")
    fig.colorbar(im, ax=ax, shrink=0.8, label="attention weight")
    return fig


def plot_heads(weights: torch.Tensor, labels: Sequence[str], layer: int) -> Figure:
    """All heads of ``layer`` side by side, on a shared colour scale, to compare what each one reads."""
    _check_layer(weights, labels, layer)
    H, T = weights.size(1), len(labels)
    cols = math.ceil(math.sqrt(H))  # a square-ish grid: 4 heads in 2 x 2, 8 in 3 x 3
    rows = math.ceil(H / cols)
    side = min(4.5, 2.4 + 0.07 * T)
    fig = Figure(figsize=(cols * side + 1.4, rows * side + 1.0), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    font = _fontsize(T) * 0.8
    for h, ax in enumerate(axes.flat):
        if h >= H:
            ax.set_visible(False)
            continue
        im = _heatmap(ax, weights[layer, h], labels, font)
        ax.set_title(f"head {h}")
    for ax in axes[-1]:
        ax.set_xlabel("key")
    for ax in axes[:, 0]:
        ax.set_ylabel("query")
    fig.suptitle(f"layer {layer}: all {H} heads")
    fig.colorbar(im, ax=axes, shrink=0.6, label="attention weight")
    return fig


def explorer(
    model: GPT,
    tokenizer: Any = None,
    prompt: str = DEFAULT_PROMPT,
    layer: int = 0,
    head: int = 0,
    compare: bool = False,
) -> Any:
    """An ipywidgets view of ``model``'s attention: a prompt box, layer and head sliders, a "compare heads"
    toggle, and the heat map, redrawn on every change.

    The tokenizer (tiktoken-like: ``encode_ordinary`` and ``decode``) defaults to the model's own (the one
    :func:`~nanogpt_lib.sample.load_model` attaches), else GPT-2's. A prompt longer than
    the model's context keeps its first ``block_size`` tokens. The returned ``VBox`` holds the controls as
    attributes (``prompt``, ``layer``, ``head``, ``compare``, ``plot``, ``status``) and the data shown
    (``ids``, ``labels``, ``weights``); each part has a CSS class ``nanogpt-attention-<part>``.
    """
    try:
        import ipywidgets as widgets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('the attention explorer needs ipywidgets: pip install -e ".[notebooks]"') from e

    tok = tokenizer or encoding_of(model)
    cfg = model.config
    wide = widgets.Layout(width="560px")
    style = {"description_width": "70px"}
    box = widgets.VBox()
    box.prompt = widgets.Textarea(
        value=prompt,
        description="prompt",
        continuous_update=False,
        style=style,
        layout=widgets.Layout(width="560px", height="70px"),
    )
    box.layer = widgets.IntSlider(
        value=layer, min=0, max=cfg.n_layer - 1, description="layer", style=style, continuous_update=False
    )
    box.head = widgets.IntSlider(
        value=head, min=0, max=cfg.n_head - 1, description="head", style=style, continuous_update=False
    )
    box.compare = widgets.ToggleButton(
        value=compare, description="compare heads", icon="th", tooltip="show every head of the layer side by side"
    )
    box.status = widgets.Label()
    box.plot = widgets.Image(format="png", layout=wide)
    box.ids, box.labels, box.weights = [], [], None
    for part in ("prompt", "layer", "head", "compare", "plot", "status"):
        getattr(box, part).add_class(f"nanogpt-attention-{part}")

    def redraw(_change: Any = None) -> None:
        box.head.disabled = box.compare.value
        if box.weights is None:  # no prompt yet: nothing to draw
            return
        if box.compare.value:
            fig = plot_heads(box.weights, box.labels, box.layer.value)
        else:
            fig = plot_head(box.weights, box.labels, box.layer.value, box.head.value)
        box.plot.value = figure_png(fig)

    def recompute(_change: Any = None) -> None:
        ids = tok.encode_ordinary(box.prompt.value)
        if not ids:
            box.status.value = "type some text: the prompt has no tokens"
            return
        kept = ids[: cfg.block_size]
        box.ids, box.labels = kept, token_labels(kept, tok)
        box.weights = attention_weights(model, kept)
        cut = f" (the first {cfg.block_size} of {len(ids)}: the model's context)" if len(ids) > len(kept) else ""
        box.status.value = f"{len(kept)} tokens{cut}"
        redraw()

    recompute()
    box.prompt.observe(recompute, "value")
    for control in (box.layer, box.head, box.compare):
        control.observe(redraw, "value")
    box.children = [box.prompt, widgets.HBox([box.layer, box.head, box.compare]), box.status, box.plot]
    return box
