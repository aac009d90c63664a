"""Short training runs for tests that compare two ways of computing the same step (tests/test_loss.py,
tests/test_model.py): the same weights, the same batches, the losses of each step."""

from __future__ import annotations

from collections.abc import Callable

import torch

from nanogpt_lib.model import GPT, GPTConfig


def twenty_losses(
    config: GPTConfig,
    loss_of: Callable[[GPT, torch.Tensor, torch.Tensor], torch.Tensor],
    dtype: torch.dtype,
    batch: int = 16,
    steps: int = 20,
) -> list[float]:
    """The losses of ``steps`` AdamW steps (lr 3e-3) of a GPT seeded 0, on batches of text drawn from a tenth
    of the vocabulary (so it learns within the steps), under autocast to ``dtype`` unless float32."""
    torch.manual_seed(0)
    model = GPT(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    V, T = config.vocab_size, config.block_size
    text = torch.randint(0, V, (4000,), generator=gen) % (V // 10)
    losses = []
    for _ in range(steps):
        at = torch.randint(0, text.numel() - T - 1, (batch,), generator=gen)
        x, y = (torch.stack([text[i + d : i + d + T] for i in at]) for d in (0, 1))
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss = loss_of(model, x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses
