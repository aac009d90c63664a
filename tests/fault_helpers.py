"""Shared by the fault-injection tests (tests/test_faults_*.py, test_minutes.py): crash points, a training run
that kills itself, and the bitwise comparison of a resumed run with a straight one (the corpus they train on:
tests/tiny.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from nanogpt_lib.checkpoint import load_checkpoint
from nanogpt_lib.plots import read_metrics

TIMING = ("tokens_per_s", "mfu")  # the only metrics that may differ between a straight and a resumed run

# The start of a subprocess script that SIGKILLs itself at its N-th os.replace (argv[1]): a real crash, in which
# no finally block runs. The rest of the script sees its own arguments from argv[1] on.
KILL_AT_NTH_REPLACE = """
import os, signal, sys
at, calls, real = int(sys.argv.pop(1)), [0], os.replace
def replace(*args, **kwargs):
    calls[0] += 1
    if calls[0] == at:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
os.replace = replace
"""


class Crash(Exception):
    """Stands for a crash at an injected point (the process stops there)."""


def counting(real, calls: dict[str, int], at: int):
    """``real`` (os.replace, os.link), raising :class:`Crash` instead at the ``at``-th call of any wrapped one."""

    def op(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at:
            raise Crash(f"crash before file-system step {at}")
        return real(*args, **kwargs)

    return op


def crash_at(at: int, monkeypatch) -> None:
    """Make the ``at``-th os.replace or os.link (every step that publishes something) raise :class:`Crash`."""
    calls = {"n": 0}
    monkeypatch.setattr(os, "replace", counting(os.replace, calls, at))
    monkeypatch.setattr(os, "link", counting(os.link, calls, at))


# A training run that SIGKILLs itself right after logging step KILL_AT (argv: KILL_AT TICK CONFIG OVERRIDE...).
# TICK 0 runs on the real clock; TICK > 0 gives the trainer a clock that advances TICK seconds a reading
# (a minutes run then decides the same budget every time). CONFIG "" is the default config.
TRAIN_KILLER = """
import os, signal, sys
from nanogpt_lib import train as t
from nanogpt_lib.config import load_config
kill_at, tick, config = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] or None
real_log = t.Trainer._log
def log_then_die(self, record):
    real_log(self, record)
    if record["kind"] == "step" and record["step"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
t.Trainer._log = log_then_die
clock = [0.0]
def ticking():
    clock[0] += tick
    return clock[0]
t.train(load_config(config, sys.argv[4:]), progress=False, **({"clock": ticking} if tick else {}))
"""


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Bitwise equality of nested checkpoint state: tensors by torch.equal, everything else by ==."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}/{i}")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


def assert_same_run(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a / "ckpt.pt"), load_checkpoint(b / "ckpt.pt")
    ca.pop("config"), cb.pop("config")  # the run name, and the layout (ranks or micro-batches)
    assert_same(ca, cb)  # weights, optimizer state, RNG state, step, best val loss
    strip = [[{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run)] for run in (a, b)]
    assert strip[0] == strip[1]
