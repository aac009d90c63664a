"""One right answer per exercise, taken from the chapter test modules: for tests that run every check and for
tools/time_exercise_checks.py, which times each check on its right answer."""

from __future__ import annotations

import importlib
from typing import Any

# exercise id -> (test module, attribute) or a literal answer (02.2 and 02.5 take a str)
_RIGHT: dict[str, Any] = {
    "01.1": ("test_exercises_ch01", "right_count_split"),
    "01.2": ("test_exercises_ch01", "right_seen_fraction"),
    "01.3": ("test_exercises_ch01", "right_split_tokens"),
    "01.4": ("test_exercises_ch01", "right_get_batch"),
    "02.1": ("test_exercises_ch02", "right_ratio"),
    "02.2": "Rosencrantz",
    "02.3": ("test_exercises_ch02", "right_release"),
    "02.4": ("test_exercises_ch02", "right_bpe"),
    "02.5": "a\n\nb",
    "03.1": ("test_exercises_ch03", "causal_mask"),
    "03.2": ("test_exercises_ch03", "one_head"),
    "03.3": ("test_exercises_ch03", "alibi_bias"),
    "03.4": ("test_exercises_ch03", "alibi_attention"),
    "04.1": ("test_exercises_ch04", "LayerNormNoBias"),
    "04.2": ("test_exercises_ch04", "count_params"),
    "04.3": ("test_exercises_ch04", "adafactor_bytes"),
    "04.4": ("test_exercises_ch04", "loss_memory"),
    "05.1": ("test_exercises_ch05", "accumulate"),
    "05.2": ("test_exercises_ch05", "lr_1sqrt"),
    "05.3": ("test_exercises_ch05", "muon_step"),
    "06.1": ("test_exercises_ch06", "divergence_edge"),
    "06.2": ("test_exercises_ch06", "early_stop"),
    "06.3": ("test_exercises_ch06", "dropout"),
    "07.1": ("test_exercises_ch07", "sample_temperature"),
    "07.2": ("test_exercises_ch07", "prob_drawn"),
    "07.3": ("test_exercises_ch07", "min_p_sample"),
    "07.4": ("test_exercises_ch07", "penalize"),
    "08.1": ("test_exercises_ch08", "one_seed_winner"),
    "08.2": ("test_exercises_ch08", "tokens_per_param"),
    "08.3": ("test_exercises_ch08", "decay_dividend"),
    "08.4": ("test_exercises_ch08", "steps_to_target"),
}


def ids() -> list[str]:
    return list(_RIGHT)


def right_answer(id: str) -> Any:
    """The right answer to exercise ``id`` (imports its chapter's test module, so tests/ must be on sys.path)."""
    entry = _RIGHT[id]
    if isinstance(entry, tuple):
        module, name = entry
        return getattr(importlib.import_module(module), name)
    return entry
