"""Chapter 04's exercise checks: a right answer passes, typical wrong ones fail naming what is off without the
number that would be right, placeholders are "not answered". The right answers mirror
notebooks/solutions/04_gpt_model_solutions.ipynb."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from nanogpt_lib.course import exercises as ex
from nanogpt_lib.course.exercises import ch04, verdict
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


class CenteredRMSNorm(nn.Module):  # LayerNorm is RMSNorm of the centred input
    def __init__(self, ndim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))

    def forward(self, x):
        return F.rms_norm(x - x.mean(-1, keepdim=True), (x.size(-1),), self.weight, eps=1e-5)


class VarMean(nn.Module):  # torch.var_mean and rsqrt
    def __init__(self, ndim):
        super().__init__()
        self.weight = nn.Parameter(torch.full((ndim,), 1.0))

    def forward(self, x):
        var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
        return (x - mean) * torch.rsqrt(var + 1e-5) * self.weight


def test_layer_norm_alternatives_and_the_library_is_off():
    assert verdict("04.1", CenteredRMSNorm)[0] is True
    assert verdict("04.1", VarMean)[0] is True

    class Inherits(nn.LayerNorm):  # the library's module under another name
        def __init__(self, ndim):
            super().__init__(ndim, bias=False)

    class Functional(LayerNormNoBias):
        def forward(self, x):
            return F.layer_norm(x, (x.size(-1),), self.weight)

    wrong("04.1", Inherits, "switches off", "nn.LayerNorm")
    wrong("04.1", Functional, "switches off", "layer_norm")


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
    recipe = GPT(GPTConfig.recipe()).num_params(non_embedding=False)
    assert ok is True and f"{recipe:,}" in remark


def test_count_params_alternatives():
    def by_shapes(c):  # the shapes of each piece, multiplied out
        C, b = c.n_embd, c.bias
        linear = lambda i, o: i * o + (o if b else 0)  # noqa: E731
        norm = C * (2 if b else 1)
        block = 2 * norm + linear(C, 3 * C) + linear(C, C) + linear(C, 4 * C) + linear(4 * C, C)
        block += 2 * (C // c.n_head) if c.qk_norm else 0
        tables = c.vocab_size * C + (c.block_size * C if c.pos == "learned" else 0)
        return tables + c.n_layer * block + norm + (0 if c.tie_head else c.vocab_size * C)

    def float_sum(c):  # a float, but a whole number
        return float(count_params(c))

    assert verdict("04.2", by_shapes)[0] is True
    assert verdict("04.2", float_sum)[0] is True


def test_count_params_wrong_answers_name_the_switch():
    truths = {ch04._count(c) for c, _ in ch04._PARAM_CASES}
    wrong("04.2", lambda c: count_params(c, forget="wpe"), "count_params(GPTConfig()) is not", "wpe", hidden=truths)
    wrong(
        "04.2", lambda c: count_params(c, forget="head"), "GPTConfig(tie_head=False)) is not", "untied", hidden=truths
    )
    wrong(
        "04.2",
        lambda c: count_params(c) + (c.vocab_size * c.n_embd if c.tie_head else 0),
        "GPTConfig()) is not",
        "tied head adds nothing",
        hidden=truths,
    )
    wrong(
        "04.2",
        lambda c: count_params(c) - (c.qk_norm and 2 * (c.n_embd // c.n_head) * c.n_layer),
        "GPTConfig(qk_norm=True)) is not",
        hidden=truths,
    )
    wrong(
        "04.2",
        lambda c: count_params(c) + (c.block_size * c.n_embd if c.pos == "rope" else 0),
        "GPTConfig(pos='rope')) is not",
        "no position table",
        hidden=truths,
    )
    wrong("04.2", lambda c: count_params(c) + 0.5, "not a whole number")
    wrong("04.2", lambda c: str(count_params(c)), "not a number")
    for why in (wrong("04.2", lambda c: count_params(c) + 1), wrong("04.2", lambda c: count_params(c) - 1)):
        assert "too" not in why and "high" not in why and "low" not in why  # no direction to bisect on


# ---- 04.3 Adafactor's factored second moment -------------------------------------------------------------------


def adafactor_bytes(c, factored=True, steps=False, unit=4, state_dict=False):
    with torch.device("meta"):  # shapes only
        model = GPT(c)
    tensors = list(model.state_dict().values()) if state_dict else list(model.parameters())
    numbers = sum(
        (p.shape[0] + p.shape[1] if factored and p.dim() == 2 else p.numel()) + (1 if steps else 0) for p in tensors
    )
    return unit * numbers


def test_adafactor_bytes_right():
    torch.manual_seed(5)
    rng = torch.get_rng_state()
    ok, remark = verdict("04.3", adafactor_bytes)
    assert verdict("04.1", LayerNormNoBias)[0] is True
    assert torch.equal(torch.get_rng_state(), rng)  # the checks seed their own draws, not the notebook's
    assert ok is True and "kB against" in remark


def test_adafactor_bytes_alternatives():
    def from_config(c):  # no model at all: the matrices' sides and the vectors' lengths from the config
        C, V, b, H = c.n_embd, c.vocab_size, c.bias, c.n_head
        sides = [V + C] + ([c.block_size + C] if c.pos == "learned" else []) + ([] if c.tie_head else [V + C])
        vectors = C * (2 if b else 1)  # ln_f
        for _ in range(c.n_layer):
            sides += [3 * C + C, C + C, 4 * C + C, C + 4 * C]
            vectors += 2 * C * (2 if b else 1) + (3 * C + C + 4 * C + C if b else 0)
            vectors += 2 * (C // H) if c.qk_norm else 0
        return 4 * (sum(sides) + vectors)

    def named(c):  # named parameters, with numpy for the shapes
        import numpy as np

        with torch.device("meta"):
            shapes = [tuple(p.shape) for _, p in GPT(c).named_parameters()]
        return int(sum(4 * (sum(s) if len(s) == 2 else np.prod(s)) for s in shapes))

    assert verdict("04.3", from_config)[0] is True
    assert verdict("04.3", named)[0] is True


def test_adafactor_bytes_wrong_answers_say_why_without_the_number():
    truths = {ch04.second_moment_bytes(ch04.adafactor_after_one_step(c)[0]) for c in ch04._ADAFACTOR_CASES[:1]}
    wrong("04.3", lambda c: adafactor_bytes(c, factored=False), "Adam's full second moment", hidden=truths)
    wrong("04.3", lambda c: adafactor_bytes(c, steps=True), "step counters", hidden=truths)
    wrong("04.3", lambda c: adafactor_bytes(c, unit=1), "bytes (4 per float32), not numbers", hidden=truths)
    wrong("04.3", lambda c: adafactor_bytes(c, state_dict=True), "one tensor", hidden=truths)
    wrong("04.3", lambda c: adafactor_bytes(c) * 2, "not the bytes Adafactor keeps", hidden=truths)


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


def test_loss_memory_alternatives():
    def per_row(n_tokens, vocab_size, chunk):  # bytes of one row of logits, times the rows held
        row = torch.empty(vocab_size).element_size() * vocab_size
        return 3 * n_tokens * row, min(n_tokens, chunk) * row

    def by_chunks(n_tokens, vocab_size, chunk):  # the chunk's rows from the chunk list itself
        sizes = [min(chunk, n_tokens - s) for s in range(0, n_tokens, chunk)]
        return 12 * n_tokens * vocab_size, 4 * max(sizes) * vocab_size

    assert verdict("04.4", per_row)[0] is True
    assert verdict("04.4", by_chunks)[0] is True


def test_loss_memory_wrong_answers_name_the_mistake():
    truths = {b for N, V, chunk in ((1000, 4096, 128),) for b in ch04.loss_peaks(N, V, chunk)}
    wrong("04.4", lambda n, v, c: loss_memory(n, v, c, tensors=1), "more than its logits", hidden=truths)
    wrong("04.4", lambda n, v, c: loss_memory(n, v, c, unit=1), "numbers, not bytes", hidden=truths)
    wrong("04.4", lambda n, v, c: loss_memory(n, v, c, tensors=2), "not what it holds at its peak", hidden=truths)
    wrong(
        "04.4",
        lambda n, v, c: loss_memory(n, v, c, rows=c),
        "loss_memory(50, 2048, 128)",
        "fewer tokens (50) than a chunk (128)",
    )
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
