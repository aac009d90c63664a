"""Losses that put a trained model in scale: uniform guessing, a unigram model, the untrained network.

A loss of 4.3 nats/token means little alone. Guessing uniformly over the data set's vocabulary costs its log
(ln 50257 = 10.82 for GPT-2's tokens; ln 4096 = 8.32 for data prepared with ``--vocab 4096``); a unigram
model (each token's frequency in the training split, nothing else) is the best any model can do without
looking at context; the untrained network shows where training starts. All are measured on the whole
validation split, cut into non-overlapping windows of the model's block size, and given also in bits per
character and per UTF-8 byte of the split's text (``data.TextStats``), the units in which runs with
different tokenizers compare.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import paths
from .data import TextStats, TokenData, own_bpe_name, text_stats
from .model import GPT
from .tokenizer import NAME as GPT2_NAME
from .tokenizer import is_gpt2


def data_vocab(data: TokenData) -> int:
    """The data set's vocabulary: its tokenizer's tokens (GPT-2's 50,257, or an own tokenizer's N), not the
    model's padded rows, which no id reaches and no baseline should spread its guesses over."""
    return int(data.meta["vocab_size"])


def unigram_loss(data: TokenData) -> float:
    """Cross-entropy on val of token frequencies counted on train (add-one smoothing over the data set's
    vocabulary)."""
    counts = np.bincount(np.asarray(data.splits["train"]), minlength=data_vocab(data)).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    val = np.asarray(data.splits["val"])
    return float(-log_p[val].mean())


@torch.no_grad()
def val_loss(model: GPT, data: TokenData, batch_size: int = 64, progress: bool = False, desc: str = "val") -> float:
    """Mean next-token loss over the whole val split, in non-overlapping windows of ``block_size``."""
    tokens = torch.from_numpy(np.asarray(data.splits["val"]).astype(np.int64))
    T = model.config.block_size
    n = (len(tokens) - 1) // T
    x = tokens[: n * T].view(n, T)
    y = tokens[1 : n * T + 1].view(n, T)
    device = next(model.parameters()).device
    model.eval()
    total = 0.0
    bar = {} if progress else {"disable": True}  # an explicit disable=False would override TQDM_DISABLE
    for s in tqdm(range(0, n, batch_size), unit="batch", desc=desc, dynamic_ncols=True, **bar):
        xb, yb = x[s : s + batch_size].to(device), y[s : s + batch_size].to(device)
        _, loss = model(xb, yb)
        total += loss.item() * xb.size(0)
    return total / n


def model_tokenizer(model: GPT) -> Any:
    """The tokenizer entry of a loaded model (``sample.load_model`` fills ``GPT.meta``; none recorded means
    GPT-2's), so that data of another tokenizer is refused; None for a model built by hand, whose meta is empty."""
    meta = getattr(model, "meta", None)  # a wrapped model (DDP, compiled) has none of its own
    if not meta or not isinstance(meta, dict):
        return None
    return meta.get("tokenizer") or GPT2_NAME


def own_dataset(model: GPT, source: str = "shakespeare") -> str:
    """The data set a model is scored on when none is named: ``source``'s text under the model's own tokenizer,
    ``shakespeare`` for GPT-2's, ``shakespeare-bpeN`` for our BPE of N tokens (the shipped model's, so that
    ``nanogpt eval`` with no options scores it on the data it was trained for)."""
    entry = model_tokenizer(model)
    if is_gpt2(entry) or not isinstance(entry, dict) or "vocab_size" not in entry:
        return source
    return own_bpe_name(source, int(entry["vocab_size"]))


REFERENCES = ("uniform", "unigram", "untrained", "trained")  # the losses reference_losses measures


def in_bits(losses: dict[str, float], stats: TextStats) -> dict[str, dict[str, float]]:
    """Each loss in nats/token of ``losses`` also in bits/char (``"bpc"``) and bits/byte (``"bpb"``)."""
    return {
        "bpc": {k: stats.bits_per_char(v) for k, v in losses.items()},
        "bpb": {k: stats.bits_per_byte(v) for k, v in losses.items()},
    }


def reference_losses(
    model: GPT,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    seed: int = 1337,
    progress: bool = False,
) -> dict[str, Any]:
    """Val loss of ``model`` beside uniform, unigram and the same architecture untrained (seeded init), on
    data tokenized as the model was (another tokenizer's data is a one-line ``DatasetError``; ``dataset``
    None: :func:`own_dataset`, the plays under the model's own tokenizer);
    ``progress`` shows a bar for each pass over the split (minutes on a CPU for the shipped corpus).

    The four losses are in nats/token under their own keys; ``"bpc"`` and ``"bpb"`` hold the same four in
    bits per character and per byte of the val text (``val_chars``, ``val_bytes``)."""
    dataset = dataset or own_dataset(model)
    folder = Path(data_dir or paths.data_dir()) / dataset
    data = TokenData(folder, model.config.block_size, model.config.vocab_size, tokenizer=model_tokenizer(model))
    stats = text_stats(folder, "val")
    torch.manual_seed(seed)
    untrained = GPT(model.config).to(next(model.parameters()).device)
    losses = {
        "uniform": math.log(data_vocab(data)),
        "unigram": unigram_loss(data),
        "untrained": val_loss(untrained, data, progress=progress, desc="untrained"),
        "trained": val_loss(model, data, progress=progress, desc="trained"),
    }
    return {
        "dataset": dataset,
        "val_tokens": len(data.splits["val"]),
        "val_chars": stats.chars,
        "val_bytes": stats.bytes,
        **losses,
        **in_bits(losses, stats),
    }
