"""Our Muon (nanogpt_lib/optim.py): torch.optim.Muon's update with a chosen Newton-Schulz dtype."""

from __future__ import annotations

import io

import pytest
import torch

from nanogpt_lib.model import GPT, GPTConfig
from nanogpt_lib.optim import Muon, lr_ratio, orthogonalize

needs_torch_muon = pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon is PyTorch >= 2.9")
SHAPES = [(48, 16), (16, 48), (32, 32)]  # tall (iterated as its transpose), wide, square


def params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(0.1 * torch.randn(*s, generator=g)) for s in SHAPES]


def run(opt: torch.optim.Optimizer, ps: list[torch.nn.Parameter], steps: int, seed: int = 1) -> None:
    """``steps`` updates on fixed pseudo-random gradients (the same ones for every optimizer)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()


@needs_torch_muon
@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(nesterov=False, weight_decay=0.1), dict(adjust_lr_fn="match_rms_adamw", momentum=0.9, ns_steps=3)],
)
def test_bf16_newton_schulz_is_bitwise_torch_muon(kwargs):
    """With bf16 Newton-Schulz, ours does torch's arithmetic in torch's order: weights and momentum buffers
    are bitwise equal after several steps (run natively where bf16 is fast; AVX2 emulates it, same bits)."""
    ours_p, ref_p = params(), params()
    ours = Muon(ours_p, lr=0.02, ns_dtype=torch.bfloat16, **kwargs)
    ref = torch.optim.Muon(ref_p, lr=0.02, **kwargs)
    run(ours, ours_p, 4)
    run(ref, ref_p, 4)
    for a, b in zip(ours_p, ref_p):
        assert torch.equal(a, b)
        assert torch.equal(ours.state[a]["momentum_buffer"], ref.state[b]["momentum_buffer"])
    assert ours.state_dict()["param_groups"] == ref.state_dict()["param_groups"]


def through_a_file(state: dict) -> dict:
    """A state dict as a checkpoint holds it: saved, then loaded with weights_only (no pickled objects)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@needs_torch_muon
def test_a_torch_muon_checkpoint_resumes_in_ours_and_back():
    """Checkpoints written before we had our own Muon load into it (same state and group keys), and the
    run goes on exactly as torch's would have (bf16 Newton-Schulz, as torch's)."""
    ref_p, ours_p = params(), params()
    ref = torch.optim.Muon(ref_p, lr=0.02)
    run(ref, ref_p, 3)
    with torch.no_grad():
        for a, b in zip(ours_p, ref_p):
            a.copy_(b)
    ours = Muon(ours_p, lr=0.5, momentum=0.5, ns_dtype=torch.bfloat16)  # the checkpoint's values must win
    ours.load_state_dict(through_a_file(ref.state_dict()))
    assert ours.param_groups[0]["lr"] == 0.02 and ours.param_groups[0]["momentum"] == 0.95
    run(ref, ref_p, 2, seed=7)
    run(ours, ours_p, 2, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(ours_p, ref_p))
    back = torch.optim.Muon(params(), lr=0.02)
    back.load_state_dict(through_a_file(ours.state_dict()))
    assert torch.equal(back.state_dict()["state"][0]["momentum_buffer"], ours.state[ours_p[0]]["momentum_buffer"])


def test_fp32_newton_schulz_keeps_the_singular_vectors_and_brings_singular_values_near_1():
    """G = U S V^T with singular values spread over two decades comes out as about U V^T: the same singular
    vectors (U^T X V is diagonal) and every singular value in the quintic's band around 1. Five steps
    multiply a small normalised singular value by ~3.44^5 = 485, so 1e-2 of the largest (about 4e-3 after
    dividing by the Frobenius norm) still reaches the band; the band itself is what the coefficients are
    tuned for (about 0.7 to 1.2), not exactly 1."""
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(96, 32, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(32, 32, generator=g, dtype=torch.float64))
    s = torch.logspace(0, -2, 32, dtype=torch.float64)
    for m in (u @ torch.diag(s) @ v.T, (u @ torch.diag(s) @ v.T).T):
        x = orthogonalize(m.float(), dtype=torch.float32).double()
        assert x.dtype == torch.float64 and x.shape == m.shape
        core = u.T @ x @ v if x.shape[0] == 96 else v.T @ x @ u
        off = core - torch.diag(torch.diagonal(core))
        assert off.abs().max() < 1e-4  # fp32 rounding over 5 steps of 32-wide matmuls, values ~1
        sv = torch.linalg.svdvals(x)
        assert sv.min() > 0.6 and sv.max() < 1.25


def test_newton_schulz_dtype_is_ours_to_choose():
    """The iteration runs in the dtype asked for, and bf16 agrees with fp32 to bf16's precision: 8
    significant bits (2^-8 relative per rounding), over 5 steps of matmuls with values about 1."""
    m = torch.randn(64, 24, generator=torch.Generator().manual_seed(3))
    x32, x16 = orthogonalize(m, dtype=torch.float32), orthogonalize(m, dtype=torch.bfloat16)
    assert x32.dtype == torch.float32 and x16.dtype == torch.bfloat16
    torch.testing.assert_close(x16.float(), x32, rtol=0, atol=0.05)
    ps = params()
    opt = Muon(ps, lr=0.02)
    assert opt.ns_dtype == torch.float32 and "ns_dtype" not in opt.state_dict()["param_groups"][0]


def test_update_size_rule_and_weight_decay():
    """One step from zero momentum: the update is lr * sqrt(max(1, rows/cols)) * NS(grad), after decoupled
    decay p * (1 - lr * wd); the same arithmetic done here by hand, so equal to float rounding."""
    p = torch.nn.Parameter(torch.randn(48, 16, generator=torch.Generator().manual_seed(5)))
    start = p.detach().clone()
    grad = torch.randn(48, 16, generator=torch.Generator().manual_seed(6))
    p.grad = grad.clone()
    Muon([p], lr=0.1, weight_decay=0.5, momentum=0.9, nesterov=True).step()
    update = orthogonalize(grad.lerp(grad * 0.1, 0.9))  # buffer after one step: 0.1 grad; Nesterov look-ahead
    expected = start * (1 - 0.1 * 0.5) - 0.1 * (48 / 16) ** 0.5 * update
    torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7)
    assert lr_ratio(torch.Size((16, 48)), None) == 1.0
    assert lr_ratio(torch.Size((16, 64)), "match_rms_adamw") == pytest.approx(0.2 * 8)
    with pytest.raises(ValueError, match="adjust_lr_fn"):
        Muon(params(), adjust_lr_fn="bogus")
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(3))])


def test_configure_optimizers_builds_our_muon_without_torch_muon(monkeypatch):
    """The default recipe no longer needs torch.optim.Muon (PyTorch >= 2.9), and the trainer's choice of
    Newton-Schulz dtype reaches the optimizer."""
    monkeypatch.delattr(torch.optim, "Muon", raising=False)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=100, block_size=16))
    _adamw, muon = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu", optimizer="muon", ns_dtype=torch.bfloat16)
    assert isinstance(muon, Muon) and muon.ns_dtype == torch.bfloat16
    assert model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu", optimizer="muon")[1].ns_dtype == torch.float32


def test_muon_weight_decay_reaches_muon_from_the_config():
    """``muon_weight_decay`` (a TrainConfig key, 0 by default) is Muon's decoupled decay through
    ``build_optimizers``; AdamW's groups keep ``weight_decay``. A zero gradient orthogonalises to zero, so one
    step leaves exactly the decay: p * (1 - muon_lr * muon_weight_decay), bitwise."""
    from nanogpt_lib.config import TrainConfig
    from nanogpt_lib.optim import build_optimizers

    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=100, block_size=16))
    assert build_optimizers(model, TrainConfig())[1].param_groups[0]["weight_decay"] == 0.0
    adamw, muon = build_optimizers(model, TrainConfig(muon_lr=0.01, muon_weight_decay=0.5, weight_decay=0.25))
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.25, 0.0]
    p = muon.param_groups[0]["params"][0]
    start = p.detach().clone()
    for q in muon.param_groups[0]["params"]:
        q.grad = torch.zeros_like(q)
    muon.step()
    assert torch.equal(p.detach(), start * (1 - 0.01 * 0.5))
