"""One optimizer step, the same for the trainer and for every loop that must train like it.

The trainer, the speed benchmark, the learning-rate range test and the course's short runs all take their
steps through :func:`train_step`, so "a step as the trainer takes it" is one piece of code: ``accum``
micro-batches, each loss divided by ``accum`` before its backward (gradients add up in ``p.grad``), the
gradients unscaled (fp16's grad scaler) and clipped to a total norm, each optimizer stepped, and the
gradients dropped (``set_to_none``). The learning rate is set before the call (``optim.scale_lrs``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


def train_step(
    model: torch.nn.Module,
    optimizers: Sequence[torch.optim.Optimizer],
    batch: Callable[[int], Batch],
    *,
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    accum: int = 1,
    grad_clip: float = 0.0,
    scaler: torch.amp.GradScaler | None = None,
    no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> torch.Tensor:
    """Take one step of ``optimizers`` on ``accum`` micro-batches; return the mean of their losses (detached).

    ``batch(micro)`` gives micro-batch ``micro`` (0 .. accum - 1) as ``(x, y)``; ``loss_of(x, y)`` is its loss
    (default ``model(x, y)[1]``; the trainer's runs the DDP/compiled wrapper under autocast). ``model`` is the
    unwrapped module whose gradients are clipped to ``grad_clip`` (0: no clipping). ``no_sync`` (DDP's) is
    entered for every micro-batch but the last, so gradients are all-reduced once per step.
    """
    if accum < 1:
        raise ValueError(f"accum must be at least 1 micro-batch, got {accum}")
    loss_of = loss_of or (lambda x, y: model(x, y)[1])
    loss_sum = torch.zeros(())
    for micro in range(accum):
        x, y = batch(micro)
        last = micro == accum - 1
        with contextlib.nullcontext() if (last or no_sync is None) else no_sync():
            loss = loss_of(x, y)
            scaled = loss / accum
            (scaler.scale(scaled) if scaler else scaled).backward()
        if micro == 0:
            loss_sum = torch.zeros((), device=loss.device)  # float32 on the loss's device, whatever autocast ran
        loss_sum += loss.detach()
    if grad_clip > 0:
        if scaler:
            for opt in optimizers:
                scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    for opt in optimizers:
        if scaler:
            scaler.step(opt)
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
    if scaler:
        scaler.update()
    return loss_sum / accum
