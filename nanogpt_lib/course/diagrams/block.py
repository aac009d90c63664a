"""Chapter 04's diagram: the model as the residual stream flowing up through its blocks, each box labelled
with the shape a real forward pass gives it (recorded by hooks, not computed from the config)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn

from ...model import GPT
from ._draw import arrow, blank, box


@torch.no_grad()
def shapes(model: GPT, idx: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """The output shape of the embedding, the first block's pieces, the final norm and the LM head, from one
    forward pass of ``model`` on ``idx`` (B, T) with forward hooks."""
    tf, block = model.transformer, model.transformer.h[0]
    watched: dict[str, nn.Module] = {
        "wte": tf.wte,
        "ln_1": block.ln_1,
        "attn": block.attn,
        "ln_2": block.ln_2,
        "c_fc": block.mlp.c_fc,
        "mlp": block.mlp,
        "block": block,
        "ln_f": tf.ln_f,
        "lm_head": model.lm_head,
    }
    seen: dict[str, tuple[int, ...]] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: object, out: object) -> None:  # None: the output is left as is
            seen.setdefault(name, tuple((out[0] if isinstance(out, tuple) else out).shape))

        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in watched.items()]
    try:
        model(idx, all_logits=True)
    finally:
        for h in hooks:
            h.remove()
    return seen


def block_figure(model: GPT, idx: torch.Tensor) -> Figure:
    """Token ids up through the embedding, n_layer blocks (attention and MLP each read the stream through a
    norm and add back to it) and the LM head, every arrow labelled with its real shape."""
    s, c = shapes(model, idx), model.config
    hd = c.n_embd // c.n_head
    fig, ax = blank(7.2, 7.4)
    stream_x = 1.2
    ax.plot([stream_x, stream_x], [1.05, 5.85], color="#94a3b8", lw=6, zorder=0, solid_capstyle="butt")
    ax.text(
        stream_x - 0.2,
        3.4,
        f"residual stream {s['block']}",
        rotation=90,
        ha="center",
        va="center",
        fontsize=8,
        color="#475569",
    )
    box(ax, 0.3, 0.1, 1.8, 0.6, "token ids", f"idx {tuple(idx.shape)}", "#fef3c7")
    arrow(ax, (stream_x, 0.7), (stream_x, 1.05), f"wte ({c.vocab_size:,}, {c.n_embd}) → {s['wte']}")
    # one block, drawn once, repeated n_layer times
    ax.add_patch(Rectangle((0.25, 1.35), 6.8, 4.2, fill=False, ls="--", ec="#64748b"))
    ax.text(7.0, 5.45, f"Block × {c.n_layer}", ha="right", va="top", fontsize=9, fontweight="bold")
    act = "ReLU²" if c.mlp == "relu2" else "GELU"
    pos = ", RoPE on q, k" if c.pos == "rope" else ""
    for y, norm, title, body in (
        (
            1.6,
            "ln_1",
            "attention",
            f"{c.n_head} heads × {hd}{pos}\nq, k, v {(*s['ln_1'][:2], c.n_head, hd)}\nout {s['attn']}",
        ),
        (3.5, "ln_2", "MLP", f"c_fc → {s['c_fc']}\n{act}\nc_proj → {s['mlp']}"),
    ):
        box(ax, 2.2, y + 0.25, 1.5, 0.7, norm, str(s[norm]), colour="#ede9fe")
        box(ax, 4.0, y, 2.9, 1.3, title, body)
        arrow(ax, (stream_x, y + 0.6), (2.2, y + 0.6))
        arrow(ax, (3.7, y + 0.6), (4.0, y + 0.6))
        arrow(ax, (5.45, y + 1.3), (stream_x + 0.05, y + 1.6), "add")
        ax.text(stream_x, y + 1.6, "+", ha="center", va="center", fontsize=14, fontweight="bold", color="#b91c1c")
    box(ax, 0.3, 5.9, 1.8, 0.5, "ln_f", str(s["ln_f"]), "#ede9fe")
    arrow(
        ax,
        (stream_x, 6.4),
        (stream_x, 6.7),
        f"lm_head ({c.n_embd}, {c.vocab_size:,}){' tied to wte' if c.tie_head else ''}",
    )
    box(ax, 0.3, 6.7, 1.8, 0.55, "logits", str(s["lm_head"]), "#fef3c7")
    ax.set_title(f"GPT: {c.n_layer} blocks of width {c.n_embd}, context {c.block_size}", fontsize=10)
    return fig
