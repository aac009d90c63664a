"""Chapter 03's diagram: one head of a real CausalSelfAttention layer, matrix by matrix: q, k, v, the
scaled scores, the causal mask, the weights and the head's output, each titled with its real shape."""

from __future__ import annotations

import math

import torch
from matplotlib.figure import Figure

from ...model import CausalSelfAttention


@torch.no_grad()
def attention_figure(attn: CausalSelfAttention, x: torch.Tensor, head: int = 0, row: int = 0) -> Figure:
    """Heat maps of head ``head`` of ``attn`` on batch row ``row`` of ``x`` (B, T, C), computed with the layer's
    own projections (``attn.qkv``: RoPE and QK-norm included when the layer has them)."""
    B, T, C = x.shape
    q, k, v = (t[row, head] for t in attn.qkv(x))  # each (T, head_dim)
    hd = q.size(-1)
    scores = q @ k.T / math.sqrt(hd)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    out = weights @ v
    panels = [
        (f"q ({T}, {hd})", q),
        (f"k ({T}, {hd})", k),
        (f"v ({T}, {hd})", v),
        (f"scores q·kᵀ/√{hd} ({T}, {T})", scores),
        (f"mask ({T}, {T})", mask.float()),
        (f"weights softmax ({T}, {T})", weights),
        (f"output weights·v ({T}, {hd})", out),
    ]
    fig = Figure(figsize=(12, 2.6), layout="constrained")
    axes = fig.subplots(1, len(panels))
    for ax, (title, m) in zip(axes, panels):
        ax.imshow(m.float().numpy(), cmap="viridis", aspect="auto")
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_ylabel("position (query)")
    fig.suptitle(f"x (B={B}, T={T}, C={C}) → {attn.n_head} heads of {hd}: head {head} of row {row}", fontsize=10)
    return fig
