"""Grids of short training runs: headless, in parallel where cores allow, resumable, one folder per run.

A run is finished when its folder holds ``result.json`` (written atomically, last); running the same grid
again skips finished runs and resumes interrupted ones from their checkpoints. Each run is an ordinary
trainer run (``runs_dir/<name>/metrics.jsonl``, ``config.json``), so every tool that reads a run reads these.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .config import load_config
from .files import atomic_write_text
from .rundir import RunDir


@dataclass(frozen=True)
class RunSpec:
    """One run of a grid: ``overrides`` in ``--set`` form on top of the grid's config file."""

    name: str  # folder name, unique within the grid
    label: str  # what the run tests, e.g. "rope" or "lr=0.002"; seeds of one label are averaged
    overrides: tuple[str, ...] = ()
    seed: int = 1
    stage: str = ""


@dataclass
class Grid:
    """Where and how a grid runs: the config file under all runs, their folder, data and device."""

    out_dir: Path
    config: str | Path | None = None
    base: tuple[str, ...] = ()  # overrides shared by every run (before each run's own)
    data_dir: Path | None = None
    workers: int = 1
    progress: bool = True
    log: list[str] = field(default_factory=list)


def _threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def _train_one(spec: dict[str, Any], grid: dict[str, Any]) -> dict[str, Any]:
    """Train one run to its end (in a worker process or inline) and write its result.json."""
    from .devices import cpu_threads
    from .train import Trainer  # imported here so a spawned worker pays for torch once, when it starts

    out_dir = Path(grid["out_dir"])
    overrides = [*grid["base"], *spec["overrides"], f"name={spec['name']}", f"seed={spec['seed']}"]
    if grid["threads"] and not any(o.startswith("threads=") for o in overrides):
        overrides.append(f"threads={grid['threads']}")
    cfg = load_config(grid["config"], overrides)
    started = time.perf_counter()
    with cpu_threads(cfg.threads):
        trainer = Trainer(
            cfg, mode="auto", runs_dir=out_dir, data_dir=grid["data_dir"], progress=False, artifacts=False
        )
        try:
            outcome = trainer.run()
        finally:
            trainer.close()
    if outcome.status != "finished":
        raise RuntimeError(f"run {spec['name']} stopped at step {outcome.step} ({outcome.status})")
    result = {
        **spec,
        "config": trainer.cfg.to_dict(),
        "step": outcome.step,
        "final": outcome.last_eval,
        "best_val_loss": outcome.best_val_loss,
        "tokens": outcome.step * trainer.tokens_per_step,
        "tokens_per_s": outcome.tokens_per_s,
        "seconds": time.perf_counter() - started,
        "device": str(trainer.device),
        "precision": trainer.precision.name,
    }
    run = RunDir(out_dir / spec["name"])
    atomic_write_text(run.result, json.dumps(result, indent=1))
    # Finished and recorded: only now is the checkpoint dead weight (deleted first, a failed write of
    # result.json would leave a run that can be neither resumed nor counted).
    run.remove_checkpoints()
    return result


def run_grid(specs: Iterable[RunSpec], grid: Grid) -> list[dict[str, Any]]:
    """Run every spec not yet finished under ``grid.out_dir``; return all their results in spec order.

    With ``workers`` > 1 the runs go to that many spawned processes (CUDA needs spawn, not fork), each
    with its share of the CPU threads. A run that fails is reported and the others go on; the call then
    raises, and calling again retries only what is unfinished.
    """
    specs = list(specs)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique, got duplicates in {names}")
    grid.out_dir.mkdir(parents=True, exist_ok=True)
    todo = [s for s in specs if not RunDir(grid.out_dir / s.name).result.is_file()]
    shared = {
        "out_dir": str(grid.out_dir),
        "config": None if grid.config is None else str(grid.config),
        "base": list(grid.base),
        "data_dir": None if grid.data_dir is None else str(grid.data_dir),
        "threads": _threads_per_worker(grid.workers) if grid.workers > 1 else 0,
    }
    failures: list[str] = []
    bar = tqdm(
        total=len(specs),
        initial=len(specs) - len(todo),
        unit="run",
        disable=not grid.progress,
        desc=grid.out_dir.name,
        dynamic_ncols=True,
    )
    try:
        if grid.workers <= 1:
            for spec in todo:
                try:
                    _train_one(asdict(spec), shared)
                except Exception as e:  # noqa: BLE001 - one bad run must not lose the others
                    failures.append(f"{spec.name}: {type(e).__name__}: {e}")
                bar.update(1)
        else:
            with ProcessPoolExecutor(grid.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(_train_one, asdict(s), shared): s for s in todo}
                for future in as_completed(futures):
                    if future.exception() is not None:
                        e = future.exception()
                        failures.append(f"{futures[future].name}: {type(e).__name__}: {e}")
                    bar.update(1)
    finally:
        bar.close()
    grid.log.extend(failures)
    if failures:
        raise RuntimeError(
            f"{len(failures)} run(s) failed (finished runs are kept; run again to retry):\n" + "\n".join(failures)
        )
    return [load_result(grid.out_dir / name) for name in names]


def load_result(run_dir: str | Path) -> dict[str, Any]:
    """A finished run's result.json plus its eval curve (``curve``: list of (step, val_loss))."""
    run = RunDir(run_dir)
    result = json.loads(run.result.read_text())
    evals = [r for r in run.read_metrics() if r.get("kind") == "eval"]
    result["curve"] = [(r["step"], r["val_loss"]) for r in evals]
    return result


def steps_to_target(curve: list[tuple[int, float]], target: float) -> float:
    """The first step at which the val-loss curve reaches ``target``, interpolated linearly between the
    two evaluations around the crossing; ``inf`` if it never does."""
    prev_step, prev_loss = 0, math.inf
    for step, loss in curve:
        if loss <= target:
            if not math.isfinite(prev_loss):
                return float(step)
            return prev_step + (step - prev_step) * (prev_loss - target) / (prev_loss - loss)
        prev_step, prev_loss = step, loss
    return math.inf
