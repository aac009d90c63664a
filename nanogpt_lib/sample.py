"""Text in, text out: load a trained model and sample from it (the CLI, notebooks and widgets call this).

Decoding streams: token ids come one at a time from the model's KV-cache generator, and text is released
only once it decodes cleanly, so a character split across two BPE tokens never shows as garbage.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from . import paths
from .checkpoint import load_weights
from .devices import pick_device
from .model import GPT
from .tokenizer import N_VOCAB, decode, encode


def load_model(path: str | Path | None = None, device: str = "auto") -> GPT:
    """A GPT in eval mode from ``trained_model/`` (default), an export folder, a weights file, or a run
    folder (its latest ``ckpt.pt``)."""
    model, meta = load_weights(Path(path) if path else paths.trained_model_dir(), pick_device(device))
    model.meta = meta  # where it came from: step, val loss, ...
    return model


def _prompt_ids(model: GPT, prompt: str) -> torch.Tensor:
    if not prompt:
        raise ValueError("prompt is empty: give some text to continue, e.g. 'ROMEO:'")
    device = next(model.parameters()).device
    return torch.tensor([encode(prompt)], dtype=torch.long, device=device)


def stream_text(model: GPT, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8,
                top_k: int | None = 200, top_p: float | None = None, seed: int | None = None) -> Iterator[str]:
    """Yield pieces of generated text as they come (the prompt itself is not repeated)."""
    ids: list[int] = []
    shown = ""
    gen = model.generate_stream(_prompt_ids(model, prompt), max_new_tokens, temperature=temperature,
                                top_k=top_k, top_p=top_p, seed=seed, vocab_limit=N_VOCAB)
    for token in gen:
        ids.append(int(token))
        text = decode(ids)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            yield text[len(shown):]
            shown = text
    rest = decode(ids)[len(shown):]
    if rest:
        yield rest


def generate_text(model: GPT, prompt: str, **kwargs: Any) -> str:
    """The prompt's continuation as one string (same arguments as :func:`stream_text`)."""
    return "".join(stream_text(model, prompt, **kwargs))
