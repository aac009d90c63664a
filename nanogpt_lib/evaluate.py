"""Losses that put a trained model in scale: uniform guessing, a unigram model, the untrained network.

A loss of 4.3 nats/token means little alone. Guessing uniformly over GPT-2's 50,257 tokens costs ln 50257
= 10.82; a unigram model (each token's frequency in the training split, nothing else) is the best any
model can do without looking at context; the untrained network shows where training starts. All are
measured on the whole validation split, cut into non-overlapping windows of the model's block size.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import paths
from .data import TokenData
from .model import GPT
from .tokenizer import N_VOCAB


def unigram_loss(data: TokenData) -> float:
    """Cross-entropy on val of token frequencies counted on train (add-one smoothing over the vocabulary)."""
    counts = np.bincount(np.asarray(data.splits["train"]), minlength=N_VOCAB).astype(np.float64) + 1.0
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
    y = tokens[1: n * T + 1].view(n, T)
    device = next(model.parameters()).device
    model.eval()
    total = 0.0
    bar = {} if progress else {"disable": True}  # an explicit disable=False would override TQDM_DISABLE
    for s in tqdm(range(0, n, batch_size), unit="batch", desc=desc, dynamic_ncols=True, **bar):
        xb, yb = x[s:s + batch_size].to(device), y[s:s + batch_size].to(device)
        _, loss = model(xb, yb)
        total += loss.item() * xb.size(0)
    return total / n


def reference_losses(model: GPT, dataset: str = "shakespeare", data_dir: str | Path | None = None,
                     seed: int = 1337, progress: bool = False) -> dict[str, Any]:
    """Val loss of ``model`` beside uniform, unigram and the same architecture untrained (seeded init);
    ``progress`` shows a bar for each pass over the split (minutes on a CPU for the shipped corpus)."""
    data = TokenData(Path(data_dir or paths.data_dir()) / dataset, model.config.block_size, model.config.vocab_size)
    torch.manual_seed(seed)
    untrained = GPT(model.config).to(next(model.parameters()).device)
    return {"dataset": dataset, "val_tokens": len(data.splits["val"]), "uniform": math.log(N_VOCAB),
            "unigram": unigram_loss(data), "untrained": val_loss(untrained, data, progress=progress, desc="untrained"),
            "trained": val_loss(model, data, progress=progress, desc="trained")}
