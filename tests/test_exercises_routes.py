"""Every route to a green tick without writing the code, tried as a learner would: each is refused.

The routes of issue 19 (a wrapper or lambda around the library's function, torch's aten twin, the check
module's own helpers, bisection on a number) and their cousins. notebooks/README.md's exercise table lists
them; the count there is the number of cases here.
"""

from __future__ import annotations

import numpy as np
import pytest
import tiktoken
import torch
from torch.nn import functional as F

from nanogpt_lib import sweep
from nanogpt_lib.bench.baseline import naive_get_batch
from nanogpt_lib.config import TrainConfig
from nanogpt_lib.course.exercises import ch01, ch04, ch05, ch06, ch07, ch08
from nanogpt_lib.course.explorers import schedule
from nanogpt_lib.course.explorers.tokens import bpe_encode, merge_steps, mergeable_ranks
from nanogpt_lib.data import TokenData
from nanogpt_lib.model import GPT, CausalSelfAttention, GPTConfig
from nanogpt_lib.optim import Muon, lr_ratio
from nanogpt_lib.prepare import is_val, prepare
from nanogpt_lib.sample import sample_next
from nanogpt_lib.schedule import lr_at
from nanogpt_lib.step import train_step
from nanogpt_lib.tokenizer import encode, get_tokenizer

from exercise_helpers import wrong


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return ch01.dataset(tmp_path_factory.mktemp("routes"), 0, 10)


def one_head_via_layer(x, w_attn, b_attn, w_proj, b_proj):
    layer = CausalSelfAttention(GPTConfig(n_embd=x.size(-1), n_head=1, block_size=64))
    layer.c_attn.weight.data, layer.c_attn.bias.data = w_attn, b_attn
    layer.c_proj.weight.data, layer.c_proj.bias.data = w_proj, b_proj
    return layer(x)[0]


def one_head_via_mha(x, w_attn, b_attn, w_proj, b_proj):
    C, T = x.size(-1), x.size(1)
    mha = torch.nn.MultiheadAttention(C, 1, batch_first=True)
    mha.in_proj_weight.data, mha.in_proj_bias.data = w_attn, b_attn
    mha.out_proj.weight.data, mha.out_proj.bias.data = w_proj, b_proj
    return mha(x, x, x, attn_mask=torch.arange(T)[None, :] > torch.arange(T)[:, None])[0]


def sdpa_head(attend):
    def one_head(x, w_attn, b_attn, w_proj, b_proj):
        q, k, v = (x @ w_attn.T + b_attn).split(x.size(-1), dim=-1)
        return attend(q, k, v) @ w_proj.T + b_proj

    return one_head


def new_encoding(chunk):
    enc = get_tokenizer()
    fresh = tiktoken.Encoding("copy", pat_str=enc._pat_str, mergeable_ranks=mergeable_ranks(), special_tokens={})
    return fresh.encode_ordinary(chunk)


def muon_via_optimizer(cls):
    def muon_step(W, grad, buf, lr, momentum, nesterov):
        p = torch.nn.Parameter(W.clone())
        opt = cls([p], lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=0.0)
        opt.state[p]["momentum_buffer"] = buf.clone()
        p.grad = grad
        opt.step()
        return p.detach(), opt.state[p]["momentum_buffer"]

    return muon_step


def adafactor_by_stepping(c):
    model = GPT(c)
    opt = torch.optim.Adafactor(model.parameters())
    model(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long))[1].backward()
    opt.step()
    return ch04.second_moment_bytes(opt)


def memory_by_tracking(n, v, chunk):
    from torch.utils._python_dispatch import TorchDispatchMode

    class Track(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    with Track():
        torch.zeros(n, v)
    return 0, 0


# (exercise, route, answer, what the refusal names). The folder fixture is passed to routes that need one.
ROUTES = [
    ("01.1", "prepare() the source again", lambda p: prepare(source="shakespeare"), "nanogpt_lib.prepare.prepare"),
    ("01.2", "a wrapper around prepare.is_val", lambda t, v, n: float(is_val(0, 0, 10)), "nanogpt_lib.prepare.is_val"),
    ("01.2", "the check's own measure", lambda t, v, n: ch01._seen(t, v, n), "ch01._seen"),
    ("01.3", "prepare() into a folder of one's own", lambda docs, s, v: prepare(source="x"), "prepare.prepare"),
    (
        "01.4",
        "a wrapper around TokenData.get_batch",
        lambda f: lambda d, k, b, t, s: TokenData(f, t).get_batch("train", k, b, seed=s),
        "TokenData.get_batch",
    ),
    (
        "01.4",
        "TokenData.batch_starts",
        lambda f: lambda d, k, b, t, s: TokenData(f, t).batch_starts("train", k, b, s),
        "TokenData.batch_starts",
    ),
    ("01.4", "naive_get_batch", lambda f: lambda d, k, b, t, s: naive_get_batch(f, "train", b, t), "naive_get_batch"),
    (
        "02.1",
        "the explorer's count line",
        lambda text: float(
            __import__("nanogpt_lib.course.explorers.tokens", fromlist=["x"]).count_line(text).split()[0]
        ),
        "count_line",
    ),
    (
        "02.3",
        "the sampler's streaming",
        lambda ids: __import__("nanogpt_lib.sample", fromlist=["x"]).stream_text(None, ""),
        "stream_text",
    ),
    ("02.4", "lambda c: encode(c)", lambda c: encode(c), "nanogpt_lib.tokenizer.encode"),
    (
        "02.4",
        "tiktoken's Encoding.encode_ordinary",
        lambda c: get_tokenizer().encode_ordinary(c),
        "tiktoken.Encoding.encode_ordinary",
    ),
    ("02.4", "tiktoken's Encoding.encode", lambda c: get_tokenizer().encode(c), "tiktoken.Encoding.encode"),
    ("02.4", "the compiled CoreBPE behind it", lambda c: get_tokenizer()._core_bpe.encode_ordinary(c), "_core_bpe"),
    ("02.4", "a new tiktoken Encoding from the ranks", new_encoding, "CoreBPE"),
    ("02.4", "the explorer's bpe_encode", lambda c: bpe_encode(c), "bpe_encode"),
    ("02.4", "the explorer's merge_steps", lambda c: merge_steps(c)[-1].ids, "merge_steps"),
    ("03.1", "torch.ops.aten.tril", lambda T: torch.ops.aten.tril(torch.ones(T, T)).bool(), "torch's tril"),
    ("03.1", "numpy.tril", lambda T: torch.from_numpy(np.tril(np.ones((T, T), dtype=bool))), "numpy.tril"),
    (
        "03.1",
        "nn.Transformer's mask",
        lambda T: torch.nn.Transformer.generate_square_subsequent_mask(T) == 0,
        "generate_square_subsequent_mask",
    ),
    (
        "03.2",
        "F.scaled_dot_product_attention",
        sdpa_head(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
        "scaled_dot_product_attention",
    ),
    (
        "03.2",
        "torch.ops.aten.scaled_dot_product_attention",
        sdpa_head(lambda q, k, v: torch.ops.aten.scaled_dot_product_attention(q, k, v, is_causal=True)),
        "scaled_dot_product_attention",
    ),
    (
        "03.2",
        "torch.ops.aten.scaled_dot_product_attention.default",
        sdpa_head(lambda q, k, v: torch.ops.aten.scaled_dot_product_attention.default(q, k, v, is_causal=True)),
        "scaled_dot_product_attention",
    ),
    (
        "03.2",
        "torch._C._nn.scaled_dot_product_attention",
        sdpa_head(lambda q, k, v: torch._C._nn.scaled_dot_product_attention(q, k, v, is_causal=True)),
        "scaled_dot_product_attention",
    ),
    (
        "03.2",
        "aten's math kernel",
        sdpa_head(lambda q, k, v: torch.ops.aten._scaled_dot_product_attention_math(q, k, v, is_causal=True)[0]),
        "scaled_dot_product_attention",
    ),
    ("03.2", "the library's layer with the weights copied in", one_head_via_layer, "CausalSelfAttention"),
    ("03.2", "nn.MultiheadAttention", one_head_via_mha, "MultiheadAttention"),
    ("04.1", "torch.ops.aten.native_layer_norm", None, "layer_norm"),
    ("04.2", "GPT(c).num_params(False)", lambda c: GPT(c).num_params(False), "nanogpt_lib.model.GPT"),
    (
        "04.2",
        "counting a built model's parameters",
        lambda c: sum(p.numel() for p in GPT(c).parameters()),
        "nanogpt_lib.model.GPT",
    ),
    (
        "04.2",
        "a built block's parameters",
        lambda c: __import__("nanogpt_lib.model", fromlist=["x"]).Block(c),
        "nanogpt_lib.model.Block",
    ),
    (
        "04.3",
        "the check's own helper",
        lambda c: ch04.second_moment_bytes(ch04.adafactor_after_one_step(c)[0]),
        "ch04.adafactor_after_one_step",
    ),
    ("04.3", "stepping torch's Adafactor", adafactor_by_stepping, "torch.optim.Adafactor"),
    ("04.4", "the check's own measurement", lambda n, v, c: ch04.loss_peaks(n, v, c), "ch04.loss_peaks"),
    ("04.4", "the check's byte counter", lambda n, v, c: (ch04.peak_bytes(lambda: None, bool), 0), "ch04.peak_bytes"),
    ("04.4", "a dispatch-mode tracker of one's own", memory_by_tracking, "TorchDispatchMode"),
    (
        "05.1",
        "the trainer's own step",
        lambda m, x, y, k: __import__("nanogpt_lib.train", fromlist=["x"]).Trainer._train_step(None),
        "Trainer._train_step",
    ),
    # no optimizer: the public step's backward leaves the accumulated gradient in p.grad, the exercise's answer
    (
        "05.1",
        "the library's public step",
        lambda m, x, y, k: train_step(m, [], lambda i: (x.chunk(k)[i], y.chunk(k)[i]), accum=k),
        "nanogpt_lib.step.train_step",
    ),
    (
        "05.2",
        "a wrapper around lr_at",
        lambda s, w, m, d, lr, mn: lr_at(
            s, TrainConfig(schedule="wsd", warmup_steps=w, max_steps=m, decay_frac=d, lr=lr, min_lr=mn)
        ),
        "nanogpt_lib.schedule.lr_at",
    ),
    (
        "05.2",
        "the schedule explorer's curve",
        lambda s, w, m, d, lr, mn: schedule.lr_curve("wsd", w, d, lr, mn, m)[s],
        "lr_curve",
    ),
    ("05.2", "the check's own reference", lambda *a: ch05._one_sqrt(*a), "ch05._one_sqrt"),
    ("05.3", "a wrapper around the library's Muon", muon_via_optimizer(Muon), "nanogpt_lib.optim.Muon"),
    ("05.3", "torch's own Muon", muon_via_optimizer(torch.optim.Muon), "torch.optim.Muon"),
    ("05.3", "the library's shape scaling", lambda W, g, b, lr, mu, n: (W * lr_ratio(W.shape, None), b), "lr_ratio"),
    (
        "05.3",
        "the check's own reference",
        lambda W, g, b, lr, mu, n: ch05._muon_truth(W, [g], lr, mu, n)[0],
        "ch05._muon_truth",
    ),
    ("06.1", "a number found by trial (bisection on the check's replies)", 0.05, "give a function"),
    ("06.1", "a fixed rate behind a function", lambda run: 0.05, "hidden run"),
    (
        "06.2",
        "the check's own rule",
        lambda evals, patience: ch06._stop_truth(tuple(evals), patience),
        "ch06._stop_truth",
    ),
    ("06.2", "the pair read off §7's 3,500-step run", lambda evals, patience: (2000, 3500), "hidden curve"),
    ("06.3", "torch's dropout", lambda x, p, training, gen: F.dropout(x, p, training), "dropout"),
    ("06.3", "the model's nn.Dropout", lambda x, p, training, gen: torch.nn.Dropout(p).train(training)(x), "dropout"),
    (
        "06.3",
        "aten's native_dropout",
        lambda x, p, training, gen: torch.ops.aten.native_dropout(x, p, training)[0] if training else x,
        "dropout",
    ),
    ("07.1", "a wrapper around sample_next", lambda logits, t, g: sample_next(logits, t, gen=g), "sample_next"),
    (
        "07.2",
        "the check's own probability",
        lambda logits, tok, t, k: ch07.draw_probability(logits, tok, t, k),
        "ch07.draw_probability",
    ),
    (
        "07.2",
        "sample_next's frequencies",
        lambda logits, tok, t, k: float((sample_next(logits.expand(1000, -1), t, top_k=k) == tok).float().mean()),
        "sample_next",
    ),
    (
        "07.3",
        "a wrapper around sample_next",
        lambda logits, m, g: sample_next(logits, 1.0, top_p=1 - m, gen=g),
        "sample_next",
    ),
    (
        "07.3",
        "the check's own rule",
        lambda logits, m, g: torch.multinomial(
            torch.stack([ch07.min_p_probs(m)(r) for r in logits]).float(), 1, generator=g
        ),
        "ch07.min_p_probs",
    ),
    ("07.4", "the check's own penalty", lambda logits, p, x: ch07._penalized(logits, p, x), "ch07._penalized"),
    ("08.1", "a number (trying the sweep's rates)", 0.004, "give a function"),
    ("08.1", "the check's own ranking", lambda runs, seed: ch08._winner(runs, seed), "ch08._winner"),
    ("08.2", "the check's own count", lambda d: ch08._n_params({}), "ch08._n_params"),
    ("08.3", "a number narrowed down by too high / too low", 0.0053, "give a function"),
    (
        "08.3",
        "the check's own difference",
        lambda long_runs, half_runs: ch08._dividend(long_runs, half_runs),
        "ch08._dividend",
    ),
    (
        "08.4",
        "sweep.steps_to_target",
        lambda curve, target: sweep.steps_to_target(curve, target),
        "sweep.steps_to_target",
    ),
]
# Each of the lr sweep's rates as the answer to 08.1: with a function asked for, none passes.
ROUTES += [
    ("08.1", f"the sweep's rate {lr:g}, always", lambda runs, seed, lr=lr: lr, "")
    for lr in (5e-4, 1e-3, 2e-3, 4e-3, 8e-3)
]


class NativeLayerNorm(torch.nn.Module):
    def __init__(self, ndim):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(ndim))

    def forward(self, x):
        return torch.ops.aten.native_layer_norm(x, [x.size(-1)], self.weight, None, 1e-5)[0]


@pytest.mark.parametrize("id, route, answer, named", ROUTES, ids=[f"{r[0]} {r[1]}" for r in ROUTES])
def test_route_is_refused(id, route, answer, named, folder):
    if answer is None:
        answer = NativeLayerNorm
    elif id == "01.4":
        answer = answer(folder)
    why = wrong(id, answer)
    assert named in why, why
    assert "\n" not in why and "Traceback" not in why
    assert not any(w in why for w in ("too high", "too low")), why


def test_route_count_matches_the_readme():
    # notebooks/README.md quotes the number of routes tried
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "notebooks" / "README.md").read_text()
    assert f"{len(ROUTES)} routes" in readme
