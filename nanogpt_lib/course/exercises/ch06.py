"""Checks for notebook 06 (the training run): a search for the rate at which training diverges, early stopping
on a validation curve, and dropout by hand.

Truths come from runs and curves the learner never sees where the answer is a method (06.1's hidden divergence
edges, 06.2's hidden validation curves, judged by the rule ``Trainer`` saves ``best/`` by: a strictly lower val
loss), and from properties where the answer is random (06.3: which entries a dropout mask keeps is the
learner's generator's business; that they are zero or scaled, in the right share, is checked).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from ... import paths
from ...config import TrainConfig
from ...model import GPT, GPTConfig
from ...step import train_step
from ...tokenizer import encode
from . import exercise, expect, one_thread
from .guard import ops

PUBLIC = ("short_run", "diverged", "SHORT", "SHORT_MODEL")  # a learner's answer may call these

# ---- 06.1 the diverging learning rate -----------------------------------------------------------------

# The short run: the recipe's 4 layers and 4 heads at width 64, context 32, AdamW at a constant rate (no
# warmup), gradients clipped at 1, 8 sequences a step, 30 steps, on the first 40,000 characters of Hamlet.
SHORT = dict(steps=30, batch=8, chars=40_000)
SHORT_MODEL = dict(n_layer=4, n_head=4, n_embd=64, block_size=32, pos="rope", mlp="relu2")
DIVERGE_FACTOR = 1.5  # the answer must diverge, and a rate 1.5x lower must train


@functools.lru_cache(maxsize=1)
def _short_data() -> tuple[torch.Tensor, int]:
    """Hamlet's opening as GPT-2 tokens, renumbered 0..U-1 over the U distinct ids it uses (vocabulary
    padded to a multiple of 64). The full 50,304-row embedding and head made one short run take 3 s on a
    2-core CPU; renumbered, the same tokens train in 0.4 s."""
    text = (paths.shakespeare_dir() / "hamlet.txt").read_text(encoding="utf-8")[: SHORT["chars"]]
    distinct, ids = torch.unique(torch.tensor(encode(text)), return_inverse=True)
    return ids, -(-len(distinct) // 64) * 64


@functools.lru_cache(maxsize=64)
def _short_run(lr: float) -> tuple[float, ...]:
    with one_thread():
        return _train_short(lr)


def _train_short(lr: float) -> tuple[float, ...]:
    ids, vocab = _short_data()
    cfg = TrainConfig()
    steps, batch, block = SHORT["steps"], SHORT["batch"], SHORT_MODEL["block_size"]
    with torch.random.fork_rng():  # the learner's global RNG is left as it was
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=vocab, **SHORT_MODEL))
    opts = model.configure_optimizers(cfg.weight_decay, lr, (cfg.beta1, cfg.beta2), "cpu", "adamw")
    gen = torch.Generator().manual_seed(1)

    def draw(_micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(ids) - block - 1, (batch,), generator=gen)
        return (
            torch.stack([ids[s : s + block] for s in starts]),
            torch.stack([ids[s + 1 : s + block + 1] for s in starts]),
        )

    # the trainer's own step (one batch, clipped): the short run trains as `nanogpt train` would
    return tuple(train_step(model, opts, draw, grad_clip=cfg.grad_clip).item() for _ in range(steps))


def short_run(lr: float) -> list[float]:
    """The training loss of each of the 30 steps of the short run at a constant learning rate ``lr``.

    The model: the recipe's 4 layers (4 heads, RoPE, ReLU²) at width 64, context 32, on the first 40,000
    characters of Hamlet; AdamW (the recipe's betas and weight decay), gradients clipped at 1, 8 sequences
    a step, no warmup. Seeded, so the same ``lr`` gives the same losses (results are cached). Well under a
    second a run."""
    lr = float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    return list(_short_run(lr))


def diverged(losses: list[float]) -> bool:
    """The exercise's definition: the mean of the last 5 losses is not below the first (or is not finite)."""
    tail = sum(losses[-5:]) / 5
    return not (math.isfinite(tail) and tail < losses[0])


# Hidden edges for 06.1 (the learner never sees these runs): each trains below its edge and diverges at and
# above it, over the rates 1e-5 .. 10 the exercise names.
HIDDEN_EDGES = (3.1e-3, 0.047, 0.9, 2.2e-5, 6.0)
EDGE_CALLS = 40  # a factor-1.5 grid over 1e-5 .. 10 is 35 rates; bisection needs about 6


def _hidden_run(edge: float, calls: list[float]) -> Callable[[float], list[float]]:
    """A run(lr) -> 30 losses, falling below ``edge``, rising at and above it; records each rate asked for."""

    def run(lr: float) -> list[float]:
        lr = float(lr)
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        calls.append(lr)
        slope = -0.05 if lr < edge else 0.2 * (1 + math.log(lr / edge))
        return [8.0 + slope * k for k in range(SHORT["steps"])]

    return run


@exercise(
    "06.1",
    "A search for the rate at which training diverges",
    "a function divergence_edge(run) -> float: for any run(lr) -> list of losses that trains below some "
    "rate between 1e-5 and 10 and diverges at and above it, a rate r where diverged(run(r)) and not "
    "diverged(run(r / 1.5)), calling run at most 40 times",
)
def _diverging_lr(divergence_edge: Callable[[Callable[[float], list[float]]], float]) -> str:
    expect(callable(divergence_edge), f"give a function divergence_edge(run), got {type(divergence_edge).__name__}")
    most = 0
    for i, edge in enumerate(HIDDEN_EDGES):
        calls: list[float] = []
        got = divergence_edge(_hidden_run(edge, calls))
        what = f"on hidden run {i + 1} of {len(HIDDEN_EDGES)}"
        expect(
            isinstance(got, (int, float)) and not isinstance(got, bool) and math.isfinite(got) and got > 0,
            f"{what}: give a positive rate (a float), got {got!r}",
        )
        expect(
            len(calls) <= EDGE_CALLS,
            f"{what}: {len(calls)} runs; a real run takes a second or more, so the "
            f"search may call run at most {EDGE_CALLS} times (a factor-1.5 grid needs 35, bisection about 6)",
        )
        lr = float(got)
        run = _hidden_run(edge, [])
        # The same property the exercise states, checked on the run itself: r diverges, r / 1.5 trains.
        expect(
            diverged(run(lr)),
            f"{what}: run({lr:g}) still trains, so {lr:g} is not a rate where it diverges; "
            "return a rate you have seen diverge",
        )
        expect(
            not diverged(run(lr / DIVERGE_FACTOR)),
            f"{what}: run({lr:g} / 1.5) diverges too, so a lower rate "
            "already diverges: narrow the bracket until its ends are a factor 1.5 apart or less, then return "
            "its diverging end",
        )
        most = max(most, len(calls))
    return (
        f"it found the edge of {len(HIDDEN_EDGES)} runs it had never seen, with at most {most} runs each. "
        "Now call divergence_edge(short_run) for the real model."
    )


# ---- 06.2 early stopping ------------------------------------------------------------------------------

# (patience, [(step, val_loss), ...]): hidden curves. A U shape; ties with the best (not improvements, as in
# Trainer: best/ is written only on a strictly lower val loss); a curve that never stops improving; a best at
# the first evaluation; patience 1; a curve that dips lower again after the stop (the stopped run never sees it).
STOP_CASES: tuple[tuple[int, tuple[tuple[int, float], ...]], ...] = (
    (3, tuple(zip(range(100, 1300, 100), (6.0, 5.2, 4.8, 4.6, 4.55, 4.58, 4.6, 4.7, 4.8, 4.9, 5.0, 5.1)))),
    (2, tuple(zip(range(50, 650, 50), (5.0, 4.5, 4.2, 4.2, 4.1, 4.1, 4.1, 4.0, 3.9, 3.95, 3.9, 3.8)))),
    (4, tuple(zip(range(10, 90, 10), (9.0, 8.0, 7.5, 7.2, 7.0, 6.9, 6.85, 6.8)))),
    (2, tuple(zip(range(200, 1200, 200), (3.0, 3.1, 3.2, 3.05, 2.9)))),
    (1, tuple(zip(range(1, 9), (4.0, 3.5, 3.6, 3.4, 3.3, 3.35, 3.0, 2.0)))),
    (3, tuple(zip(range(100, 1100, 100), (5.0, 4.0, 4.1, 4.2, 4.3, 3.5, 3.4, 3.3, 3.2, 3.1)))),
)


def _stop_truth(
    evals: tuple[tuple[int, float], ...],
    patience: int,
    better: Callable[[float, float], bool] = lambda new, best: new < best,
) -> tuple[int, int]:
    """(best step, stop step): stop at the first evaluation that is the ``patience``-th in a row without a new
    best; the best is the lowest val loss seen up to then; no stop: the last evaluation."""
    best_step, best, since = evals[0][0], evals[0][1], 0
    for step, val in evals[1:]:
        if better(val, best):
            best_step, best, since = step, val, 0
        else:
            since += 1
            if since == patience:
                return best_step, step
    return best_step, evals[-1][0]


@exercise(
    "06.2",
    "Early stopping",
    "a function early_stop(evals, patience) -> (best_step, stop_step): evals is a list of (step, val_loss) "
    "in the order a run logs them; the run stops at the first evaluation that is the patience-th in a row "
    "without a new best (a val loss strictly lower than every earlier one), or at the last evaluation; "
    "best_step is the step of the best val loss the run has seen",
)
def _early_stop(early_stop: Callable[[list[tuple[int, float]], int], tuple[int, int]]) -> str:
    expect(callable(early_stop), f"give a function early_stop(evals, patience), got {type(early_stop).__name__}")
    for i, (patience, evals) in enumerate(STOP_CASES):
        what = f"on hidden curve {i + 1} of {len(STOP_CASES)} (patience {patience})"
        got = early_stop([tuple(e) for e in evals], patience)
        expect(
            isinstance(got, tuple) and len(got) == 2 and all(isinstance(s, int) for s in got),
            f"{what}: give a pair of steps (best_step, stop_step) as ints, got {got!r}",
        )
        best, stop = _stop_truth(evals, patience)
        steps = [s for s, _ in evals]
        expect(all(s in steps for s in got), f"{what}: {got} holds a step that is not one of the evaluations")
        if got[1] != stop:
            ties = _stop_truth(evals, patience, lambda new, old: new <= old)[1]
            expect(
                got[1] != ties or ties == stop,
                f"{what}: the run stops at another evaluation: an equal val loss "
                "is not a new best (the trainer writes best/ only when the loss is strictly lower)",
            )
            expect(
                False,
                f"{what}: the run stops at another evaluation than the rule says: count the evaluations "
                "in a row since the last new best",
            )
        expect(got[0] <= stop, f"{what}: best_step {got[0]} comes after the stop: a stopped run never sees it")
        expect(got[0] == best, f"{what}: best_step is not the step of the lowest val loss the run saw before stopping")
    return (
        f"the best step and the stop agree on {len(STOP_CASES)} hidden curves. Now try it on §7's 3,500-step "
        "run: where would patience 5 have stopped it, and how many steps would that have saved?"
    )


# ---- 06.3 dropout by hand -----------------------------------------------------------------------------

DROP_SHAPE = (64, 512)  # 32,768 entries: the share of zeros is measured to +-0.28% (one sd at p = 0.5)
DROP_SIGMAS = 5.0  # a right answer fails this by chance with probability about 6e-7


def _drop_input(seed: int, grad: bool = False) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(DROP_SHAPE, generator=gen) + 3.0  # away from 0, so a zero in the output is a dropped entry
    return x.requires_grad_(grad)


def _dropout_twins() -> list:
    return [
        ops(
            "dropout",
            "dropout_",
            "native_dropout",
            "feature_dropout",
            "feature_dropout_",
            "alpha_dropout",
            "alpha_dropout_",
            "feature_alpha_dropout",
            "feature_alpha_dropout_",
            label="torch's dropout",
        )
    ]


@exercise(
    "06.3",
    "Dropout by hand",
    "a function dropout(x, p, training, gen) -> tensor: with training=True, each entry of x set to 0 with "
    "probability p, independently, drawn from the torch.Generator gen, and the kept entries scaled so each "
    "entry keeps its expected value; with training=False, x unchanged",
    off=_dropout_twins,
    why="draw the mask yourself",
)
def _dropout(dropout: Callable[[torch.Tensor, float, bool, torch.Generator], torch.Tensor]) -> str:
    expect(callable(dropout), f"give a function dropout(x, p, training, gen), got {type(dropout).__name__}")
    x = _drop_input(0)
    out = dropout(x, 0.5, False, torch.Generator().manual_seed(1))
    expect(isinstance(out, torch.Tensor) and out.shape == x.shape, f"give a tensor of x's shape {tuple(x.shape)}")
    expect(torch.equal(out, x), "with training=False (evaluation) dropout must leave x unchanged")
    expect(
        torch.equal(dropout(x, 0.0, True, torch.Generator().manual_seed(1)), x),
        "with p = 0 nothing is dropped: the output must be x itself",
    )
    for p in (0.1, 0.5):
        x = _drop_input(int(p * 10), grad=True)
        out = dropout(x, p, True, torch.Generator().manual_seed(7))
        kept = out != 0
        share = 1 - kept.float().mean().item()
        sd = math.sqrt(p * (1 - p) / x.numel())
        expect(
            abs(share - p) <= DROP_SIGMAS * sd,
            f"p = {p}: {share:.1%} of the entries are zero; with "
            f"{x.numel():,} entries the share must be within {DROP_SIGMAS * sd:.1%} of the dropping probability",
        )
        # kept entries are x / (1 - p): a multiplication by 1 / (1 - p) rounds differently by at most 1 ulp
        ratio = (out[kept] / x[kept]).detach()
        expect(
            torch.allclose(ratio, torch.full_like(ratio, 1 / (1 - p)), rtol=1e-6, atol=0),
            f"p = {p}: the kept entries are not x times one common factor that keeps each entry's expected value",
        )
        expect(
            not all(torch.equal(kept[0], kept[r]) for r in range(1, 8))
            and not all(torch.equal(kept[:, 0], kept[:, c]) for c in range(1, 8)),
            f"p = {p}: the same entries are dropped in every row or every column: each entry is dropped independently",
        )
        again = dropout(x, p, True, torch.Generator().manual_seed(7))
        other = dropout(x, p, True, torch.Generator().manual_seed(8))
        expect(
            torch.equal(again, out) and not torch.equal(other, out),
            f"p = {p}: draw the mask from gen: the same generator state must give the same mask, another one another",
        )
        expect(
            out.requires_grad, f"p = {p}: the output has no gradient: build it from x with differentiable operations"
        )
        (grad,) = torch.autograd.grad(out.sum(), x)
        expect(
            torch.allclose(grad, kept.float() / (1 - p), rtol=1e-6, atol=0),
            f"p = {p}: the gradient of out.sum() with respect to x is not 0 on dropped entries and the common "
            "factor on kept ones",
        )
    return (
        "zeros in the right share, independent, the rest scaled, seeded, differentiable, and off in evaluation. "
        "This is what GPTConfig(dropout=...) switches on in the model (nn.Dropout in nanogpt_lib/model.py)."
    )
