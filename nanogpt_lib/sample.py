"""Sampling: how a trained GPT writes text, one token at a time (the module notebook 07 teaches).

Top to bottom: :func:`sample_next` turns the last position's logits into a token (temperature, top-k,
top-p); :func:`generate` and :func:`generate_stream` run the loop with a KV cache and a sliding window;
:func:`load_model`, :func:`stream_text`, :func:`generate_text` and :func:`generate_texts` (several samples
in one batch) are text in, text out for the CLI, notebooks and widgets. Text is released only once it
decodes cleanly, so a character split across two BPE tokens never shows as garbage.

A loaded model knows its tokenizer (``model.tokenizer``: the one its checkpoint or export carries, GPT-2's
for GPT-2 weights and older files); text in and out goes through it, and its vocabulary bounds the ids drawn.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tiktoken
import torch

from . import paths
from .checkpoint import load_weights
from .devices import pick_device
from .limits import FP32, check_fits
from .model import GPT, KV
from .screen import screen_for
from .tokenizer import get_tokenizer, resolve

# ---- one token from logits ------------------------------------------------------------------------


def sample_next(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None = None,
    top_p: float | None = None,
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row of (B, vocab) float logits, shape (B, 1).

    ``temperature`` 0 (or below the dtype's smallest normal number) is greedy (argmax); otherwise the
    logits are divided by it, ``top_k`` keeps the k likeliest tokens (exactly k: ties at the k-th are
    broken by ``torch.topk``), ``top_p`` the smallest set holding at least that much probability, and one
    token is drawn from what is left (from ``gen`` if given, so the global RNG is untouched).

    With ``top_k`` the draw is among the k candidates only (``topk`` gives them likeliest first, with their
    ids): ``torch.multinomial`` draws one random number per entry of a row, so drawing from all 50,304
    entries when only k can win cost 0.8 ms per row, 12.5 ms per step for 16 samples, more than the model
    itself (measured on a 2-core AVX512 CPU); among 200 candidates it costs next to nothing.
    """
    if temperature < torch.finfo(logits.dtype).tiny:  # 0, or so small (1e-45) it would itself round to 0
        return logits.argmax(dim=-1, keepdim=True)
    # Shifted so the largest is 0 before dividing: a tiny temperature then sends the others to -inf, never
    # past the largest float (inf - inf would be NaN in the softmax); the shift changes no probability.
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    ids = None  # the token id of each column of `logits`, where they are no longer the vocabulary's order
    if top_k is not None:
        logits, ids = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1)  # the candidates, likeliest first
    if top_p is not None and top_p < 1:
        if ids is None:
            logits, ids = logits.sort(dim=-1, descending=True)
        probs = logits.softmax(dim=-1)
        outside = probs.cumsum(dim=-1) - probs >= top_p  # the mass before this token already reaches top_p
        logits = logits.masked_fill(outside, float("-inf"))
    choice = torch.multinomial(logits.softmax(dim=-1), 1, generator=gen)
    return choice if ids is None else ids.gather(-1, choice)


# ---- the sampling loop ----------------------------------------------------------------------------


def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    vocab_limit: int | None = None,
) -> torch.Tensor:
    """``idx`` (B, T) followed by ``max_new_tokens`` sampled tokens per row; see :func:`generate_stream`.

    All B rows are sampled together: the LM head's weight is read once per step for the whole batch.
    """
    steps = _steps(model, idx, max_new_tokens, temperature, top_k, top_p, seed, use_cache, vocab_limit)
    return torch.cat([idx, *steps], dim=1)


def generate_stream(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    vocab_limit: int | None = None,
) -> Iterator[int]:
    """Yield each new token id of one prompt (1, T) as soon as it is sampled.

    ``temperature`` 0 is greedy; ``top_k`` keeps the k likeliest tokens, ``top_p`` the smallest set
    holding that much probability; ``seed`` draws from a private generator (global RNG untouched).
    Context: at most block_size tokens. When a new token would overflow it, the window slides to its
    last block_size // 2 tokens and the KV cache is re-filled from them, so the cache costs one short
    re-fill per block_size // 2 tokens. ``use_cache=False`` recomputes the same window at every step
    (same tokens, same positions), so both paths sample from the same distributions. ``vocab_limit``
    keeps ids below it; by default the model's tokenizer's vocabulary (:func:`encoding_of`: GPT-2's 50257
    unless it carries its own) when the model's vocabulary is padded past it (50304 rows), so a padding id
    is never emitted.
    """
    if idx.dim() != 2 or idx.size(0) != 1:
        raise ValueError(f"generate_stream takes one prompt of shape (1, T), got {tuple(idx.shape)}")
    return (int(t) for t in _steps(model, idx, max_new_tokens, temperature, top_k, top_p, seed, use_cache, vocab_limit))


def _steps(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    seed: int | None,
    use_cache: bool,
    vocab_limit: int | None = None,
) -> Iterator[torch.Tensor]:
    """Check the arguments now (not at the first ``next``), then return the (B, 1) token generator."""
    if idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError(f"prompt must be a non-empty (B, T) tensor of token ids, got shape {tuple(idx.shape)}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not temperature >= 0 or temperature == float("inf"):  # `not >=` also catches NaN
        raise ValueError(f"temperature must be >= 0 and finite (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")
    c = model.config  # a lower bound of a step's memory: the rows' logits and their KV caches, in fp32
    check_fits(
        idx.size(0) * (c.vocab_size + 2 * c.n_layer * c.block_size * c.n_embd) * FP32,
        f"sampling {idx.size(0):,} texts at once",
        "sample fewer at a time (--num-samples)",
    )
    if vocab_limit is None and model.config.vocab_size > encoding_of(model).n_vocab:
        vocab_limit = encoding_of(model).n_vocab  # the padded rows (GPT-2's 50257..50303) are never real tokens
    gen = None if seed is None else torch.Generator(device=idx.device).manual_seed(seed)
    return _sample_loop(model, idx, max_new_tokens, temperature, top_k, top_p, gen, use_cache, vocab_limit)


@torch.no_grad()  # on a generator, torch re-enters no_grad around each step, not while suspended
def _sample_loop(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    gen: torch.Generator | None,
    use_cache: bool,
    vocab_limit: int | None,
) -> Iterator[torch.Tensor]:
    T, keep = model.config.block_size, max(1, model.config.block_size // 2)
    ctx = idx[:, -T:]  # the window the next token is predicted from
    past: list[KV] | None = None
    k = 1 if temperature < torch.finfo(torch.float32).tiny else top_k  # greedy is the top 1
    screen = None  # the head screened on a CPU for greedy and top-k, as many rows as it pays for (screen.py)
    if k is not None and k <= _SCREEN_MAX_K and idx.is_cpu:
        screen = screen_for(model.lm_head.weight, idx.size(0), vocab_limit, model.config.logit_softcap)
    for _ in range(max_new_tokens):
        # Eval (no dropout) per step: the caller's mode holds between tokens. Switching walks every module
        # twice (0.4 ms a token at GPT-2's 4 x 128, a tenth of it), so only a model in training is switched.
        was_training = model.training
        if was_training:
            model.eval()
        try:  # no cache: the whole window; cached: only the newest token, at the next position
            h, kv = model.trunk(ctx) if past is None else model.trunk(ctx[:, -1:], past)
        finally:
            if was_training:
                model.train()
        past = kv if use_cache else None
        found = screen.candidates(h[:, -1, :].float(), k) if screen is not None else None
        if found is None:
            logits = model.logits(h[:, -1, :]).float()
            if vocab_limit is not None and vocab_limit < logits.size(-1):
                logits[:, vocab_limit:] = float("-inf")
            token = sample_next(logits, temperature, top_k, top_p, gen)
        else:
            logits, ids = found
            token = ids.gather(-1, sample_next(logits, temperature, top_k, top_p, gen))
        ctx = torch.cat([ctx, token], dim=1)
        if ctx.size(1) > T:  # slide; the positions restart at 0, so the cache is rebuilt
            ctx, past = ctx[:, -keep:], None
        yield token


_SCREEN_MAX_K = 1024  # above this many candidates the screen saves little: the full head is read anyway


# ---- text in, text out ----------------------------------------------------------------------------


def load_model(path: str | Path | None = None, device: str = "auto") -> GPT:
    """A GPT in eval mode from ``trained_model/`` (default), an export folder, a weights file, or a run
    folder (its latest ``ckpt.pt``)."""
    where = Path(path) if path else paths.shipped(paths.trained_model_dir(), "the shipped weights (trained_model/)")
    model, meta = load_weights(where, pick_device(device))
    model.meta = meta  # GPT.meta: where it came from (step, val loss, the tokenizer's entry ...)
    model.tokenizer = resolve(meta.get("tokenizer"))  # GPT.tokenizer: what its ids mean, GPT-2's unless its own
    return model


def encoding_of(model: GPT) -> tiktoken.Encoding:
    """The tokenizer of a model: the one :func:`load_model` attached, else GPT-2's (a model built by hand)."""
    return getattr(model, "tokenizer", None) or get_tokenizer()


def _prompt_ids(model: GPT, prompt: str) -> torch.Tensor:
    if not prompt:
        raise ValueError("prompt is empty: give some text to continue, e.g. 'ROMEO:'")
    device = next(model.parameters()).device
    return torch.tensor([encoding_of(model).encode_ordinary(prompt)], dtype=torch.long, device=device)


def stream_text(
    model: GPT,
    prompt: str,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 200,
    top_p: float | None = None,
    seed: int | None = None,
) -> Iterator[str]:
    """Yield pieces of generated text as they come (the prompt itself is not repeated)."""
    ids: list[int] = []
    shown = ""
    enc = encoding_of(model)
    tokens = generate_stream(
        model,
        _prompt_ids(model, prompt),
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        vocab_limit=enc.n_vocab,
    )
    for token in tokens:
        ids.append(int(token))
        text = enc.decode(ids, errors="replace")
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            yield text[len(shown) :]
            shown = text
    rest = enc.decode(ids, errors="replace")[len(shown) :]
    if rest:
        yield rest


def generate_text(model: GPT, prompt: str, **kwargs: Any) -> str:
    """The prompt's continuation as one string (same arguments as :func:`stream_text`)."""
    return "".join(stream_text(model, prompt, **kwargs))


def generate_texts(
    model: GPT,
    prompt: str,
    num_samples: int,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 200,
    top_p: float | None = None,
    seed: int | None = None,
) -> list[str]:
    """``num_samples`` continuations of ``prompt``, sampled together as one batch.

    One batch costs about what one sample does on a CPU: each step reads the LM head's 50304 x 128 matrix
    once for all rows (``nanogpt bench sample`` measures it). With ``seed`` the list is reproducible; its
    first text is not the one :func:`generate_text` gives for that seed (the draws are shared by the rows).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    ids, enc = _prompt_ids(model, prompt), encoding_of(model)
    out = generate(
        model,
        ids.expand(num_samples, -1),
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        vocab_limit=enc.n_vocab,
    )
    return [enc.decode(row.tolist(), errors="replace") for row in out[:, ids.size(1) :]]
