"""Checks for notebook 06 (sampling): temperature 0, the probability of a draw, top-p by hand.

The samplers are checked draw for draw against ``nanogpt_lib.sample.sample_next`` with generators seeded
alike, on a batch of 1,000 rows of logits: the same draws, not only the same distribution.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..sample import sample_next
from . import Wrong, expect, exercise

VOCAB = 500  # a small vocabulary keeps 1,000 rows of draws instant; the rules do not depend on its size
ROWS = 1000


def draw_logits(rows: int = ROWS, vocab: int = VOCAB, seed: int = 6) -> torch.Tensor:
    """Rows of logits from sure (one token far ahead) to spread out (nearly flat), as a model gives them."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-1, 1, rows).unsqueeze(1)  # 0.1 (flat) .. 10 (peaked)
    return torch.randn(rows, vocab, generator=gen) * scale


def _same_draws(mine: object, truth: torch.Tensor, what: str) -> int:
    """Check the shape of a learner's draws; return how many differ from the library's."""
    expect(torch.is_tensor(mine), f"{what}: returned {type(mine).__name__}, not a tensor of token ids")
    expect(tuple(mine.shape) == tuple(truth.shape), f"{what}: returned shape {tuple(mine.shape)}, expected one "
           f"id per row, shape {tuple(truth.shape)}")
    return int((mine.long() != truth).sum())


# ---- 06.1 temperature 0 -------------------------------------------------------------------------------

# 1e-37 is above float32's smallest normal number (1.2e-38), so not greedy by rule, yet a logit of 40 divided
# by it overflows float32: the draw must still be the argmax.
TEMPERATURES = (0.0, 1e-37, 1e-3, 0.7, 1.0, 1.5)


@exercise("06.1", "Temperature 0 is the argmax",
          "a function sample_temperature(logits, temperature, gen) -> (B, 1) token ids: greedy at temperature "
          "0, else one draw per row from softmax(logits / temperature), drawing as sample_next does")
def _temperature(sample_temperature: Callable[..., torch.Tensor]) -> str:
    expect(callable(sample_temperature), "give a function sample_temperature(logits, temperature, gen)")
    logits = draw_logits()
    for temperature in TEMPERATURES:
        truth = sample_next(logits, temperature, gen=torch.Generator().manual_seed(1))
        try:
            mine = sample_temperature(logits.clone(), temperature, torch.Generator().manual_seed(1))
        except NotImplementedError:  # the placeholder (a RuntimeError too): not answered yet
            raise
        except RuntimeError as e:  # multinomial refuses inf or nan probabilities
            raise Wrong(f"at temperature {temperature:g} your function failed ({str(e).splitlines()[0]}): logits / "
                        "temperature overflows; subtract each row's largest logit first, which changes no "
                        "probability") from None
        what = f"at temperature {temperature:g}"
        differ = _same_draws(mine, truth, what)
        if temperature == 0 and differ:
            raise Wrong(f"{what}: {differ} of {ROWS} rows are not the row's likeliest token")
        # Probabilities equal to float32 rounding: a draw could flip only when two of its exponential races
        # tie to within ~1e-7 relative, about 1e-4 times in 1,000 draws; we allow none.
        expect(differ == 0, f"{what}: {differ} of {ROWS} draws differ from sample_next's with the same seed "
               "(draw with torch.multinomial(probs, 1, generator=gen))")
    return (f"the same draws as sample_next at temperatures {', '.join(f'{t:g}' for t in TEMPERATURES)}: at 1e-37 "
            "every row draws its argmax, as at 0.")


# ---- 06.2 the probability of a draw -------------------------------------------------------------------

def draw_probability(logits: torch.Tensor, token: int, temperature: float, top_k: int | None) -> float:
    """What sample_next draws ``token`` with, for one row of logits (float64): the softmax of logits /
    temperature over the ``top_k`` likeliest tokens (all of them for None), 0 for a token outside them."""
    z = logits.double() / temperature
    if top_k is not None:
        kept = torch.topk(z, top_k).indices
        if token not in kept.tolist():
            return 0.0
        cut = torch.full_like(z, -math.inf)
        cut[kept] = z[kept]
        z = cut
    return float(z.softmax(dim=-1)[token])


PROB_CASES = ((1.0, None), (0.5, 10), (2.0, 10), (1.0, 1), (0.8, 200))


@exercise("06.2", "The probability that a token is drawn",
          "a function prob_drawn(logits, token, temperature, top_k) -> float: the probability that sample_next "
          "draws token id `token` from one row of logits (shape (vocab,)) at that temperature and top-k "
          "(None: no cut)")
def _probability(prob_drawn: Callable[..., float]) -> str:
    expect(callable(prob_drawn), "give a function prob_drawn(logits, token, temperature, top_k)")
    logits = draw_logits(rows=1, seed=7)[0] * 3  # one row with a clear head and a long tail
    ranked = logits.argsort(descending=True).tolist()
    for temperature, top_k in PROB_CASES:
        # the likeliest token, one near the k-th, one just past it (never drawn), one from the tail
        k = top_k or 50
        for rank in sorted({0, k - 1, min(k, VOCAB - 1), VOCAB - 1}):
            token = ranked[rank]
            mine = prob_drawn(logits.clone(), token, temperature, top_k)
            expect(isinstance(mine, (int, float)) or (torch.is_tensor(mine) and mine.numel() == 1),
                   f"prob_drawn returned {type(mine).__name__}, not a number")
            mine, truth = float(mine), draw_probability(logits, token, temperature, top_k)
            what = f"temperature {temperature:g}, top_k {top_k}: the token ranked {rank + 1}"
            if truth == 0:
                expect(mine == 0, f"{what} is outside the top {top_k}: sample_next can never draw it, yet you "
                       f"give it {mine:.3g}")
                continue
            # float32 against float64 softmax: ~1e-7 relative; 1e-5 leaves room for either precision.
            if not math.isclose(mine, truth, rel_tol=1e-5, abs_tol=1e-12):
                why = f"{what}: your {mine:.4g} is not the probability sample_next draws it with"
                if top_k and mine < truth and math.isclose(mine, draw_probability(logits, token, temperature, None),
                                                           rel_tol=1e-5):
                    why += " (that is its probability over the whole vocabulary: top-k renormalises over the k kept)"
                raise Wrong(why)
    return f"exact for {len(PROB_CASES)} settings, from the likeliest token to the tail."


# ---- 06.3 top-p by hand -------------------------------------------------------------------------------

TOP_PS = (0.05, 0.5, 0.9, 0.99)


@exercise("06.3", "Top-p sampling by hand",
          "a function top_p_sample(logits, p, gen) -> (B, 1) token ids: one draw per row of (B, vocab) logits "
          "from the smallest set of likeliest tokens holding at least p of the probability, the same draws as "
          "sample_next(logits, 1.0, top_p=p, gen=gen)")
def _top_p(top_p_sample: Callable[..., torch.Tensor]) -> str:
    expect(callable(top_p_sample), "give a function top_p_sample(logits, p, gen)")
    logits = draw_logits()
    probs = logits.softmax(dim=-1)
    for p in TOP_PS:
        truth = sample_next(logits, 1.0, top_p=p, gen=torch.Generator().manual_seed(3))
        mine = top_p_sample(logits.clone(), p, torch.Generator().manual_seed(3))
        what = f"p = {p}"
        differ = _same_draws(mine, truth, what)
        if differ:
            # Where are the draws? Inside the nucleus (the right set, drawn another way) or outside it?
            sorted_probs = probs.sort(dim=-1, descending=True).values
            nucleus = ((sorted_probs.cumsum(dim=-1) - sorted_probs) < p).sum(dim=-1, keepdim=True)
            rank = (probs > probs.gather(-1, mine.long())).sum(dim=-1, keepdim=True)  # 0 = the likeliest
            outside = int((rank >= nucleus).sum())
            if outside:
                raise Wrong(f"{what}: {outside} of {ROWS} draws are outside the nucleus (a token is kept while the "
                            "mass of the tokens ranked above it is below p)")
            raise Wrong(f"{what}: every draw is inside the nucleus, but {differ} of {ROWS} differ from sample_next's "
                        "with the same seed. Check the set (the token whose probability crosses p is kept) and the "
                        "draw: sample_next draws a position among the sorted candidates (multinomial over the sorted, "
                        "cut probabilities), then maps it to a token id")
    return f"the same {ROWS} draws as sample_next for p = {', '.join(map(str, TOP_PS))}."
