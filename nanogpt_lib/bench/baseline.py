"""The benchmarks' baselines: GPT-2 as most from-scratch tutorials write it, trained the plain way, and the
per-call batch loader they use.

fp32, ``F.scaled_dot_product_attention``, the full (batch, time, vocab) logits and ``F.cross_entropy`` over
them (the library's plain :func:`~..loss.reference_cross_entropy`), and AdamW with its default (per-tensor)
CPU implementation: the step a learner gets from a straightforward ``model.py``. It exists only to be measured
against (``nanogpt bench train``), so it has no sampling, no variants and no checkpoints. Parameter names and
shapes are :class:`~.model.GPT`'s at the GPT-2 settings, so both can start from the same weights and be checked
to compute the same loss.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

from ..loss import reference_cross_entropy
from ..model import GPTConfig


class _Attention(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.n_head = c.n_head
        self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd)
        self.c_proj = nn.Linear(c.n_embd, c.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class _MLP(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd)
        self.c_proj = nn.Linear(4 * c.n_embd, c.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class _Block(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(c.n_embd), _Attention(c)
        self.ln_2, self.mlp = nn.LayerNorm(c.n_embd), _MLP(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class PlainGPT(nn.Module):
    """GPT-2 (learned positions, GELU, tied head) with the loss over full logits."""

    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(c.vocab_size, c.n_embd),
                wpe=nn.Embedding(c.block_size, c.n_embd),
                h=nn.ModuleList([_Block(c) for _ in range(c.n_layer)]),
                ln_f=nn.LayerNorm(c.n_embd),
            )
        )
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        tr = self.transformer
        x = tr.wte(idx) + tr.wpe(torch.arange(idx.size(1), device=idx.device))
        for block in tr.h:
            x = block(x)
        h = tr.ln_f(x)
        return reference_cross_entropy(h.view(-1, h.size(-1)), self.lm_head.weight, targets.view(-1))

    def optimizer(self, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
        """AdamW that decays the matrices, not biases or gains; torch's default implementation for the CPU."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=lr, betas=betas)


def naive_get_batch(
    folder: str | Path, split: str, batch_size: int, block_size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The common per-call loader (reopen the memmap, one slice per row): the benchmark's baseline."""
    data = np.memmap(Path(folder) / f"{split}.bin", dtype=np.uint16, mode="r")
    ix = rng.integers(0, len(data) - block_size, size=batch_size)
    x = torch.stack([torch.from_numpy(data[i : i + block_size].astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + block_size].astype(np.int64)) for i in ix])
    return x, y
