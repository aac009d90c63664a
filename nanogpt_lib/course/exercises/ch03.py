"""Chapter 03's exercises (attention): the causal mask without ``tril``, one head by hand against the library's
layer, ALiBi's bias, and a tiny model trained with ALiBi instead of RoPE.

Each check runs the learner's function on inputs of its own and compares with the library
(``CausalSelfAttention``, ``F.scaled_dot_product_attention``) or with a reference computed here, naming the
property that fails. :func:`train_tiny` and :func:`use_attention` are public: notebook 03 and its solutions
run the same 100-step training that check 03.4 runs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ... import paths
from ...model import GPT, CausalSelfAttention, GPTConfig
from . import Wrong, exercise, expect, one_thread
from .guard import fn, ops

# What a learner may call in an answer (notebook 03 trains with them); every other function here is switched
# off while an answer runs (nanogpt_lib.course.exercises.switched_off).
PUBLIC = ("use_attention", "tiny_corpus", "train_tiny", "TinyRun")

Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (q, k, v) -> y, all (B, H, T, d)


def _as_tensor(value: Any, what: str) -> torch.Tensor:
    expect(isinstance(value, torch.Tensor), f"{what} returned a {type(value).__name__}, not a torch.Tensor")
    return value


# ---- 03.1 ------------------------------------------------------------------------------------------------------


def _triangles() -> list:
    return [
        ops(
            "tril",
            "triu",
            "tril_",
            "triu_",
            "tril_indices",
            "triu_indices",
            label="torch's tril/triu (torch.tril, Tensor.tril, torch.ops.aten.tril, ...)",
        ),
        fn(np.tril, "numpy.tril"),
        fn(np.triu, "numpy.triu"),
        fn(np.tri, "numpy.tri"),
        fn(np.tril_indices, "numpy.tril_indices"),
        fn(np.triu_indices, "numpy.triu_indices"),
        fn(torch.nn.Transformer.generate_square_subsequent_mask),
    ]


@exercise(
    "03.1",
    "The causal mask without tril",
    "a function causal_mask(T) -> bool tensor (T, T), True where query i may see key j",
    off=_triangles,
    why="build the mask by comparing positions (torch.arange) instead",
)
def _check_causal_mask(causal_mask: Callable[[int], torch.Tensor]) -> str:
    sizes = (1, 2, 5, 13, 64)
    masks = {T: causal_mask(T) for T in sizes}
    for T, m in masks.items():
        m = _as_tensor(m, f"causal_mask({T})")
        expect(m.dtype == torch.bool, f"causal_mask({T}) has dtype {m.dtype}: a mask is torch.bool (True = may see)")
        expect(tuple(m.shape) == (T, T), f"causal_mask({T}) has shape {tuple(m.shape)}, not ({T}, {T})")
        bad = (m.cpu() != torch.ones(T, T, dtype=torch.bool).tril()).nonzero()
        if len(bad):
            i, j = bad[0].tolist()
            where = "a later position" if j > i else "itself" if j == i else "an earlier position"
            raise Wrong(
                f"causal_mask({T})[{i}, {j}] is {bool(m[i, j])}, but query {i} "
                f"{'must not' if j > i else 'must'} see key {j} ({where})"
            )
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 13, 8, generator=g) for _ in range(3))
    ours = F.scaled_dot_product_attention(q, k, v, attn_mask=masks[13].cpu())
    # the same kernel on the same inputs, a boolean mask instead of is_causal: equal to float32 rounding
    expect(
        torch.allclose(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6),
        "F.scaled_dot_product_attention(attn_mask=causal_mask(13)) differs from is_causal=True",
    )
    return "As an attn_mask it gives exactly F.scaled_dot_product_attention(..., is_causal=True)."


# ---- 03.2 ------------------------------------------------------------------------------------------------------


def _one_head_layer(C: int, seed: int) -> CausalSelfAttention:
    """A one-head library layer with weights of size 1/sqrt(C) (not GPT-2's 0.02, whose scores are all ~0 and
    would make any scale right): scores of size ~1, so a missing 1/sqrt(d) or mask shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # nn.Linear's init draws from the global RNG: leave it untouched
        layer = CausalSelfAttention(GPTConfig(n_embd=C, n_head=1, block_size=64)).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / (math.sqrt(C) if p.dim() == 2 else 10.0))
    return layer


def _head_by_formula(x: torch.Tensor, layer: CausalSelfAttention, scale: float) -> torch.Tensor:
    """One head with the scores multiplied by ``scale`` (1/sqrt(d) is right): for naming a wrong answer's mistake."""
    T, C = x.size(1), x.size(2)
    q, k, v = layer.c_attn(x).split(C, dim=2)
    scores = (q @ k.transpose(-2, -1)) * scale
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return layer.c_proj(scores.softmax(-1) @ v)


def _attention_twins() -> list:
    return [
        ops(
            "scaled_dot_product_attention",
            "_scaled_dot_product_attention_math",
            "_scaled_dot_product_flash_attention_for_cpu",
            "_scaled_dot_product_flash_attention",
            "_scaled_dot_product_efficient_attention",
            "_scaled_dot_product_cudnn_attention",
            "_fused_sdp_choice",
            "multi_head_attention_forward",
            "_native_multi_head_attention",
            label="torch's scaled_dot_product_attention (F., torch.ops.aten., torch._C._nn.) and its kernels",
        ),
        fn(CausalSelfAttention.forward, "the library's CausalSelfAttention"),
        fn(CausalSelfAttention.qkv, "the library's CausalSelfAttention.qkv"),
        fn(torch.nn.MultiheadAttention.forward, "torch.nn.MultiheadAttention"),
    ]


@exercise(
    "03.2",
    "One attention head by hand",
    "a function one_head(x, w_attn, b_attn, w_proj, b_proj) -> y (B, T, C): the output of the library's "
    "one-head CausalSelfAttention with those c_attn and c_proj weights and biases",
    off=_attention_twins,
    why="compute the scores, the mask and the softmax yourself",
)
def _check_one_head(one_head: Callable[..., torch.Tensor]) -> str:
    for C, T, seed in ((8, 1, 0), (16, 7, 1), (16, 13, 2)):
        layer = _one_head_layer(C, seed)
        x = torch.randn(2, T, C, generator=torch.Generator().manual_seed(100 + seed))
        weights = [
            t.detach().clone() for t in (layer.c_attn.weight, layer.c_attn.bias, layer.c_proj.weight, layer.c_proj.bias)
        ]
        with torch.no_grad():
            y_lib, _ = layer(x)
        with torch.no_grad():
            y = _as_tensor(one_head(x.clone(), *weights), "one_head")
        expect(
            tuple(y.shape) == tuple(x.shape),
            f"one_head gave shape {tuple(y.shape)} for x of shape "
            f"{tuple(x.shape)}: the output has the input's shape (B, T, C)",
        )
        y = y.detach().float().cpu()
        # float32 sums of at most 16 products of size ~1 in another order than the library's: ~1e-7; 1e-5 is room
        tol = 1e-5 * max(1.0, y_lib.abs().max().item())
        if T == 1:
            expect(
                (y - y_lib).abs().max() <= tol,
                "wrong for a single token (T = 1), where the head can only attend to itself and the output is "
                "c_proj of the token's own value: check how q, k, v are cut out of c_attn (rows 0..C-1 make "
                "the queries, then the keys, then the values) and that nn.Linear's weights are (out, in)",
            )
            continue
        x2 = x.clone()
        x2[:, -1] += 1.0  # change the last token only
        with torch.no_grad():
            y2 = one_head(x2, *weights).detach().float().cpu()
        moved = ((y2 - y)[:, :-1].abs() > tol).nonzero()
        if len(moved):
            raise Wrong(
                f"the output at position {moved[0, 1].item()} changed when only the last token (position "
                f"{T - 1}) changed: the head sees the future; mask the scores above the diagonal"
            )
        err = (y - y_lib).abs().max().item()
        if err > tol:
            with torch.no_grad():
                for scale, mistake in ((1.0, "are not divided by sqrt(d)"), (1.0 / C, "are divided by d, not sqrt(d)")):
                    if (y - _head_by_formula(x, layer, scale)).abs().max() <= tol:
                        raise Wrong(f"your scores {mistake} (d = {C}, the head's width)")
            raise Wrong(
                f"for C = {C}, T = {T} the output differs from the library's layer by up to {err:.2g}; "
                "check each step against notebook 03's section 3"
            )
    return "It matches CausalSelfAttention(n_head=1) to float32 rounding, and the future cannot reach the past."


# ---- 03.3 ------------------------------------------------------------------------------------------------------


def _slopes(n_head: int) -> torch.Tensor:
    """ALiBi's head slopes (Press et al. 2022): the geometric sequence 2^(-8/n), 2^(-16/n), ..., 2^(-8)."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / n_head) for h in range(n_head)], dtype=torch.float64)


def _alibi_reference(n_head: int, T: int) -> torch.Tensor:
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    bias = -(_slopes(n_head)[:, None, None] * (i - j)).float()
    return bias.masked_fill(j > i, float("-inf"))


def _check_bias_properties(b: torch.Tensor, H: int, T: int) -> None:
    what = f"alibi_bias({H}, {T})"
    expect(b.is_floating_point(), f"{what} has dtype {b.dtype}: a bias added to the scores is a float tensor")
    expect(tuple(b.shape) == (H, T, T), f"{what} has shape {tuple(b.shape)}, not (n_head, T, T) = ({H}, {T}, {T})")
    b = b.detach().double().cpu()
    later = torch.ones(T, T, dtype=torch.bool).triu(1)
    if not torch.isneginf(b[:, later]).all():
        h, i, j = ((~torch.isneginf(b)) & later).nonzero()[0].tolist()
        raise Wrong(f"{what}[{h}, {i}, {j}] (a later key) is {b[h, i, j].item():g}: it must be -inf, the causal mask")
    for h in range(H):
        expect(
            (b[h].diagonal() == 0).all(),
            f"head {h}: the bias on the diagonal (a token and itself, distance 0) is not 0",
        )
        for d in range(1, T):
            diag = b[h].diagonal(-d)
            expect(
                torch.isfinite(diag).all() and (diag < 0).all(),
                f"head {h}: bias[{h}, i, i - {d}] is not finite and negative: earlier keys are penalised, "
                "more the farther back they are",
            )
            # float32 values of size <= 8 T: rounding ~1e-7 relative; 1e-5 leaves room
            expect(
                (diag - diag[0]).abs().max() <= 1e-5 * diag[0].abs(),
                f"head {h}: bias[{h}, i, i - {d}] changes with i: ALiBi's bias depends on the distance i - j only",
            )
            expect(
                abs(diag[0] - d * b[h, 1, 0]) <= 1e-5 * abs(diag[0]),
                f"head {h}: the bias at distance {d} is not {d} times the bias at distance 1: it is linear in "
                "the distance",
            )
    if T > 1:
        m = -b[:, 1, 0]  # each head's slope
        r = 2.0 ** (-8.0 / H)
        expect(
            abs(m[0] - r) <= 1e-6 * r,
            "head 0's slope (minus its bias at distance 1) is off: the first slope is 2^(-8/n_head)",
        )
        for h in range(1, H):
            expect(abs(m[h] / m[h - 1] - r) <= 1e-5, f"head {h}'s slope is not head {h - 1}'s times 2^(-8/n_head)")


@exercise(
    "03.3",
    "ALiBi's bias",
    "a function alibi_bias(n_head, T) -> float tensor (n_head, T, T): -m_h * (i - j) for keys j <= i, "
    "-inf for j > i, with slopes m_h = 2^(-8 (h + 1) / n_head)",
)
def _check_alibi_bias(alibi_bias: Callable[[int, int], torch.Tensor]) -> str:
    for H, T in ((1, 1), (1, 6), (2, 5), (4, 9), (8, 12), (16, 7)):
        b = _as_tensor(alibi_bias(H, T), f"alibi_bias({H}, {T})")
        _check_bias_properties(b, H, T)
        ref = _alibi_reference(H, T).double()
        finite = torch.isfinite(ref)
        # float32 slopes times distances < 12: ~1e-7 relative; 1e-5 leaves room
        expect(
            torch.allclose(b.detach().double().cpu()[finite], ref[finite], rtol=1e-5, atol=0),
            f"alibi_bias({H}, {T}) has the right shape of bias but not the right values",
        )
    return "The bias is 0 on the diagonal, falls linearly with distance at each head's slope, -inf above."


# ---- 03.4 ------------------------------------------------------------------------------------------------------


def _attend_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias_sign: float = 1.0, scale: float | None = None
) -> torch.Tensor:
    H, T, d = q.size(1), q.size(2), q.size(3)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d) if scale is None else scale)
    bias = _alibi_reference(H, T)
    bias = torch.where(torch.isfinite(bias), bias_sign * bias, bias)
    return (scores + bias).softmax(-1) @ v


def use_attention(model: GPT, attend: Attend) -> GPT:
    """Make every attention layer of ``model`` use ``attend(q, k, v) -> y`` (each (B, H, T, d)) for its core:
    ``c_attn`` -> heads -> ``attend`` -> ``c_proj``. RoPE is switched off, and a ``pos="rope"`` model has no
    position table, so the positions come from ``attend`` alone (for ALiBi: its bias). No KV cache."""
    for block in model.transformer.h:
        layer = block.attn
        layer.rotary = None

        def forward(x: torch.Tensor, past: Any = None, layer: CausalSelfAttention = layer) -> tuple[torch.Tensor, Any]:
            if past is not None:
                raise ValueError("use_attention: no KV cache; run the whole sequence")
            B, T, C = x.shape
            q, k, v = (
                t.view(B, T, layer.n_head, C // layer.n_head).transpose(1, 2) for t in layer.c_attn(x).split(C, dim=2)
            )
            y = attend(q, k, v).transpose(1, 2).reshape(B, T, C)
            return layer.resid_dropout(layer.c_proj(y)), (k, v)

        layer.forward = forward
    return model


@functools.lru_cache(maxsize=1)
def tiny_corpus() -> tuple[torch.Tensor, torch.Tensor, str]:
    """Hamlet as characters: (train ids, validation ids, the alphabet), the first 90% for training. Characters,
    not GPT-2 tokens: a vocabulary of about 60 makes a model small enough to train 100 steps in a second or two."""
    text = (paths.shakespeare_dir() / "hamlet.txt").read_text(encoding="utf-8")
    alphabet = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(alphabet)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    n = int(0.9 * len(ids))
    return ids[:n], ids[n:], alphabet


@dataclass
class TinyRun:
    model: GPT
    losses: list[float]  # training loss at each step
    val_loss: float  # mean next-character loss on the validation windows, after training
    unigram: float  # the validation loss of character frequencies alone: the best a model ignoring context gets


def train_tiny(attend: Attend, steps: int = 100, seed: int = 0, lr: float = 1e-2) -> TinyRun:
    """Train a tiny character model of Hamlet (2 layers, 4 heads, width 32, context 32) whose attention is
    ``attend`` (see :func:`use_attention`), ``steps`` AdamW steps of 32 windows; about a second on a CPU."""
    train, val, alphabet = tiny_corpus()
    T, B = 32, 32
    with one_thread(), torch.random.fork_rng(devices=[]):  # seeded here, the caller's RNG left as it was
        torch.manual_seed(seed)
        config = GPTConfig(
            vocab_size=len(alphabet), block_size=T, n_layer=2, n_head=4, n_embd=32, pos="rope", mlp="relu2"
        )
        model = use_attention(GPT(config), attend)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
        g = torch.Generator().manual_seed(seed)
        losses = []
        for _ in range(steps):
            starts = torch.randint(0, len(train) - T - 1, (B,), generator=g)
            x = torch.stack([train[s : s + T] for s in starts])
            y = torch.stack([train[s + 1 : s + T + 1] for s in starts])
            _, loss = model(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        model.eval()
        starts = torch.arange(0, len(val) - T - 1, T)[:256]  # 256 windows, 8,192 characters
        with torch.no_grad():
            _, val_loss = model(
                torch.stack([val[s : s + T] for s in starts]), torch.stack([val[s + 1 : s + T + 1] for s in starts])
            )
    counts = torch.bincount(train, minlength=len(alphabet)).double() + 1  # add-one: no character has p = 0
    targets = torch.cat([val[s + 1 : s + T + 1] for s in starts])
    unigram = -(counts / counts.sum()).log()[targets].mean().item()
    return TinyRun(model, losses, val_loss.item(), unigram)


CHECK_STEPS = 50  # the check's training: 2.8 s on one thread of a 2-core AMD EPYC under a load of 6, 2.7 nats


@exercise(
    "03.4",
    "ALiBi instead of RoPE, trained",
    "a function alibi_attention(q, k, v) -> y: causal attention with ALiBi's bias added to the scores, "
    "q, k, v and y all (B, n_head, T, d)",
)
def _check_alibi_attention(alibi_attention: Attend) -> str:
    g = torch.Generator().manual_seed(0)
    for H, T, d in ((1, 5, 4), (4, 9, 8), (8, 12, 8)):
        q, k, v = (torch.randn(2, H, T, d, generator=g) for _ in range(3))
        with torch.no_grad():
            y = _as_tensor(alibi_attention(q.clone(), k.clone(), v.clone()), "alibi_attention")
        expect(
            tuple(y.shape) == tuple(v.shape),
            f"alibi_attention gave shape {tuple(y.shape)} for q, k, v of shape {tuple(v.shape)}",
        )
        y = y.detach().float().cpu()
        # float32 sums of <= 12 terms of size ~1 in any order: ~1e-7; 1e-5 is room
        if (y - _attend_reference(q, k, v)).abs().max() <= 1e-5:
            continue
        plain = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        diagnoses = (
            (plain, "this is plain causal attention: add the ALiBi bias to the scores"),
            (
                _attend_reference(q, k, v, bias_sign=-1.0),
                "the bias has the wrong sign: farther keys must get lower scores",
            ),
            (_attend_reference(q, k, v, scale=1.0), "the scores are not divided by sqrt(d)"),
        )
        for other, why in diagnoses:
            expect((y - other).abs().max() > 1e-5, f"for n_head = {H}: {why}")
        raise Wrong(
            f"for n_head = {H}, T = {T} the output differs from attention with ALiBi's bias (check the "
            "slopes: they depend on n_head, q.size(1))"
        )
    run = train_tiny(alibi_attention, steps=CHECK_STEPS)
    expect(
        run.val_loss < run.unigram,
        f"after {CHECK_STEPS} steps the tiny model's validation loss is {run.val_loss:.2f} nats, not below the "
        f"{run.unigram:.2f} of character frequencies alone: it has not learned to use the context",
    )
    return (
        f"With ALiBi as its only position signal the tiny model reached {run.val_loss:.2f} nats in "
        f"{CHECK_STEPS} steps, "
        f"below the {run.unigram:.2f} of character frequencies alone."
    )
