"""Model and optimizer variants (RoPE, ReLU^2, QK-norm, untied head, logit soft-cap, Muon, WSD schedule)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from nanogpt_lib.checkpoint import export_weights, load_weights
from nanogpt_lib.config import ConfigError, load_config
from nanogpt_lib.loss import linear_cross_entropy, reference_cross_entropy
from nanogpt_lib.model import GPT, GPTConfig, Rotary
from nanogpt_lib.optim import Muon
from nanogpt_lib.sample import generate
from nanogpt_lib.train import lr_at

from tiny import SMALL_VOCAB_MODEL

VARIANTS = {
    "rope": dict(pos="rope"),
    "relu2": dict(mlp="relu2"),
    "qk_norm": dict(qk_norm=True),
    "untied": dict(tie_head=False),
    "softcap": dict(logit_softcap=15.0),
    "all": dict(pos="rope", mlp="relu2", qk_norm=True, tie_head=False, logit_softcap=15.0),
}


def overfit(model: GPT, optimizer: str = "adamw", steps: int = 60) -> tuple[float, float]:
    """First and last loss of ``steps`` steps on one fixed batch."""
    x = torch.randint(0, 100, (4, 16), generator=torch.Generator().manual_seed(0))
    y = torch.roll(x, -1, dims=1)
    opts = model.configure_optimizers(0.0, 3e-3, (0.9, 0.95), "cpu", optimizer=optimizer, muon_lr=0.02)
    losses = []
    for _ in range(steps):
        _, loss = model(x, y)
        losses.append(loss.item())
        loss.backward()
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
    return losses[0], losses[-1]


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_has_the_right_shapes_and_overfits_a_batch(name):
    torch.manual_seed(0)
    m = GPT(replace(SMALL_VOCAB_MODEL, **VARIANTS[name]))
    logits, _ = m(torch.randint(0, 100, (3, 10)))
    assert logits.shape == (3, 1, 100)
    logits, loss = m(torch.randint(0, 100, (3, 10)), torch.randint(0, 100, (3, 10)), all_logits=True)
    assert logits.shape == (3, 10, 100) and math.isfinite(loss.item())
    first, last = overfit(m)
    assert last < 0.3 * first, (first, last)


@pytest.mark.parametrize("name", ["baseline", "all"])
def test_muon_overfits_a_batch_and_owns_only_the_blocks_matrices(name):
    torch.manual_seed(0)
    m = GPT(replace(SMALL_VOCAB_MODEL, **VARIANTS.get(name, {})))
    adamw, muon = m.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu", optimizer="muon", muon_lr=0.05)
    assert isinstance(muon, Muon) and isinstance(adamw, torch.optim.AdamW)
    names = {id(p): n for n, p in m.named_parameters()}
    in_muon = {names[id(p)] for g in muon.param_groups for p in g["params"]}
    assert in_muon == {n for n, p in m.named_parameters() if p.dim() == 2 and n.startswith("transformer.h.")}
    in_adamw = {names[id(p)] for g in adamw.param_groups for p in g["params"]}
    assert not in_muon & in_adamw and in_muon | in_adamw == set(names.values())
    assert "transformer.wte.weight" in in_adamw and muon.param_groups[0]["base_lr"] == 0.05
    first, last = overfit(m, optimizer="muon")
    assert last < 0.3 * first, (first, last)


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    rot = Rotary(16)
    q, k = torch.randn(2, 3, 10, 16), torch.randn(2, 3, 10, 16)
    scores = rot(q) @ rot(k).transpose(-2, -1)
    for shift in (1, 7, 100):
        shifted = rot(q, shift) @ rot(k, shift).transpose(-2, -1)
        torch.testing.assert_close(shifted, scores, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(rot(q, 7), rot(q))  # the rotation itself does move the vectors
    torch.testing.assert_close(rot(q).norm(dim=-1), q.norm(dim=-1))  # a rotation keeps lengths


def test_rope_model_has_no_position_table_and_its_kv_cache_matches_recompute():
    torch.manual_seed(0)
    m = GPT(replace(SMALL_VOCAB_MODEL, pos="rope", qk_norm=True)).eval()
    assert "wpe" not in m.transformer
    base = GPT(SMALL_VOCAB_MODEL)  # GPT-2's layout: a learned position table, 16 x 32 more
    assert m.num_params(non_embedding=False) == base.num_params(non_embedding=False) - 16 * 32 + 2 * 2 * 16
    x = torch.randint(0, 100, (1, 5))
    cached = generate(m, x, 40, temperature=0, use_cache=True)  # past the block: slides and re-fills
    assert torch.equal(cached, generate(m, x, 40, temperature=0, use_cache=False))
    m.crop_block_size(8)  # nothing to crop, the context just shrinks
    assert m.config.block_size == 8


def test_untied_head_starts_uniform_and_survives_export(tmp_path):
    torch.manual_seed(0)
    m = GPT(replace(SMALL_VOCAB_MODEL, tie_head=False))
    assert m.lm_head.weight is not m.transformer.wte.weight
    _, loss = m(torch.randint(0, 100, (2, 8)), torch.randint(0, 100, (2, 8)))
    assert loss.item() == pytest.approx(math.log(100), abs=1e-6)  # zero head: every token equally likely
    assert m.num_params() == m.num_params(non_embedding=False) - 2 * 100 * 32 // 2 - 16 * 32
    with torch.no_grad():
        m.lm_head.weight.normal_()
    export_weights(m, m.config, tmp_path / "w")
    loaded, _ = load_weights(tmp_path / "w")
    assert torch.equal(loaded.lm_head.weight, m.lm_head.weight)
    assert not torch.equal(loaded.lm_head.weight, loaded.transformer.wte.weight)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_softcapped_chunked_loss_matches_the_plain_formula(dtype):
    torch.manual_seed(0)
    h = (3 * torch.randn(50, 16)).requires_grad_()
    w = (3 * torch.randn(300, 16)).requires_grad_()
    t = torch.randint(0, 300, (50,))
    t[3] = -1
    cap = 5.0
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
        loss = linear_cross_entropy(h, w, t, chunk=16, softcap=cap)
    loss.backward()
    h2, w2 = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    ref = reference_cross_entropy(h2, w2, t, softcap=cap)
    ref.backward()
    tol = dict(atol=1e-5, rtol=1e-5) if dtype is None else dict(atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(loss, ref, **tol)
    torch.testing.assert_close(h.grad, h2.grad, **tol)
    torch.testing.assert_close(w.grad, w2.grad, **tol)
    uncapped = reference_cross_entropy(h2, w2, t)
    assert abs(uncapped.item() - ref.item()) > 0.1  # the cap does change the loss at these logit sizes


def test_softcap_bounds_sampling_logits():
    torch.manual_seed(0)
    m = GPT(replace(SMALL_VOCAB_MODEL, logit_softcap=2.0))
    with torch.no_grad():
        m.lm_head.weight.mul_(1000)
    logits, _ = m(torch.randint(0, 100, (1, 4)))
    assert logits.abs().max() <= 2.0 and logits.abs().max() > 1.9


def test_wsd_schedule_is_flat_then_decays_linearly():
    c = load_config(
        None, ["max_steps=100", "warmup_steps=10", "lr=1.0", "min_lr=0.1", "schedule=wsd", "decay_frac=0.2"]
    )
    assert lr_at(0, c) == pytest.approx(0.1) and lr_at(9, c) == pytest.approx(1.0)
    assert lr_at(50, c) == lr_at(79, c) == pytest.approx(1.0)
    assert lr_at(90, c) == pytest.approx(0.55) and lr_at(100, c) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "bad",
    [
        "model.pos=alibi",
        "model.mlp=swiglu",
        "model.logit_softcap=-1",
        "optimizer=sgd",
        "schedule=step",
        "decay_frac=0",
        "muon_lr=0",
    ],
)
def test_bad_variant_settings_are_config_errors(bad):
    with pytest.raises(ConfigError, match=bad.split("=")[0].removeprefix("model.")):
        load_config(None, [bad])


def test_rope_needs_an_even_head_size():
    with pytest.raises(ValueError, match="even"):
        GPTConfig(n_embd=30, n_head=2, pos="rope")
