"""The chunked LM-head loss (nanogpt_lib/loss.py) against the plain F.cross_entropy over full logits."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from nanogpt_lib import loss as loss_mod
from nanogpt_lib.loss import chunk_rows, linear_cross_entropy, release_buffers


def problem(n: int, c: int, v: int, seed: int = 0, dtype: torch.dtype = torch.float64, w_scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, c, generator=g, dtype=dtype)
    w = w_scale * torch.randn(v, c, generator=g, dtype=dtype)
    t = torch.randint(0, v, (n,), generator=g)
    return h, w, t


def plain(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor, scale: float = 1.0):
    """Value and both gradients of ``scale * F.cross_entropy(h @ w.T, t)`` (the formula notebook 04 builds)."""
    h, w = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    loss = F.cross_entropy(h @ w.t(), t, ignore_index=-1)
    return (loss, *torch.autograd.grad(scale * loss, (h, w)))


def chunked(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor, scale: float = 1.0, **kwargs):
    h, w = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    loss = linear_cross_entropy(h, w, t, **kwargs)
    return (loss, *torch.autograd.grad(scale * loss, (h, w)))


@pytest.mark.parametrize("chunk", [1, 7, 128])
def test_value_and_both_gradients_equal_the_plain_loss_in_float64(chunk):
    """Chunks of 1, an uneven 7 and one chunk for all; every sixth target ignored. Float64 and a loss of
    about ln(300) + spread: 1e-12 is a few thousand ulps, the sums being over 300-wide rows."""
    h, w, t = problem(50, 16, 300)
    t[::6] = -1
    ref = plain(h, w, t, scale=3.0)
    got = chunked(h, w, t, scale=3.0, chunk=chunk)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(got[1], ref[1], rtol=0, atol=1e-10)
    torch.testing.assert_close(got[2], ref[2], rtol=0, atol=1e-10)
    assert got[1][::6].abs().max() == 0  # an ignored position gets no gradient at all
    with torch.no_grad():  # evaluation: the same value
        torch.testing.assert_close(linear_cross_entropy(h, w, t, chunk=chunk), ref[0], rtol=0, atol=1e-12)


def test_float32_is_tight_and_the_default_chunk_splits_the_rows(monkeypatch):
    """float32 at the seed's width, with the default chunk (its byte budget shrunk so 300 rows make three
    chunks): against a float64 reference the error is float32 rounding of 128-term dot products and
    2,000-term sums (relative 1e-6 times a few); the gradients are compared relative to their largest."""
    monkeypatch.setattr(loss_mod, "_CHUNK_BYTES", 2**20)
    assert chunk_rows(2000) == 128
    h, w, t = problem(300, 128, 2000, dtype=torch.float32, w_scale=0.05)
    t[-3:] = -1
    ref = plain(h.double(), w.double(), t)
    got = chunked(h, w, t)
    assert got[0].dtype == got[1].dtype == got[2].dtype == torch.float32
    assert abs(got[0].item() - ref[0].item()) < 1e-5
    for a, b in zip(got[1:], ref[1:]):
        assert (a.double() - b).abs().max() < 1e-5 * b.abs().max()


def test_bf16_autocast_is_close_with_float32_results():
    """Under bf16 autocast the matmuls take 8-bit-mantissa inputs (2^-8 relative per rounding) while the
    softmax and the sums stay float32: the loss within 1e-2 of ln(500)-sized values, the gradients within
    a few percent of their largest entry."""
    h, w, t = problem(300, 32, 500, dtype=torch.float32, w_scale=0.1)
    ref = plain(h, w, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = chunked(h, w, t, chunk=64)
    assert got[0].dtype == got[1].dtype == got[2].dtype == torch.float32
    assert abs(got[0].item() - ref[0].item()) < 1e-2
    for a, b in zip(got[1:], ref[1:]):
        assert (a - b).abs().max() < 0.03 * b.abs().max()


@pytest.mark.parametrize("softcap", [0.0, 150.0])
def test_a_hopeless_prediction_has_its_true_loss_not_inf(softcap):
    """A target 200 nats below the best logit (130 once capped at 150): its probability is exp(-200), zero
    in float32, so a loss read off as -log p[target] would be inf. Such rows are recomputed, and give the
    true ~200 (float32 rounding of 200-sized logits: 1e-4 relative), with the other rows' losses intact."""
    h, w, t = problem(8, 4, 50, dtype=torch.float32)
    h[:, 0], w[:, 0] = 1.0, 0.0
    w[0, 0] = -200.0  # token 0 is 200 below the rest at every position
    t[:5] = 0
    z = h.double() @ w.double().t()
    ref = F.cross_entropy(softcap * torch.tanh(z / softcap) if softcap else z, t)
    loss = linear_cross_entropy(h, w, t, chunk=3, softcap=softcap)
    assert ref.item() > 70 and abs(loss.item() - ref.item()) < 1e-4 * ref.item()


def test_fp16_gradients_do_not_underflow_under_a_loss_scale():
    """fp16 autocast with a GradScaler-style loss scale of 2^16, as on a GPU without bf16 (T4, V100):
    the chunked loss must keep every row of the head's gradient that fp16 can hold. Emulated on the CPU,
    the earlier version cast d(logits) / n to fp16 before any scale was applied and lost thousands of rows.

    Logits here have a shared direction, so some tokens are unlikely at every position (as after
    training). A row whose exact gradient is above 1e-8 is representable once scaled, and must not be
    all zeros; the gradients must be as close to the float64 truth as fp16's 11-bit mantissa allows
    (2^-11 = 5e-4 per rounding; inputs, logits and d(logits) are each rounded once: 2e-3 of the largest
    entry), and grad_h no further from it than F.cross_entropy's own under the same scaling (plus 10%)."""
    h, w, t = problem(512, 32, 8192, dtype=torch.float32, w_scale=0.4)
    h[:, 0], w[:, 0] = 3.0, 4 * w[:, 0]
    scale = 2.0**16
    exact = plain(h.double(), w.double(), t)
    with torch.autocast("cpu", dtype=torch.float16):
        ref = plain(h, w, t, scale=scale)
        got = chunked(h, w, t, scale=scale, chunk=128)
    gh, gw = got[1] / scale, got[2] / scale
    should_live = exact[2].abs().amax(dim=1) > 1e-8
    assert int(((gw == 0).all(dim=1) & should_live).sum()) == 0
    assert torch.isfinite(gw).all() and torch.isfinite(gh).all()
    err_h = (gh.double() - exact[1]).abs().max() / exact[1].abs().max()
    err_w = (gw.double() - exact[2]).abs().max() / exact[2].abs().max()
    ref_err_h = (ref[1].double() / scale - exact[1]).abs().max() / exact[1].abs().max()
    assert err_h < 2e-3 and err_w < 2e-3
    assert err_h <= 1.1 * ref_err_h


def test_no_grad_runs_only_the_logits_matmuls():
    """Evaluation pays for no gradient: under no_grad only one matmul per chunk runs (the logits), where
    training runs three (logits, d h, d weight)."""
    h, w, t = problem(100, 8, 64, dtype=torch.float32)
    h.requires_grad_()

    def matmuls(grad: bool) -> int:
        with torch.set_grad_enabled(grad), torch.profiler.profile() as prof:
            loss = linear_cross_entropy(h, w, t, chunk=25)
        assert loss.requires_grad == grad
        return sum(e.count for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm_", "aten::addmm"))

    assert matmuls(False) == 4  # 100 rows in chunks of 25
    assert matmuls(True) == 4 + 4 + 4


def test_buffers_are_reused_and_gradients_never_alias_them():
    """The logits buffer is one tensor across calls (no fresh pages per step), while what each call
    returns is its own: two losses taken before either backward still give their own gradients."""
    release_buffers()
    h1, w, t = problem(64, 8, 40, dtype=torch.float32)
    h2 = torch.randn(64, 8, generator=torch.Generator().manual_seed(9))
    a, b = h1.clone().requires_grad_(), h2.clone().requires_grad_()
    la, lb = linear_cross_entropy(a, w, t, chunk=16), linear_cross_entropy(b, w, t, chunk=16)
    (buf,) = [v for k, v in loss_mod._scratch.tensors.items() if k[0] == "logits"]
    linear_cross_entropy(h1, w, t, chunk=16)
    assert [v for k, v in loss_mod._scratch.tensors.items() if k[0] == "logits"][0] is buf
    (la + 2 * lb).backward()
    torch.testing.assert_close(a.grad, plain(h1, w, t)[1], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(b.grad, plain(h2, w, t, scale=2.0)[1], rtol=1e-5, atol=1e-7)
    release_buffers()
    assert not loss_mod._scratch.tensors


def test_chunk_rule():
    """1024 rows at the seed's vocabulary (200 MB of float32 logits); never below 128."""
    assert chunk_rows(50304) == chunk_rows(50257) == 1024
    assert chunk_rows(10**6) == chunk_rows(10**9) == 128
    assert chunk_rows(100) >= 2**19
