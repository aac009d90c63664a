"""The per-minute experiment (issue 23): which recipe trains the best model on a laptop in N minutes?

A grid (``configs/laptop_grid.toml``) of recipes x training budgets in minutes x seeds. A recipe is a
tokenizer (GPT-2's, or our own BPE of some size) with the model shape and training settings chosen around it,
written as data in the grid file: a smaller vocabulary makes the LM head cheaper, and the time it frees can buy
a wider or deeper trunk, a longer context or more steps. Each run is ``train --minutes N`` on the shipped text
prepared with the recipe's tokenizer (``prepare --vocab N`` under its own data set name). A run's figures end in
bits per character of the shipped val text, the unit in which tokenizers compare.

The grid is resumable: a finished run's result is one JSON file in the results folder (written atomically,
last), and is never trained again; an unfinished run resumes from its checkpoint (in ``runs/minutes/``), with
the step budget it decided (a resumed run never measures again, see ``train.decide_budget``). Every
result names the CPU class it was measured on, since a figure per minute is a figure of a machine.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import paths
from .config import ConfigError, load_config
from .data import own_bpe_name
from .files import atomic_write_text
from .rundir import RunDir
from .tokenizer import MAX_VOCAB, MIN_VOCAB
from .tokenizer import NAME as GPT2

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RESULTS_MD = "results.md"
FIGURE = "bpc_vs_minutes.png"
RUN_OVERHEAD_S = 60  # a run's start, final checkpoint and whole-split evaluation, roughly, for the time estimate


RECIPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Recipe:
    """One candidate of the grid: a tokenizer (``"gpt2"`` or an own vocabulary size) and the overrides that
    shape the model and its training around it (``["model.n_layer=4", "batch_size=16"]``)."""

    name: str  # names its runs, folders and table rows, e.g. ``bpe2048-4x128``
    vocab: str
    sets: tuple[str, ...] = ()


@dataclass(frozen=True)
class MinutesRun:
    """One run of the grid: a recipe, a budget and a seed."""

    recipe: Recipe
    minutes: float
    seed: int

    @property
    def vocab(self) -> str:
        return self.recipe.vocab

    @property
    def name(self) -> str:
        """The run's folder and result name, e.g. ``bpe2048-4x128-10min-s0``."""
        return f"{self.recipe.name}-{self.minutes:g}min-s{self.seed}"


@dataclass(frozen=True)
class MinutesGrid:
    """A grid file's contents: the recipe under every run, and what the runs vary."""

    config: Path | None  # the TOML recipe under every run (None: the built-in defaults)
    source: str  # the text every tokenizer is trained on and prepared from
    base: tuple[str, ...]  # overrides under every run
    recipes: tuple[Recipe, ...]
    minutes: tuple[float, ...]
    seeds: tuple[int, ...]

    def runs(self) -> list[MinutesRun]:
        """Every run, cheapest budgets first (a grid stopped early has a complete short column to show)."""
        return [MinutesRun(r, m, s) for m in self.minutes for r in self.recipes for s in self.seeds]

    def dataset(self, vocab: str) -> str:
        """The data set a vocabulary's runs train on: the source's own name for GPT-2, else ``NAME-bpeN``."""
        name = Path(str(self.source)).name
        return name if vocab == GPT2 else own_bpe_name(name, int(vocab))

    def overrides(self, run: MinutesRun) -> list[str]:
        return [
            *self.base,
            *run.recipe.sets,
            f"dataset={self.dataset(run.vocab)}",
            f"name={run.name}",
            f"seed={run.seed}",
            f"minutes={run.minutes!r}",
        ]


def vocab_label(vocab: str) -> str:
    """``gpt2`` or ``bpe4096``: how a tokenizer is named in tables."""
    return GPT2 if vocab == GPT2 else f"bpe{vocab}"


def _vocab(value: Any, where: str) -> str:
    """A grid's tokenizer as a string: ``"gpt2"``, or an own vocabulary size in prepare's range."""
    if value == GPT2:
        return GPT2
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = -1
    if isinstance(value, bool) or not MIN_VOCAB <= n <= MAX_VOCAB or str(n) != str(value).strip():
        raise ConfigError(
            f"{where}: tokenizer {value!r} is neither 'gpt2' nor a vocabulary size from {MIN_VOCAB} to {MAX_VOCAB:,}"
        )
    return str(n)


def _number_list(data: dict[str, Any], key: str, kind: type, where: str) -> tuple[Any, ...]:
    values = data.get(key)
    ok = (
        isinstance(values, list)
        and values
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in values)
    )
    if not ok or (kind is int and not all(isinstance(v, int) for v in values)):
        raise ConfigError(f"{where}: {key} must be a non-empty list of {'whole ' if kind is int else ''}numbers")
    if kind is float and min(values) <= 0:
        raise ConfigError(f"{where}: every budget in {key} must be above 0 minutes")
    return tuple(kind(v) for v in values)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    """A list of ``--set`` overrides (``["model.n_layer=8", ...]``), or a ConfigError naming ``where``."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f'{where} must be a list of overrides in quotes, e.g. ["model.n_layer=8"]')
    return tuple(value)


def _recipe(name: str, value: Any, where: str) -> Recipe:
    """``[recipes] NAME = { vocab = 2048, set = [...] }``, checked."""
    here = f"{where}: [recipes] {name}"
    if not RECIPE_NAME.fullmatch(name):
        raise ConfigError(f"{here}: a recipe's name is letters, digits, '.', '_' and '-' (it names files)")
    if not isinstance(value, dict) or "vocab" not in value or set(value) - {"vocab", "set"}:
        raise ConfigError(f'{here} must be {{ vocab = "gpt2" or a size, set = ["model.n_layer=4", ...] }}')
    return Recipe(name, _vocab(value["vocab"], here), _strings(value.get("set", []), f"{here}: set"))


def load_grid(path: str | Path) -> MinutesGrid:
    """The grid in ``path``, checked: every recipe's tokenizer and config valid; a bad file is a ConfigError."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"grid file not found: {path} (the shipped one is configs/laptop_grid.toml)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path} is not a readable TOML grid file: {e}") from None
    known = {"config", "source", "base", "recipes", "minutes", "seeds"}
    if set(data) - known:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(sorted(set(data) - known))}; valid: {', '.join(sorted(known))}"
        )
    table = data.get("recipes")
    if not isinstance(table, dict) or not table:
        raise ConfigError(f'{path}: no [recipes] listed (each: NAME = {{ vocab = 2048, set = ["model.n_layer=4"] }})')
    config = data.get("config")
    grid = MinutesGrid(
        config=None if config is None else path.parent / str(config),
        source=str(data.get("source", "shakespeare")),
        base=_strings(data.get("base", []), f"{path}: base"),
        recipes=tuple(_recipe(name, value, str(path)) for name, value in table.items()),
        minutes=_number_list(data, "minutes", float, str(path)),
        seeds=_number_list(data, "seeds", int, str(path)),
    )
    for recipe in grid.recipes:  # every run's config is valid before hours of training start
        load_config(grid.config, grid.overrides(MinutesRun(recipe, grid.minutes[0], grid.seeds[0])))
    return grid


def select(
    grid: MinutesGrid,
    recipes: Iterable[str] | None = None,
    minutes: Iterable[float] | None = None,
    seeds: Iterable[int] | None = None,
) -> MinutesGrid:
    """A part of the grid (``--recipes gpt2,bpe2048-4x128 --minutes 5 --seeds 0``); recipes are the grid's,
    while budgets and seeds may be any (``--minutes 0.5``: a trial run)."""
    known = {r.name: r for r in grid.recipes}
    names = list(known) if recipes is None else list(recipes)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"--recipes {', '.join(unknown)}: not in the grid (it has {', '.join(known)})")
    budget = grid.minutes if minutes is None else tuple(minutes)
    if any(m <= 0 for m in budget):
        raise ConfigError(f"--minutes must be above 0, got {', '.join(f'{m:g}' for m in budget)}")
    picked = grid.seeds if seeds is None else tuple(seeds)
    if any(s < 0 for s in picked):
        raise ConfigError(f"--seeds must be whole numbers from 0, got {', '.join(map(str, picked))}")
    return MinutesGrid(grid.config, grid.source, grid.base, tuple(known[n] for n in names), budget, picked)


def result_path(out_dir: Path, run: MinutesRun) -> Path:
    return out_dir / f"{run.name}.json"


def plan_line(grid: MinutesGrid, out_dir: Path) -> str:
    """What a call will train and about how long it takes (printed before anything starts)."""
    runs = grid.runs()
    todo = [r for r in runs if not result_path(out_dir, r).is_file()]
    minutes = sum(r.minutes for r in todo) + len(todo) * RUN_OVERHEAD_S / 60
    hours, mins = divmod(round(minutes), 60)
    done = len(runs) - len(todo)
    return (
        f"{len(todo)} run(s) to train ({done} of {len(runs)} finished earlier): about {hours} h {mins:02d} min "
        f"(training plus about {RUN_OVERHEAD_S} s per run to start and evaluate; preparing a tokenizer's "
        "data set the first time adds a minute or so)"
    )


# ---- one run ----------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """The CPU a figure was measured on: its class (``devices.cpu_class``), torch's capability, the model name
    and whether AVX2 was emulated on a wider CPU (``ATEN_CPU_CAPABILITY``/``ONEDNN_MAX_CPU_ISA`` set)."""
    from .devices import cpu_class, cpu_info

    emulated = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if os.environ.get(k)}
    return {
        "cpu_class": cpu_class(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_model": cpu_info()[0],
        "emulated": emulated,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }


def _prepare(grid: MinutesGrid, vocab: str, data_dir: Path | None, progress: bool) -> None:
    """The tokenizer's data set, prepared once (``prepare`` returns at once when it is current)."""
    from .prepare import PrepareConfig, prepare

    prepare(
        PrepareConfig(
            source=grid.source,
            name=grid.dataset(vocab),
            data_dir=data_dir,
            progress=progress,
            vocab=None if vocab == GPT2 else int(vocab),
        )
    )


def train_run(
    grid: MinutesGrid,
    run: MinutesRun,
    out_dir: Path,
    runs_dir: Path,
    data_dir: Path | None = None,
    clock: Callable[[], float] | None = None,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Train one run to its budget (resuming its checkpoint if any), measure it on the whole val split, write
    its result; None when a signal paused it (the grid stops; the next call resumes it)."""
    from .data import text_stats
    from .devices import cpu_threads
    from .evaluate import val_loss
    from .train import Trainer

    _prepare(grid, run.vocab, data_dir, progress)
    cfg = load_config(grid.config, grid.overrides(run))
    with cpu_threads(cfg.threads):
        trainer = Trainer(
            cfg,
            mode="auto",
            runs_dir=runs_dir,
            data_dir=data_dir,
            progress=progress,
            artifacts=False,
            **({} if clock is None else {"clock": clock}),
        )
        try:
            outcome = trainer.run()
            if outcome.status != "finished":
                return None
            nats = val_loss(trainer.model, trainer.data, progress=progress, desc="whole val split")
            where = machine()
        finally:
            trainer.close()
    text = text_stats(trainer.data.folder, "val")
    budget = outcome.budget
    result = {
        "run": run.name,
        "recipe": run.recipe.name,
        "vocab": run.vocab,
        "minutes": run.minutes,
        "seed": run.seed,
        "dataset": cfg.dataset,
        "model": trainer.cfg.model.to_dict(),
        "params": trainer.model.num_params(),
        "val_loss": nats,
        "val_bpc": text.bits_per_char(nats),
        "val_bpb": text.bits_per_byte(nats),
        "val_tokens": text.tokens,
        "val_chars": text.chars,
        "val_bytes": text.bytes,
        "steps": outcome.step,
        "batch_size": cfg.batch_size * cfg.grad_accum,
        "tokens": outcome.step * trainer.tokens_per_step,
        # this process's training time (the deadline's measure; a resumed run counts only its last part)
        "train_seconds": outcome.seconds,
        "s_per_step": None if budget is None else budget.step_s,
        "budget": None if budget is None else budget.line(),
        "precision": trainer.precision.name,
        **where,
    }
    atomic_write_text(result_path(out_dir, run), json.dumps(result, indent=1) + "\n")
    # Recorded: the checkpoints are dead weight now (not before: a lost result must stay resumable).
    RunDir(runs_dir / run.name).remove_checkpoints()
    return result


def run_grid(
    grid: MinutesGrid,
    out_dir: str | Path | None = None,
    runs_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    clock_factory: Callable[[], Callable[[], float]] | None = None,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train every run of ``grid`` without a result yet, then write the table and the figure; return all
    results in the folder. ``clock_factory`` gives each run its clock (tests: one that ticks evenly)."""
    out = Path(out_dir or paths.project_root() / "experiments" / "minutes")
    runs = Path(runs_dir or paths.runs_dir() / "minutes")
    data = None if data_dir is None else Path(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    say(plan_line(grid, out))
    todo = [r for r in grid.runs() if not result_path(out, r).is_file()]
    started = time.perf_counter()
    for i, run in enumerate(todo, 1):
        say(f"[{i}/{len(todo)}] {run.name} ({_elapsed(time.perf_counter() - started)} elapsed)")
        result = train_run(grid, run, out, runs, data, None if clock_factory is None else clock_factory(), progress)
        if result is None:
            say(f"paused in {run.name}: run the same command again to resume it (finished runs are kept)")
            break
        say(f"{run.name}: {result['val_bpc']:.4f} bits/char, {result['steps']:,} steps")
    results = read_results(out)
    write_report(results, out)
    return results


def _elapsed(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}"


# ---- the table and the figure ------------------------------------------------------------------------------


def read_results(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every run result in ``out_dir`` and its subfolders (``*.json``), in path order: a grid run again on
    another CPU class (``--out experiments/minutes/avx2``) keeps its own files, and the table shows both."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(out_dir).rglob("*.json"))]


def cpu_label(result: dict[str, Any]) -> str:
    """``AVX512-BF16``, or ``AVX2 (emulated: ATEN_CPU_CAPABILITY=avx2)`` when the class was capped by hand."""
    emulated = result.get("emulated") or {}
    extra = ", ".join(f"{k}={v}" for k, v in sorted(emulated.items()))
    return f"{result['cpu_class']} (emulated: {extra})" if extra else str(result["cpu_class"])


def shape_of(result: dict[str, Any]) -> str:
    """``4x128, T64, B32``: layers x width, context and sequences per step, read from the result."""
    m = result["model"]
    return f"{m['n_layer']}x{m['n_embd']}, T{m['block_size']}, B{result['batch_size']}"


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per CPU class x recipe x budget: mean and range of bits/char over the seeds, and the mean
    s/step, parameters and shape (how the recipes' step times came out)."""
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((cpu_label(r), r["recipe"], float(r["minutes"])), []).append(r)
    rows = []
    for (cpu, recipe, minutes), runs in groups.items():
        bpc = [r["val_bpc"] for r in runs]
        steps = [r["s_per_step"] for r in runs if r.get("s_per_step") is not None]
        rows.append(
            {
                "cpu": cpu,
                "recipe": recipe,
                "vocab": runs[0]["vocab"],
                "shape": shape_of(runs[0]),
                "minutes": minutes,
                "seeds": sorted(r["seed"] for r in runs),
                "bpc": statistics.fmean(bpc),
                "bpc_min": min(bpc),
                "bpc_max": max(bpc),
                "s_per_step": statistics.fmean(steps) if steps else None,
                "params": runs[0]["params"],
                "steps": statistics.fmean(r["steps"] for r in runs),
            }
        )

    # within a CPU class: GPT-2's tokenizer first, then larger vocabularies first, then by recipe name
    def order(row: dict[str, Any]) -> tuple:
        return (row["cpu"], row["vocab"] != GPT2, -int(row["vocab"]) if row["vocab"] != GPT2 else 0, row["recipe"])

    return sorted(rows, key=lambda row: (*order(row), row["minutes"]))


def markdown(rows: list[dict[str, Any]]) -> str:
    """Bits/char per recipe (rows) x budget (columns), one table per CPU class: mean (min–max) over seeds."""
    lines = [
        "Bits per character of the shipped val text (whole split) after N minutes of `train --minutes N`; "
        "mean over seeds (min–max). Lower is better. Shape: layers x width, context T (tokens), B sequences "
        "per step.",
        "",
    ]
    for cpu in dict.fromkeys(row["cpu"] for row in rows):
        mine = [row for row in rows if row["cpu"] == cpu]
        budgets = sorted({row["minutes"] for row in mine})
        lines += [
            f"CPU class {cpu}:",
            "",
            "| recipe | tokenizer | shape | params | s/step | " + " | ".join(f"{m:g} min" for m in budgets) + " |",
            "|---|---|---|---:|---:|" + "---|" * len(budgets),
        ]
        for recipe in dict.fromkeys(row["recipe"] for row in mine):
            cells = {row["minutes"]: row for row in mine if row["recipe"] == recipe}
            first = next(iter(cells.values()))
            speed = "—" if first["s_per_step"] is None else f"{first['s_per_step']:.3g}"
            shown = [_cell(cells.get(m)) for m in budgets]
            lines.append(
                f"| {recipe} | {vocab_label(first['vocab'])} | {first['shape']} | {first['params'] / 1e6:.2f}M "
                f"| {speed} | " + " | ".join(shown) + " |"
            )
        lines.append("")
    return "\n".join(lines)


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "—"
    n = len(row["seeds"])
    return f"{row['bpc']:.3f} ({row['bpc_min']:.3f}–{row['bpc_max']:.3f}, {n} seed{'' if n == 1 else 's'})"


def figure(rows: list[dict[str, Any]]) -> Any:
    """Bits/char against minutes, one line per recipe (min–max over seeds as bars), a panel per CPU class."""
    from matplotlib.figure import Figure

    cpus = list(dict.fromkeys(row["cpu"] for row in rows))
    fig = Figure(figsize=(6 * len(cpus), 4), layout="constrained")
    for ax, cpu in zip(fig.subplots(1, len(cpus), squeeze=False)[0], cpus):
        for recipe in dict.fromkeys(row["recipe"] for row in rows if row["cpu"] == cpu):
            line = sorted((r for r in rows if r["cpu"] == cpu and r["recipe"] == recipe), key=lambda r: r["minutes"])
            x = [r["minutes"] for r in line]
            y = [r["bpc"] for r in line]
            err = [[r["bpc"] - r["bpc_min"] for r in line], [r["bpc_max"] - r["bpc"] for r in line]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=recipe)
        ax.set(xlabel="training minutes", ylabel="val bits per character", title=f"CPU class {cpu}")
        ax.legend()
    return fig


def write_report(results: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """``results.md`` and ``bpc_vs_minutes.png`` from the results; each rewritten only when its content
    changes (re-reading a finished grid leaves ``git status`` clean). Returns the files written."""
    from .experiments import _write_if_changed
    from .plots import save_png_if_changed

    out = Path(out_dir)
    if not results:
        return []
    rows = summarize(results)
    written = []
    if _write_if_changed(out / RESULTS_MD, markdown(rows)):
        written.append(out / RESULTS_MD)
    if save_png_if_changed(out / FIGURE, lambda: figure(rows), rows, code=(figure,)):
        written.append(out / FIGURE)
    return written
