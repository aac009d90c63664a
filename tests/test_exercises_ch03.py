"""Chapter 03's exercise checks: a right answer passes, typical wrong ones fail naming what is off, placeholders
are "not answered". The right answers here mirror notebooks/solutions/03_attention_solutions.ipynb."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from nanogpt_lib.course import exercises as ex
from nanogpt_lib.course.exercises import ch03, verdict

from exercise_helpers import todo, wrong


def test_chapter_03_has_four_exercises_in_order():
    assert [e.id for e in ex.exercises("03")] == ["03.1", "03.2", "03.3", "03.4"]
    for e in ex.exercises(3):
        assert verdict(e.id, todo)[0] is None and verdict(e.id, None)[0] is None


# ---- 03.1 the causal mask --------------------------------------------------------------------------------------


def causal_mask(T):
    pos = torch.arange(T)
    return pos[None, :] <= pos[:, None]  # key j <= query i


def test_causal_mask_right():
    ok, remark = verdict("03.1", causal_mask)
    assert ok is True and "is_causal=True" in remark
    # alternatives: a cumulative sum, and an outer comparison with ge
    assert verdict("03.1", lambda T: torch.eye(T, dtype=torch.long).cumsum(0).bool())[0] is True
    assert verdict("03.1", lambda T: torch.arange(T).unsqueeze(1).ge(torch.arange(T).unsqueeze(0)))[0] is True


def test_causal_mask_wrong_answers_name_what_is_off():
    wrong("03.1", lambda T: torch.ones(T, T, dtype=torch.bool).tril(), "calls torch's tril", "torch.arange")
    wrong("03.1", lambda T: torch.tril(torch.ones(T, T, dtype=torch.bool)), "calls torch's tril")
    wrong("03.1", lambda T: causal_mask(T).float(), "dtype torch.float32")
    wrong("03.1", lambda T: causal_mask(T).T, "[0, 1] is True", "must not see key 1 (a later position)")
    wrong("03.1", lambda T: torch.arange(T)[None, :] < torch.arange(T)[:, None], "[0, 0] is False", "itself")
    wrong("03.1", lambda T: causal_mask(T + 1), "shape (2, 2), not (1, 1)")
    wrong("03.1", lambda T: causal_mask(T).tolist(), "returned a list")
    # the forbidden functions are back afterwards
    assert torch.equal(torch.ones(3, 3).tril(), torch.tril(torch.ones(3, 3)))


# ---- 03.2 one head by hand -------------------------------------------------------------------------------------


def one_head(x, w_attn, b_attn, w_proj, b_proj, scale=None, mask=True):
    T, C = x.size(1), x.size(2)
    q, k, v = (x @ w_attn.T + b_attn).split(C, dim=-1)
    scores = q @ k.transpose(-2, -1) * (1 / math.sqrt(C) if scale is None else scale)
    if mask:
        scores = scores.masked_fill(~causal_mask(T), float("-inf"))
    return scores.softmax(-1) @ v @ w_proj.T + b_proj


def test_one_head_right():
    assert verdict("03.2", one_head) == (
        True,
        "It matches CausalSelfAttention(n_head=1) to float32 rounding, and the future cannot reach the past.",
    )


def test_one_head_alternatives():
    def with_einsum(x, w_attn, b_attn, w_proj, b_proj):
        C = x.size(-1)
        q, k, v = F.linear(x, w_attn, b_attn).chunk(3, dim=-1)
        scores = torch.einsum("btc,bsc->bts", q, k) / C**0.5
        later = torch.arange(x.size(1))[None, :] > torch.arange(x.size(1))[:, None]
        scores = scores.masked_fill(later, -1e30)  # a large negative number instead of -inf
        return F.linear(torch.einsum("bts,bsc->btc", scores.softmax(-1), v), w_proj, b_proj)

    def row_by_row(x, w_attn, b_attn, w_proj, b_proj):  # each query attends to its past, one at a time
        C, T = x.size(-1), x.size(1)
        q, k, v = (x @ w_attn.T + b_attn).split(C, dim=-1)
        rows = [
            (q[:, t : t + 1] @ k[:, : t + 1].transpose(1, 2) / math.sqrt(C)).softmax(-1) @ v[:, : t + 1]
            for t in range(T)
        ]
        return torch.cat(rows, dim=1) @ w_proj.T + b_proj

    assert verdict("03.2", with_einsum)[0] is True
    assert verdict("03.2", row_by_row)[0] is True


def test_one_head_wrong_answers_name_the_mistake():
    wrong("03.2", lambda *a: one_head(*a, scale=1.0), "not divided by sqrt(d)")
    wrong("03.2", lambda *a: one_head(*a, mask=False), "sees the future")
    wrong("03.2", lambda x, wa, ba, wp, bp: one_head(x, wa.T.reshape(wa.shape), ba, wp, bp), "single token (T = 1)")
    wrong("03.2", lambda *a: one_head(*a)[:, -1], "gave shape (2, 8)")
    wrong(
        "03.2",
        lambda x, *a: F.scaled_dot_product_attention(x, x, x, is_causal=True),
        "calls torch's scaled_dot_product_attention",
    )
    assert F.scaled_dot_product_attention.__name__ == "scaled_dot_product_attention"  # restored


# ---- 03.3 ALiBi's bias -----------------------------------------------------------------------------------------


def alibi_bias(n_head, T, sign=1.0, slope_base=8.0, mask=True):
    slopes = 2.0 ** (-slope_base * torch.arange(1, n_head + 1) / n_head)
    distance = torch.arange(T)[:, None] - torch.arange(T)[None, :]  # i - j
    bias = -sign * slopes[:, None, None] * distance
    return bias.masked_fill(~causal_mask(T), float("-inf")) if mask else bias


def test_alibi_bias_right():
    ok, remark = verdict("03.3", alibi_bias)
    assert ok is True and "linearly" in remark


def test_alibi_bias_alternatives():
    def with_loops(n_head, T):
        b = torch.full((n_head, T, T), float("-inf"))
        for h in range(n_head):
            for i in range(T):
                for j in range(i + 1):
                    b[h, i, j] = -(2 ** (-8 * (h + 1) / n_head)) * (i - j)
        return b

    def float64(n_head, T):
        slopes = torch.pow(2.0, -8.0 * torch.arange(1, n_head + 1, dtype=torch.float64) / n_head)
        d = (torch.arange(T)[None, :] - torch.arange(T)[:, None]).double()  # j - i
        return torch.where(d <= 0, slopes[:, None, None] * d, float("-inf"))

    assert verdict("03.3", with_loops)[0] is True
    assert verdict("03.3", float64)[0] is True


def test_alibi_bias_wrong_answers_name_the_property():
    wrong("03.3", lambda H, T: alibi_bias(H, T, mask=False), "[0, 0, 1] (a later key)", "must be -inf")
    wrong("03.3", lambda H, T: alibi_bias(H, T, sign=-1.0), "not finite and negative")
    wrong("03.3", lambda H, T: alibi_bias(H, T, slope_base=4.0), "head 0's slope")
    wrong("03.3", lambda H, T: alibi_bias(H, T).flip(0), "head 0's slope")
    wrong("03.3", lambda H, T: alibi_bias(H, T) * (1 + 0.1 * torch.arange(T))[:, None], "changes with i")
    wrong(
        "03.3",
        lambda H, T: alibi_bias(H, T) - 0.5 * (causal_mask(T) & ~torch.eye(T, dtype=torch.bool)),
        "not 2 times the bias at distance 1",
    )
    wrong("03.3", lambda H, T: alibi_bias(H, T)[0], "has shape")
    wrong("03.3", lambda H, T: alibi_bias(H, T).isfinite(), "dtype torch.bool")


def test_alibi_bias_is_linear_in_distance_per_head():
    # a hand-built bias whose slopes are right for head 0 but whose head 1 is not head 0's times 2^(-8/H)
    def bad_second(H, T):
        b = alibi_bias(H, T)
        if H > 1:
            b[1] = b[0]
        return b

    wrong("03.3", bad_second, "head 1's slope is not head 0's")


# ---- 03.4 ALiBi attention, trained -----------------------------------------------------------------------------


def alibi_attention(q, k, v, sign=1.0, scale=None, bias=True):
    H, T, d = q.size(1), q.size(2), q.size(3)
    scores = q @ k.transpose(-2, -1) * (1 / math.sqrt(d) if scale is None else scale)
    b = alibi_bias(H, T, sign=sign) if bias else torch.zeros(T, T).masked_fill(~causal_mask(T), float("-inf"))
    return (scores + b).softmax(-1) @ v


def test_alibi_attention_right_and_trained():
    torch.manual_seed(5)
    rng = torch.get_rng_state()
    ok, remark = verdict("03.4", alibi_attention)
    assert ok is True and "nats in 50 steps" in remark, remark
    assert verdict("03.2", one_head)[0] is True
    assert torch.equal(torch.get_rng_state(), rng)  # the checks seed their own draws, not the notebook's


def test_alibi_attention_alternatives():
    def with_sdpa(q, k, v):  # the library-free kernel is allowed here: the bias is the exercise
        return F.scaled_dot_product_attention(q, k, v, attn_mask=alibi_bias(q.size(1), q.size(2)))

    def in_float64(q, k, v):
        return alibi_attention(q.double(), k.double(), v.double()).float()

    assert verdict("03.4", with_sdpa)[0] is True
    assert verdict("03.4", in_float64)[0] is True


def test_alibi_attention_wrong_answers_name_the_mistake():
    wrong("03.4", lambda q, k, v: alibi_attention(q, k, v, bias=False), "plain causal attention")
    wrong("03.4", lambda q, k, v: alibi_attention(q, k, v, sign=-1.0), "wrong sign")
    wrong("03.4", lambda q, k, v: alibi_attention(q, k, v, scale=1.0), "not divided by sqrt(d)")
    wrong("03.4", lambda q, k, v: alibi_attention(q, k, v)[..., :1], "gave shape")
    # slopes fixed for 4 heads whatever n_head is
    wrong(
        "03.4",
        lambda q, k, v: (
            ((q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1)) + alibi_bias(4, q.size(2))[: q.size(1)]).softmax(-1) @ v
        ),
        "n_head = 1",
    )


def test_train_tiny_learns_with_alibi_and_reports_the_bar():
    run = ch03.train_tiny(alibi_attention, steps=100)
    assert len(run.losses) == 100 and run.losses[-1] < run.losses[0]
    # about 60 characters: a fresh model is near ln 60 = 4.1, character frequencies alone ~3.3
    assert 3.0 < run.unigram < 3.6 and run.val_loss < run.unigram
    assert all(layer.attn.rotary is None for layer in run.model.transformer.h)  # ALiBi is the only position signal
    assert "wpe" not in run.model.transformer


def test_a_model_that_does_not_learn_fails_the_bar(monkeypatch):
    # lr 0: the loss stays at the start's ~ln(60), above character frequencies alone; the reason shows both
    # losses (the measured ones, not an answer to the exercise)
    original = ch03.train_tiny
    monkeypatch.setattr(ch03, "train_tiny", lambda attend, steps=50: original(attend, steps, lr=0.0))
    wrong("03.4", alibi_attention, "not below the", "character frequencies alone")
