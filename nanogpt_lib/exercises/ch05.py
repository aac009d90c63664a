"""Checks for notebook 05 (training): gradient accumulation, the WSD schedule, Newton-Schulz, the diverging rate.

Every check recomputes its truth from the library (``nanogpt_lib.train.lr_at``, ``nanogpt_lib.optim``, a
whole batch's real gradient, real training runs) rather than from numbers written here, so a change to the
library moves the answers with it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from .. import paths
from ..config import TrainConfig
from ..model import GPT, GPTConfig
from ..optim import orthogonalize as library_orthogonalize
from ..tokenizer import encode
from ..train import lr_at
from . import Wrong, expect, exercise

# ---- 05.1 gradient accumulation ------------------------------------------------------------------------

ACCUM_CONFIG = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=128)


def _accum_case(k: int, seed: int) -> tuple[GPT, torch.Tensor, torch.Tensor]:
    """A tiny GPT and one batch of 8 rows, from ``seed`` (the learner's global RNG is left as it was)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GPT(ACCUM_CONFIG)
        x, y = (torch.randint(0, ACCUM_CONFIG.vocab_size, (8, ACCUM_CONFIG.block_size)) for _ in range(2))
    return model, x, y


def _grads(model: GPT) -> dict[str, torch.Tensor]:
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    # float32 sums of a few thousand terms in another order: ~1e-7 relative; 1e-5 leaves a wide margin while a
    # wrong scale (k times) or a lost micro-batch is off by order 1.
    return all(torch.allclose(a[n], b[n], rtol=1e-5, atol=1e-7) for n in a)


@exercise("05.1", "Accumulate gradients over micro-batches",
          "a function accumulate(model, x, y, k) that leaves in each p.grad the gradient of the mean loss over "
          "the whole batch x (B, T), computed k micro-batches of B // k rows at a time")
def _accumulate(accumulate: Callable[..., object]) -> str:
    expect(callable(accumulate), f"give a function accumulate(model, x, y, k), got {type(accumulate).__name__}")
    for k, seed in ((2, 0), (4, 1)):
        model, x, y = _accum_case(k, seed)
        _, loss = model(x, y)
        loss.backward()
        truth = _grads(model)
        model.zero_grad(set_to_none=True)
        rows: list[int] = []
        hook = model.register_forward_pre_hook(  # the batch size of every forward call, however it is called
            lambda m, args, kwargs: rows.append((args or tuple(kwargs.values()))[0].size(0)), with_kwargs=True)
        try:
            accumulate(model, x, y, k)
        finally:
            hook.remove()
        expect(rows == [x.size(0) // k] * k,
               f"with k={k} the model saw batches of {rows} rows: run it on {k} micro-batches of "
               f"{x.size(0) // k} rows each (x.chunk(k))")
        mine = _grads(model)
        if _close(mine, {n: g * k for n, g in truth.items()}):
            raise Wrong(f"the gradient is {k} times too large (k={k}): the batch's loss is the mean of the "
                        "micro-batches' losses, so scale each one before its backward")
        model.zero_grad(set_to_none=True)
        _, last = model(x[-x.size(0) // k:], y[-x.size(0) // k:])
        (last / k).backward()
        if _close(mine, _grads(model)) or _close(mine, {n: g * k for n, g in _grads(model).items()}):
            raise Wrong("only the last micro-batch's gradient is left: backward adds into p.grad, so do not "
                        "zero the gradients between micro-batches")
        worst = max(mine, key=lambda n: float((mine[n] - truth[n]).abs().max()))
        expect(_close(mine, truth), f"with k={k} the gradient of {worst} differs from the whole batch's by "
               f"{float((mine[worst] - truth[worst]).abs().max()):.1e}")
    return ("micro-batches of B // k rows, each loss divided by k, backward adding into p.grad: the "
            "trainer's grad_accum, and what DDP does across processes.")


# ---- 05.2 the WSD schedule ----------------------------------------------------------------------------

# (warmup_steps, max_steps, decay_frac, lr, min_lr): the recipe's, then the edges (no warmup, decay_frac 1:
# decay right after warmup, a warmup longer than the flat phase, a decay length that rounds).
WSD_CASES = ((100, 1500, 0.2, 2e-3, 2e-4), (0, 100, 0.1, 1e-3, 0.0), (10, 50, 1.0, 3e-3, 3e-4),
             (30, 40, 0.5, 1e-2, 1e-3), (5, 37, 0.35, 6e-4, 6e-5))


@exercise("05.2", "Write the WSD learning rate",
          "a function wsd_lr(step, warmup_steps, max_steps, decay_frac, lr, min_lr) -> float that equals "
          "nanogpt_lib.train.lr_at for schedule='wsd'")
def _wsd(wsd_lr: Callable[..., float]) -> str:
    expect(callable(wsd_lr), f"give a function wsd_lr(step, warmup_steps, max_steps, decay_frac, lr, min_lr), "
           f"got {type(wsd_lr).__name__}")
    for warmup, max_steps, decay_frac, lr, min_lr in WSD_CASES:
        cfg = TrainConfig(schedule="wsd", warmup_steps=warmup, max_steps=max_steps, decay_frac=decay_frac,
                          lr=lr, min_lr=min_lr)
        case = f"(warmup_steps={warmup}, max_steps={max_steps}, decay_frac={decay_frac}, lr={lr:g}, min_lr={min_lr:g})"
        for step in range(max_steps + 3):  # a few steps past the end too: the rate stays at min_lr
            mine = wsd_lr(step, warmup, max_steps, decay_frac, lr, min_lr)
            expect(isinstance(mine, (int, float, torch.Tensor)), f"wsd_lr returned {type(mine).__name__}, "
                   "not a number")
            mine, truth = float(mine), lr_at(step, cfg)
            # The same few float64 operations, possibly in another order: equal to ~1e-16 relative; 1e-12 allows
            # any ordering, while the smallest real mistake (one step early) changes the rate by >= 1e-4 relative.
            if not math.isclose(mine, truth, rel_tol=1e-12, abs_tol=1e-18):
                phase = ("warmup" if step < warmup else "the flat phase" if math.isclose(truth, lr) and step < max_steps
                         else "the decay" if step < max_steps else "after max_steps")
                raise Wrong(f"at step {step} of {case} (in {phase}) your rate {mine:.6g} is "
                            f"{'too high' if mine > truth else 'too low'}")
    return f"equal to lr_at at every step of {len(WSD_CASES)} schedules (the recipe's and four edge cases)."


# ---- 05.3 Newton-Schulz -------------------------------------------------------------------------------

NS_SHAPES = ((16, 16), (8, 40), (48, 12))  # square, wide, tall


@exercise("05.3", "Orthogonalise a matrix by Newton–Schulz",
          "a function orthogonalize(G, steps=5) -> tensor of G's shape, in float32, equal to "
          "nanogpt_lib.optim.orthogonalize(G, steps)")
def _newton_schulz(orthogonalize: Callable[..., torch.Tensor]) -> str:
    expect(callable(orthogonalize), f"give a function orthogonalize(G, steps=5), got {type(orthogonalize).__name__}")
    gen = torch.Generator().manual_seed(5)
    for shape in NS_SHAPES:
        g = torch.randn(shape, generator=gen)
        g[:, 0] *= 30  # one dominant direction, as gradients have: the iteration must flatten it
        for steps in (1, 5):
            mine = orthogonalize(g.clone(), steps=steps)
            expect(torch.is_tensor(mine), f"orthogonalize returned {type(mine).__name__}, not a tensor")
            expect(tuple(mine.shape) == shape, f"a {shape} matrix came back as {tuple(mine.shape)}"
                   + (": a tall matrix is iterated as its transpose, transpose it back" if mine.shape == shape[::-1] else ""))
            truth = library_orthogonalize(g, steps)
            mine = mine.detach().float()
            expect(bool(torch.isfinite(mine).all()), f"{shape}, steps={steps}: your result has inf or nan "
                   "(divide G by its norm first)")
            expect(mine.norm() < 10 * truth.norm(), f"{shape}, steps={steps}: your result is far larger than an "
                   "orthogonalised matrix (divide G by its norm first)")
            # Float32 matmuls summed in another order differ by ~1e-7 relative; each iteration can amplify that
            # by up to a = 3.4, so 5 iterations by ~500: 1e-4 relative (Frobenius) bounds that with room, and a
            # wrong coefficient, a missing normalisation or a missing step is off by 1% or more.
            err = ((mine - truth).norm() / truth.norm()).item()
            expect(err < 1e-4, f"{shape}, steps={steps}: your result differs from the library's by "
                   f"{err:.1%} (relative Frobenius norm)")
    return f"equal to the library's for {len(NS_SHAPES)} shapes (square, wide, tall), with 1 and 5 steps."


# ---- 05.4 the diverging learning rate -----------------------------------------------------------------

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
    text = (paths.shakespeare_dir() / "hamlet.txt").read_text(encoding="utf-8")[:SHORT["chars"]]
    distinct, ids = torch.unique(torch.tensor(encode(text)), return_inverse=True)
    return ids, -(-len(distinct) // 64) * 64


@functools.lru_cache(maxsize=64)
def _short_run(lr: float) -> tuple[float, ...]:
    ids, vocab = _short_data()
    cfg = TrainConfig()
    steps, batch, block = SHORT["steps"], SHORT["batch"], SHORT_MODEL["block_size"]
    with torch.random.fork_rng():  # the learner's global RNG is left as it was
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=vocab, **SHORT_MODEL))
    opts = model.configure_optimizers(cfg.weight_decay, lr, (cfg.beta1, cfg.beta2), "cpu", "adamw")
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        starts = torch.randint(len(ids) - block - 1, (batch,), generator=gen)
        x = torch.stack([ids[s:s + block] for s in starts])
        y = torch.stack([ids[s + 1:s + block + 1] for s in starts])
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return tuple(losses)


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


@exercise("05.4", "Find the learning rate at which the 4-layer model diverges",
          "a float: the smallest learning rate (within a factor 1.5) at which short_run(lr) diverges, that is, "
          "its last 5 losses average no lower than its first")
def _diverging_lr(answer: object) -> str:
    expect(isinstance(answer, (int, float)) and not isinstance(answer, bool) and math.isfinite(answer)
           and answer > 0, f"give a positive learning rate (a float), got {answer!r}")
    # The edge is not sharp: just below it a run may diverge at one rate and train at a slightly higher one
    # (the loss is chaotic there), so the check accepts a band, verified by running both ends. A factor 1.5
    # is finer than the factor-2 grid learning-rate sweeps use.
    lr = float(answer)
    expect(diverged(short_run(lr)), f"at lr = {lr:g} the short run still trains (its loss ends below where it "
           "started): the rate where it diverges is higher")
    expect(not diverged(short_run(lr / DIVERGE_FACTOR)), f"already at lr = {lr / DIVERGE_FACTOR:g} (your rate "
           f"/ {DIVERGE_FACTOR}) the short run diverges: look for a lower rate")
    return (f"at {lr:g} the loss ends above where it started; at {lr / DIVERGE_FACTOR:g} it trains. The recipe's "
            "2e-3 is far below this edge: the best rate for a whole run is not the largest one that survives "
            "30 steps (notebook 07 tunes it by a sweep).")
