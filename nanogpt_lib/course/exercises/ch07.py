"""Checks for notebook 07 (sampling): temperature, the probability of a draw, min-p sampling, a repetition penalty.

A sampler is checked on what it draws, not on how: any correct way (``torch.multinomial``, Gumbel-max, an
inverse CDF, masking in vocabulary order or after a sort) passes. Each check repeats a few rows of logits
thousands of times and tests, row by row, that

* no draw falls outside the tokens the rule keeps (exact);
* every kept token of probability >= 0.5% is drawn at least once;
* the counts fit the kept tokens' renormalised probabilities (a chi-square test at p >= 1e-6).

A correct sampler fails one of these with probability below 1e-4 over its own randomness (the numbers are
worked out where the tests are). Temperature 0 and near 0 are checked exactly: every row's argmax. While an
answer runs, ``nanogpt_lib.sample`` is switched off.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ... import sample as sample_module
from ...errors import one_line
from . import Wrong, chi2_tail, exercise, expect
from .guard import fn

VOCAB = 500  # a small vocabulary keeps the draws instant; the rules do not depend on its size
ROWS = 1000
PUBLIC = ("draw_logits", "VOCAB", "ROWS")

# The distribution test: ROWS_TESTED rows of different spread, each repeated REPEATS times.
ROWS_TESTED = 4
REPEATS = 4000
SEEN_AT_LEAST = 0.005  # P(a kept token this likely is never drawn in 4,000 draws) = 0.995^4000 = 2e-9
P_MIN = 1e-6  # chi-square threshold: with <= 200 tokens x 4 rows x 7 settings tested, all tests together
# fail a correct sampler with probability <= 5,600 x 2e-9 + 28 x 1e-6 < 1e-4


def draw_logits(rows: int = ROWS, vocab: int = VOCAB, seed: int = 6) -> torch.Tensor:
    """Rows of logits from sure (one token far ahead) to spread out (nearly flat), as a model gives them."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-1, 1, rows).unsqueeze(1)  # 0.1 (flat) .. 10 (peaked)
    return torch.randn(rows, vocab, generator=gen) * scale


def _sampling_twins() -> list:
    return [
        fn(f, f"nanogpt_lib.sample.{n}")
        for n, f in vars(sample_module).items()
        if callable(f) and getattr(f, "__module__", None) == sample_module.__name__
    ]


def _draws(sampler: Callable[[torch.Tensor], object], logits: torch.Tensor, what: str) -> torch.Tensor:
    """The learner's draws for ``logits`` (B, V), checked to be B token ids; a failed torch.multinomial is a
    reason, not a traceback."""
    try:
        ids = sampler(logits.clone())
    except NotImplementedError:  # the placeholder (a RuntimeError too): not answered yet
        raise
    except RuntimeError as e:
        text = one_line(e, first=True)
        if any(k in text for k in ("probability tensor", "multinomial", "invalid", "sum of probabilities")):
            raise Wrong(
                f"{what}: torch.multinomial refused your probabilities ({text}): a row has no token "
                "left to draw (an empty kept set sums to 0), or holds inf or nan (logits divided by a "
                "zero or tiny temperature, exp of a large logit)"
            ) from None
        raise
    expect(torch.is_tensor(ids), f"{what}: returned {type(ids).__name__}, not a tensor of token ids")
    expect(
        tuple(ids.shape) == (logits.size(0), 1),
        f"{what}: returned shape {tuple(ids.shape)}, expected one id per row, shape ({logits.size(0)}, 1)",
    )
    expect(not ids.is_floating_point(), f"{what}: returned {ids.dtype} values, not integer token ids")
    ids = ids.long().view(-1)
    expect(bool(((ids >= 0) & (ids < logits.size(1))).all()), f"{what}: some ids are outside the vocabulary")
    return ids


def _test_rows() -> torch.Tensor:
    """ROWS_TESTED rows of a 200-token vocabulary, from nearly flat to peaked (scales 0.5 .. 4)."""
    rows = draw_logits(rows=ROWS_TESTED, vocab=200, seed=11) / torch.logspace(-1, 1, ROWS_TESTED).unsqueeze(1)
    return rows * torch.tensor([0.5, 1.0, 2.0, 4.0]).unsqueeze(1)


def check_distribution(
    sampler: Callable[[torch.Tensor, torch.Generator], object], probs: Callable[[torch.Tensor], torch.Tensor], what: str
) -> None:
    """Fail unless ``sampler(logits, gen)`` draws each test row from ``probs(row)`` (float64, zero outside
    the kept set): the three tests of the module's docstring, row by row."""
    rows = _test_rows()
    draws = _draws(lambda z: sampler(z, torch.Generator().manual_seed(1)), rows.repeat_interleave(REPEATS, 0), what)
    for r in range(ROWS_TESTED):
        p = probs(rows[r])
        counts = torch.bincount(draws[r * REPEATS : (r + 1) * REPEATS], minlength=rows.size(1)).double()
        where = f"{what}, row {r + 1} of {ROWS_TESTED}"
        outside = int(counts[p == 0].sum())
        if outside:
            raise Wrong(f"{where}: {outside} of {REPEATS:,} draws are tokens the rule does not keep")
        missing = int(((p >= SEEN_AT_LEAST) & (counts == 0)).sum())
        if missing:
            raise Wrong(
                f"{where}: {missing} kept token(s) with probability >= {SEEN_AT_LEAST:.1%} never came up "
                f"in {REPEATS:,} draws: your kept set is missing tokens the rule keeps"
            )
        expected = p * REPEATS
        big = expected >= 5  # chi-square needs >= 5 expected per bin: the small ones share one bin
        obs, exp = counts[big].tolist(), expected[big].tolist()
        if expected[~big].sum() >= 5:
            obs.append(float(counts[~big].sum()))
            exp.append(float(expected[~big].sum()))
        if len(obs) < 2:
            continue  # one bin holds everything: the kept-set tests above said all there is
        stat = sum((o - e) ** 2 / e for o, e in zip(obs, exp))
        pval = chi2_tail(stat, len(obs) - 1)
        if pval < P_MIN:
            raise Wrong(
                f"{where}: the draws do not fit the kept tokens' renormalised probabilities (chi-square "
                f"p = {pval:.1e}, below {P_MIN:g}): check which tokens you keep (rare ones may be missing) "
                "and the probabilities you draw them with"
            )


def _seeded(sampler: Callable[..., object], *args: object) -> Callable[[torch.Tensor, torch.Generator], object]:
    return lambda z, gen: sampler(z, *args, gen)


def _uses_gen(sampler: Callable[[torch.Tensor, torch.Generator], object], what: str) -> None:
    """The draws come from ``gen`` alone: the same seed gives the same draws whatever the global RNG holds."""
    z = draw_logits(rows=200)
    torch.manual_seed(1)
    a = _draws(lambda x: sampler(x, torch.Generator().manual_seed(5)), z, what)
    torch.manual_seed(2)
    b = _draws(lambda x: sampler(x, torch.Generator().manual_seed(5)), z, what)
    expect(
        torch.equal(a, b),
        f"{what}: two calls with generators seeded alike drew differently: draw from gen "
        "(torch.multinomial(..., generator=gen), torch.rand(..., generator=gen))",
    )


# ---- 07.1 temperature ---------------------------------------------------------------------------------

# 1e-37 is above float32's smallest normal number (1.2e-38), so not greedy by rule, yet a logit of 40 divided
# by it overflows float32: the draw must still be the argmax.
GREEDY_TEMPERATURES = (0.0, 1e-37)
TEMPERATURES = (0.7, 1.0, 1.5)


def _softmax_probs(temperature: float) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda row: (row.double() / temperature).softmax(-1)


@exercise(
    "07.1",
    "Sampling with a temperature, and temperature 0",
    "a function sample_temperature(logits, temperature, gen) -> (B, 1) token ids: the argmax of each row at "
    "temperature 0, else one draw per row from softmax(logits / temperature), drawn from gen",
    off=_sampling_twins,
    why="draw the tokens yourself",
)
def _temperature(sample_temperature: Callable[..., torch.Tensor]) -> str:
    expect(callable(sample_temperature), "give a function sample_temperature(logits, temperature, gen)")
    logits = draw_logits()
    argmax = logits.argmax(-1)
    for temperature in GREEDY_TEMPERATURES:
        what = f"at temperature {temperature:g}"
        ids = _draws(
            lambda z, temperature=temperature: sample_temperature(z, temperature, torch.Generator().manual_seed(1)),
            logits,
            what,
        )
        off = int((ids != argmax).sum())
        if off and temperature > 0:
            raise Wrong(
                f"{what}: {off} of {ROWS} rows are not the row's likeliest token, as the limit T -> 0 "
                "says they must be: logits / temperature overflows; what can you subtract from every "
                "logit of a row without changing any probability?"
            )
        expect(not off, f"{what}: {off} of {ROWS} rows are not the row's likeliest token")
    for temperature in TEMPERATURES:
        check_distribution(
            _seeded(sample_temperature, temperature), _softmax_probs(temperature), f"at temperature {temperature:g}"
        )
    _uses_gen(_seeded(sample_temperature, 0.7), "at temperature 0.7")
    return (
        f"argmax at 0 and 1e-37, and the right distribution at temperatures "
        f"{', '.join(f'{t:g}' for t in TEMPERATURES)} ({ROWS_TESTED} rows x {REPEATS:,} draws each)."
    )


# ---- 07.2 the probability of a draw -------------------------------------------------------------------


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


@exercise(
    "07.2",
    "The probability that a token is drawn",
    "a function prob_drawn(logits, token, temperature, top_k) -> float: the probability that sample_next "
    "draws token id `token` from one row of logits (shape (vocab,)) at that temperature and top-k "
    "(None: no cut)",
    off=_sampling_twins,
    why="compute the probability yourself",
)
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
            expect(
                isinstance(mine, (int, float)) or (torch.is_tensor(mine) and mine.numel() == 1),
                f"prob_drawn returned {type(mine).__name__}, not a number",
            )
            mine, truth = float(mine), draw_probability(logits, token, temperature, top_k)
            what = f"temperature {temperature:g}, top_k {top_k}: the token ranked {rank + 1}"
            if truth == 0:
                expect(
                    mine == 0,
                    f"{what} is outside the top {top_k}: sample_next can never draw it, yet you give it {mine:.3g}",
                )
                continue
            # float32 against float64 softmax: ~1e-7 relative; 1e-5 leaves room for either precision.
            if not math.isclose(mine, truth, rel_tol=1e-5, abs_tol=1e-12):
                why = f"{what}: your {mine:.4g} is not the probability sample_next draws it with"
                if (
                    top_k
                    and mine < truth
                    and math.isclose(mine, draw_probability(logits, token, temperature, None), rel_tol=1e-5)
                ):
                    why += " (that is its probability over the whole vocabulary: top-k renormalises over the k kept)"
                raise Wrong(why)
    return f"exact for {len(PROB_CASES)} settings, from the likeliest token to the tail."


# ---- 07.3 min-p sampling -----------------------------------------------------------------------------

MIN_PS = (0.02, 0.1, 0.5, 1.0)  # 1.0 keeps the likeliest token only: a strict comparison keeps nothing


def min_p_probs(min_p: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The min-p rule for one row (float64): keep tokens whose probability is at least min_p times the largest,
    renormalised; 0 elsewhere."""

    def probs(row: torch.Tensor) -> torch.Tensor:
        p = row.double().softmax(-1)
        kept = torch.where(p >= min_p * p.max(), p, torch.zeros_like(p))
        return kept / kept.sum()

    return probs


@exercise(
    "07.3",
    "Min-p sampling",
    "a function min_p_sample(logits, min_p, gen) -> (B, 1) token ids: per row, keep the tokens whose "
    "probability is at least min_p times the row's largest, and draw one of them with their renormalised "
    "probabilities, from gen",
    off=_sampling_twins,
    why="write the cut and the draw yourself",
)
def _min_p(min_p_sample: Callable[..., torch.Tensor]) -> str:
    expect(callable(min_p_sample), "give a function min_p_sample(logits, min_p, gen)")
    rows = _test_rows()
    for min_p in MIN_PS:
        # No token of the test rows sits within 1e-4 (relative) of the cut, so float32 and float64 agree on it.
        check_distribution(_seeded(min_p_sample, min_p), min_p_probs(min_p), f"min_p = {min_p:g}")
    _uses_gen(_seeded(min_p_sample, 0.1), "min_p = 0.1")
    kept = [int((min_p_probs(0.1)(r) > 0).sum()) for r in rows]
    return (
        f"the right kept sets and proportions for min_p = {', '.join(f'{m:g}' for m in MIN_PS)}. At 0.1 the "
        f"cut keeps {', '.join(map(str, kept))} tokens of the {ROWS_TESTED} test rows, from flat to peaked: "
        "unlike top-k it follows the model's confidence, and unlike top-p it never keeps a long flat tail."
    )


# ---- 07.4 a repetition penalty ------------------------------------------------------------------------

PENALTIES = (1.0, 1.3, 2.0)


def _penalized(logits: torch.Tensor, previous: list[list[int]], penalty: float) -> torch.Tensor:
    """The rule, as a (B, V) mask of the tokens seen in each row: new logits, the given ones untouched."""
    seen = torch.zeros_like(logits, dtype=torch.bool)
    for r, ids in enumerate(previous):
        seen[r, list(ids)] = True
    return torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)


@exercise(
    "07.4",
    "A repetition penalty",
    "a function penalize(logits, previous, penalty) -> new logits (B, V): for each row, every token id that "
    "occurs in previous[row] (a list of ids, repeats possible) gets its logit divided by penalty if "
    "positive, multiplied by it if not; other logits unchanged; the input left as it was",
    off=_sampling_twins,
    why="write the penalty yourself",
)
def _penalty(penalize: Callable[..., torch.Tensor]) -> str:
    expect(callable(penalize), "give a function penalize(logits, previous, penalty)")
    g = torch.Generator().manual_seed(64)
    logits = torch.randn(5, 40, generator=g) * 3
    previous = [[3, 3, 7, 39], [], [0, 1, 2, 3, 4, 5], [12] * 9, torch.randint(0, 40, (30,), generator=g).tolist()]
    for penalty in PENALTIES:
        given = logits.clone()
        got = penalize(given, [list(p) for p in previous], penalty)
        what = f"penalty {penalty:g}"
        expect(
            torch.is_tensor(got) and tuple(got.shape) == tuple(logits.shape),
            f"{what}: return a tensor of the logits' shape {tuple(logits.shape)}",
        )
        expect(
            torch.equal(given, logits),
            f"{what}: your function changed the logits it was given: return new "
            "ones (a sampler may need the originals)",
        )
        truth = _penalized(logits, previous, penalty)
        got = got.detach().float()
        for r in range(len(previous)):
            # one division or multiplication per entry: equal to float32 rounding (1e-6 relative)
            if torch.allclose(got[r], truth[r], rtol=1e-6, atol=1e-7):
                continue
            seen = set(previous[r])
            changed = [i for i in range(logits.size(1)) if not math.isclose(got[r, i], logits[r, i], rel_tol=1e-6)]
            expect(
                set(changed) <= seen,
                f"{what}, row {r}: you changed the logit of a token that does not occur in previous[row]",
            )
            wrong = [i for i in seen if not math.isclose(got[r, i], truth[r, i], rel_tol=1e-6, abs_tol=1e-7)]
            i = wrong[0]
            naive = logits[r, i] / penalty
            expect(
                not (logits[r, i] < 0 and math.isclose(got[r, i], naive, rel_tol=1e-6)),
                f"{what}, row {r}: token {i} has a negative logit and you divided it by the penalty, which makes "
                "it LIKELIER; a negative logit is multiplied",
            )
            expect(
                len(previous[r]) == len(seen)
                or not any(
                    math.isclose(got[r, j], logits[r, j] / penalty ** previous[r].count(j), rel_tol=1e-6)
                    for j in wrong
                    if previous[r].count(j) > 1
                ),
                f"{what}, row {r}: a token that occurs several times is penalised once, not once per occurrence",
            )
            raise Wrong(f"{what}, row {r}: the logits of tokens in previous[row] are not penalised as asked")
    p = min_p_probs(0.0)  # the share of probability the penalised tokens lose, for the remark
    before = float(p(logits[3])[12])
    after = float(p(_penalized(logits, previous, 2.0)[3])[12])
    return (
        f"penalties {', '.join(f'{x:g}' for x in PENALTIES)} all as asked. In row 4, token 12 (seen 9 times) "
        f"goes from probability {before:.3f} to {after:.3f} at penalty 2: a loop loses its pull, but so does "
        "a word the text needs again."
    )
