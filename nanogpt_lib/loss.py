"""The LM head's loss without the logits: cross-entropy of ``h @ weight.T``, a chunk of positions at a time.

At the seed's size (n_embd 128, vocab 50,304) the LM head and its loss are most of a training step, and the
plain ``F.cross_entropy(h @ W.T, targets)`` writes a (tokens x vocab) float tensor three times (logits,
log-softmax, gradient): 800 MB at 4,096 tokens. Notebook 04 builds the plain version and checks this one
against it, in value and in both gradients.

On a CPU the head is bound by fresh memory, not arithmetic: a new 200 MB tensor is pages the kernel must
fault in, and a matmul writing into a reused buffer ran at 94-102 GFLOP/s against 52-61 when it allocated
its output (AVX2, 2 threads). So each chunk's logits go into one buffer owned by this module and reused
across chunks and calls, the softmax is done in that buffer, and the weight's gradient is accumulated in
place (``addmm_``). The three matmuls then run at the speed of a large square one (measured on one AVX2
thread: 98-102 GFLOP/s against 112), which leaves little else in the head to take away.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

_FP16_LIMIT = 2.0**15  # fp16 matmul outputs are kept below this bound (fp16's largest value is 65504)
_CHUNK_BYTES = 2**28  # a chunk's float32 logits: 256 MB at most (see chunk_rows)
_TINY = 2.0**-100  # below this, p[target] is no longer trusted for the loss (see forward)


class _Scratch(threading.local):
    """Per-thread tensors reused across chunks and calls, so the head never faults in fresh pages."""

    def __init__(self) -> None:
        self.tensors: dict[tuple[str, int, torch.dtype], torch.Tensor] = {}


_scratch = _Scratch()


def _buffer(name: str, rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A (rows, cols) tensor to overwrite; on the CPU the same memory each call (grown when needed)."""
    if device.type != "cpu":  # CUDA's and MPS's caching allocators already hand back the same blocks
        return torch.empty(rows, cols, dtype=dtype, device=device)
    key = (name, cols, dtype)
    buf = _scratch.tensors.get(key)
    if buf is None or buf.size(0) < rows:
        buf = _scratch.tensors[key] = torch.empty(rows, cols, dtype=dtype)
    return buf[:rows]


def release_buffers() -> None:
    """Free this thread's reused buffers (about 300 MB at 1024-row chunks and the seed's vocabulary)."""
    _scratch.tensors.clear()


def _pow2_at_most(x: torch.Tensor) -> torch.Tensor:
    """The largest power of two <= x (x > 0), as a tensor: an exact scale for fp16 casts."""
    return torch.exp2(torch.floor(torch.log2(x)))


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``h @ weight.T`` against ``targets``, a chunk of positions at a time.

    Each chunk's logits are turned into their gradient in place (softmax minus one-hot) while in the
    reused buffer, and the gradients of ``h`` and ``weight`` are finished in the forward pass; backward
    only scales them by the incoming gradient (the mean, or a GradScaler's loss scale).
    """

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int,
                compute_dtype: torch.dtype, want_grad: bool, softcap: float) -> torch.Tensor:
        acc = torch.promote_types(compute_dtype, torch.float32)  # softmax and sums: float32 or wider
        low = compute_dtype != acc  # matmuls in bf16/fp16 (autocast), everything else in `acc`
        fp16 = compute_dtype == torch.float16
        N, V, dev = h.size(0), weight.size(0), h.device
        ok = targets != -1
        n = ok.sum()
        tgt = targets.clamp(min=0)[:, None]
        w, hc = weight.to(compute_dtype), h.to(compute_dtype)
        rows = min(chunk, N)
        logits = _buffer("logits", rows, V, acc, dev)
        low_buf = _buffer("low", rows, V, compute_dtype, dev) if low else None
        tanh_buf = _buffer("tanh", rows, V, acc, dev) if softcap > 0 else None
        p_target = torch.empty(N, dtype=acc, device=dev)
        if want_grad:
            # Ignored rows and the mean's 1/n go into the small (N, C) side of the weight's gradient, so the
            # (chunk, vocab) gradient is never masked or scaled. fp16 instead keeps d(logits) unscaled by
            # 1/n and multiplied by a power of two, so it does not underflow in the cast (a GradScaler
            # scales only after this function has returned); see the scales below.
            row_w = ok.to(acc) if fp16 else ok.to(acc) / n
            hw = (h.to(acc) * row_w[:, None]).to(compute_dtype)
            grad_h = torch.empty(N, h.size(1), dtype=acc, device=dev)
            grad_w: torch.Tensor | None = None
            gw_low = _buffer("grad_w", V, h.size(1), compute_dtype, dev) if low else None
            if fp16:  # |d(logits)| <= 1 and each of its rows sums to <= 2 in absolute value, so row r of
                # g @ w is at most 2 max|w|: scale g by the largest power of two that keeps that below the limit
                scale_h = _pow2_at_most(_FP16_LIMIT / (2 * w.abs().max().float()).clamp(min=1.0))
        for s in range(0, N, chunk):
            e = min(s + chunk, N)
            z, t = logits[:e - s], tgt[s:e]
            if low:
                z.copy_(torch.mm(hc[s:e], w.t(), out=low_buf[:e - s]))
            else:
                torch.mm(hc[s:e], w.t(), out=z)
            if softcap > 0:  # logits = cap * tanh(u / cap); keep tanh for the chain rule
                th = torch.tanh(z.div_(softcap), out=tanh_buf[:e - s])
                torch.mul(th, softcap, out=z)
            # In place on the CPU (its kernel finishes reading a row before writing it; checked by the tests);
            # elsewhere into a new tensor, which the caching allocator hands out without fresh pages anyway.
            z = torch._softmax(z, 1, False, out=z) if z.is_cpu else torch.softmax(z, dim=1)
            p_target[s:e] = z.gather(1, t).squeeze(1)
            if not want_grad:
                continue
            z.scatter_add_(1, t, torch.full_like(t, -1, dtype=acc))  # d loss_r / d logits = p - onehot
            if softcap > 0:  # d(cap * tanh(u / cap)) / du = 1 - tanh^2
                z.mul_(th.square_().neg_().add_(1.0))
            if not low:
                torch.mm(z, w, out=grad_h[s:e])
                if grad_w is None:
                    grad_w = torch.mm(z.t(), hw[s:e])
                else:
                    grad_w.addmm_(z.t(), hw[s:e])
                continue
            g = low_buf[:e - s]
            if fp16:
                torch.mul(z, scale_h, out=g)
                grad_h[s:e] = torch.mm(g, w).float() / scale_h
                # column c of g.T @ hw is at most sum_r |hw[r, c]| (|g| <= 1): the same rule for this matmul
                scale_w = _pow2_at_most(_FP16_LIMIT / hw[s:e].float().abs().sum(0).max().clamp(min=1.0))
                torch.mul(z, scale_w, out=g)
                part = torch.mm(g.t(), hw[s:e], out=gw_low).float() / scale_w
            else:
                g.copy_(z)
                grad_h[s:e] = torch.mm(g, w)
                part = torch.mm(g.t(), hw[s:e], out=gw_low)
            if grad_w is None:
                grad_w = part.to(acc)
            else:
                grad_w.add_(part)
        # The loss is -log p[target], read off the softmax: no pass over the logits for their maximum (about
        # 5% of a step on one AVX2 thread). Below 2^-100 (a loss over 69 nats) p has lost digits or underflowed
        # to 0; those rows, rare outside a diverged run, get log-sum-exp minus the target's logit from
        # recomputed logits.
        losses = -p_target.log()
        far = ok & (p_target < _TINY)
        if far.any():
            z = (hc[far] @ w.t()).to(acc)
            z = softcap * torch.tanh(z / softcap) if softcap > 0 else z
            losses[far] = torch.logsumexp(z, dim=1) - z.gather(1, tgt[far]).squeeze(1)
        loss = losses.masked_fill_(~ok, 0.0).sum() / n
        if want_grad:
            grad_h.mul_(row_w[:, None])
            if fp16:
                grad_h.div_(n)
                grad_w.div_(n)
            ctx.grads = (grad_h.to(h.dtype), grad_w.to(weight.dtype))
        return loss

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_h, grad_w = ctx.grads
        return grad_h * grad_out, grad_w * grad_out, None, None, None, None, None


@torch.compiler.disable  # eager under torch.compile: its buffers and in-place steps are the point, not a graph
def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk: int | None = None, softcap: float = 0.0) -> torch.Tensor:
    """``F.cross_entropy(h @ weight.T, targets, ignore_index=-1)`` without materialising the logits.

    ``softcap`` > 0 caps the logits at ``softcap * tanh(logits / softcap)`` first. Under autocast the
    matmuls run in the autocast dtype (bf16 on a CPU where it measured faster) and the softmax in float32,
    as autocast itself would do; under fp16 the gradients stay correct at a GradScaler's loss scale.
    ``chunk`` positions at a time: by default :func:`chunk_rows` of the vocabulary.
    """
    kind = h.device.type
    chunk = chunk or chunk_rows(weight.size(0))
    dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else weight.dtype
    # Decided here: inside forward, needs_input_grad stays True under torch.no_grad(), and evaluation
    # would pay for gradients it throws away.
    want_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    with torch.autocast(kind, enabled=False):
        return _LinearCrossEntropy.apply(h, weight, targets, chunk, dtype, want_grad, float(softcap))


def chunk_rows(vocab: int) -> int:
    """Positions per chunk: the largest power of two whose float32 logits fit in 256 MB (1024 rows at the
    seed's vocabulary of 50,304), at least 128.

    Measured at 4,096 positions, n_embd 128, vocab 50,304, 2 threads, with the reused buffers: 128-row
    chunks were the slowest on both CPU classes tried (AVX2 fp32, and AVX512-BF16 in fp32 and bf16), 1.6-2.3x
    the time of 1024 rows, and 1024 and 2048 rows were equal within the noise; bigger chunks cost only
    memory once the buffer is reused. A GPU wants big pieces too. So a rule, not a per-process timing
    (which would cost about a second per process to find the same answer).
    """
    rows = _CHUNK_BYTES // (4 * vocab)
    return max(128, 1 << (rows.bit_length() - 1)) if rows else 128
