"""Sampling's cuts drawn on one real row of logits (chapter 07): where temperature, top-k, top-p and min-p stop.

A learner reads four rules in words; on one picture of the sorted distribution they see that top-k stops at
a fixed rank, top-p where the cumulative mass reaches p, and min-p where a token falls below a share of
the likeliest one, and so that the three cut the same row at very different places.
"""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

CUT_COLORS = {"top-k": "tab:blue", "top-p": "tab:orange", "min-p": "tab:green"}


def cut_sizes(sorted_probs: torch.Tensor, top_k: int, top_p: float, min_p: float) -> dict[str, int]:
    """How many tokens each cut keeps of a distribution sorted likeliest first (1-D, summing to 1).

    The rules are the library's (``nanogpt_lib.sample.sample_next``) and exercise 07.3's: top-p keeps a
    token while the mass ranked above it is still below p, min-p keeps the tokens with at least min_p
    times the top token's probability.
    """
    mass_above = sorted_probs.cumsum(dim=0) - sorted_probs
    return {
        "top-k": min(top_k, sorted_probs.numel()),
        "top-p": int((mass_above < top_p).sum()),
        "min-p": int((sorted_probs >= min_p * sorted_probs[0]).sum()),
    }


def sampling_cuts_figure(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 10,
    top_p: float = 0.9,
    min_p: float = 0.05,
    title: str | None = None,
) -> Figure:
    """The sorted next-token distribution of ``logits`` (vocab,) at ``temperature``, with each cut's line.

    Left: probability by rank (log scales, the whole vocabulary), the model's own distribution (T = 1) in
    gray under the tempered one, a vertical line where each cut stops. Right: the cumulative mass, with the
    mass each cut keeps written in its label, since that is what the renormalisation scales up.
    """
    if logits.dim() != 1 or temperature <= 0:
        raise ValueError(
            f"one row of logits (vocab,) and a temperature > 0, got shape {tuple(logits.shape)}, "
            f"temperature {temperature}"
        )
    logits = logits.detach().float().cpu()
    own = logits.softmax(dim=-1).sort(descending=True).values
    probs = (logits / temperature).softmax(dim=-1).sort(descending=True).values
    cumulative = probs.cumsum(dim=0)
    sizes = cut_sizes(probs, top_k, top_p, min_p)
    settings = {"top-k": f"k = {top_k}", "top-p": f"p = {top_p:g}", "min-p": f"min_p = {min_p:g}"}
    ranks = torch.arange(1, probs.numel() + 1).numpy()

    fig = Figure(figsize=(10, 3.4))
    left, right = fig.subplots(1, 2)
    if temperature != 1:
        left.loglog(ranks, own.numpy(), color="lightgray", lw=1, label="T = 1 (the model's own)")
    left.loglog(ranks, probs.numpy(), color="black", lw=1.2, label=f"T = {temperature:g}")
    right.semilogx(ranks, cumulative.numpy(), color="black", lw=1.2)
    for name, n in sizes.items():
        kept = float(cumulative[n - 1])
        text = f"{name} ({settings[name]}): {n:,} tokens, {kept:.1%} of the mass"
        for ax in (left, right):
            ax.axvline(n, color=CUT_COLORS[name], ls="--", lw=1.2, label=text if ax is right else None)
    left.set_xlabel("rank (likeliest first)")
    left.set_ylabel("probability")
    left.legend(loc="lower left", fontsize=8)
    right.set_xlabel("rank (likeliest first)")
    right.set_ylabel("cumulative probability")
    right.yaxis.set_major_formatter(PercentFormatter(1))
    right.legend(loc="lower right", fontsize=8)
    vocab = f"{probs.numel():,}-token vocabulary"
    left.set_title(title or f"one row of logits, sorted: a {vocab}", fontsize=10)
    right.set_title("each cut keeps the tokens left of its line", fontsize=10)
    fig.tight_layout()
    return fig
