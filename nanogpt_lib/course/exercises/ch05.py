"""Checks for notebook 05 (the training step): gradient accumulation, a 1-sqrt cooldown and Muon's step for one
matrix (the search for the rate at which training diverges moved to ch06 with the training run).

Truths come from the library where it has them (a whole batch's real gradient, ``nanogpt_lib.schedule.lr_at``
for the phases the new schedule shares with WSD, ``nanogpt_lib.optim.Muon`` stepping a real matrix).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ... import train as train_module
from ...config import TrainConfig
from ...model import GPT, GPTConfig
from ...optim import Muon, lr_ratio, orthogonalize
from ...schedule import lr_at, wsd_decay_start
from ...step import train_step
from ..explorers import schedule as schedule_explorer
from . import Wrong, exercise, expect
from .guard import fn

PUBLIC = ()  # nothing here is the learner's to call

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


@exercise(
    "05.1",
    "Accumulate gradients over micro-batches",
    "a function accumulate(model, x, y, k) that leaves in each p.grad the gradient of the mean loss over "
    "the whole batch x (B, T), computed k micro-batches of B // k rows at a time",
    off=lambda: [fn(train_module.Trainer._train_step), fn(train_step)],
    why="run the micro-batches yourself",
)
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
            lambda m, args, kwargs, rows=rows: rows.append((args or tuple(kwargs.values()))[0].size(0)),
            with_kwargs=True,
        )
        try:
            accumulate(model, x, y, k)
        finally:
            hook.remove()
        expect(
            rows == [x.size(0) // k] * k,
            f"with k={k} the model saw batches of {rows} rows: run it on {k} micro-batches of "
            f"{x.size(0) // k} rows each (x.chunk(k))",
        )
        mine = _grads(model)
        if _close(mine, {n: g * k for n, g in truth.items()}):
            raise Wrong(
                f"the gradient is {k} times too large (k={k}): the batch's loss is the mean of the "
                "micro-batches' losses, so scale each one before its backward"
            )
        model.zero_grad(set_to_none=True)
        _, last = model(x[-x.size(0) // k :], y[-x.size(0) // k :])
        (last / k).backward()
        if _close(mine, _grads(model)) or _close(mine, {n: g * k for n, g in _grads(model).items()}):
            raise Wrong(
                "only the last micro-batch's gradient is left: backward adds into p.grad, so do not "
                "zero the gradients between micro-batches"
            )
        worst = max(mine, key=lambda n: float((mine[n] - truth[n]).abs().max()))
        expect(
            _close(mine, truth),
            f"with k={k} the gradient of {worst} differs from the whole batch's by "
            f"{float((mine[worst] - truth[worst]).abs().max()):.1e}",
        )
    return (
        "micro-batches of B // k rows, each loss divided by k, backward adding into p.grad: the "
        "trainer's grad_accum, and what DDP does across processes."
    )


# ---- 05.2 a 1-sqrt cooldown ----------------------------------------------------------------------------

# (warmup_steps, max_steps, decay_frac, lr, min_lr): the recipe's, then the edges (no warmup, decay_frac 1:
# decay right after warmup, a warmup longer than the flat phase, a decay length that rounds).
COOLDOWN_CASES = (
    (100, 1500, 0.2, 2e-3, 2e-4),
    (0, 100, 0.1, 1e-3, 0.0),
    (10, 50, 1.0, 3e-3, 3e-4),
    (30, 40, 0.5, 1e-2, 1e-3),
    (5, 37, 0.35, 6e-4, 6e-5),
    (0, 12, 0.5, 1.0, 0.5),
)


def _schedule_twins() -> list:
    return [fn(lr_at), fn(wsd_decay_start), fn(schedule_explorer.lr_curve), fn(schedule_explorer.schedule_config)]


def _one_sqrt(step: int, warmup: int, max_steps: int, decay_frac: float, lr: float, min_lr: float) -> float:
    """WSD's warmup and flat phase (lr_at), then lr - (lr - min_lr) sqrt(t) over WSD's decay steps."""
    cfg = TrainConfig(
        schedule="wsd", warmup_steps=warmup, max_steps=max_steps, decay_frac=decay_frac, lr=lr, min_lr=min_lr
    )
    wsd = lr_at(step, cfg)
    if step < warmup:
        return wsd
    t = (lr - wsd) / (lr - min_lr)  # how far WSD's linear decay has gone: 0 .. 1
    return lr - (lr - min_lr) * math.sqrt(t)


@exercise(
    "05.2",
    "A 1-sqrt cooldown",
    "a function lr_1sqrt(step, warmup_steps, max_steps, decay_frac, lr, min_lr) -> float: WSD's warmup and "
    "flat phase, then over WSD's decay steps lr - (lr - min_lr) * sqrt(t), t going from 0 to 1 as WSD's "
    "linear decay does",
    off=_schedule_twins,
    why="write the schedule's phases yourself",
)
def _cooldown(lr_1sqrt: Callable[..., float]) -> str:
    expect(
        callable(lr_1sqrt),
        f"give a function lr_1sqrt(step, warmup_steps, max_steps, decay_frac, lr, "
        f"min_lr), got {type(lr_1sqrt).__name__}",
    )
    for warmup, max_steps, decay_frac, lr, min_lr in COOLDOWN_CASES:
        cfg = TrainConfig(
            schedule="wsd", warmup_steps=warmup, max_steps=max_steps, decay_frac=decay_frac, lr=lr, min_lr=min_lr
        )
        case = f"(warmup_steps={warmup}, max_steps={max_steps}, decay_frac={decay_frac}, lr={lr:g}, min_lr={min_lr:g})"
        for step in range(max_steps + 3):  # a few steps past the end too: the rate stays at min_lr
            mine = lr_1sqrt(step, warmup, max_steps, decay_frac, lr, min_lr)
            expect(
                isinstance(mine, (int, float, torch.Tensor)) and not isinstance(mine, bool),
                f"lr_1sqrt returned {type(mine).__name__}, not a number",
            )
            mine, truth, wsd = float(mine), _one_sqrt(step, warmup, max_steps, decay_frac, lr, min_lr), lr_at(step, cfg)
            # The same few float64 operations, possibly in another order: equal to ~1e-16 relative; 1e-12 allows
            # any ordering, while the smallest real mistake (one step early) changes the rate by >= 1e-4 relative.
            if math.isclose(mine, truth, rel_tol=1e-12, abs_tol=1e-18):
                continue
            phase = (
                "the warmup"
                if step < warmup
                else "the flat phase"
                if step < wsd_decay_start(cfg)
                else "the cooldown"
                if step < max_steps
                else "after max_steps"
            )
            at = f"at step {step} of {case}, in {phase}"
            expect(
                phase not in ("the warmup", "the flat phase"),
                f"{at}: your rate is not WSD's there (read "
                "lr_at in nanogpt_lib/schedule.py: the warmup and the flat phase are the same)",
            )
            expect(
                not math.isclose(mine, wsd, rel_tol=1e-9),
                f"{at}: that is WSD's linear decay; the cooldown follows 1 - sqrt(t) instead",
            )
            t = (lr - wsd) / (lr - min_lr)
            expect(
                not math.isclose(mine, min_lr + (lr - min_lr) * math.sqrt(t), rel_tol=1e-9),
                f"{at}: your cooldown starts at min_lr and climbs: at t = 0 the rate is still lr",
            )
            raise Wrong(
                f"{at}: your rate is not lr - (lr - min_lr) sqrt(t) with WSD's t (the share of the decay "
                "steps done, reaching 1 at max_steps)"
            )
    t_half = _one_sqrt(1350, 100, 1500, 0.2, 2e-3, 2e-4) / 2e-3
    return (
        f"every step of {len(COOLDOWN_CASES)} schedules agrees. Halfway through the recipe's cooldown the rate is "
        f"{t_half:.0%} of the peak against WSD's 55%: 1-sqrt drops fast at first, then lingers near the end "
        "(Hägele et al. 2024 found it matches a cosine run at a fraction of the cost)."
    )


# ---- 05.3 Muon's step for one matrix --------------------------------------------------------------------

MUON_CASES = (
    ((16, 16), 0.95, True),
    ((8, 40), 0.95, True),
    ((48, 12), 0.95, True),
    ((48, 12), 0.9, False),
    ((24, 8), 0.8, True),
)


def _muon_twins() -> list:
    twins = [
        fn(Muon.__init__, "nanogpt_lib.optim.Muon"),
        fn(Muon.step, "nanogpt_lib.optim.Muon.step"),
        fn(lr_ratio, "nanogpt_lib.optim.lr_ratio (the shape scaling)"),
    ]
    if hasattr(torch.optim, "Muon"):  # PyTorch >= 2.9 has its own
        import torch.optim._muon as torch_muon

        twins += [fn(torch.optim.Muon.step, "torch.optim.Muon")]
        twins += [
            fn(getattr(torch_muon, n), f"torch.optim._muon.{n}")
            for n in ("muon", "_single_tensor_muon", "_adjust_lr", "_zeropower_via_newtonschulz")
            if hasattr(torch_muon, n)
        ]
    return twins


def _muon_truth(
    w: torch.Tensor, grads: list[torch.Tensor], lr: float, mu: float, nesterov: bool
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weights, momentum buffer) after each of ``grads``, as nanogpt_lib.optim.Muon steps them."""
    p = torch.nn.Parameter(w.clone())
    opt = Muon([p], lr=lr, momentum=mu, nesterov=nesterov, weight_decay=0.0)
    out = []
    for g in grads:
        p.grad = g.clone()
        opt.step()
        out.append((p.detach().clone(), opt.state[p]["momentum_buffer"].clone()))
    return out


@exercise(
    "05.3",
    "Muon's step for one matrix",
    "a function muon_step(W, grad, buf, lr, momentum, nesterov) -> (new_W, new_buf): one step of Muon "
    "(no weight decay) for the matrix W, buf its momentum buffer (zeros before the first step)",
    off=_muon_twins,
    why="write the momentum, the look-ahead and the shape scaling yourself "
    "(nanogpt_lib.optim.orthogonalize is yours to use)",
)
def _muon_step(muon_step: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> str:
    expect(
        callable(muon_step),
        f"give a function muon_step(W, grad, buf, lr, momentum, nesterov), got {type(muon_step).__name__}",
    )
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
            expect(
                isinstance(got, (tuple, list)) and len(got) == 2 and all(torch.is_tensor(t) for t in got),
                "muon_step should return a pair of tensors (new_W, new_buf)",
            )
            new_w, new_buf = (t.detach().float() for t in got)
            at = f"{case}, step {k + 1}"
            expect(
                tuple(new_w.shape) == shape and tuple(new_buf.shape) == shape,
                f"{at}: new_W and new_buf must keep W's shape {shape}",
            )
            # One orthogonalisation in float32, the same ops in any order: ~1e-6 relative; 1e-4 is room, while a
            # missing scaling (x2 here) or look-ahead changes the step by order 1.
            if not torch.allclose(new_buf, true_buf, rtol=1e-4, atol=1e-6):
                summed = mu * mine_buf + g
                expect(
                    not torch.allclose(new_buf, summed, rtol=1e-4, atol=1e-6),
                    f"{at}: your buffer adds the "
                    "gradient to mu times the buffer, a sum that grows to 1 / (1 - mu) gradients: Muon's "
                    "momentum is an average, weighing the new gradient by 1 - mu",
                )
                raise Wrong(f"{at}: the momentum buffer is not Muon's")
            step, true_step = new_w - mine_w, true_w - mine_w
            scale = lr_ratio(torch.Size(shape), None)
            if not torch.allclose(step, true_step, rtol=1e-4, atol=1e-6):
                expect(
                    not (scale != 1 and torch.allclose(step * scale, true_step, rtol=1e-4, atol=1e-6)),
                    f"{at}: the step has the right direction but not Muon's size for a tall matrix: scale the "
                    "rate by the matrix's shape, as 4.3 says",
                )
                plain = lambda u, scale=scale: -lr * scale * orthogonalize(u)  # noqa: E731
                expect(
                    not (nesterov and torch.allclose(step, plain(true_buf), rtol=1e-4, atol=1e-6)),
                    f"{at}: your step follows the buffer alone; with nesterov=True it looks ahead along it",
                )
                expect(
                    not torch.allclose(step, plain(g), rtol=1e-4, atol=1e-6),
                    f"{at}: your step follows this gradient alone: the momentum buffer is not used",
                )
                expect(
                    not torch.allclose(
                        step, -lr * scale * (true_buf if not nesterov else g.lerp(true_buf, mu)), rtol=1e-4, atol=1e-6
                    ),
                    f"{at}: the update is not orthogonalised (nanogpt_lib.optim.orthogonalize)",
                )
                raise Wrong(f"{at}: the weights after the step are not Muon's")
            mine_w, mine_buf = true_w.clone(), true_buf.clone()
    return (
        f"equal to nanogpt_lib.optim.Muon over 3 steps for {len(MUON_CASES)} matrices (square, wide, tall; with "
        "and without Nesterov): an average of gradients, a look-ahead along it, orthogonalised, the rate "
        "scaled so a tall matrix's update has the size of a square one's."
    )
