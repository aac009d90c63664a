"""Chapter 07's checks: right samplers pass however they draw (multinomial, Gumbel-max, an inverse CDF, a sort),
typical slips fail with a reason and never a traceback; the probability the check expects is what sample_next
really draws with."""

from __future__ import annotations

import math

import pytest
import torch

from nanogpt_lib.course import exercises as ex
from nanogpt_lib.course.exercises import ch07, verdict
from nanogpt_lib.sample import sample_next

from exercise_helpers import todo, wrong


@pytest.mark.parametrize("id", ["07.1", "07.2", "07.3", "07.4"])
def test_placeholders_are_not_answered(id):
    assert verdict(id, None)[0] is None and verdict(id, todo)[0] is None


def sample_temperature(logits, temperature, gen):
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    z = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    return torch.multinomial(z.softmax(dim=-1), 1, generator=gen)


def gumbel_max(logits, temperature, gen):  # argmax of z / T plus Gumbel noise: the same distribution
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    z = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    u = torch.rand(z.shape, generator=gen).clamp_min(1e-20)
    return (z - (-u.log()).log()).argmax(dim=-1, keepdim=True)


def inverse_cdf(logits, temperature, gen):  # one uniform per row, searched in the cumulative probabilities
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    p = ((logits - logits.amax(dim=-1, keepdim=True)).double() / temperature).softmax(dim=-1)
    u = torch.rand(p.size(0), 1, generator=gen, dtype=torch.float64)
    return torch.searchsorted(p.cumsum(dim=-1), u).clamp_max(p.size(-1) - 1)


def test_temperature():
    assert verdict("07.1", sample_temperature)[0] is True
    assert verdict("07.1", gumbel_max)[0] is True
    assert verdict("07.1", inverse_cdf)[0] is True

    def naive(logits, temperature, gen):  # divides first: overflows at a tiny temperature
        if temperature == 0:
            return logits.argmax(dim=-1, keepdim=True)
        return torch.multinomial((logits / temperature).softmax(dim=-1), 1, generator=gen)

    def argmin(logits, temperature, gen):
        return (
            sample_temperature(-logits, temperature, gen)
            if temperature == 0
            else sample_temperature(logits, temperature, gen)
        )

    def probs_scaled(logits, temperature, gen):  # temperature applied to probabilities: multinomial undoes it
        if temperature == 0:
            return logits.argmax(dim=-1, keepdim=True)
        return torch.multinomial(logits.softmax(dim=-1) / temperature, 1, generator=gen)

    def no_zero_case(logits, temperature, gen):  # temperature 0 divides by zero
        z = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
        return torch.multinomial(z.softmax(dim=-1), 1, generator=gen)

    assert "overflows" in wrong("07.1", naive) or "refused your probabilities" in wrong("07.1", naive)
    assert "temperature 0:" in wrong("07.1", argmin) and "likeliest" in wrong("07.1", argmin)
    assert "likeliest" in wrong("07.1", probs_scaled)
    why = wrong("07.1", no_zero_case)
    assert "refused your probabilities" in why and "Traceback" not in why and "\n" not in why
    assert "draw from gen" in wrong("07.1", lambda logits, t, g: sample_temperature(logits, t, None))  # unseeded
    assert "shape" in wrong("07.1", lambda logits, t, g: sample_temperature(logits, t, g).flatten())


def prob_drawn(logits, token, temperature, top_k):
    z = logits / temperature
    if top_k is not None:
        z = z.masked_fill(z < z.topk(top_k).values[-1], -math.inf)
    return z.softmax(dim=-1)[token].item()


def test_probability():
    assert verdict("07.2", prob_drawn)[0] is True
    assert "whole vocabulary" in wrong("07.2", lambda logits, t, T, k: prob_drawn(logits, t, T, None))
    assert "never draw it" in wrong("07.2", lambda logits, t, T, k: max(prob_drawn(logits, t, T, k), 1e-9))
    assert "temperature" in wrong("07.2", lambda logits, t, T, k: prob_drawn(logits, t, 1.0, k))

    def log_space(logits, token, temperature, top_k):
        z = logits.double() / temperature
        if top_k is not None:
            z = torch.full_like(z, -math.inf).scatter(0, z.topk(top_k).indices, z.topk(top_k).values)
        return z.log_softmax(-1)[token].exp().item()

    def kept_only(logits, token, temperature, top_k):
        z = logits / temperature
        values, ids = z.topk(top_k if top_k is not None else z.numel())
        return float(values.softmax(-1)[ids == token].sum())

    assert verdict("07.2", log_space)[0] is True
    assert verdict("07.2", kept_only)[0] is True


def test_the_expected_probability_is_what_sample_next_draws():
    # 20,000 draws of one row: a frequency is within 5 binomial standard deviations (sqrt(p(1-p)/n) <= 0.0036)
    # of the exact probability, except with odds ~1e-6.
    logits = ch07.draw_logits(rows=1, seed=7)[0] * 3
    n = 20_000
    ranked = logits.argsort(descending=True).tolist()
    for temperature, top_k in ((1.0, None), (0.5, 10), (2.0, 10)):
        draws = sample_next(logits.expand(n, -1), temperature, top_k=top_k, gen=torch.Generator().manual_seed(0))
        for rank in (0, 1, 9, 10):
            token = ranked[rank]
            p = ch07.draw_probability(logits, token, temperature, top_k)
            freq = (draws == token).float().mean().item()
            assert abs(freq - p) <= 5 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-12, (
                temperature,
                top_k,
                rank,
                freq,
                p,
            )


def min_p_sample(logits, min_p, gen):
    p = logits.softmax(dim=-1)
    p = torch.where(p >= min_p * p.amax(dim=-1, keepdim=True), p, 0.0)
    return torch.multinomial(p, 1, generator=gen)


def test_min_p():
    ok, remark = verdict("07.3", min_p_sample)
    assert ok is True and "follows the model's confidence" in remark

    def in_log_space(logits, min_p, gen):  # log p_i >= log min_p + log p_max, then Gumbel-max
        z = logits.log_softmax(dim=-1)
        keep = z >= math.log(min_p) + z.amax(dim=-1, keepdim=True) if min_p > 0 else torch.ones_like(z, dtype=bool)
        u = torch.rand(z.shape, generator=gen).clamp_min(1e-20)
        return (z.masked_fill(~keep, -math.inf) - (-u.log()).log()).argmax(dim=-1, keepdim=True)

    def after_a_sort(logits, min_p, gen):  # sorted: the kept tokens are a prefix
        p, ids = logits.softmax(dim=-1).sort(dim=-1, descending=True)
        p = p.masked_fill(p < min_p * p[:, :1], 0.0)
        return ids.gather(-1, torch.multinomial(p, 1, generator=gen))

    assert verdict("07.3", in_log_space)[0] is True
    assert verdict("07.3", after_a_sort)[0] is True

    def strict(logits, min_p, gen):  # > instead of >=: at min_p = 1 nothing is left
        p = logits.softmax(dim=-1)
        return torch.multinomial(torch.where(p > min_p * p.amax(dim=-1, keepdim=True), p, 0.0), 1, generator=gen)

    def absolute(logits, min_p, gen):  # a fixed probability floor, not relative to the likeliest token
        p = logits.softmax(dim=-1)
        p = torch.where(p >= min_p, p, 0.0)
        p[p.sum(-1) == 0, 0] = 1.0
        return torch.multinomial(p, 1, generator=gen)

    def on_logits(logits, min_p, gen):  # the cut applied to logits instead of probabilities
        keep = logits >= min_p * logits.amax(dim=-1, keepdim=True)
        return torch.multinomial(logits.masked_fill(~keep, -math.inf).softmax(-1), 1, generator=gen)

    def unseeded(logits, min_p, gen):
        return min_p_sample(logits, min_p, None)

    why = wrong("07.3", strict)
    assert "empty kept set" in why and "\n" not in why
    assert "kept token" in wrong("07.3", absolute) or "tokens the rule does not keep" in wrong("07.3", absolute)
    assert "do not fit" in wrong("07.3", on_logits)
    assert "draw from gen" in wrong("07.3", unseeded)


def test_the_distribution_test_has_power_and_a_small_false_failure_rate():
    # a sampler off by 10% in one temperature fails; the right one passes for 5 other seeds of the check's draws
    assert "do not fit" in wrong("07.1", lambda logits, t, g: sample_temperature(logits, t * 1.1 if t else 0, g))
    for seed in range(5):
        assert (
            verdict(
                "07.1",
                lambda logits, t, g, s=seed: sample_temperature(
                    logits, t, torch.Generator().manual_seed(g.initial_seed() * 7 + s)
                ),
            )[0]
            is True
        )


def test_test_rows_keep_no_token_on_the_min_p_edge():
    # float32 and float64 must agree on every kept set: no ratio p / p_max within 1e-4 of a cut
    for row in ch07._test_rows():
        ratio = row.double().softmax(-1) / row.double().softmax(-1).max()
        for m in ch07.MIN_PS:
            near = (ratio - m).abs() / m
            assert bool(((near > 1e-4) | (ratio == 1)).all()), m


def penalize(logits, previous, penalty):
    out = logits.clone()
    for r, ids in enumerate(previous):
        seen = torch.tensor(sorted(set(ids)), dtype=torch.long)
        if len(seen):
            z = out[r, seen]
            out[r, seen] = torch.where(z > 0, z / penalty, z * penalty)
    return out


def test_repetition_penalty():
    ok, remark = verdict("07.4", penalize)
    assert ok is True and "loses its pull" in remark

    def one_by_one(logits, previous, penalty):  # each distinct previous token in turn
        out = logits.clone()
        for r, ids in enumerate(previous):
            for i in set(ids):
                out[r, i] = out[r, i] / penalty if out[r, i] > 0 else out[r, i] * penalty
        return out

    def with_scatter(logits, previous, penalty):
        factor = torch.ones_like(logits)
        for r, ids in enumerate(previous):
            if ids:
                factor[r].scatter_(0, torch.tensor(ids), penalty)
        return torch.where(logits > 0, logits / factor, logits * factor)

    assert verdict("07.4", one_by_one)[0] is True
    assert verdict("07.4", with_scatter)[0] is True

    def divides_all(logits, previous, penalty):
        out = logits.clone()
        for r, ids in enumerate(previous):
            out[r, list(set(ids))] /= penalty
        return out

    def per_occurrence(logits, previous, penalty):
        out = logits.clone()
        for r, ids in enumerate(previous):
            for i in ids:
                out[r, i] = out[r, i] / penalty if out[r, i] > 0 else out[r, i] * penalty
        return out

    def in_place(logits, previous, penalty):
        for r, ids in enumerate(previous):
            for i in set(ids):
                logits[r, i] = logits[r, i] / penalty if logits[r, i] > 0 else logits[r, i] * penalty
        return logits

    assert "LIKELIER" in wrong("07.4", divides_all)
    assert "once per occurrence" in wrong("07.4", per_occurrence)
    assert "changed the logits it was given" in wrong("07.4", in_place)


def top_p_probs(p):
    def probs(row):
        q, ids = row.double().softmax(-1).sort(descending=True)
        q = torch.where(q.cumsum(-1) - q < p, q, 0.0)
        return torch.zeros_like(q).scatter(0, ids, q / q.sum())

    return probs


def test_the_distribution_harness_accepts_any_top_p_draw_and_explains_cumsum_over_p():
    # the cases, through the harness 07.1 and 07.3 share: a top-p that masks in vocabulary order and a
    # Gumbel-max top-p pass; `cumsum > p` (drops the top token) gets a reason, not multinomial's traceback
    def vocab_order(logits, p, gen):
        q, ids = logits.softmax(-1).sort(dim=-1, descending=True)
        drop = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, ids, q.cumsum(-1) - q >= p)
        return torch.multinomial(logits.masked_fill(drop, -math.inf).softmax(-1), 1, generator=gen)

    def gumbel(logits, p, gen):
        q, ids = logits.softmax(-1).sort(dim=-1, descending=True)
        z = logits.gather(-1, ids).masked_fill(q.cumsum(-1) - q >= p, -math.inf)
        u = torch.rand(z.shape, generator=gen).clamp_min(1e-20)
        return ids.gather(-1, (z - (-u.log()).log()).argmax(-1, keepdim=True))

    def cumsum_over_p(logits, p, gen):
        z, ids = logits.sort(dim=-1, descending=True)
        z = z.masked_fill(z.softmax(-1).cumsum(-1) > p, -math.inf)
        return ids.gather(-1, torch.multinomial(z.softmax(-1), 1, generator=gen))

    for p in (0.05, 0.5, 0.9):
        ch07.check_distribution(lambda z, g, p=p: vocab_order(z, p, g), top_p_probs(p), f"top-p {p}")
        ch07.check_distribution(lambda z, g, p=p: gumbel(z, p, g), top_p_probs(p), f"top-p {p}")
    with pytest.raises(ex.Wrong) as failed:
        ch07.check_distribution(lambda z, g: cumsum_over_p(z, 0.05, g), top_p_probs(0.05), "top-p 0.05")
    assert "refused your probabilities" in str(failed.value) and "empty kept set" in str(failed.value)
    with pytest.raises(ex.Wrong, match=r"never came up|rule does not keep|do not fit"):
        ch07.check_distribution(lambda z, g: cumsum_over_p(z, 0.9, g), top_p_probs(0.9), "top-p 0.9")


def top_k_probs(k):
    def probs(row):
        z = row.double()
        kept = torch.full_like(z, -math.inf).scatter(0, z.topk(k).indices, z.topk(k).values)
        return kept.softmax(-1)

    return probs


def test_the_distribution_harness_accepts_a_sort_based_top_k():
    def by_sort(logits, k, gen):  # sorted, the first k kept, drawn by position
        z, ids = logits.sort(dim=-1, descending=True)
        return ids.gather(-1, torch.multinomial(z[:, :k].softmax(-1), 1, generator=gen))

    def by_threshold(logits, k, gen):  # everything below the k-th value masked, drawn over the vocabulary
        kth = logits.topk(k, dim=-1).values[:, -1:]
        return torch.multinomial(logits.masked_fill(logits < kth, -math.inf).softmax(-1), 1, generator=gen)

    for k in (1, 10, 100):
        ch07.check_distribution(lambda z, g, k=k: by_sort(z, k, g), top_k_probs(k), f"top-k {k}")
        ch07.check_distribution(lambda z, g, k=k: by_threshold(z, k, g), top_k_probs(k), f"top-k {k}")
    with pytest.raises(ex.Wrong, match="tokens the rule does not keep"):  # one too many kept
        ch07.check_distribution(lambda z, g: by_sort(z, 11, g), top_k_probs(10), "top-k 10")
