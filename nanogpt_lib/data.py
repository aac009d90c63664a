"""Batches from prepared token files.

Each split is memory-mapped once (nanoGPT reopens the memmap for every batch). Batch ``k`` of a run is a
pure function of ``(seed, split, k, rank)``: a resumed run, or each rank of a distributed one, draws
exactly the batches an uninterrupted run would, and the loader keeps no hidden state to checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .tokenizer import NAME as TOKENIZER_NAME

SPLIT_IDS = {"train": 0, "val": 1}


class DatasetError(Exception):
    """The prepared dataset is missing or does not fit the request; the message says how to fix it."""


class TokenData:
    """Both splits of ``data/<name>/``, opened once, checked against the model that will read them."""

    def __init__(self, folder: str | Path, block_size: int, vocab_size: int | None = None,
                 tokenizer: str = TOKENIZER_NAME) -> None:
        self.folder = Path(folder)
        hint = f"run `nanogpt prepare` (or `nanogpt prepare SOURCE --name {self.folder.name}`)"
        try:
            self.meta = json.loads((self.folder / "meta.json").read_text())
        except FileNotFoundError:
            raise DatasetError(f"no prepared dataset at {self.folder}: {hint}") from None
        except ValueError as e:
            raise DatasetError(f"{self.folder / 'meta.json'} is not valid JSON ({e}): {hint} --force") from None
        if self.meta.get("tokenizer") != tokenizer:
            raise DatasetError(
                f"{self.folder} was tokenized with {self.meta.get('tokenizer')!r}, the model expects {tokenizer!r}"
            )
        if vocab_size is not None and self.meta["vocab_size"] > vocab_size:
            raise DatasetError(
                f"{self.folder} has token ids up to {self.meta['vocab_size'] - 1}, "
                f"beyond the model's vocab_size {vocab_size}"
            )
        self.block_size = block_size
        self.splits: dict[str, np.memmap] = {}
        for split in SPLIT_IDS:
            path = self.folder / f"{split}.bin"
            if not path.is_file():
                raise DatasetError(f"missing split {path}: {hint} --force")
            tokens = np.memmap(path, dtype=np.uint16, mode="r")
            if len(tokens) < block_size + 1:
                raise DatasetError(
                    f"split {split!r} of {self.folder} has {len(tokens)} tokens, fewer than one block of "
                    f"{block_size} + 1: prepare more text or lower block_size"
                )
            self.splits[split] = tokens

    def __len__(self) -> int:
        return len(self.splits["train"])

    def batch_starts(self, split: str, k: int, batch_size: int, seed: int = 0, rank: int = 0) -> np.ndarray:
        """Start offsets of batch ``k``: drawn from a generator seeded by (seed, split, k, rank) alone."""
        rng = np.random.default_rng([seed, SPLIT_IDS[split], k, rank])
        return rng.integers(0, len(self.splits[split]) - self.block_size, size=batch_size)

    def get_batch(self, split: str, k: int, batch_size: int, seed: int = 0, rank: int = 0,
                  device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs ``x`` and next-token targets ``y``, int64 ``(batch_size, block_size)``, on ``device``."""
        if split not in SPLIT_IDS:
            raise ValueError(f"unknown split {split!r}; use one of {sorted(SPLIT_IDS)}")
        starts = self.batch_starts(split, k, batch_size, seed, rank)
        # One vectorised gather of (B, T+1) windows, split into contiguous x and y.
        window = self.splits[split][starts[:, None] + np.arange(self.block_size + 1)]
        xy = torch.from_numpy(window.astype(np.int64))
        x, y = xy[:, :-1].contiguous(), xy[:, 1:].contiguous()
        device = torch.device(device)
        if device.type == "cuda":
            x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        elif device.type != "cpu":
            x, y = x.to(device), y.to(device)
        return x, y


def naive_get_batch(folder: str | Path, split: str, batch_size: int, block_size: int,
                    rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The common per-call loader (reopen the memmap, one slice per row): the benchmark's baseline."""
    data = np.memmap(Path(folder) / f"{split}.bin", dtype=np.uint16, mode="r")
    ix = rng.integers(0, len(data) - block_size, size=batch_size)
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64)) for i in ix])
    return x, y
