"""Chapter 05's checks: a right answer passes, typical wrong ones fail with a reason that keeps the answer."""

from __future__ import annotations

import math

import pytest
import torch

from nanogpt_lib.config import TrainConfig
from nanogpt_lib.exercises import ch05, verdict
from nanogpt_lib.model import GPT
from nanogpt_lib.optim import NS_COEFFICIENTS

from exercise_helpers import todo, wrong


@pytest.mark.parametrize("id", ["05.1", "05.2", "05.3", "05.4"])
def test_placeholders_are_not_answered(id):
    assert verdict(id, None)[0] is None  # `answer = None  # your answer`
    if id in ("05.2", "05.3"):  # a function whose body still raises NotImplementedError
        ok, how = verdict(id, todo)
        assert ok is None and "not answered yet" in how


# ---- 05.1 -------------------------------------------------------------------------------------------------

def accumulate(model, x, y, k):
    for xs, ys in zip(x.chunk(k), y.chunk(k)):
        _, loss = model(xs, ys)
        (loss / k).backward()


def test_accumulate():
    assert verdict("05.1", accumulate)[0] is True

    def unscaled(model, x, y, k):
        for xs, ys in zip(x.chunk(k), y.chunk(k)):
            model(xs, ys)[1].backward()

    def zeroing(model, x, y, k):
        for xs, ys in zip(x.chunk(k), y.chunk(k)):
            model.zero_grad()
            (model(xs, ys)[1] / k).backward()

    def whole_batch(model, x, y, k):
        model(x, y)[1].backward()

    def half_the_batch(model, x, y, k):
        for xs, ys in list(zip(x.chunk(k), y.chunk(k)))[:-1]:
            (model(xs, ys)[1] / k).backward()
        model(x[:x.size(0) // k], y[:y.size(0) // k])  # the right number of calls, one batch twice, one lost

    assert "times too large" in wrong("05.1", unscaled)
    assert "only the last micro-batch" in wrong("05.1", zeroing)
    assert "micro-batches of 4 rows" in wrong("05.1", whole_batch)
    assert "differs from the whole batch" in wrong("05.1", half_the_batch)
    assert "give a function" in wrong("05.1", 3)



# ---- 05.2 -------------------------------------------------------------------------------------------------

def wsd_lr(step, warmup_steps, max_steps, decay_frac, lr, min_lr):
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay_start = max(max_steps - round(decay_frac * max_steps), warmup_steps)
    if step < decay_start:
        return lr
    done = min((step - decay_start) / max(max_steps - decay_start, 1), 1.0)
    return lr - done * (lr - min_lr)


def test_wsd():
    assert verdict("05.2", wsd_lr)[0] is True

    def warmup_from_zero(step, warmup_steps, *rest):  # lr * step / warmup: the first step would get 0
        return wsd_lr(step, warmup_steps, *rest) * (step / (step + 1) if step < warmup_steps else 1)

    def decay_by_int(step, warmup_steps, max_steps, decay_frac, lr, min_lr):  # int() instead of round()
        start = max(max_steps - int(decay_frac * max_steps), warmup_steps)
        if step < warmup_steps or step < start:
            return wsd_lr(step, warmup_steps, max_steps, decay_frac, lr, min_lr)
        return lr - min((step - start) / max(max_steps - start, 1), 1.0) * (lr - min_lr)

    def no_clamp(step, warmup_steps, max_steps, decay_frac, lr, min_lr):  # keeps falling past max_steps
        start = max(max_steps - round(decay_frac * max_steps), warmup_steps)
        if step < start:
            return wsd_lr(step, warmup_steps, max_steps, decay_frac, lr, min_lr)
        return lr - (step - start) / max(max_steps - start, 1) * (lr - min_lr)

    assert "step 0" in wrong("05.2", warmup_from_zero) and "warmup" in wrong("05.2", warmup_from_zero)
    assert "decay" in wrong("05.2", decay_by_int)
    assert "after max_steps" in wrong("05.2", no_clamp)
    assert "function" in wrong("05.2", 0.002)


# ---- 05.3 -------------------------------------------------------------------------------------------------

def newton_schulz(G, steps=5):
    a, b, c = NS_COEFFICIENTS
    X = G.float()
    tall = X.size(0) > X.size(1)
    if tall:
        X = X.T
    X = X / X.norm()
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


def test_newton_schulz():
    assert verdict("05.3", newton_schulz)[0] is True
    # Mathematically the same iteration on X^T X for a tall matrix: also right.
    assert verdict("05.3", lambda G, steps=5: newton_schulz(G.T, steps).T)[0] is True

    def unnormalised(G, steps=5):  # the iteration on G itself: its singular values above 1 blow up
        a, b, c = NS_COEFFICIENTS
        X = G.float()
        for _ in range(steps):
            A = X @ X.T
            X = a * X + (b * A + c * A @ A) @ X
        return X

    def stays_transposed(G, steps=5):
        return newton_schulz(G, steps).T if G.size(0) > G.size(1) else newton_schulz(G, steps)

    def fixed_steps(G, steps=5):
        return newton_schulz(G, 5)

    def swapped(G, steps=5):  # b and c swapped
        a, b, c = NS_COEFFICIENTS
        X = G / G.norm()
        for _ in range(steps):
            A = X @ X.T
            X = a * X + (c * A + b * A @ A) @ X
        return X

    assert "divide G by its norm" in wrong("05.3", unnormalised)
    assert "transpose it back" in wrong("05.3", stays_transposed)
    assert "steps=1" in wrong("05.3", fixed_steps)
    assert "differs from the library" in wrong("05.3", swapped)
    assert "not a tensor" in wrong("05.3", lambda G, steps=5: G.tolist())


# ---- 05.4 -------------------------------------------------------------------------------------------------

def find_divergence() -> float:
    """A factor-4 sweep up from the recipe's 2e-3 to the first rate that diverges, then three bisections."""
    lo, hi = 2e-3, 2e-3
    while not ch05.diverged(ch05.short_run(hi)):
        lo, hi = hi, hi * 4
        assert hi < 100, "the short run never diverged"
    for _ in range(3):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if not ch05.diverged(ch05.short_run(mid)) else (lo, mid)
    return hi


def test_diverging_lr():
    edge = find_divergence()
    assert verdict("05.4", edge)[0] is True
    assert not ch05.diverged(ch05.short_run(2e-3))  # the recipe's rate trains
    low, high = wrong("05.4", edge / 2), wrong("05.4", edge * 4)
    assert "still trains" in low and "lower rate" in high
    for why in (low, high):
        assert f"{edge:g}" not in why, why
    assert "positive" in wrong("05.4", -1.0) and "positive" in wrong("05.4", math.nan)


def test_short_run_is_seeded_and_leaves_the_global_rng():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    ch05._short_run.cache_clear()
    first = ch05.short_run(1e-3)
    assert torch.equal(torch.get_rng_state(), state)
    ch05._short_run.cache_clear()
    assert ch05.short_run(1e-3) == first and len(first) == 30 and first[-1] < first[0]
    with pytest.raises(ValueError, match="positive"):
        ch05.short_run(0)
