"""Chapter 04's exercise checks: a right answer passes, typical wrong ones fail naming what is off without the
number that would be right, placeholders are "not answered". The right answers mirror
notebooks/solutions/04_gpt_model_solutions.ipynb."""

from __future__ import annotations

import re

import torch
from torch import nn

from nanogpt_lib import exercises as ex
from nanogpt_lib.exercises import ch04, verdict
from nanogpt_lib.model import GPT, GPTConfig

from exercise_helpers import todo, wrong


class Todo(nn.Module):
    def __init__(self, ndim):
        super().__init__()
        raise NotImplementedError  # your code here


def test_chapter_04_has_four_exercises_and_placeholders_are_unanswered():
    assert [e.id for e in ex.exercises("04")] == ["04.1", "04.2", "04.3", "04.4"]
    for e in ex.exercises(4):
        assert verdict(e.id, todo)[0] is None and verdict(e.id, None)[0] is None
    assert verdict("04.1", Todo)[0] is None


# ---- 04.1 LayerNorm without bias -------------------------------------------------------------------------------

class LayerNormNoBias(nn.Module):
    def __init__(self, ndim, eps=1e-5, unbiased=False, naive=False, eps_in_sqrt=True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.eps, self.unbiased, self.naive, self.eps_in_sqrt = eps, unbiased, naive, eps_in_sqrt

    def forward(self, x):
        mu = x.mean(-1, keepdim=True)
        if self.naive:
            var = (x * x).mean(-1, keepdim=True) - mu * mu
        else:
            var = x.var(-1, keepdim=True, unbiased=self.unbiased)
        if self.eps_in_sqrt:
            return self.weight * (x - mu) / torch.sqrt(var + self.eps)
        return self.weight * (x - mu) / (torch.sqrt(var) + self.eps)


def variant(**kwargs):
    return lambda ndim: LayerNormNoBias(ndim, **kwargs)


def test_layer_norm_right():
    ok, remark = verdict("04.1", LayerNormNoBias)
    assert ok is True and "bias-free GPT" in remark


def test_layer_norm_wrong_answers_name_what_is_off():
    wrong("04.1", lambda ndim: nn.LayerNorm(ndim), "bias parameter")
    wrong("04.1", variant(unbiased=True), "divides by C - 1")
    wrong("04.1", variant(naive=True), "rows of mean 100", "subtract the mean before squaring")
    wrong("04.1", variant(eps=0.0), "eps is missing")
    wrong("04.1", variant(eps_in_sqrt=False), "inside the square root")

    class NoGain(LayerNormNoBias):
        def __init__(self, ndim):
            super().__init__(ndim)
            del self.weight
            self.register_buffer("weight", torch.ones(ndim))

    wrong("04.1", NoGain, "parameters are none")

    class Detached(LayerNormNoBias):
        def forward(self, x):
            return super().forward(x).detach()

    wrong("04.1", Detached, "got no gradient")

    class FirstDim(LayerNormNoBias):
        def forward(self, x):
            mu = x.mean(0, keepdim=True)
            return self.weight * (x - mu) / torch.sqrt(x.var(0, keepdim=True, unbiased=False) + 1e-5)

    wrong("04.1", FirstDim, "normalise over the last dimension")


def test_layer_norm_without_eps_gives_nan_on_a_constant_row():
    class NoEps(LayerNormNoBias):
        def forward(self, x):
            if (x.var(-1) == 0).any():
                return super().forward(x) * float("nan")
            return super().forward(x)

    wrong("04.1", NoEps, "constant rows", "NaN or inf")


# ---- 04.2 parameter count --------------------------------------------------------------------------------------

def count_params(c, forget=None):
    C, V, L = c.n_embd, c.vocab_size, c.n_layer
    b = 1 if c.bias else 0
    ln = C + b * C
    attn = 3 * C * C + b * 3 * C + C * C + b * C
    mlp = 4 * C * C + b * 4 * C + 4 * C * C + b * C
    qk = 2 * (C // c.n_head) if c.qk_norm else 0
    n = V * C + L * (2 * ln + attn + mlp + qk) + ln
    if c.pos == "learned" and forget != "wpe":
        n += c.block_size * C
    if not c.tie_head and forget != "head":
        n += V * C
    return n


def test_count_params_right():
    ok, remark = verdict("04.2", count_params)
    recipe = GPT(GPTConfig(pos="rope", mlp="relu2")).num_params(non_embedding=False)
    assert ok is True and f"{recipe:,}" in remark


def test_count_params_wrong_answers_name_the_switch():
    truths = {ch04._count(c) for c, _ in ch04._PARAM_CASES}
    wrong("04.2", lambda c: count_params(c, forget="wpe"), "count_params(GPTConfig()) is too low", hidden=truths)
    wrong("04.2", lambda c: count_params(c, forget="head"), "GPTConfig(tie_head=False)) is too low", "untied",
          hidden=truths)
    wrong("04.2", lambda c: count_params(c) + (c.vocab_size * c.n_embd if c.tie_head else 0),
          "GPTConfig()) is too high", "tied head adds nothing", hidden=truths)
    wrong("04.2", lambda c: count_params(c) - (c.qk_norm and 2 * (c.n_embd // c.n_head) * c.n_layer),
          "GPTConfig(qk_norm=True)) is too low", hidden=truths)
    wrong("04.2", lambda c: count_params(c) + (c.block_size * c.n_embd if c.pos == "rope" else 0),
          "GPTConfig(pos='rope')) is too high", "no position table", hidden=truths)
    wrong("04.2", lambda c: count_params(c) + 0.5, "not a whole number")
    wrong("04.2", lambda c: str(count_params(c)), "not a number")


# ---- 04.3 AdamW's state ----------------------------------------------------------------------------------------

def adamw_state_bytes(c, step=True, tied_twice=False, weights=False, floats=False):
    params = list(GPT(c).parameters()) if isinstance(c, GPTConfig) else c
    N, P = sum(p.numel() for p in params), len(params)
    numbers = 2 * N + (P if step else 0) + (c.vocab_size * c.n_embd * 2 if tied_twice and c.tie_head else 0) \
        + (N if weights else 0)
    return numbers if floats else 4 * numbers


def test_adamw_bytes_right():
    torch.manual_seed(5)
    rng = torch.get_rng_state()
    ok, remark = verdict("04.3", adamw_state_bytes)
    assert verdict("04.1", LayerNormNoBias)[0] is True
    assert torch.equal(torch.get_rng_state(), rng)  # the checks seed their own draws, not the notebook's
    assert ok is True and "MB of AdamW state" in remark and "2.00x" in remark


def test_adamw_bytes_wrong_answers_say_why_without_the_number():
    truths = {ch04.state_bytes(ch04.adamw_state_after_one_step(c)[0]) for c in ch04._ADAM_CASES[:1]}
    wrong("04.3", lambda c: adamw_state_bytes(c, step=False), "a few bytes per parameter tensor", hidden=truths)
    wrong("04.3", lambda c: adamw_state_bytes(c, weights=True), "counts the weights too", hidden=truths)
    wrong("04.3", lambda c: adamw_state_bytes(c, tied_twice=True), "one tensor", hidden=truths)
    wrong("04.3", lambda c: adamw_state_bytes(c, floats=True), "bytes (4 per float32), not numbers", hidden=truths)
    wrong("04.3", lambda c: adamw_state_bytes(c) * 2, "is too high", hidden=truths)


# ---- 04.4 memory of the loss -----------------------------------------------------------------------------------

def loss_memory(n_tokens, vocab_size, chunk, rows=None, tensors=3, unit=4):
    full = tensors * n_tokens * vocab_size * unit  # log-softmax kept for backward, its incoming and outgoing gradients
    chunked = (min(chunk, n_tokens) if rows is None else rows) * vocab_size * unit  # one chunk's buffer
    return full, chunked


def test_loss_memory_right_and_measured():
    ok, remark = verdict("04.4", loss_memory)
    assert ok is True and "2.47 GB for the full path" in remark and "206 MB chunked" in remark, remark
    # the measurement itself: the full path grows with the tokens, the chunked one stops at a chunk
    assert ch04.loss_peaks(500, 1000, 128) == (3 * 500 * 1000 * 4, 128 * 1000 * 4)
    assert ch04.loss_peaks(100, 1000, 128) == (3 * 100 * 1000 * 4, 100 * 1000 * 4)


def test_loss_memory_wrong_answers_name_the_mistake():
    truths = {b for N, V, chunk in ((1000, 4096, 128),) for b in ch04.loss_peaks(N, V, chunk)}
    wrong("04.4", lambda n, v, c: loss_memory(n, v, c, tensors=1), "more than its logits", hidden=truths)
    wrong("04.4", lambda n, v, c: loss_memory(n, v, c, unit=1), "numbers, not bytes", hidden=truths)
    wrong("04.4", lambda n, v, c: loss_memory(n, v, c, tensors=2), "too low", hidden=truths)
    wrong("04.4", lambda n, v, c: loss_memory(n, v, c, rows=c), "loss_memory(50, 2048, 128)",
          "fewer tokens (50) than a chunk (128)")
    wrong("04.4", lambda n, v, c: loss_memory(n, v, c, rows=n), "only one chunk's", hidden=truths)
    wrong("04.4", lambda n, v, c: loss_memory(n, v, c)[0], "not a pair")


def test_the_byte_counter_follows_frees():
    # two 4 MB tensors alive together, then one freed before a third: the peak is 8 MB, not 12
    def fn():
        a = torch.ones(1024, 1024)
        b = a * 2
        del a
        c = b + 1
        return c

    assert ch04.peak_bytes(fn, lambda t: True) == 2 * 4 * 1024 * 1024
    assert ch04.peak_bytes(fn, lambda t: False) == 0
