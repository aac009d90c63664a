"""Chapter 06's checks: a right answer passes, typical wrong ones fail with a reason that keeps the answer."""

from __future__ import annotations

import math

import pytest
import torch

from nanogpt_lib.course.exercises import ch06, verdict

from exercise_helpers import todo, wrong


@pytest.mark.parametrize("id", ["06.1", "06.2", "06.3"])
def test_placeholders_are_not_answered(id):
    assert verdict(id, None)[0] is None  # `answer = None  # your answer`
    ok, how = verdict(id, todo)  # a function whose body still raises NotImplementedError
    assert ok is None and "not answered yet" in how


# ---- 06.1 -------------------------------------------------------------------------------------------------


def divergence_edge(run, lo=1e-5, hi=10.0):
    """Bisection in log space: lo trains, hi diverges, until they are a factor 1.5 apart."""
    while hi / lo > 1.5:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if not ch06.diverged(run(mid)) else (lo, mid)
    return hi


def test_divergence_edge():
    ok, remark = verdict("06.1", divergence_edge)
    assert ok is True and "never seen" in remark

    def grid(run):  # a factor-1.5 grid upwards from 1e-5: the first rate that diverges
        lr = 1e-5
        while not ch06.diverged(run(lr)):
            lr *= 1.5
        return lr

    def doubling_then_bisect(run):  # up by factors of 4, then bisection
        lo = hi = 1e-5
        while not ch06.diverged(run(hi)):
            lo, hi = hi, hi * 4
        return divergence_edge(run, lo, hi) if lo < hi else hi

    assert verdict("06.1", grid)[0] is True
    assert verdict("06.1", doubling_then_bisect)[0] is True

    def last_that_trains(run):  # the other end of the bracket
        lo, hi = 1e-5, 10.0
        while hi / lo > 1.5:
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if not ch06.diverged(run(mid)) else (lo, mid)
        return lo

    def coarse(run):  # stops at a factor 10 bracket
        lo, hi = 1e-5, 10.0
        while hi / lo > 10:
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if not ch06.diverged(run(mid)) else (lo, mid)
        return hi

    def fine_grid(run):  # a factor-1.1 grid: too many runs
        lr = 1e-5
        while not ch06.diverged(run(lr)):
            lr *= 1.1
        return lr

    assert "return a rate you have seen diverge" in wrong("06.1", last_that_trains)
    assert "narrow the bracket" in wrong("06.1", coarse)
    assert "at most 40 times" in wrong("06.1", fine_grid)
    assert "positive" in wrong("06.1", lambda run: -1.0)
    assert "give a function" in wrong("06.1", 0.05)


def test_divergence_edge_finds_the_real_short_run_edge():
    # the notebook's use: the right answer's rate diverges on the real model, a rate 1.5x lower trains
    edge = divergence_edge(ch06.short_run, lo=2e-3, hi=1.0)
    assert ch06.diverged(ch06.short_run(edge)) and not ch06.diverged(ch06.short_run(edge / 1.5))
    assert not ch06.diverged(ch06.short_run(2e-3))  # the recipe's rate trains


def test_short_run_is_seeded_and_leaves_the_global_rng():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    ch06._short_run.cache_clear()
    first = ch06.short_run(1e-3)
    assert torch.equal(torch.get_rng_state(), state)
    ch06._short_run.cache_clear()
    assert ch06.short_run(1e-3) == first and len(first) == 30 and first[-1] < first[0]
    with pytest.raises(ValueError, match="positive"):
        ch06.short_run(0)


# ---- 06.2 -------------------------------------------------------------------------------------------------


def early_stop(evals, patience):
    """Walk the curve: a strictly lower val loss is a new best; stop at the patience-th evaluation without one."""
    best_step, best = evals[0]
    since = 0
    for step, val in evals[1:]:
        if val < best:
            best_step, best, since = step, val, 0
        else:
            since += 1
            if since == patience:
                return best_step, step
    return best_step, evals[-1][0]


def test_early_stop():
    ok, remark = verdict("06.2", early_stop)
    assert ok is True and "hidden curves" in remark

    def by_index(evals, patience):  # indices: the last improvement's position, then patience evaluations on
        vals = [v for _, v in evals]
        last = 0
        for i in range(1, len(vals)):
            if vals[i] < min(vals[:i]):
                last = i
            if i - last == patience:
                return evals[last][0], evals[i][0]
        return evals[last][0], evals[-1][0]

    def with_a_counter_dict(evals, patience):  # the trainer's state, as a dict updated per record
        state = {"best": math.inf, "best_step": None, "bad": 0}
        for step, val in evals:
            if val < state["best"]:
                state.update(best=val, best_step=step, bad=0)
            elif (state := {**state, "bad": state["bad"] + 1})["bad"] >= patience:
                return state["best_step"], step
        return state["best_step"], evals[-1][0]

    assert verdict("06.2", by_index)[0] is True
    assert verdict("06.2", with_a_counter_dict)[0] is True

    def ties_improve(evals, patience):  # <= instead of <
        best_step, best = evals[0]
        since = 0
        for step, val in evals[1:]:
            if val <= best:
                best_step, best, since = step, val, 0
            else:
                since += 1
                if since == patience:
                    return best_step, step
        return best_step, evals[-1][0]

    def global_best(evals, patience):  # the best over the whole curve, even past the stop
        return min(evals, key=lambda e: e[1])[0], early_stop(evals, patience)[1]

    def one_late(evals, patience):  # stops one evaluation after the patience-th
        return early_stop(evals, patience + 1)

    assert "strictly lower" in wrong("06.2", ties_improve)
    assert "never sees it" in wrong("06.2", global_best)
    assert "count the evaluations" in wrong("06.2", one_late)
    assert "pair of steps" in wrong("06.2", lambda evals, patience: evals[-1][0])
    assert "give a function" in wrong("06.2", (2000, 3500))


# ---- 06.3 -------------------------------------------------------------------------------------------------


def dropout(x, p, training, gen):
    """Keep each entry with probability 1 - p (a uniform draw from gen), scale the kept ones by 1 / (1 - p)."""
    if not training or p == 0:
        return x
    keep = torch.rand(x.shape, generator=gen) >= p
    return x * keep / (1 - p)


def test_dropout():
    ok, remark = verdict("06.3", dropout)
    assert ok is True and "right share" in remark

    def by_bernoulli(x, p, training, gen):
        if not training:
            return x
        mask = torch.bernoulli(torch.full_like(x, 1 - p), generator=gen)
        return torch.where(mask.bool(), x / (1 - p), torch.zeros_like(x))

    def by_sorting_a_uniform(x, p, training, gen):  # keep where a uniform draw lands above p, scale by a product
        if not training:
            return x.clone()
        return x * (torch.rand(x.shape, generator=gen) > p).to(x.dtype) * (1.0 / (1.0 - p))

    assert verdict("06.3", by_bernoulli)[0] is True
    assert verdict("06.3", by_sorting_a_uniform)[0] is True

    def unscaled(x, p, training, gen):
        return x * (torch.rand(x.shape, generator=gen) >= p) if training else x

    def keeps_p(x, p, training, gen):  # drops with probability 1 - p
        if not training or p == 0:
            return x
        return x * (torch.rand(x.shape, generator=gen) < p) / (1 - p)

    def always_on(x, p, training, gen):
        return x * (torch.rand(x.shape, generator=gen) >= p) / (1 - p)

    def one_mask_per_column(x, p, training, gen):  # the same entries dropped in every row
        return x * (torch.rand(x.shape[-1], generator=gen) >= p) / (1 - p) if training else x

    def global_rng(x, p, training, gen):  # ignores gen
        return x * (torch.rand(x.shape) >= p) / (1 - p) if training else x

    def detached(x, p, training, gen):
        return (x * (torch.rand(x.shape, generator=gen) >= p) / (1 - p)).detach() if training else x

    assert "common factor" in wrong("06.3", unscaled)
    assert "share must be within" in wrong("06.3", keeps_p)
    assert "training=False" in wrong("06.3", always_on)
    assert "independently" in wrong("06.3", one_mask_per_column)
    assert "draw the mask from gen" in wrong("06.3", global_rng)
    assert "no gradient" in wrong("06.3", detached)
    assert "switches off" in wrong("06.3", lambda x, p, training, gen: torch.nn.functional.dropout(x, p, training))
