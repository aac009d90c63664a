"""Refuse sizes this machine cannot hold before allocating them: a one-line error, not a crash or a swap storm.

A typo (``n_embd = 1000000000000``, ``--num-samples 100000``) used to reach the allocator and end in a
traceback, or worse, make the machine swap for minutes. The estimates here are lower bounds of what the
job needs (the weights alone, the logits alone), compared with the machine's physical memory: a refusal is
never wrong, and a job that passes may still be large.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import NanoGPTError

FP32 = 4  # bytes per float32 number


class TooLargeError(NanoGPTError, ValueError):
    """A size that cannot fit in this machine's memory; the message names it and what it would need."""


def physical_memory() -> int | None:
    """This machine's RAM in bytes, or None where it cannot be read (then nothing is refused)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # Windows has no sysconf
        return None


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_fits(nbytes: float, what: str, fix: str) -> None:
    """Raise :class:`TooLargeError` when ``nbytes`` exceeds the machine's memory."""
    total = physical_memory()
    if total is not None and nbytes > total:
        raise TooLargeError(
            f"{what} needs at least {gib(nbytes)}, more than this machine's {gib(total)} of memory: {fix}"
        )


def model_params(cfg: Any) -> int:
    """Parameters of a GPT of config ``cfg`` (a GPTConfig), counted from its shape without building it."""
    d, v = cfg.n_embd, cfg.vocab_size
    embed = v * d + (cfg.block_size * d if cfg.pos == "learned" else 0) + (0 if cfg.tie_head else v * d)
    return embed + cfg.n_layer * (12 * d * d + 13 * d) + 2 * d


def check_model_fits(cfg: Any, copies: int, where: str) -> None:
    """Refuse a model whose ``copies`` fp32 copies (1 to load, 4 to train: weights, gradients, two
    optimizer moments) exceed the memory."""
    check_fits(
        model_params(cfg) * FP32 * copies,
        f"the model of {where} ({model_params(cfg):,} parameters)",
        "choose smaller sizes (n_embd, n_layer, vocab_size, block_size)",
    )
