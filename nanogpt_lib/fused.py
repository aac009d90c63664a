"""The trunk's small operations with a hand-written backward: RoPE's rotation, ReLU², RMSNorm, causal attention.

Why: once the LM head is small (the ten-minute recipe's 2,048 tokens), a CPU training step is mostly the
trunk, and most of the trunk's time is not its matmuls but the passes over memory around them. Profiled at
4 layers of 128, batch 32 x 128 positions, bf16, 2 threads of an AVX512-BF16 CPU: the attention's (T, T)
scores were scaled, masked (a copy and a fill) and softmaxed forward, then masked and scaled again backward;
ReLU² was a relu, a pow, and three passes backward (pow's, a multiply, relu's); RoPE was four multiplies, two
adds and a concatenation per tensor, each with its own backward; QK-norm's ``F.rms_norm`` about a dozen
elementwise kernels each way (torch's composite on a CPU). Autograd's backward follows the formula op by
op; each function below computes the same formula and writes its gradient in the fewest passes (one matmul
epilogue adds the mask; the softmax's backward is one fused kernel; a rotation's backward is the inverse
rotation). Measured per layer, forward + backward, one thread: attention 17.9 -> 12.9 ms, ReLU² 7.1 -> 4.8 ms,
RoPE of q and k 5.9 -> 3.8 ms, RMSNorm of q 15.3 -> 8.1 ms (docs/benchmarks.md has the whole step).

Each is exactly the formula in its docstring: tests/test_fused.py compares values and both gradients with the
plain formula run by autograd, in float64 (to rounding) and in bf16.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch


class _ReLUSquared(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        r = torch.relu(x)
        ctx.save_for_backward(r)
        return torch.square(r)  # measured faster than r * r on bf16 (0.27 against 0.5 ms at 2M entries)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (r,) = ctx.saved_tensors
        return (r + r).mul_(grad)  # d relu(x)^2 / dx = 2 relu(x): zero where x < 0, so relu's mask is in r


def relu_squared(x: torch.Tensor) -> torch.Tensor:
    """``relu(x) ** 2``; backward ``2 relu(x) * grad``, one saved tensor and two passes."""
    return _ReLUSquared.apply(x)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        d = x.size(-1)
        acc = torch.promote_types(x.dtype, torch.float32)  # sums in float32 (or float64)
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=acc)  # one pass
        s = torch.rsqrt(norm.square_().div_(d).add_(eps))  # (..., 1): 1 / rms
        ctx.save_for_backward(x, weight, s)
        return (x * s.to(x.dtype)).mul_(weight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        x, weight, s = ctx.saved_tensors
        d, s = x.size(-1), s.to(x.dtype)
        x_hat = x * s
        acc = torch.promote_types(x.dtype, torch.float32)
        grad_w = (grad * x_hat).sum(dim=tuple(range(grad.dim() - 1)), dtype=acc).to(weight.dtype)
        g = grad * weight  # d loss / d x_hat
        # x_hat = x s with s = (mean(x^2) + eps)^-1/2: d x = s (g - x_hat mean(g x_hat))
        m = torch.linalg.vecdot(g, x_hat, dim=-1).unsqueeze(-1).div_(d)
        return torch.addcmul(g, x_hat, -m.to(x.dtype)).mul_(s), grad_w, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """``F.rms_norm(x, x.shape[-1:], weight, eps)``: ``x / sqrt(mean(x^2) + eps) * weight`` over the last
    dimension, the sums in float32, ``eps`` by default the machine epsilon of x's dtype (as torch's). On a CPU
    torch runs it as about a dozen elementwise kernels each way, and QK-norm then cost 11% of the ten-minute
    recipe's speed; here it is three passes forward and about seven backward."""
    return _RMSNorm.apply(x, weight, torch.finfo(x.dtype).eps if eps is None else eps)


def _swap_halves(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x2, x1], dim=-1)


class _Rotate(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        # two products and a sum, each rounded, as the plain formula (x2 sin is exact to negate): the same bits
        # (notebook 07 checks a learner's RoPE against Rotary bitwise); addcmul's fused multiply-add is not
        return x * cos + _swap_halves(x) * sin

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        cos, sin = ctx.saved_tensors
        # out = x * cos + P x * sin, P the swap of halves (P = P^T): d x = grad * cos + P (grad * sin)
        return torch.addcmul(_swap_halves(grad * sin), grad, cos), None, None


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE's rotation of pairs (m, m + d/2) of ``x`` (..., T, d) by the angles whose cos and sin are the
    (T, d/2) ``cos`` and ``sin``: ``cat([x1 cos - x2 sin, x1 sin + x2 cos])`` with ``x1, x2`` the halves of
    ``x``. Backward: the rotation by the opposite angles (a product, a swap of halves and a multiply-add)."""
    return _Rotate.apply(x, torch.cat([cos, cos], dim=-1), torch.cat([-sin, sin], dim=-1))


def _make_causal_bias(T: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(T, T): 0 where query i may see key j (j <= i), -inf above the diagonal."""
    return torch.full((T, T), float("-inf"), dtype=dtype, device=device).triu_(1)


_cached_causal_bias = functools.lru_cache(maxsize=8)(_make_causal_bias)


def _causal_bias(T: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The causal bias, made once per shape; under ``torch.compile`` made in the graph (the compiler folds it
    there, and tracing a cached function would only print a warning about the cache it ignores)."""
    if torch.compiler.is_compiling():
        return _make_causal_bias(T, dtype, device)
    return _cached_causal_bias(T, dtype, device)


def _softmax_backward(dp: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``p * (dp - sum(dp * p))`` over the last dimension, softmax's backward: autograd's own fused kernel (one
    pass; a private op, so where a torch lacks it, the formula, three passes)."""
    kernel = getattr(torch, "_softmax_backward_data", None)
    if kernel is not None:
        return kernel(dp, p, -1, p.dtype)
    return p * (dp - (dp * p).sum(-1, keepdim=True))


class _CausalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        B, H, T, D = q.shape
        scale = 1.0 / math.sqrt(D)
        q3, k3, v3 = (t.reshape(B * H, T, D) for t in (q, k, v))
        # the mask is added by the matmul itself (beta = 1 on the broadcast bias), the scale by its alpha
        scores = torch.baddbmm(_causal_bias(T, q.dtype, q.device), q3, k3.transpose(1, 2), alpha=scale)
        p = torch.softmax(scores, dim=-1)
        ctx.save_for_backward(q3, k3, v3, p)
        ctx.scale = scale
        return torch.bmm(p, v3).view(B, H, T, D)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q3, k3, v3, p = ctx.saved_tensors
        B, H, T, D = grad.shape
        g3 = grad.reshape(B * H, T, D)
        dv = torch.bmm(p.transpose(1, 2), g3)
        ds = _softmax_backward(torch.bmm(g3, v3.transpose(1, 2)), p)  # masked entries have p = 0: stay 0
        dq = torch.bmm(ds, k3).mul_(ctx.scale)  # the scale on the (T, D) sides, not the (T, T) one
        dk = torch.bmm(ds.transpose(1, 2), q3).mul_(ctx.scale)
        return dq.view(B, H, T, D), dk.view(B, H, T, D), dv.view(B, H, T, D)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + mask) v`` for q, k, v of shape (B, n_head, T, d), each query seeing the keys
    at its position and before, by plain matmuls (no dropout). The (T, T) probabilities are kept for the
    backward, so this is for short blocks (the model uses it on a CPU in bf16 at T <= 128, where it measured
    faster than the fused kernel: model._explicit_attention)."""
    return _CausalAttention.apply(q, k, v)
