"""The LM-head loss (nanogpt_lib/loss.py), chunked and tiled, against its plain reference (F.cross_entropy over full
logits), and the in-place softmax helper."""

from __future__ import annotations

import pytest
import torch

from nanogpt_lib import loss as loss_mod
from nanogpt_lib.loss import (
    HeadPlan,
    chunk_rows,
    head_plan,
    linear_cross_entropy,
    reference_cross_entropy,
    release_buffers,
)

from training_helpers import twenty_losses


def problem(n: int, c: int, v: int, seed: int = 0, dtype: torch.dtype = torch.float64, w_scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, c, generator=g, dtype=dtype)
    w = w_scale * torch.randn(v, c, generator=g, dtype=dtype)
    t = torch.randint(0, v, (n,), generator=g)
    return h, w, t


def plain(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor, scale: float = 1.0):
    """Value and both gradients of ``scale * reference_cross_entropy(h, w, t)``: ``F.cross_entropy(h @ w.T, t)``,
    the formula notebook 04 builds."""
    h, w = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    loss = reference_cross_entropy(h, w, t)
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
    ref = reference_cross_entropy(h.double(), w.double(), t, softcap=softcap)
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
    assert next(v for k, v in loss_mod._scratch.tensors.items() if k[0] == "logits") is buf
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


def test_the_reference_is_the_mean_minus_log_softmax_over_the_kept_rows():
    """reference_cross_entropy is the definition the fast paths are tested against, so it is checked by hand:
    -log softmax(capped logits)[target], averaged over the targets that are not -1. Float64, 300-wide
    rows: the two differ only in the order of a few sums, 1e-12 is thousands of ulps on a loss of ~6."""
    h, w, t = problem(40, 8, 300, w_scale=3.0)
    t[::4] = -1
    kept = t != -1
    for cap in (0.0, 5.0):
        z = h @ w.t()
        lp = (cap * torch.tanh(z / cap) if cap else z).log_softmax(dim=1)
        by_hand = -lp[kept.nonzero().squeeze(1), t[kept]].mean()
        assert abs(reference_cross_entropy(h, w, t, softcap=cap).item() - by_hand.item()) < 1e-12
    assert abs(reference_cross_entropy(h, w, t, softcap=5.0) - reference_cross_entropy(h, w, t)) > 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 logits, float32 log-softmax, as autocast's own
        assert reference_cross_entropy(h.float(), w.float(), t).dtype == torch.float32


@pytest.fixture
def fresh_probe():
    """The private-softmax probe's cached answer forgotten before and after the test, which may fake the op."""
    loss_mod._private_softmax_works.cache_clear()
    yield
    loss_mod._private_softmax_works.cache_clear()


def _no_out_overload(*args, **kwargs):
    raise TypeError("_softmax() got an unexpected keyword argument 'out'")  # as if a release dropped it


def _writes_zeros(x, dim, half_to_float, out):
    return out.zero_()  # as a kernel that wrote a row before it had read all of it might


@pytest.mark.parametrize("fake", [None, _no_out_overload, _writes_zeros])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softmax_into_equals_torch_softmax_with_or_without_the_private_op(monkeypatch, fresh_probe, fake, dtype):
    """softmax_into, in place and into another tensor, gives torch.softmax's values bit for bit: with the
    private op (the same kernel, only writing into ``out``) and with the fallback (the same kernel into a
    temporary, then a copy), which it takes when the op is missing or writes wrong values. On this torch the
    private op passes the probe, so training takes the in-place path."""
    if fake is not None:
        monkeypatch.setattr(torch, "_softmax", fake)
    assert loss_mod._private_softmax_works() == (fake is None)
    x = 4 * torch.randn(5, 300, generator=torch.Generator().manual_seed(3), dtype=dtype)
    want = torch.softmax(x, dim=1)
    out = torch.empty_like(x)
    assert loss_mod.softmax_into(out, x) is out and torch.equal(out, want)
    assert loss_mod.softmax_into(x, x) is x and torch.equal(x, want)


def test_the_loss_is_bitwise_the_same_on_the_fallback_softmax(monkeypatch, fresh_probe):
    """Both softmax routes run the same kernel, so the loss and both gradients do not change by one bit when
    the private op is gone (chunked and tiled paths, the chunked one soft-capped too)."""
    h, w, t = problem(40, 8, 50, dtype=torch.float32)
    paths = ({"chunk": 16}, {"chunk": 16, "softcap": 3.0}, {"tiles": (16, 16)})
    fast = [chunked(h, w, t, **path) for path in paths]
    monkeypatch.setattr(torch, "_softmax", _no_out_overload)
    loss_mod._private_softmax_works.cache_clear()  # the fast runs above cached the real op's answer
    assert not loss_mod._private_softmax_works()
    for path, want in zip(paths, fast):
        assert all(torch.equal(a, b) for a, b in zip(chunked(h, w, t, **path), want)), path


# ---- the tiled path (vocabulary tiles, loss.py's _tiled) ------------------------------------------------

TILES = [(300, 2000), (64, 256), (7, 333), (128, 1)]  # one tile; even; uneven both ways; one-column tiles


@pytest.mark.parametrize("tiles", TILES)
def test_tiled_float32_equals_the_reference(tiles):
    """float32 against a float64 reference, every seventh target ignored: the tiles' log-sum-exps combine
    (lse_t = z_j - log p_j, then a log-sum-exp over tiles) and the gradients sum over tiles, so the error is
    float32 rounding of 128-term dot products and of 2,000-term sums, a few 1e-7 relative (as the chunked
    path's, tested above): 1e-5 of the loss and of the largest gradient entry leaves room, 1e-3 would not
    pass a wrong tile boundary or a lost target."""
    h, w, t = problem(300, 128, 2000, dtype=torch.float32, w_scale=0.05)
    t[::7] = -1
    ref = plain(h.double(), w.double(), t, scale=3.0)
    got = chunked(h, w, t, scale=3.0, tiles=tiles)
    assert got[0].dtype == got[1].dtype == got[2].dtype == torch.float32
    assert abs(got[0].item() - ref[0].item()) < 1e-5
    for a, b in zip(got[1:], ref[1:]):
        assert (a.double() - b).abs().max() < 1e-5 * b.abs().max()
    assert got[1][::7].abs().max() == 0  # an ignored position gets no gradient
    with torch.no_grad():
        assert abs(linear_cross_entropy(h, w, t, tiles=tiles).item() - ref[0].item()) < 1e-5


@pytest.mark.parametrize("tiles", TILES[1:3])
def test_tiled_bf16_is_as_close_as_the_chunked_path(tiles):
    """Under bf16 autocast both paths round the matmuls' inputs and outputs to bf16 (2^-8 relative); the tiled
    path also stores each tile's probabilities in bf16 and reads its log-sum-exp off one of them (2^-8
    relative on p_j: 4e-3 absolute on lse_t at most). Bounds as for the chunked path (loss within 1e-2,
    gradients within 3% of their largest entry), and no further from the float64 truth than the chunked path
    (plus 50%): the same class of error, not a new one. Confident rows (p_target near 1) are included: there
    the target's entry p - 1 is small and must not be lost to bf16's rounding of p near 1."""
    h, w, t = problem(300, 32, 500, dtype=torch.float32, w_scale=0.1)
    h[:100] = 30 * w[t[:100]] / w[t[:100]].norm(dim=1, keepdim=True)  # rows 0-99: p_target about 0.998
    exact = plain(h.double(), w.double(), t)
    assert exact[1][:100].abs().max() < 0.1 * exact[1].abs().max()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = chunked(h, w, t, tiles=tiles)
        old = chunked(h, w, t, chunk=64)
    assert got[0].dtype == got[1].dtype == got[2].dtype == torch.float32
    assert abs(got[0].item() - exact[0].item()) < 1e-2
    for a, b, c in zip(got[1:], old[1:], exact[1:]):
        err, old_err = (a.double() - c).abs().max(), (b.double() - c).abs().max()
        assert err < 0.03 * c.abs().max() and err <= 1.5 * old_err
    # the confident rows alone: their logits' bf16 rounding (0.06 at 17) is shared by both paths
    err, old_err = ((x[1][:100].double() - exact[1][:100]).abs().max() for x in (got, old))
    assert err <= 1.5 * old_err + 1e-3 * exact[1][:100].abs().max()


def test_tiled_hopeless_prediction_has_its_true_loss():
    """A target 200 nats below the best logit in a tile whose first column (the one lse_t is read from) is
    that target too: p there underflows to 0, and the tile's log-sum-exp is recomputed, not inf or NaN."""
    h, w, t = problem(8, 4, 50, dtype=torch.float32)
    h[:, 0], w[:, 0] = 1.0, 0.0
    w[0, 0] = -200.0
    t[:5] = 0
    ref = reference_cross_entropy(h.double(), w.double(), t)
    got = chunked(h, w, t, tiles=(3, 10))
    assert ref.item() > 70 and abs(got[0].item() - ref.item()) < 1e-4 * ref.item()
    assert all(torch.isfinite(g).all() for g in got[1:])


def test_tiled_no_grad_runs_only_the_logits_matmuls():
    """Evaluation: one matmul per tile; training: three per tile (logits, d h, d weight), as the chunked path."""
    h, w, t = problem(100, 8, 64, dtype=torch.float32)
    h.requires_grad_()

    def matmuls(grad: bool) -> int:
        with torch.set_grad_enabled(grad), torch.profiler.profile() as prof:
            linear_cross_entropy(h, w, t, tiles=(50, 32))
        return sum(e.count for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm_", "aten::addmm"))

    assert matmuls(False) == 4  # 2 x 2 tiles
    assert matmuls(True) == 4 * 3


def test_tiled_two_losses_before_backward_keep_their_own_gradients():
    """The tiles' store is reused by the next call; what a call returns is its own."""
    h1, w, t = problem(64, 8, 40, dtype=torch.float32)
    h2 = torch.randn(64, 8, generator=torch.Generator().manual_seed(9))
    a, b = h1.clone().requires_grad_(), h2.clone().requires_grad_()
    la, lb = linear_cross_entropy(a, w, t, tiles=(16, 16)), linear_cross_entropy(b, w, t, tiles=(16, 16))
    (la + 2 * lb).backward()
    torch.testing.assert_close(a.grad, plain(h1, w, t)[1], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(b.grad, plain(h2, w, t, scale=2.0)[1], rtol=1e-5, atol=1e-7)


def test_the_default_path_follows_the_plan(monkeypatch):
    """No chunk and no tiles: the path head_plan gives this CPU class and dtype (TILES), and only there; an
    explicit chunk (notebook 04's chunk=128) always takes the chunked path; tiles refuse what they lack."""
    from nanogpt_lib.devices import cpu_class

    monkeypatch.setattr(loss_mod, "TILES", {(cpu_class(), torch.float32): (32, 16)})
    cpu = torch.device("cpu")
    assert head_plan(cpu, torch.float32, 50304) == HeadPlan(True, 32, 16)
    assert head_plan(cpu, torch.float32, 50304, softcap=30.0) == HeadPlan(False, 1024)
    assert head_plan(cpu, torch.bfloat16, 50304) == HeadPlan(False, 1024)
    assert head_plan(cpu, torch.float16, 50304) == HeadPlan(False, 1024)
    seen = []
    monkeypatch.setattr(loss_mod, "_tiled", lambda *a: seen.append("tiled") or _real_tiled(*a))
    monkeypatch.setattr(loss_mod, "_chunked", lambda *a: seen.append("chunked") or _real_chunked(*a))
    h, w, t = problem(40, 8, 50, dtype=torch.float32)
    linear_cross_entropy(h, w, t)
    linear_cross_entropy(h, w, t, chunk=128)
    assert seen == ["tiled", "chunked"]
    with pytest.raises(ValueError, match="tiles"):
        linear_cross_entropy(h, w, t, tiles=(8, 8), softcap=10.0)


_real_tiled, _real_chunked = loss_mod._tiled, loss_mod._chunked


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_twenty_training_steps_give_the_same_losses_on_both_paths(precision):
    """A small GPT (vocabulary 2,000, 2 layers) trained 20 AdamW steps from the same weights on the same
    batches (text drawn from 200 of the tokens, so it learns), once with the chunked path and once
    with the tiled one. In float32 the two compute the same function with sums in another order (1e-7
    relative per step): the losses agree to 1e-4 after 20 steps (observed: equal to 7 digits). In bf16 both
    round the head's logits to bf16 (2^-8 relative), in different places (the tiled path keeps its
    probabilities in bf16, the chunked one d(logits)): 5e-3 after 20 steps (observed 2e-4)."""
    from nanogpt_lib.model import GPTConfig

    dtype = getattr(torch, precision)
    losses = []
    for path in ({"chunk": 256}, {"tiles": (64, 300)}):

        def loss_of(model, x, y, path=path):
            h = model.hidden(x)
            return linear_cross_entropy(h.view(-1, 64), model.lm_head.weight, y.view(-1), **path)

        losses.append(twenty_losses(GPTConfig(vocab_size=2000, n_layer=2, n_embd=64, block_size=16), loss_of, dtype))
    (a, b), tol = losses, 1e-4 if dtype == torch.float32 else 5e-3
    print(f"{precision}: chunked {a[0]:.6f} -> {a[-1]:.6f}, tiled {b[0]:.6f} -> {b[-1]:.6f}")
    assert a[0] == pytest.approx(b[0], abs=tol) and a[-1] == pytest.approx(b[-1], abs=tol)
    assert a[-1] < a[0] - 1.0  # it trained: the comparison is not between two stuck runs
