"""The learning-rate schedule: a pure function of the step and the config, nothing else.

Because the rate is a function of the step alone (no state, no clock), a resumed run applies the rates the
straight run would have, and the course's explorers and exercises can draw the curve a run will follow by
importing this small module instead of the trainer (which brings the run folder, DDP and plotting with it).
The trainer scales every optimizer group's own base rate by ``lr_at(step) / lr`` (``optim.scale_lrs``), so
Muon's rate follows the same curve from its own peak.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import TrainConfig


def wsd_decay_start(cfg: TrainConfig) -> int:
    """The step at which WSD's decay begins: the last ``decay_frac`` of the steps, never inside the warmup."""
    return max(cfg.max_steps - round(cfg.decay_frac * cfg.max_steps), cfg.warmup_steps)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``lr`` over ``warmup_steps``, then to ``min_lr`` at ``max_steps``: a cosine, or for
    ``wsd`` constant until the last ``decay_frac`` of the steps and linear from there."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "wsd":
        decay_start = wsd_decay_start(cfg)
        if step < decay_start:
            return cfg.lr
        progress = min((step - decay_start) / max(cfg.max_steps - decay_start, 1), 1.0)
        return cfg.lr + progress * (cfg.min_lr - cfg.lr)
    span = max(cfg.max_steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)
