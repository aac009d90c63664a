"""The LM head's loss without the logits: cross-entropy of ``h @ weight.T``, a chunk of positions at a time.

At the seed's size (n_embd 128, vocab 50,304) the LM head and its loss are most of a training step, and the
plain ``F.cross_entropy(h @ W.T, targets)`` writes a (tokens x vocab) float tensor three times (logits,
log-softmax, gradient): 800 MB at 4,096 tokens. That plain version is :func:`reference_cross_entropy`, the
definition this module's fast paths are tested against in value and in both gradients (notebook 04 builds it
by hand too).

On a CPU the head is bound by fresh memory, not arithmetic: a new 200 MB tensor is pages the kernel must
fault in, and a matmul writing into a reused buffer ran at 94-102 GFLOP/s against 52-61 when it allocated
its output (AVX2, 2 threads). So each chunk's logits go into one buffer owned by this module and reused
across chunks and calls, the softmax is done in that buffer, and the weight's gradient is accumulated in
place (``addmm_``). The three matmuls then run at the speed of a large square one (measured on one AVX2
thread: 98-102 GFLOP/s against 112), which leaves little else in the head to take away.

That holds on AVX2. Where the matmuls are much faster (bf16 on AVX512-BF16 or AMX), the passes over a chunk's
logits in memory are most of the head's time (about 26 bytes per logit per step), so :func:`_tiled` goes a
vocabulary tile at a time, in the spirit of Cut Cross-Entropy (Wijmans et al. 2024): each tile's logits are
made and turned into probabilities while the tile is in the cache, stored once in the matmul's dtype, and read
once more by the two gradient matmuls (about 4 bytes per logit in bf16). :data:`TILES` says which CPU class gets which
path, as measured (``nanogpt bench phases`` times both); :func:`reference_cross_entropy` is the plain formula
both are tested against.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

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


@functools.cache
def _private_softmax_works() -> bool:
    """Whether ``torch._softmax(x, dim, half_to_float, out=x)`` exists in this torch and writes, in place, what
    ``torch.softmax`` returns: tried once (rows wider than a vector register, so a kernel that wrote a row
    before it had read all of it would show), the answer cached for the process."""
    x = torch.linspace(-6.0, 6.0, 2 * 67).sin_().mul_(5.0).view(2, 67)
    want = torch.softmax(x, dim=1)
    try:
        torch._softmax(x, 1, False, out=x)
    except (AttributeError, TypeError, RuntimeError, NotImplementedError):
        return False
    return torch.equal(x, want)


def softmax_into(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``softmax(x)`` over the last dimension, written into ``out`` (which may be ``x`` itself) and returned.

    Why: a chunk's logits are hundreds of MB, and ``torch.softmax`` returns a new tensor, fresh pages on a CPU
    (the module's docstring). The CPU kernel behind the private ``torch._softmax`` takes ``out=`` and reads a
    row before writing it, so it can work in place. A private op may change or vanish in any release: where it
    is missing or wrong (:func:`_private_softmax_works`), or off the CPU, ``torch.softmax`` and a copy give the
    same values at the cost of one temporary tensor.
    """
    if out.is_cpu and _private_softmax_works():
        return torch._softmax(x, -1, False, out=out)
    return out.copy_(torch.softmax(x, dim=-1))


def _capped(logits: torch.Tensor, softcap: float) -> torch.Tensor:
    """``softcap * tanh(logits / softcap)`` when ``softcap`` > 0 (Gemma 2's soft-capping), else the logits."""
    return softcap * torch.tanh(logits / softcap) if softcap > 0 else logits


Grads = tuple[torch.Tensor, torch.Tensor] | None  # (d loss / d h, d loss / d weight), float32 or wider


def _chunk_probs(
    hc: torch.Tensor,
    w: torch.Tensor,
    z: torch.Tensor,
    low_buf: torch.Tensor | None,
    tanh_buf: torch.Tensor | None,
    softcap: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One chunk's probabilities, softmax of the (soft-capped) ``hc @ w.T``, in the float32 (or wider) reused
    buffer ``z``, and with a softcap tanh(u / cap) in ``tanh_buf``, kept for the chain rule. ``low_buf``: the
    matmul's output in the autocast dtype, then copied into ``z`` (the softmax and sums stay float32)."""
    r = hc.size(0)
    if low_buf is not None:
        z.copy_(torch.mm(hc, w.t(), out=low_buf[:r]))
    else:
        torch.mm(hc, w.t(), out=z)
    th = None
    if softcap > 0:  # logits = cap * tanh(u / cap)
        th = torch.tanh(z.div_(softcap), out=tanh_buf[:r])
        torch.mul(th, softcap, out=z)
    # In place on the CPU (its kernel finishes reading a row before writing it; checked by the tests);
    # elsewhere into a new tensor, which the caching allocator hands out without fresh pages anyway.
    return (softmax_into(z, z) if z.is_cpu else torch.softmax(z, dim=1)), th


class _Fp32Grads:
    """Both gradients of the chunked loss, accumulated a chunk at a time from d loss_r / d logits (p minus
    one-hot, unscaled, in the reused buffer): here with float32 (or float64) matmuls, the weight's gradient
    accumulated in place (``addmm_``), so no chunk allocates. The base of the two low-precision paths.

    Ignored rows and the mean's 1/n go into the small (N, C) side of the weight's gradient (``hw``), and into
    d h at the end, so the (chunk, vocab) gradient is never masked or scaled.
    """

    per_row_mean = True  # fp16 keeps 1/n out of its casts (see _Fp16Grads)

    def __init__(
        self,
        h: torch.Tensor,
        w: torch.Tensor,
        ok: torch.Tensor,
        n: torch.Tensor,
        compute_dtype: torch.dtype,
        acc: torch.dtype,
    ) -> None:
        self.w, self.n, self.acc = w, n, acc
        self.row_w = ok.to(acc) / n if self.per_row_mean else ok.to(acc)
        self.hw = (h.to(acc) * self.row_w[:, None]).to(compute_dtype)
        self.grad_h = torch.empty(h.size(0), h.size(1), dtype=acc, device=h.device)
        self.grad_w: torch.Tensor | None = None

    def add(self, s: int, e: int, d: torch.Tensor) -> None:
        """Rows s:e, whose d(logits) is ``d``: their d h, and their part of d weight."""
        torch.mm(d, self.w, out=self.grad_h[s:e])
        if self.grad_w is None:
            self.grad_w = torch.mm(d.t(), self.hw[s:e])
        else:
            self.grad_w.addmm_(d.t(), self.hw[s:e])

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(d loss / d h, d loss / d weight), once every chunk has been added."""
        assert self.grad_w is not None  # at least one chunk: N >= 1
        return self.grad_h.mul_(self.row_w[:, None]), self.grad_w


class _Bf16Grads(_Fp32Grads):
    """The gradients with bf16 matmuls (autocast), as the forward's: d(logits) is rounded to bf16 once, into the
    buffer the logits' matmul used, and each chunk's part of d weight is made in a reused bf16 (V, C) buffer
    and added to a float32 sum (the CPU has no bf16 x bf16 -> float32 matmul)."""

    def __init__(
        self,
        h: torch.Tensor,
        w: torch.Tensor,
        ok: torch.Tensor,
        n: torch.Tensor,
        compute_dtype: torch.dtype,
        acc: torch.dtype,
        low_buf: torch.Tensor,
    ) -> None:
        super().__init__(h, w, ok, n, compute_dtype, acc)
        self.low_buf = low_buf
        self.gw_low = _buffer("grad_w", w.size(0), h.size(1), compute_dtype, h.device)

    def add(self, s: int, e: int, d: torch.Tensor) -> None:
        g = self.low_buf[: e - s]
        g.copy_(d)
        self.grad_h[s:e] = torch.mm(g, self.w)
        self._add_w(torch.mm(g.t(), self.hw[s:e], out=self.gw_low))

    def _add_w(self, part: torch.Tensor) -> None:
        if self.grad_w is None:
            self.grad_w = part.to(self.acc)
        else:
            self.grad_w.add_(part)


class _Fp16Grads(_Bf16Grads):
    """The gradients with fp16 matmuls (autocast, GPUs without bf16), where d(logits) would underflow: fp16's
    smallest normal is 6e-5, and a GradScaler scales the loss only after this function has returned. So
    d(logits) is kept unscaled by 1/n (applied at the end) and multiplied by a power of two before each cast,
    the largest that keeps the matmul's output below :data:`_FP16_LIMIT`, and divided by it after."""

    per_row_mean = False

    def __init__(
        self,
        h: torch.Tensor,
        w: torch.Tensor,
        ok: torch.Tensor,
        n: torch.Tensor,
        compute_dtype: torch.dtype,
        acc: torch.dtype,
        low_buf: torch.Tensor,
    ) -> None:
        super().__init__(h, w, ok, n, compute_dtype, acc, low_buf)
        # |d(logits)| <= 1 and each of its rows sums to <= 2 in absolute value, so row r of g @ w is at most
        # 2 max|w|: scale g by the largest power of two that keeps that below the limit
        self.scale_h = _pow2_at_most(_FP16_LIMIT / (2 * w.abs().max().float()).clamp(min=1.0))

    def add(self, s: int, e: int, d: torch.Tensor) -> None:
        g, hw = self.low_buf[: e - s], self.hw[s:e]
        torch.mul(d, self.scale_h, out=g)
        self.grad_h[s:e] = torch.mm(g, self.w).float() / self.scale_h
        # column c of g.T @ hw is at most sum_r |hw[r, c]| (|g| <= 1): the same rule for this matmul
        scale_w = _pow2_at_most(_FP16_LIMIT / hw.float().abs().sum(0).max().clamp(min=1.0))
        torch.mul(d, scale_w, out=g)
        self._add_w(torch.mm(g.t(), hw, out=self.gw_low).float() / scale_w)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        grad_h, grad_w = super().result()
        return grad_h.div_(self.n), grad_w.div_(self.n)


def _chunk_grads(
    h: torch.Tensor,
    w: torch.Tensor,
    ok: torch.Tensor,
    n: torch.Tensor,
    compute_dtype: torch.dtype,
    acc: torch.dtype,
    low_buf: torch.Tensor | None,
) -> _Fp32Grads:
    """The gradient accumulator for the matmuls' dtype: fp16, another low precision (bf16), or float32/64."""
    if low_buf is None:
        return _Fp32Grads(h, w, ok, n, compute_dtype, acc)
    kind = _Fp16Grads if compute_dtype == torch.float16 else _Bf16Grads
    return kind(h, w, ok, n, compute_dtype, acc, low_buf)


def _mean_of_minus_log_p(
    p_target: torch.Tensor,
    ok: torch.Tensor,
    n: torch.Tensor,
    hc: torch.Tensor,
    w: torch.Tensor,
    tgt: torch.Tensor,
    acc: torch.dtype,
    softcap: float,
) -> torch.Tensor:
    """The mean loss, -log p[target] read off the softmax: no pass over the logits for their maximum (about 5%
    of a step on one AVX2 thread). Below 2^-100 (a loss over 69 nats) p has lost digits or underflowed to 0;
    those rows, rare outside a diverged run, get log-sum-exp minus the target's logit from recomputed logits."""
    losses = -p_target.log()
    far = ok & (p_target < _TINY)
    if far.any():
        z = _capped((hc[far] @ w.t()).to(acc), softcap)
        losses[far] = torch.logsumexp(z, dim=1) - z.gather(1, tgt[far]).squeeze(1)
    return losses.masked_fill_(~ok, 0.0).sum() / n


def _chunked(
    h: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk: int,
    compute_dtype: torch.dtype,
    want_grad: bool,
    softcap: float,
) -> tuple[torch.Tensor, Grads]:
    """The loss and (``want_grad``) both gradients, a chunk of ``chunk`` positions against the whole vocabulary
    at a time: each chunk's logits are turned into their gradient in place (softmax minus one-hot) in the
    reused buffer, and handed to the gradient path of the matmuls' dtype (:func:`_chunk_grads`). Any device,
    any dtype, soft-capping."""
    acc = torch.promote_types(compute_dtype, torch.float32)  # softmax and sums: float32 or wider
    low = compute_dtype != acc  # matmuls in bf16/fp16 (autocast), everything else in `acc`
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
    grads = _chunk_grads(h, w, ok, n, compute_dtype, acc, low_buf) if want_grad else None
    for s in range(0, N, chunk):
        e = min(s + chunk, N)
        t = tgt[s:e]
        z, th = _chunk_probs(hc[s:e], w, logits[: e - s], low_buf, tanh_buf, softcap)
        p_target[s:e] = z.gather(1, t).squeeze(1)
        if grads is None:
            continue
        z.scatter_add_(1, t, torch.full_like(t, -1, dtype=acc))  # d loss_r / d logits = p - onehot
        if th is not None:  # d(cap * tanh(u / cap)) / du = 1 - tanh^2
            z.mul_(th.square_().neg_().add_(1.0))
        grads.add(s, e, z)
    loss = _mean_of_minus_log_p(p_target, ok, n, hc, w, tgt, acc, softcap)
    return loss, None if grads is None else grads.result()


_Split = tuple[torch.Tensor, ...]  # a tensor's pieces, one per tile


def _tile_hits(tgt: torch.Tensor, rows: int, cols: int, n_v: int) -> tuple[list[int], _Split, _Split, _Split]:
    """For each tile (row block, vocabulary tile), in the order the loops visit them: how many of its rows have
    their target in it, those rows (global and within the block) and the target's column within the tile.
    One sort up front, so no tile ever scans for them."""
    key = torch.arange(tgt.numel(), device=tgt.device) // rows * n_v + tgt // cols
    order = torch.argsort(key)
    counts = torch.bincount(key, minlength=-(-tgt.numel() // rows) * n_v).tolist()
    return counts, order.split(counts), (order % rows).split(counts), (tgt[order] % cols).split(counts)


class _Tiles:
    """One call of :func:`_tiled`: the tiles' geometry, the store of their logits or probabilities (in the
    matmul's dtype), where each tile's targets are, and the per-row results its two sweeps fill in."""

    def __init__(
        self,
        h: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        rows: int,
        cols: int,
        compute_dtype: torch.dtype,
        want_grad: bool,
    ) -> None:
        self.low, self.want_grad, self.compute_dtype = compute_dtype == torch.bfloat16, want_grad, compute_dtype
        f32, dev = torch.float32, h.device
        N, C, V = h.size(0), h.size(1), weight.size(0)
        self.ok = targets != -1
        self.n = self.ok.sum()
        self.tgt = targets.clamp(min=0)
        self.w, self.hc = weight.to(compute_dtype), h.to(compute_dtype)
        rows, cols = min(rows, N), min(cols, V)
        n_v = -(-V // cols)
        self.N, self.V, self.rows, self.cols, self.n_v = N, V, rows, cols, n_v
        self.counts, self.hit_g, self.hit_r, self.hit_c = _tile_hits(self.tgt, rows, cols, n_v)
        self.store = _buffer("store", (n_v if want_grad else 1) * rows, cols, compute_dtype, dev).view(-1)
        self.tile32 = _buffer("tile32", rows, cols, f32, dev).view(-1) if self.low else self.store
        self.lse, self.z_target = torch.empty(N, device=dev), torch.empty(N, device=dev)
        self.lse_t = torch.empty(n_v, rows, device=dev)
        if want_grad:
            self.row_w = self.ok.to(f32) / self.n  # ignored rows and the mean's 1/n, on the small side as in _chunked
            self.hw = h.to(f32) * self.row_w[:, None]
            self.grad_h, self.grad_w = torch.zeros(N, C, device=dev), torch.zeros(V, C, device=dev)
            self.dh = _buffer("tile_dh", rows, C, compute_dtype, dev)
            self.dw = _buffer("tile_dw", cols, C, compute_dtype, dev)

    def tiles(self, r0: int, first_tile: int) -> Iterator[tuple[int, int, int, torch.Tensor]]:
        """(tile index, its index among all tiles, first vocabulary row, the tile's logits or probabilities in
        the store), for the row block starting at r0."""
        R = min(r0 + self.rows, self.N) - r0
        for vi, v0 in enumerate(range(0, self.V, self.cols)):
            at = vi * self.rows * self.cols if self.want_grad else 0  # evaluation: one tile's room, reused
            yield vi, first_tile + vi, v0, self.store[at : at + R * min(self.cols, self.V - v0)].view(R, -1)

    def probabilities(self, bi: int, r0: int, r1: int) -> None:
        """The first sweep over block ``bi`` (rows r0:r1): each tile's logits, its float32 softmax stored back,
        the targets' logits, and the block's log-sum-exp combined from the tiles'."""
        hc, lse_t, z_target = self.hc[r0:r1], self.lse_t[:, : r1 - r0], self.z_target
        for vi, k, v0, z in self.tiles(r0, bi * self.n_v):
            w_t = self.w[v0 : v0 + z.size(1)]
            torch.mm(hc, w_t.t(), out=z)
            x = self.tile32[: z.numel()].view_as(z).copy_(z) if self.low else z  # float32 logits, in the cache
            if self.counts[k]:
                z_target[self.hit_g[k]] = x[self.hit_r[k], self.hit_c[k]]
            z0 = x[:, 0].clone()
            softmax_into(x, x)  # in place: the kernel finishes reading a row before writing it
            torch.sub(z0, x[:, 0].log(), out=lse_t[vi])
            far = x[:, 0] < _TINY
            if far.any():
                lse_t[vi][far] = torch.logsumexp((hc[far] @ w_t.t()).float(), dim=1)
            if self.low and self.want_grad:
                z.copy_(x)
        self.lse[r0:r1] = torch.logsumexp(lse_t, dim=0)

    def gradients(self, bi: int, r0: int, r1: int) -> None:
        """The second sweep over block ``bi``: each stored tile read once more into the two gradient matmuls
        (the tile's rescaling to the block's log-sum-exp applied on the small sides), then the targets' -1."""
        w, hw, grad_h, grad_w, tgt = self.w, self.hw[r0:r1], self.grad_h[r0:r1], self.grad_w, self.tgt[r0:r1]
        f = torch.exp(self.lse_t[:, : r1 - r0] - self.lse[r0:r1])
        for vi, k, v0, p in self.tiles(r0, bi * self.n_v):
            w_t, fr = w[v0 : v0 + p.size(1)], f[vi, :, None]
            if self.counts[k]:
                p[self.hit_r[k], self.hit_c[k]] = 0
            grad_h.addcmul_(torch.mm(p, w_t, out=self.dh[: r1 - r0]), fr)
            if self.low:  # no bf16 x bf16 -> float32 matmul on the CPU: a bf16 (cols, C) part, added in float32
                grad_w[v0 : v0 + p.size(1)].add_(
                    torch.mm(p.t(), (hw * fr).to(self.compute_dtype), out=self.dw[: p.size(1)])
                )
            else:
                grad_w[v0 : v0 + p.size(1)].addmm_(p.t(), hw * fr)
        p_minus_1 = (torch.exp(self.z_target[r0:r1] - self.lse[r0:r1]) - 1)[:, None]  # the targets' entries of g
        grad_h.addcmul_(w[tgt].float(), p_minus_1)
        grad_w.index_add_(0, tgt, hw * p_minus_1)

    def result(self) -> tuple[torch.Tensor, Grads]:
        """The mean loss and, if wanted, both gradients, once every block has been swept."""
        loss = (self.lse - self.z_target).masked_fill_(~self.ok, 0.0).sum() / self.n
        if not self.want_grad:
            return loss, None
        return loss, (self.grad_h.mul_(self.row_w[:, None]), self.grad_w)


def _tiled(
    h: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    rows: int,
    cols: int,
    compute_dtype: torch.dtype,
    want_grad: bool,
) -> tuple[torch.Tensor, Grads]:
    """The loss and (``want_grad``) both gradients, ``rows`` positions x ``cols`` vocabulary entries at a time.
    CPU, float32 or bfloat16 matmuls, no soft-capping (those take :func:`_chunked`).

    Per block of ``rows`` positions, a first sweep over the vocabulary tiles: the tile's logits by a matmul
    (into the block's store, in the matmul's dtype), its float32 softmax while the tile is in the cache (stored
    back in the matmul's dtype), and the tile's log-sum-exp, lse_t = z_j - log p_j, read off one column j in
    float32 (rows where p_j < 2^-100 are recomputed). The rows' log-sum-exp combines the tiles'. A second sweep
    reads each stored tile once more into the two gradient matmuls: row r of tile t holds probabilities
    p_local, and p = p_local * f[t, r] with f = exp(lse_t - lse), applied on the small (positions, n_embd)
    sides (to a row of g @ w, and to h before g.T @ h), never to the tile. The one-hot's -1 is kept out of the
    tiles (each target's entry is zeroed) and added in float32 on the small sides, with p_target - 1 from the
    float32 lse: rounding p_target (near 1 once trained) to bf16 first would lose the difference, and so
    would a bf16 lse (measured: a bf16 softmax per tile, 2^-8 on lse_t, doubled the error of the confident
    rows' gradients; tests/test_loss.py). So the float32 logits cost a copy each way, in the cache.
    Three matmuls, as the chunked path: the store replaces CCE's recomputed logits (a 128-deep matmul per
    logit took longer than writing and reading 2-4 bytes of it, in the measurements of docs/benchmarks.md).
    """
    run = _Tiles(h, weight, targets, rows, cols, compute_dtype, want_grad)
    for bi, r0 in enumerate(range(0, run.N, run.rows)):
        r1 = min(r0 + run.rows, run.N)
        run.probabilities(bi, r0, r1)
        if want_grad:
            run.gradients(bi, r0, r1)
    return run.result()


class _HeadLoss(torch.autograd.Function):
    """The mean cross-entropy, by :func:`_chunked` or :func:`_tiled`: both finish the gradients of ``h`` and
    ``weight`` in the forward pass, so backward only scales them by the incoming gradient (the mean, or a
    GradScaler's loss scale)."""

    @staticmethod
    def forward(
        ctx: Any,
        h: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        plan: HeadPlan,
        compute_dtype: torch.dtype,
        want_grad: bool,
        softcap: float,
    ) -> torch.Tensor:
        if plan.tiled:
            loss, grads = _tiled(h, weight, targets, plan.rows, plan.cols, compute_dtype, want_grad)
        else:
            loss, grads = _chunked(h, weight, targets, plan.rows, compute_dtype, want_grad, softcap)
        if grads is not None:
            ctx.grads = (grads[0].to(h.dtype), grads[1].to(weight.dtype))
        return loss

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_h, grad_w = ctx.grads
        return grad_h * grad_out, grad_w * grad_out, None, None, None, None, None


@dataclass(frozen=True)
class HeadPlan:
    """How the head's loss is computed: ``tiled`` (``rows`` x ``cols`` tiles) or in chunks of ``rows`` positions."""

    tiled: bool
    rows: int
    cols: int = 0


# Which CPU class and matmul dtype take the tiled path, with its (positions, vocabulary) tile; the others
# take chunks of chunk_rows(V). `nanogpt bench phases` times both paths on the machine it runs on.
# Measured (2-core AMD EPYC, busy, docs/benchmarks.md): on AVX512-BF16 in bf16 and on AVX2 (emulated) in
# float32 the tiled path was no faster than the chunks (0.93-1.04x, within the noise), so those keep chunks.
# AMX is the class where the tiles should win (matmuls about 5x faster, the chunked head 80% memory passes),
# but no AMX CPU has measured it yet: a class is listed here only once `bench phases` on it shows the tiles
# faster (candidate tile for AMX bf16: (1024, 2048)).
TILES: dict[tuple[str, torch.dtype], tuple[int, int]] = {}


def head_plan(device: torch.device, compute_dtype: torch.dtype, vocab: int, softcap: float = 0.0) -> HeadPlan:
    """The path :func:`linear_cross_entropy` takes by default: tiled on a CPU class listed in :data:`TILES`
    (never with soft-capping, nor fp16, which keep their proven chunked path), else chunks of
    :func:`chunk_rows`. CUDA and MPS keep the chunked path (their allocators and kernels differ)."""
    if TILES and device.type == "cpu" and softcap == 0 and compute_dtype in (torch.float32, torch.bfloat16):
        from .devices import cpu_class  # here, not at import: loss.py is imported by model.py, devices by much

        tile = TILES.get((cpu_class(), compute_dtype))
        if tile is not None:
            return HeadPlan(True, *tile)
    return HeadPlan(False, chunk_rows(vocab))


@torch.compiler.disable  # eager under torch.compile: its buffers and in-place steps are the point, not a graph
def linear_cross_entropy(
    h: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk: int | None = None,
    softcap: float = 0.0,
    tiles: tuple[int, int] | None = None,
) -> torch.Tensor:
    """``F.cross_entropy(h @ weight.T, targets, ignore_index=-1)`` without materialising the logits: the value
    and gradients of :func:`reference_cross_entropy`, to rounding.

    ``softcap`` > 0 caps the logits at ``softcap * tanh(logits / softcap)`` first. Under autocast the
    matmuls run in the autocast dtype (bf16 on a CPU where it measured faster) and the softmax in float32,
    as autocast itself would do; under fp16 the gradients stay correct at a GradScaler's loss scale.
    ``chunk``: that many positions at a time against the whole vocabulary (:func:`_chunked`); ``tiles``:
    (positions, vocabulary entries) tiles (:func:`_tiled`, CPU, float32 or bf16, no softcap); neither: the
    path :func:`head_plan` picks for this machine.
    """
    kind = h.device.type
    dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else weight.dtype
    if chunk is not None:
        plan = HeadPlan(False, chunk)
    elif tiles is not None:
        if kind != "cpu" or softcap > 0 or dtype not in (torch.float32, torch.bfloat16):
            raise ValueError("tiles: CPU only, float32 or bfloat16 matmuls, no softcap")
        plan = HeadPlan(True, *tiles)
    else:
        plan = head_plan(h.device, dtype, weight.size(0), softcap)
    # Decided here: inside forward, needs_input_grad stays True under torch.no_grad(), and evaluation
    # would pay for gradients it throws away.
    want_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    with torch.autocast(kind, enabled=False):
        return _HeadLoss.apply(h, weight, targets, plan, dtype, want_grad, float(softcap))


def reference_cross_entropy(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, softcap: float = 0.0
) -> torch.Tensor:
    """The definition :func:`linear_cross_entropy` computes, written plainly: every logit in memory, autograd
    for the gradients. The tests, notebook 04 and the benchmarks' baseline model use it as the loss the fast
    paths are checked against, so it carries their semantics: the mean over positions whose target is not -1,
    logits soft-capped first when ``softcap`` > 0, the log-softmax in float32 or wider (as autocast would run
    ``F.cross_entropy``) whatever the matmul's dtype."""
    logits = _capped(h @ weight.t(), softcap)
    return F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), targets, ignore_index=-1)


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
