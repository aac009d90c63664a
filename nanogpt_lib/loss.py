"""The LM head's loss without the logits: cross-entropy of ``h @ weight.T``, a chunk of positions at a time.

At the seed's size (n_embd 128, vocab 50,304) the LM head and its loss are most of a training step, and the
plain ``F.cross_entropy(h @ W.T, targets)`` writes a (tokens x vocab) float tensor three times (logits,
log-softmax, gradient): 800 MB at 4,096 tokens. Notebook 04 builds the plain version and checks this one
against it, in value and in both gradients.
"""

from __future__ import annotations

from typing import Any

import torch


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``h @ weight.T`` against ``targets``, a chunk of positions at a time.

    The plain path writes (N, vocab) logits, then log-softmax, then their gradient: three passes over a
    tensor of 50k floats per token (800 MB at 4096 tokens) that dwarf the matmuls. Here each chunk's
    logits are turned into their gradient in place (softmax minus one-hot) while still in cache, and the
    gradients of ``h`` and ``weight`` are finished in the forward pass; backward only scales them.
    """

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int,
                compute_dtype: torch.dtype, want_grad: bool, softcap: float) -> torch.Tensor:
        valid = targets != -1
        n = valid.sum()
        acc = torch.promote_types(compute_dtype, torch.float32)  # softmax and sums: float32 or wider
        w, hc = weight.to(compute_dtype), h.to(compute_dtype)
        grad_h = torch.zeros_like(h) if want_grad else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if want_grad else None
        total = torch.zeros((), dtype=acc, device=h.device)
        for s in range(0, h.size(0), chunk):
            t, ok = targets[s:s + chunk], valid[s:s + chunk]
            logits = (hc[s:s + chunk] @ w.t()).to(acc)
            if softcap > 0:  # logits = cap * tanh(z / cap); keep tanh for the chain rule
                th = torch.tanh(logits.div_(softcap))
                logits = th * softcap
            lse = torch.logsumexp(logits, dim=1)
            picked = logits.gather(1, t.clamp(min=0)[:, None]).squeeze(1)
            total += ((lse - picked) * ok).sum()
            if want_grad:  # d loss / d logits = (softmax - onehot) / n, built in the logits' memory
                g = logits.sub_(lse[:, None]).exp_()
                g[torch.arange(len(t), device=g.device), t.clamp(min=0)] -= 1.0
                g.mul_((ok.to(acc) / n)[:, None])
                if softcap > 0:  # d(cap * tanh(z / cap)) / dz = 1 - tanh^2
                    g.mul_(th.square_().neg_().add_(1.0))
                g = g.to(compute_dtype)
                grad_h[s:s + chunk] = (g @ w).to(h.dtype)
                grad_w += (g.t() @ hc[s:s + chunk]).to(acc)
        if want_grad:
            ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        return total / n

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, grad_w * grad_out, None, None, None, None, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk: int | None = None, softcap: float = 0.0) -> torch.Tensor:
    """``F.cross_entropy(h @ weight.T, targets, ignore_index=-1)`` without materialising the logits.

    ``softcap`` > 0 caps the logits at ``softcap * tanh(logits / softcap)`` first. Under autocast the
    matmuls run in the autocast dtype (bf16 on a CPU where it measured faster) and the softmax in float32,
    as autocast itself would do. ``chunk`` positions at a time: 128 fits a CPU's cache; a GPU needs
    bigger pieces to be busy (1024 rows of fp32 logits are 200 MB).
    """
    kind = h.device.type
    chunk = chunk or (128 if kind == "cpu" else 1024)
    dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else weight.dtype
    # Decided here: inside forward, needs_input_grad stays True under torch.no_grad(), and evaluation
    # would pay for gradients it throws away.
    want_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    with torch.autocast(kind, enabled=False):
        return _LinearCrossEntropy.apply(h, weight, targets, chunk, dtype, want_grad, float(softcap))
