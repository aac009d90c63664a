"""The LM head for top-k and greedy sampling on a CPU: screened in low precision, exact where it matters.

Each sampled token reads the whole head (vocab x n_embd); at GPT-2's 50304 x 128 that read is most of a
token's time at small blocks (:mod:`sample` uses this class; ``nanogpt bench sample`` measures it). A copy of
the head in fewer bytes is read instead, every row's logit comes with a bound on its error, and only the
tokens that can be in the true top k get their exact float32 logits. Two copies, the faster one measured
once per process and head shape (:func:`pick_kind`), with the same result either way:

- ``"int8"``: one byte a weight, a float scale per row (``torch._weight_int8pack_mm``: bf16 activations,
  fp32 sums; the op weight-only quantised inference uses). 2-core AMD EPYC, one thread: 0.9 ms per row
  against 2.5 ms for float16 (AVX512-BF16), 1.3 against 2.6 with AVX2 (both measured on a busy machine).
- ``"fp16"``: float16 weights and activations, where the int8 op is missing or measured slower.

Why the result is exact: let L_v be token v's float32 logit, S_v its screened one and E_v the bound with
|S_v - L_v| <= E_v. Then L_v >= S_v - E_v for every v, so the true k-th largest logit X is at least the k-th
largest of S - E (call it t), and a token of the true top k has S_v + E_v >= L_v >= X >= t. Keeping every
token with S_v + E_v >= t keeps the true top k; their exact logits then go through ``sample_next`` as the
full head's would (its top-k keeps exactly them, so the draw is the same).

The bounds, per row v, times |h| (h the final hidden state, float32):
- float16: three roundings of 2^-11 relative (h, w, the product; float32 sums) of sum_i |h_i w_vi| <=
  |h| |w_v|: 2^-8 |w_v| has room; and float16's subnormals (below 6e-5) round by up to 2^-25 absolute,
  which adds terms in |w_v|_1 and sqrt(C) |h| (a tiny head or hidden state; zero for a trained one).
- int8: the weight's rounding residual r_v = w_v - s_v q_v, |sum_i h_i r_vi| <= |h| |r_v| (Cauchy-Schwarz,
  with 1% for h's bf16 rounding and the sums), plus h's bf16 rounding (2^-9 |h| |w_v|) and the output's
  (bf16, 2^-9 of the logit, itself <= |h| |w_v| (1 + 2^-9)): 2^-7 |w_v| covers both with room.
On a trained GPT-2-vocabulary head the int8 screen keeps about as many candidates as the float16 one
(328 against 297 for top-200 over 64 positions; 1.4 against 1.3 for greedy), and the measured errors are a
quarter of the int8 bound. A screen that cannot be trusted (a non-finite top, or a threshold so low that
logits overflowed to -inf could hide there) returns None: the caller uses the full head.
"""

from __future__ import annotations

import time
import weakref
from typing import Any, Literal

import torch

Kind = Literal["int8", "fp16"]

# The most rows each kind screens: the screen is a matrix-vector product at heart, and past a few rows the full
# head's matrix product wins. 2-core AMD EPYC, quiet, one thread, top-k 200 at block 64, tokens/s of the int8
# screen against the full head: 1.45x (1 row), 1.93x (2), 1.17x (4), 0.93x (8), 0.71x (16); with AVX2 1.58x,
# 1.93x, 1.06x, 0.81x, 0.69x. float16 (busy machine, one thread): 0.5x the time for 1 and 2 rows, 3x for 16.
MAX_ROWS: dict[Kind, int] = {"int8": 4, "fp16": 2}
_KINDS: dict[tuple[int, int], Kind] = {}  # pick_kind's measurements: (vocab, n_embd) -> the faster kind
_LAST: list[Any] = []  # screen_for's last screen: [weakref to the weight, the weight's state and arguments, it]


def screen_for(
    weight: torch.Tensor, batch: int = 1, vocab_limit: int | None = None, softcap: float = 0.0
) -> HeadScreen | None:
    """A :class:`HeadScreen` of ``weight`` for ``batch`` rows at a time, or None where this machine's faster
    kind screens fewer rows (:data:`MAX_ROWS`: the full head is faster). The last screen is made again while it
    is of the same tensor, unchanged (the same storage and version counter: an optimizer step or an in-place
    edit bumps it) and the same arguments. Making one reads the whole head and, for int8, quantises it: about
    0.1 s at GPT-2's vocabulary (2-core AMD EPYC), more than a short call of ``generate`` spends on screens."""
    rows = min(weight.size(0), vocab_limit) if vocab_limit is not None else weight.size(0)
    kind = pick_kind(rows, weight.size(1))
    if batch > MAX_ROWS[kind]:
        return None
    key = (weight.data_ptr(), weight._version, weight.shape, weight.dtype, vocab_limit, softcap, kind)
    if _LAST and _LAST[0]() is weight and _LAST[1] == key:
        return _LAST[2]
    screen = HeadScreen(weight, vocab_limit, softcap, kind)
    _LAST[:] = [weakref.ref(weight), key, screen]
    return screen


def _int8_available() -> bool:
    return hasattr(torch, "_weight_int8pack_mm")


def _quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(int8 q, bf16 scale s, error bound per row): w ~ s q row by row, |w - s q| <= s / 2, |q| <= 127."""
    w = weight.float()
    s = w.abs().amax(dim=1) / 127
    s = torch.where(s > 0, s, torch.ones_like(s))  # a zero row: any scale, q = 0
    sb = s.bfloat16()  # rounded up where bf16 rounded down, so w / s stays within +-127
    sb = torch.where(sb.float() < s, torch.nextafter(sb, torch.full_like(sb, float("inf"))), sb)
    q = torch.round(w / sb.float()[:, None]).clamp_(-127, 127).to(torch.int8)
    residual = w - sb.float()[:, None] * q.float()
    bound = 1.01 * residual.norm(dim=1) + 2.0**-7 * w.norm(dim=1)
    return q, sb, bound


class HeadScreen:
    """Screen a head's logits for the candidates of the top k. ``weight``: (vocab, C); ``vocab_limit``: ids at
    or past it are never candidates (the padding rows of GPT-2's 50304); ``softcap``: the model's logit cap
    (monotone, so the candidates are those of the uncapped logits; their exact logits are capped)."""

    def __init__(
        self, weight: torch.Tensor, vocab_limit: int | None = None, softcap: float = 0.0, kind: Kind | None = None
    ):
        self.weight = weight.detach()
        self.cap = softcap
        rows = self.weight[:vocab_limit] if vocab_limit is not None else self.weight
        self.kind: Kind = kind or pick_kind(rows.size(0), rows.size(1))
        if self.kind == "int8":  # bf16 has float32's range: its subnormals (1e-38) are left out of the bound
            self.low, self.scale, self.err_row = _quantize(rows)
            self.err_abs = 0.0
            self.dtype = torch.bfloat16
        else:  # float16's subnormals round by 2^-25 absolute: weights (times |h|_1 <= sqrt(C) |h|), h, output
            w = rows.float()
            self.low, self.scale = rows.half(), None
            self.err_row = 2.0**-8 * w.norm(dim=1) + 2.0**-24 * w.size(1) ** 0.5
            self.err_abs = 2.0**-24 * (float(w.abs().sum(dim=1).max()) + 1)  # one for all rows: ~1e-6 or less
            self.dtype = torch.float16
        self.err_max = float(self.err_row.max())

    def screened(self, h: torch.Tensor) -> torch.Tensor:
        """The screened logits (B, vocab) of float32 hidden states h (B, C), in float32."""
        if self.kind == "int8":
            return torch._weight_int8pack_mm(h.bfloat16(), self.low, self.scale).float()
        return torch.nn.functional.linear(h.half(), self.low).float()

    def bound(self, h: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """|S - L| bounds, (B, vocab) for float32 hidden states h (B, C), or (B, n) for the token ids (B, n)."""
        err = self.err_row if ids is None else self.err_row.index_select(0, ids.reshape(-1)).view_as(ids)
        return h.norm(dim=-1, keepdim=True) * err + self.err_abs

    def candidates(self, h: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(exact float32 logits, their token ids), each (B, n) with n >= k, or None: use the full head.

        Per token this is the screen's matrix-vector product and about ten small operations: on one row of
        GPT-2's vocabulary (2-core AMD EPYC) 0.2 ms over the product for greedy, 0.5 for top-200, the most of
        it topk and nonzero. Index 1-D (index_select): 2-D advanced indexing took 0.16 ms a call."""
        approx = self.screened(h)
        widest = h.norm(dim=-1, keepdim=True) * self.err_max + self.err_abs  # every row's bound is within it
        # t, a lower bound of the true k-th logit: k tokens each have L >= S - E. Greedy takes the row's
        # largest S less the widest bound (amax: 0.004 ms where max with its index took 0.07); top-k the
        # k largest S, each less its own bound.
        if k == 1:
            t = approx.amax(dim=-1, keepdim=True) - widest
        else:
            top, at = torch.topk(approx, k, dim=-1, sorted=False)
            t = (top - self.bound(h, at)).amin(dim=-1, keepdim=True)
        # A +inf or NaN in the row reaches t; a logit overflowed to -inf could hide a true top-k one only if t
        # reaches down to the screen's overflow. Either way the screen is not trusted.
        if not (torch.isfinite(t).all() and (t > -torch.finfo(self.dtype).max).all()):
            return None
        # The candidates, S + E >= t: first a superset with the widest bound (one compare over the
        # vocabulary), then each with its own bound.
        wide = approx >= t - widest
        if wide.size(0) == 1:  # one row: its ids, in vocabulary order
            ids = wide[0].nonzero()[:, 0].unsqueeze(0)
            keep = approx.index_select(1, ids[0]) + self.bound(h, ids) >= t
        else:  # rows keep different numbers: the most any keeps, the rest padded with dropped ones (-inf below)
            ids = torch.topk(approx.masked_fill(~wide, float("-inf")), int(wide.sum(dim=-1).max()), dim=-1).indices
            keep = wide.gather(-1, ids) & (approx.gather(-1, ids) + self.bound(h, ids) >= t)
        rows = self.weight.index_select(0, ids.reshape(-1)).view(*ids.shape, -1).float()
        exact = torch.bmm(rows, h.unsqueeze(-1)).squeeze(-1)
        exact = self.cap * torch.tanh(exact / self.cap) if self.cap > 0 else exact
        return exact.masked_fill(~keep, float("-inf")), ids


def pick_kind(vocab: int, n_embd: int, rounds: int = 5) -> Kind:
    """The faster screen for a (vocab, n_embd) head on this CPU, measured once per process (about 0.1 s at
    GPT-2's vocabulary, most of it making the two copies): both screens of a random head on one row, rounds
    interleaved, the smaller median wins. ``fp16`` where the int8 op is missing or fails."""
    key = (vocab, n_embd)
    if key not in _KINDS:
        _KINDS[key] = "fp16"
        if _int8_available():
            weight, h = torch.randn(vocab, n_embd), torch.randn(1, n_embd)
            try:
                screens = {kind: HeadScreen(weight, kind=kind) for kind in ("int8", "fp16")}
                times: dict[str, list[float]] = {kind: [] for kind in screens}
                for _ in range(rounds):
                    for kind, screen in screens.items():
                        start = time.perf_counter()
                        screen.screened(h)
                        times[kind].append(time.perf_counter() - start)
                if sorted(times["int8"])[rounds // 2] < sorted(times["fp16"])[rounds // 2]:
                    _KINDS[key] = "int8"
            except RuntimeError:  # an op without a kernel for this CPU or build
                pass
    return _KINDS[key]
