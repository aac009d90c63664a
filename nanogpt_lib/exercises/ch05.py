"""Checks for notebook 05 (training): gradient accumulation, a 1-sqrt cooldown, Muon's step for one matrix, and
a search for the rate at which training diverges.

Truths come from the library where it has them (a whole batch's real gradient, ``nanogpt_lib.train.lr_at``
for the phases the new schedule shares with WSD, ``nanogpt_lib.optim.Muon`` stepping a real matrix), and from
runs the learner never sees where the answer is a method (05.4's hidden divergence edges).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from .. import paths
from .. import train as train_module
from ..config import TrainConfig
from ..explorers import schedule as schedule_explorer
from ..model import GPT, GPTConfig
from ..optim import Muon, lr_ratio, orthogonalize
from ..tokenizer import encode
from ..train import lr_at
from . import Wrong, expect, exercise, one_thread
from .guard import fn

PUBLIC = ("short_run", "diverged", "SHORT", "SHORT_MODEL")  # a learner's answer may call these

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
          "the whole batch x (B, T), computed k micro-batches of B // k rows at a time",
          off=lambda: [fn(train_module.Trainer._train_step)], why="run the micro-batches yourself")
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


# ---- 05.2 a 1-sqrt cooldown ----------------------------------------------------------------------------

# (warmup_steps, max_steps, decay_frac, lr, min_lr): the recipe's, then the edges (no warmup, decay_frac 1:
# decay right after warmup, a warmup longer than the flat phase, a decay length that rounds).
COOLDOWN_CASES = ((100, 1500, 0.2, 2e-3, 2e-4), (0, 100, 0.1, 1e-3, 0.0), (10, 50, 1.0, 3e-3, 3e-4),
                  (30, 40, 0.5, 1e-2, 1e-3), (5, 37, 0.35, 6e-4, 6e-5), (0, 12, 0.5, 1.0, 0.5))


def _schedule_twins() -> list:
    return [fn(lr_at), fn(train_module.wsd_decay_start), fn(schedule_explorer.lr_curve),
            fn(schedule_explorer.schedule_config)]


def _one_sqrt(step: int, warmup: int, max_steps: int, decay_frac: float, lr: float, min_lr: float) -> float:
    """WSD's warmup and flat phase (lr_at), then lr - (lr - min_lr) sqrt(t) over WSD's decay steps."""
    cfg = TrainConfig(schedule="wsd", warmup_steps=warmup, max_steps=max_steps, decay_frac=decay_frac, lr=lr,
                      min_lr=min_lr)
    wsd = lr_at(step, cfg)
    if step < warmup:
        return wsd
    t = (lr - wsd) / (lr - min_lr)  # how far WSD's linear decay has gone: 0 .. 1
    return lr - (lr - min_lr) * math.sqrt(t)


@exercise("05.2", "A 1-sqrt cooldown",
          "a function lr_1sqrt(step, warmup_steps, max_steps, decay_frac, lr, min_lr) -> float: WSD's warmup and "
          "flat phase, then over WSD's decay steps lr - (lr - min_lr) * sqrt(t), t going from 0 to 1 as WSD's "
          "linear decay does", off=_schedule_twins, why="write the schedule's phases yourself")
def _cooldown(lr_1sqrt: Callable[..., float]) -> str:
    expect(callable(lr_1sqrt), f"give a function lr_1sqrt(step, warmup_steps, max_steps, decay_frac, lr, "
           f"min_lr), got {type(lr_1sqrt).__name__}")
    for warmup, max_steps, decay_frac, lr, min_lr in COOLDOWN_CASES:
        cfg = TrainConfig(schedule="wsd", warmup_steps=warmup, max_steps=max_steps, decay_frac=decay_frac,
                          lr=lr, min_lr=min_lr)
        case = f"(warmup_steps={warmup}, max_steps={max_steps}, decay_frac={decay_frac}, lr={lr:g}, min_lr={min_lr:g})"
        for step in range(max_steps + 3):  # a few steps past the end too: the rate stays at min_lr
            mine = lr_1sqrt(step, warmup, max_steps, decay_frac, lr, min_lr)
            expect(isinstance(mine, (int, float, torch.Tensor)) and not isinstance(mine, bool),
                   f"lr_1sqrt returned {type(mine).__name__}, not a number")
            mine, truth, wsd = float(mine), _one_sqrt(step, warmup, max_steps, decay_frac, lr, min_lr), lr_at(step, cfg)
            # The same few float64 operations, possibly in another order: equal to ~1e-16 relative; 1e-12 allows
            # any ordering, while the smallest real mistake (one step early) changes the rate by >= 1e-4 relative.
            if math.isclose(mine, truth, rel_tol=1e-12, abs_tol=1e-18):
                continue
            phase = ("the warmup" if step < warmup else "the flat phase" if step < train_module.wsd_decay_start(cfg)
                     else "the cooldown" if step < max_steps else "after max_steps")
            at = f"at step {step} of {case}, in {phase}"
            expect(phase not in ("the warmup", "the flat phase"), f"{at}: your rate is not WSD's there (read "
                   "lr_at in nanogpt_lib/train.py: the warmup and the flat phase are the same)")
            expect(not math.isclose(mine, wsd, rel_tol=1e-9), f"{at}: that is WSD's linear decay; the cooldown "
                   "follows 1 - sqrt(t) instead")
            t = (lr - wsd) / (lr - min_lr)
            expect(not math.isclose(mine, min_lr + (lr - min_lr) * math.sqrt(t), rel_tol=1e-9),
                   f"{at}: your cooldown starts at min_lr and climbs: at t = 0 the rate is still lr")
            raise Wrong(f"{at}: your rate is not lr - (lr - min_lr) sqrt(t) with WSD's t (the share of the decay "
                        "steps done, reaching 1 at max_steps)")
    t_half = _one_sqrt(1350, 100, 1500, 0.2, 2e-3, 2e-4) / 2e-3
    return (f"every step of {len(COOLDOWN_CASES)} schedules agrees. Halfway through the recipe's cooldown the rate is "
            f"{t_half:.0%} of the peak against WSD's 55%: 1-sqrt drops fast at first, then lingers near the end "
            "(Hägele et al. 2024 found it matches a cosine run at a fraction of the cost).")


# ---- 05.3 Muon's step for one matrix --------------------------------------------------------------------

MUON_CASES = (((16, 16), 0.95, True), ((8, 40), 0.95, True), ((48, 12), 0.95, True), ((48, 12), 0.9, False),
              ((24, 8), 0.8, True))


def _muon_twins() -> list:
    twins = [fn(Muon.__init__, "nanogpt_lib.optim.Muon"), fn(Muon.step, "nanogpt_lib.optim.Muon.step"),
             fn(lr_ratio, "nanogpt_lib.optim.lr_ratio (the shape scaling)")]
    if hasattr(torch.optim, "Muon"):  # PyTorch >= 2.9 has its own
        import torch.optim._muon as torch_muon
        twins += [fn(torch.optim.Muon.step, "torch.optim.Muon")]
        twins += [fn(getattr(torch_muon, n), f"torch.optim._muon.{n}") for n in
                  ("muon", "_single_tensor_muon", "_adjust_lr", "_zeropower_via_newtonschulz")
                  if hasattr(torch_muon, n)]
    return twins


def _muon_truth(w: torch.Tensor, grads: list[torch.Tensor], lr: float, mu: float,
                nesterov: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weights, momentum buffer) after each of ``grads``, as nanogpt_lib.optim.Muon steps them."""
    p = torch.nn.Parameter(w.clone())
    opt = Muon([p], lr=lr, momentum=mu, nesterov=nesterov, weight_decay=0.0)
    out = []
    for g in grads:
        p.grad = g.clone()
        opt.step()
        out.append((p.detach().clone(), opt.state[p]["momentum_buffer"].clone()))
    return out


@exercise("05.3", "Muon's step for one matrix",
          "a function muon_step(W, grad, buf, lr, momentum, nesterov) -> (new_W, new_buf): one step of Muon "
          "(no weight decay) for the matrix W, buf its momentum buffer (zeros before the first step)",
          off=_muon_twins, why="write the momentum, the look-ahead and the shape scaling yourself "
                               "(nanogpt_lib.optim.orthogonalize is yours to use)")
def _muon_step(muon_step: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> str:
    expect(callable(muon_step), f"give a function muon_step(W, grad, buf, lr, momentum, nesterov), got "
           f"{type(muon_step).__name__}")
    gen = torch.Generator().manual_seed(53)
    lr = 0.02
    for shape, mu, nesterov in MUON_CASES:
        w = torch.randn(shape, generator=gen) / math.sqrt(shape[1])
        grads = [torch.randn(shape, generator=gen) for _ in range(3)]
        truth = _muon_truth(w, grads, lr, mu, nesterov)
        mine_w, mine_buf = w.clone(), torch.zeros(shape)
        case = f"a {shape} matrix, momentum {mu}, nesterov={nesterov}"
        for k, (g, (true_w, true_buf)) in enumerate(zip(grads, truth)):
            with torch.no_grad():
                got = muon_step(mine_w.clone(), g.clone(), mine_buf.clone(), lr, mu, nesterov)
            expect(isinstance(got, (tuple, list)) and len(got) == 2 and all(torch.is_tensor(t) for t in got),
                   "muon_step should return a pair of tensors (new_W, new_buf)")
            new_w, new_buf = (t.detach().float() for t in got)
            at = f"{case}, step {k + 1}"
            expect(tuple(new_w.shape) == shape and tuple(new_buf.shape) == shape,
                   f"{at}: new_W and new_buf must keep W's shape {shape}")
            # One orthogonalisation in float32, the same ops in any order: ~1e-6 relative; 1e-4 is room, while a
            # missing scaling (x2 here) or look-ahead changes the step by order 1.
            if not torch.allclose(new_buf, true_buf, rtol=1e-4, atol=1e-6):
                summed = mu * mine_buf + g
                expect(not torch.allclose(new_buf, summed, rtol=1e-4, atol=1e-6), f"{at}: your buffer adds the "
                       "gradient to mu times the buffer, a sum that grows to 1 / (1 - mu) gradients: Muon's "
                       "momentum is an average, weighing the new gradient by 1 - mu")
                raise Wrong(f"{at}: the momentum buffer is not Muon's")
            step, true_step = new_w - mine_w, true_w - mine_w
            scale = lr_ratio(torch.Size(shape), None)
            if not torch.allclose(step, true_step, rtol=1e-4, atol=1e-6):
                expect(not (scale != 1 and torch.allclose(step * scale, true_step, rtol=1e-4, atol=1e-6)),
                       f"{at}: the step has the right direction but not Muon's size for a tall matrix: scale the "
                       "rate by the matrix's shape, as 4.3 says")
                plain = lambda u: -lr * scale * orthogonalize(u)  # noqa: E731
                expect(not (nesterov and torch.allclose(step, plain(true_buf), rtol=1e-4, atol=1e-6)),
                       f"{at}: your step follows the buffer alone; with nesterov=True it looks ahead along it")
                expect(not torch.allclose(step, plain(g), rtol=1e-4, atol=1e-6),
                       f"{at}: your step follows this gradient alone: the momentum buffer is not used")
                expect(not torch.allclose(step, -lr * scale * (true_buf if not nesterov else g.lerp(true_buf, mu)),
                                          rtol=1e-4, atol=1e-6),
                       f"{at}: the update is not orthogonalised (nanogpt_lib.optim.orthogonalize)")
                raise Wrong(f"{at}: the weights after the step are not Muon's")
            mine_w, mine_buf = true_w.clone(), true_buf.clone()
    return (f"equal to nanogpt_lib.optim.Muon over 3 steps for {len(MUON_CASES)} matrices (square, wide, tall; with "
            "and without Nesterov): an average of gradients, a look-ahead along it, orthogonalised, the rate "
            "scaled so a tall matrix's update has the size of a square one's.")


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


# Hidden edges for 05.4 (the learner never sees these runs): each trains below its edge and diverges at and
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


@exercise("05.4", "A search for the rate at which training diverges",
          "a function divergence_edge(run) -> float: for any run(lr) -> list of losses that trains below some "
          "rate between 1e-5 and 10 and diverges at and above it, a rate r where diverged(run(r)) and not "
          "diverged(run(r / 1.5)), calling run at most 40 times")
def _diverging_lr(divergence_edge: Callable[[Callable[[float], list[float]]], float]) -> str:
    expect(callable(divergence_edge), f"give a function divergence_edge(run), got {type(divergence_edge).__name__}")
    most = 0
    for i, edge in enumerate(HIDDEN_EDGES):
        calls: list[float] = []
        got = divergence_edge(_hidden_run(edge, calls))
        what = f"on hidden run {i + 1} of {len(HIDDEN_EDGES)}"
        expect(isinstance(got, (int, float)) and not isinstance(got, bool) and math.isfinite(got) and got > 0,
               f"{what}: give a positive rate (a float), got {got!r}")
        expect(len(calls) <= EDGE_CALLS, f"{what}: {len(calls)} runs; a real run takes a second or more, so the "
               f"search may call run at most {EDGE_CALLS} times (a factor-1.5 grid needs 35, bisection about 6)")
        lr = float(got)
        run = _hidden_run(edge, [])
        # The same property the exercise states, checked on the run itself: r diverges, r / 1.5 trains.
        expect(diverged(run(lr)), f"{what}: run({lr:g}) still trains, so {lr:g} is not a rate where it diverges; "
               "return a rate you have seen diverge")
        expect(not diverged(run(lr / DIVERGE_FACTOR)), f"{what}: run({lr:g} / 1.5) diverges too, so a lower rate "
               "already diverges: narrow the bracket until its ends are a factor 1.5 apart or less, then return "
               "its diverging end")
        most = max(most, len(calls))
    return (f"it found the edge of {len(HIDDEN_EDGES)} runs it had never seen, with at most {most} runs each. "
            "Now call divergence_edge(short_run) for the real model.")
