"""Chapter 06's checks: right samplers pass, typical slips fail with a reason; the probability the check
expects is what sample_next really draws with."""

from __future__ import annotations

import math

import pytest
import torch

from nanogpt_lib.exercises import ch06, verdict
from nanogpt_lib.sample import sample_next

from exercise_helpers import todo, wrong


@pytest.mark.parametrize("id", ["06.1", "06.2", "06.3"])
def test_placeholders_are_not_answered(id):
    assert verdict(id, None)[0] is None and verdict(id, todo)[0] is None


def sample_temperature(logits, temperature, gen):
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    z = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    return torch.multinomial(z.softmax(dim=-1), 1, generator=gen)


def test_temperature():
    assert verdict("06.1", sample_temperature)[0] is True

    def naive(logits, temperature, gen):  # divides first: overflows at a tiny temperature
        if temperature == 0:
            return logits.argmax(dim=-1, keepdim=True)
        return torch.multinomial((logits / temperature).softmax(dim=-1), 1, generator=gen)

    def argmin(logits, temperature, gen):
        return sample_temperature(-logits, temperature, gen) if temperature == 0 else sample_temperature(logits, temperature, gen)

    assert "overflows" in wrong("06.1", naive)
    assert "temperature 0:" in wrong("06.1", argmin) and "likeliest" in wrong("06.1", argmin)
    assert "differ from sample_next" in wrong("06.1", lambda l, t, g: sample_temperature(l, t, None))  # unseeded
    assert "shape" in wrong("06.1", lambda l, t, g: sample_temperature(l, t, g).flatten())


def prob_drawn(logits, token, temperature, top_k):
    z = logits / temperature
    if top_k is not None:
        z = z.masked_fill(z < z.topk(top_k).values[-1], -math.inf)
    return z.softmax(dim=-1)[token].item()


def test_probability():
    assert verdict("06.2", prob_drawn)[0] is True
    assert "whole vocabulary" in wrong("06.2", lambda l, t, T, k: prob_drawn(l, t, T, None))
    assert "never draw it" in wrong("06.2", lambda l, t, T, k: max(prob_drawn(l, t, T, k), 1e-9))
    assert "temperature" in wrong("06.2", lambda l, t, T, k: prob_drawn(l, t, 1.0, k))


def test_the_expected_probability_is_what_sample_next_draws():
    # 20,000 draws of one row: a frequency is within 5 binomial standard deviations (sqrt(p(1-p)/n) <= 0.0036)
    # of the exact probability, except with odds ~1e-6.
    logits = ch06.draw_logits(rows=1, seed=7)[0] * 3
    n = 20_000
    ranked = logits.argsort(descending=True).tolist()
    for temperature, top_k in ((1.0, None), (0.5, 10), (2.0, 10)):
        draws = sample_next(logits.expand(n, -1), temperature, top_k=top_k, gen=torch.Generator().manual_seed(0))
        for rank in (0, 1, 9, 10):
            token = ranked[rank]
            p = ch06.draw_probability(logits, token, temperature, top_k)
            freq = (draws == token).float().mean().item()
            assert abs(freq - p) <= 5 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-12, (temperature, top_k, rank, freq, p)


def top_p_sample(logits, p, gen):
    sorted_logits, ids = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    sorted_logits = sorted_logits.masked_fill(probs.cumsum(dim=-1) - probs >= p, -math.inf)
    return ids.gather(-1, torch.multinomial(sorted_logits.softmax(dim=-1), 1, generator=gen))


def test_top_p():
    assert verdict("06.3", top_p_sample)[0] is True

    def masked_in_vocab_order(logits, p, gen):  # the right distribution, drawn over the unsorted vocabulary
        sorted_logits, ids = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        sorted_logits = sorted_logits.masked_fill(probs.cumsum(dim=-1) - probs >= p, -math.inf)
        return torch.multinomial(logits.scatter(-1, ids, sorted_logits).softmax(dim=-1), 1, generator=gen)

    def no_cut(logits, p, gen):
        return top_p_sample(logits, 1.0, gen)

    def drops_the_crossing_token(logits, p, gen):  # keeps tokens while the mass *including* them is below p
        sorted_logits, ids = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) >= p
        drop[:, 0] = False  # always keep the likeliest
        sorted_logits = sorted_logits.masked_fill(drop, -math.inf)
        return ids.gather(-1, torch.multinomial(sorted_logits.softmax(dim=-1), 1, generator=gen))

    assert "inside the nucleus" in wrong("06.3", masked_in_vocab_order)
    assert "outside the nucleus" in wrong("06.3", no_cut)
    assert "differ from sample_next" in wrong("06.3", drops_the_crossing_token)
