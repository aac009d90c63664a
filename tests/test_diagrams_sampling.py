"""Chapter 07's diagram: the cut lines sit where the sampling rules stop, and the labels say so."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from nanogpt_lib.course.diagrams.sampling import cut_sizes, sampling_cuts_figure
from nanogpt_lib.sample import sample_next


def _texts(fig) -> str:
    parts = [t.get_text() for ax in fig.axes for t in (ax.title, *ax.texts)]
    parts += [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    return "\n".join(parts)


def _cut_lines(fig) -> list[float]:
    """The x of every vertical line on the right-hand axes (one per cut)."""
    right = fig.axes[1]
    return [float(line.get_xdata()[0]) for line in right.get_lines() if len(set(line.get_xdata())) == 1]


def test_cut_sizes_are_the_samplers_kept_sets() -> None:
    """top-k and top-p as sample_next keeps them (every draw inside, and the set all drawn), min-p by its rule."""
    torch.manual_seed(0)
    logits = torch.randn(40) * 2
    probs = logits.softmax(-1).sort(descending=True).values
    sizes = cut_sizes(probs, top_k=7, top_p=0.6, min_p=0.1)
    rows = logits.expand(4000, -1)
    for name, knobs in (("top-k", dict(top_k=7)), ("top-p", dict(top_p=0.6))):
        drawn = sample_next(rows, 1.0, gen=torch.Generator().manual_seed(1), **knobs).unique()
        # each kept token holds >= 4.7% of the kept mass here (7 and 4 tokens kept), so one is missed by
        # 4,000 draws with probability <= 0.953^4000 < 1e-80: the drawn set is the kept set
        assert len(drawn) == sizes[name], name
    assert sizes["min-p"] == int((logits.softmax(-1) >= 0.1 * logits.softmax(-1).max()).sum())


def test_figure_shows_the_row_it_was_given() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1000) * 3
    fig = sampling_cuts_figure(logits, temperature=0.8, top_k=12, top_p=0.9, min_p=0.05)
    probs = (logits / 0.8).softmax(-1).sort(descending=True).values
    sizes = cut_sizes(probs, 12, 0.9, 0.05)
    text = _texts(fig)
    assert "1,000-token vocabulary" in text and "T = 0.8" in text
    for name, setting in (("top-k", "k = 12"), ("top-p", "p = 0.9"), ("min-p", "min_p = 0.05")):
        kept = probs[: sizes[name]].sum()
        assert f"{name} ({setting}): {sizes[name]:,} tokens, {kept:.1%} of the mass" in text
    assert sorted(_cut_lines(fig)) == sorted(float(n) for n in sizes.values())


def test_figure_changes_with_the_settings_and_the_row() -> None:
    torch.manual_seed(0)
    logits = torch.randn(500) * 3
    base = sampling_cuts_figure(logits, top_p=0.9)
    assert _cut_lines(sampling_cuts_figure(logits, top_p=0.5)) != _cut_lines(base)
    assert _cut_lines(sampling_cuts_figure(logits, temperature=2.0)) != _cut_lines(base)
    assert "500-token" in _texts(base) and "250-token" in _texts(sampling_cuts_figure(logits[:250]))


def test_figure_rejects_a_batch_or_temperature_zero() -> None:
    with pytest.raises(ValueError, match="one row"):
        sampling_cuts_figure(torch.zeros(2, 10))
    with pytest.raises(ValueError, match="temperature"):
        sampling_cuts_figure(torch.zeros(10), temperature=0)
