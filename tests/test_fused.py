"""fused.py's hand-written backward passes against autograd on the plain formulas they replace."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from nanogpt_lib import fused


def plain_rotate(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def plain_attention(q, k, v):
    T = q.size(-2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return scores.softmax(dim=-1) @ v


def angles(x, t0=3):
    """cos and sin of RoPE's angles for x's positions t0, t0 + 1, ..., in x's dtype (as Rotary hands them)."""
    T, d = x.shape[-2:]
    pos = torch.arange(t0, t0 + T, dtype=torch.float64)
    a = torch.outer(pos, 1.0 / 10000.0 ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    return a.cos().to(x.dtype), a.sin().to(x.dtype)


CASES = {
    "relu_squared": (lambda x: fused.relu_squared(x), lambda x: F.relu(x).square(), [(3, 5, 16)]),
    "rotate": (lambda x: fused.rotate(x, *angles(x)), lambda x: plain_rotate(x, *angles(x)), [(2, 3, 7, 8)]),
    "causal_attention": (fused.causal_attention, plain_attention, [(2, 3, 9, 8)] * 3),
    "rms_norm": (fused.rms_norm, lambda x, w: F.rms_norm(x, x.shape[-1:], w), [(2, 3, 5, 8), (8,)]),
}


@pytest.mark.parametrize("name", CASES)
def test_gradients_equal_autograd_of_the_formula_in_float64(name):
    """In float64 both sides are exact to rounding (1e-12 of values near 1; observed 1e-15), and gradcheck
    checks the hand-written backward against finite differences too."""
    ours, plain, shapes = CASES[name]
    torch.manual_seed(0)
    xs = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    got, want = ours(*xs), plain(*xs)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    g = torch.randn_like(want)
    got_grads = torch.autograd.grad(got, xs, g)
    want_grads = torch.autograd.grad(want, xs, g)
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(ours, xs)


@pytest.mark.parametrize("name", CASES)
def test_bf16_is_within_its_rounding_of_float64(name):
    """In bf16 each output and gradient is a short sum of products of values of size ~1, each rounded to bf16
    (relative 2^-8): errors stay within 4 * 2^-8 of the largest entry, and within that of what autograd on
    the plain formula in bf16 gives."""
    ours, plain, shapes = CASES[name]
    torch.manual_seed(1)
    xs = [torch.randn(s, dtype=torch.float64) for s in shapes]
    g = torch.randn_like(plain(*xs))
    results = {}
    for label, f, dtype in (("ours", ours, torch.bfloat16), ("plain", plain, torch.bfloat16), ("exact", plain, None)):
        ins = [x.to(dtype or torch.float64).requires_grad_() for x in xs]
        y = f(*ins)
        grads = torch.autograd.grad(y, ins, g.to(y.dtype))
        results[label] = [t.double() for t in (y, *grads)]
    for ours_t, plain_t, exact in zip(results["ours"], results["plain"], results["exact"], strict=True):
        bound = 4 * 2.0**-8 * exact.abs().max().item()
        assert (ours_t - exact).abs().max().item() < bound
        assert (ours_t - plain_t).abs().max().item() < bound


def test_causal_attention_query_sees_only_its_past():
    """Changing a later key or value leaves every earlier query's output unchanged (bitwise)."""
    torch.manual_seed(2)
    q, k, v = (torch.randn(1, 2, 6, 4) for _ in range(3))
    y = fused.causal_attention(q, k, v)
    k2, v2 = k.clone(), v.clone()
    k2[..., 4:, :] += 1.0
    v2[..., 4:, :] -= 1.0
    y2 = fused.causal_attention(q, k2, v2)
    assert torch.equal(y[..., :4, :], y2[..., :4, :])
    assert not torch.equal(y[..., 4:, :], y2[..., 4:, :])


def test_softmax_backward_fallback_is_the_formula(monkeypatch):
    """Where a torch lacks the private fused kernel, the three-pass formula gives the same gradient."""
    torch.manual_seed(3)
    p, dp = torch.randn(4, 5, 5, dtype=torch.float64).softmax(-1), torch.randn(4, 5, 5, dtype=torch.float64)
    fast = fused._softmax_backward(dp, p)
    monkeypatch.delattr(torch, "_softmax_backward_data")
    torch.testing.assert_close(fused._softmax_backward(dp, p), fast, rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotate_is_bitwise_the_plain_formula(dtype):
    """The rotation's forward rounds as cat([x1 cos - x2 sin, x1 sin + x2 cos]) does, so Rotary's output is
    bitwise that formula's (the course checks a learner's RoPE against Rotary with torch.equal)."""
    torch.manual_seed(4)
    x = torch.randn(2, 3, 37, 16, dtype=dtype)
    cos, sin = angles(x, t0=11)
    assert torch.equal(fused.rotate(x, cos, sin), plain_rotate(x, cos, sin))


def test_compiled_attention_traces_without_warnings_and_equals_eager():
    """Under torch.compile (dynamo's eager backend: the tracing, not inductor's code generation) the causal
    bias is made in the graph: tracing the cached function printed a warning about the cache on every
    `compile = true` run. Same ops in the same order, so the output is bitwise the eager one."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8, requires_grad=True) for _ in range(3))
    torch._dynamo.reset()
    compiled = torch.compile(fused.causal_attention, backend="eager", fullgraph=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = compiled(q, k, v)
    assert not [w for w in caught if "lru_cache" in str(w.message)], [str(w.message)[:200] for w in caught]
    assert torch.equal(y, fused.causal_attention(q, k, v))
