"""Side-by-side benchmarks that print figures and ratios (never timed tests, which flake).

Each figure is the median rate over ``repeats`` timed rounds, with the spread (min..max), measured in
one process so the two sides share the machine's state.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import paths


@dataclass
class Rate:
    """Items per second over repeated rounds."""

    name: str
    unit: str
    rates: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    def __str__(self) -> str:
        return (f"{self.name:<34} {self.median:>14,.1f} {self.unit}/s  "
                f"(spread {min(self.rates):,.1f}..{max(self.rates):,.1f}, n={len(self.rates)})")


def measure(name: str, unit: str, fn: Callable[[], Any], items_per_call: float, calls: int,
            repeats: int, warmup: int = 1) -> Rate:
    """Rate of ``fn`` in items/s: ``repeats`` rounds of ``calls`` calls each, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        rates.append(items_per_call * calls / (time.perf_counter() - start))
    return Rate(name, unit, rates)


def compare(title: str, ours: Rate, baseline: Rate) -> dict[str, Any]:
    ratio = ours.median / baseline.median
    print(f"== {title}\n  {ours}\n  {baseline}\n  ratio: {ratio:.2f}x")
    return {"title": title, "ours": asdict(ours), "baseline": asdict(baseline), "ratio": ratio}


def bench_data(folder: Path, batch_size: int = 64, block_size: int = 64, calls: int = 200,
               repeats: int = 5) -> dict[str, Any]:
    """Batches/s of :class:`TokenData` against a loader that reopens the memmap on every call."""
    from .data import TokenData, naive_get_batch

    data = TokenData(folder, block_size)
    k = iter(range(10**9))
    rng = np.random.default_rng(0)
    ours = measure("TokenData.get_batch", "batch", lambda: data.get_batch("train", next(k), batch_size),
                   1, calls, repeats)
    naive = measure("naive per-call memmap loader", "batch",
                    lambda: naive_get_batch(folder, "train", batch_size, block_size, rng), 1, calls, repeats)
    return compare(f"batch loader, B={batch_size} T={block_size}", ours, naive)


def bench_prepare(repeats: int = 3) -> dict[str, Any]:
    """Tokens/s of ``prepare`` on the shipped corpus (into a temporary folder, so data/ is untouched)."""
    from .prepare import PrepareConfig, prepare

    tokens, rates = 0, []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            meta = prepare(PrepareConfig(data_dir=Path(tmp)))
            elapsed = time.perf_counter() - start
        tokens = meta["splits"]["train"]["tokens"] + meta["splits"]["val"]["tokens"]
        rates.append(tokens / elapsed)
    rate = Rate(f"prepare shakespeare ({tokens:,} tokens)", "token", rates)
    print(f"== prepare throughput\n  {rate}")
    return {"title": "prepare throughput", "ours": asdict(rate)}


def run(which: list[str], fast: bool = False, out: Path | None = None) -> dict[str, Any]:
    """Run the named benchmarks (``data``, ``prepare``) and write their figures to ``out`` as JSON."""
    from .prepare import PrepareConfig, prepare

    results: dict[str, Any] = {}
    if "data" in which:
        prepare(PrepareConfig())  # no-op when data/shakespeare is current
        results["data"] = bench_data(paths.data_dir() / "shakespeare", calls=20 if fast else 200,
                                     repeats=2 if fast else 5)
    if "prepare" in which:
        results["prepare"] = bench_prepare(repeats=1 if fast else 3)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
        print(f"figures written to {out}")
    return results
