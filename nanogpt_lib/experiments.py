"""The measured experiments behind the defaults: learning rate, each variant alone, the best combination.

Stages, each a grid of runs (see ``sweep.py``) at equal tokens with two or more seeds:

1. ``lr``: the GPT-2 baseline (AdamW, cosine) at several learning rates; the best mean final val loss
   sets the tuned baseline, whose mean final val loss is the **target**.
2. ``variant``: each switch alone on the tuned baseline; measured by steps to reach the target.
3. ``combo``: the variants that helped, together, at a few learning rates.
4. ``half``: the best combination trained for half the steps (its own schedule): does it reach the target?
5. ``recipe`` (for the shipped model): short runs of the winner, one change at a time (WSD schedule,
   half the batch for twice the steps, dropout), compared on best val loss at equal tokens.

``run_experiments`` runs them in order (resumable) and writes ``summary.json``, ``results.md`` and figures;
each is rewritten only when its content changes, so re-reading a finished experiment changes no file.
``resumable_ladder`` does the same for notebook 06's ablation ladder: each rung trains once.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from . import paths
from .config import TrainConfig, fit_vocab, load_config
from .files import atomic_write_text
from .rundir import RunDir
from .sweep import Grid, RunSpec, run_grid, steps_to_target

VARIANTS: dict[str, tuple[str, ...]] = {
    "rope": ("model.pos=rope",),
    "relu2": ("model.mlp=relu2",),
    "qk_norm": ("model.qk_norm=true",),
    "untied": ("model.tie_head=false",),
    "softcap": ("model.logit_softcap=30",),
    "muon": ("optimizer=muon",),
}


# The baseline is GPT-2 as published, whatever the training defaults are now (they are this file's winners).
GPT2_BASELINE: tuple[str, ...] = ("optimizer=adamw", "model.pos=learned", "model.mlp=gelu", "schedule=cosine")


@dataclass
class Scale:
    """How big each stage is. ``full`` is the run experiments/README.md reports; ``tiny`` checks the machinery in
    seconds."""

    base: tuple[str, ...]  # overrides under every run (model size, eval cadence, ...)
    max_steps: int
    lrs: tuple[float, ...]
    seeds: tuple[int, ...] = (1, 2)
    combo_lr_factors: tuple[float, ...] = (1.0, 2.0)
    muon_lrs: tuple[float, ...] = (0.02, 0.04)
    recipe: bool = True  # run the recipe stage (schedule, batch, dropout) after the half-steps check
    range_steps: int = 300


SCALES = {
    "full": Scale(
        base=(*GPT2_BASELINE, "eval_every=50", "eval_batches=20", "log_every=10", "ckpt_every=250", "warmup_steps=100"),
        max_steps=1500,
        lrs=(5e-4, 1e-3, 2e-3, 4e-3, 8e-3),
    ),
    "tiny": Scale(
        base=(
            *GPT2_BASELINE,
            "model.n_layer=1",
            "model.n_head=2",
            "model.n_embd=32",
            "model.block_size=16",
            "batch_size=4",
            "eval_every=2",
            "eval_batches=2",
            "log_every=2",
            "ckpt_every=4",
            "warmup_steps=2",
            "dtype=float32",
        ),
        max_steps=8,
        lrs=(1e-3, 3e-3),
        combo_lr_factors=(1.0,),
        muon_lrs=(0.02,),
        range_steps=20,
    ),
}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def specs(stage: str, label: str, overrides: tuple[str, ...], seeds: tuple[int, ...]) -> list[RunSpec]:
    return [RunSpec(f"{stage}-{slug(label)}-s{seed}", label, tuple(overrides), seed, stage) for seed in seeds]


# ---- analysis ------------------------------------------------------------------------------------------


def by_label(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(r["label"], []).append(r)
    return groups


def final_val(r: dict[str, Any]) -> float:
    return r["final"]["val_loss"]


def summarize(results: list[dict[str, Any]], target: float, baseline_steps: float) -> list[dict[str, Any]]:
    """One row per label: mean final val loss and steps to ``target`` over seeds, with min-max spreads, and
    the speed-up ``baseline_steps / steps`` (above 1: reaches the target sooner)."""
    rows = []
    for label, runs in by_label(results).items():
        vals = [final_val(r) for r in runs]
        steps = [steps_to_target(r["curve"], target) for r in runs]
        mean_steps = statistics.fmean(steps) if all(map(math.isfinite, steps)) else math.inf
        rows.append(
            {
                "label": label,
                "stage": runs[0]["stage"],
                "overrides": list(runs[0]["overrides"]),
                "seeds": [r["seed"] for r in runs],
                "max_steps": runs[0]["step"],
                "val": statistics.fmean(vals),
                "val_min": min(vals),
                "val_max": max(vals),
                "steps": mean_steps,
                "steps_min": min(steps),
                "steps_max": max(steps),
                "steps_each": steps,
                "speedup": baseline_steps / mean_steps if mean_steps > 0 else math.inf,
                "speedup_min": baseline_steps / max(steps),
                "speedup_max": baseline_steps / max(min(steps), 1e-9),
                "tokens_per_s": statistics.fmean(r["tokens_per_s"] for r in runs),
            }
        )
    return rows


def best_row(rows: list[dict[str, Any]], key: str = "val") -> dict[str, Any]:
    return min(rows, key=lambda row: row[key])


def markdown_table(rows: list[dict[str, Any]], target: float) -> str:
    """Rows as a Markdown table (what experiments/README.md shows)."""

    def fmt_steps(row: dict[str, Any]) -> str:
        if not math.isfinite(row["steps"]):
            reached = sum(math.isfinite(x) for x in row["steps_each"])
            return f"not reached ({reached}/{len(row['steps_each'])} seeds did)"
        return f"{row['steps']:.0f} ({row['steps_min']:.0f}–{row['steps_max']:.0f})"

    def fmt_speed(row: dict[str, Any]) -> str:
        if not math.isfinite(row["steps"]):
            return "—"
        return f"{row['speedup']:.2f}x ({row['speedup_min']:.2f}–{row['speedup_max']:.2f})"

    lines = [
        f"Target: val loss {target:.4f}, the tuned baseline's mean final val loss, which it reaches in its "
        "full step count by definition. Speed-up: baseline steps / steps to target.",
        "",
        "| stage | run | steps | seeds | final val loss (min–max) | steps to target (min–max) | speed-up (min–max) |",
        "|---|---|---:|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['stage']} | {row['label']} | {row['max_steps']} | {','.join(map(str, row['seeds']))} | "
            f"{row['val']:.4f} ({row['val_min']:.4f}–{row['val_max']:.4f}) | {fmt_steps(row)} | "
            f"{fmt_speed(row)} |"
        )
    return "\n".join(lines) + "\n"


# ---- learning-rate range test ---------------------------------------------------------------------------


def lr_range_test(
    cfg: TrainConfig,
    lr_min: float = 1e-5,
    lr_max: float = 1.0,
    steps: int = 300,
    data_dir: str | Path | None = None,
    stop_factor: float = 4.0,
) -> dict[str, list[float]]:
    """Train once while raising the learning rate exponentially from ``lr_min`` to ``lr_max`` (Smith 2015):
    the loss falls fastest around good rates and blows up past the largest usable one. Stops when the
    smoothed loss exceeds ``stop_factor`` times its minimum. Returns ``lr`` and smoothed ``loss`` lists."""
    from .data import TokenData, load_meta
    from .devices import choose_precision, pick_device
    from .model import GPT
    from .optim import scale_lrs
    from .step import train_step

    device = pick_device(cfg.device)
    precision = choose_precision(device, cfg.dtype)
    folder = Path(data_dir or paths.data_dir()) / cfg.dataset
    cfg = fit_vocab(cfg, load_meta(folder)["vocab_size"])  # the model the trainer would build on this data
    data = TokenData(folder, cfg.model.block_size, cfg.model.vocab_size)
    torch.manual_seed(cfg.seed)
    model = GPT(cfg.model).to(device)
    # Built at the config's rates, then scaled by lr / cfg.lr each step: AdamW runs at the swept rate and
    # Muon keeps its own in proportion. (Until 2026-12 they were built at lr_min, so AdamW ran at
    # lr * lr_min / cfg.lr, 200 times below the rate the test reported.)
    opts = model.configure_optimizers(
        cfg.weight_decay, cfg.lr, (cfg.beta1, cfg.beta2), device.type, cfg.optimizer, cfg.muon_lr, cfg.muon_momentum
    )

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=precision.dtype, enabled=precision.autocast):
            return model(x, y)[1]

    lrs, losses, smooth, best = [], [], None, math.inf
    for k in range(steps):
        lr = lr_min * (lr_max / lr_min) ** (k / max(steps - 1, 1))
        scale_lrs(opts, lr / cfg.lr)
        batch = data.get_batch("train", k, cfg.batch_size, cfg.seed, device=device)
        value = train_step(
            model, opts, lambda _micro, batch=batch: batch, loss_of=loss_of, grad_clip=cfg.grad_clip
        ).item()
        smooth = value if smooth is None else 0.9 * smooth + 0.1 * value
        lrs.append(lr)
        losses.append(smooth)
        best = min(best, smooth)
        if not math.isfinite(smooth) or smooth > stop_factor * best:
            break
    return {"lr": lrs, "loss": losses}


# ---- the stages -----------------------------------------------------------------------------------------


@dataclass
class Experiments:
    """State of a (possibly resumed) experiment: the grid, the scale, and what each stage decided."""

    grid: Grid
    scale: Scale
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # stage -> run results
    decisions: dict[str, Any] = field(default_factory=dict)

    def run(self, stage: str, run_specs: list[RunSpec]) -> list[dict[str, Any]]:
        """Run a stage's grid; its wall time is recorded only when it trained something (a re-read is free)."""
        trained = any(not RunDir(self.grid.out_dir / spec.name).result.is_file() for spec in run_specs)
        started = time.perf_counter()
        results = run_grid(run_specs, self.grid)
        self.results[stage] = results
        if trained:
            self.decisions.setdefault("stage_seconds", {})[stage] = round(time.perf_counter() - started, 1)
        return results

    def lr_stage(self) -> float:
        s = self.scale
        run_specs = [
            spec
            for lr in s.lrs
            for spec in specs(
                "lr", f"baseline lr={lr:g}", (f"lr={lr:g}", f"min_lr={lr / 10:g}", f"max_steps={s.max_steps}"), s.seeds
            )
        ]
        results = self.run("lr", run_specs)
        means = {label: statistics.fmean(map(final_val, runs)) for label, runs in by_label(results).items()}
        best_label = min(means, key=means.get)
        best = next(r for r in results if r["label"] == best_label)
        lr = best["config"]["lr"]
        baseline = [r for r in results if r["label"] == best_label]
        target = statistics.fmean(map(final_val, baseline))
        # The baseline recipe reaches its own final loss in max_steps by definition (a seed may cross the
        # mean a little earlier, the other a little later, or not at all).
        self.decisions.update(lr=lr, target=target, baseline_label=best_label, baseline_steps=self.scale.max_steps)
        return lr

    def base_value(self, key: str, default: str) -> str:
        """A setting among the scale's base overrides (the last wins), else ``default``."""
        values = [o.split("=", 1)[1] for o in self.scale.base if o.startswith(f"{key}=")]
        return values[-1] if values else default

    def tuned(self) -> tuple[str, ...]:
        lr = self.decisions["lr"]
        return (f"lr={lr:g}", f"min_lr={lr / 10:g}", f"max_steps={self.scale.max_steps}")

    def baseline_results(self) -> list[dict[str, Any]]:
        return [r for r in self.results["lr"] if r["label"] == self.decisions["baseline_label"]]

    def rows(self, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = summarize(results, self.decisions["target"], self.decisions["baseline_steps"])
        for row in rows:
            if row["label"] == self.decisions["baseline_label"]:
                n = float(self.decisions["baseline_steps"])
                row.update(
                    steps=n,
                    steps_min=n,
                    steps_max=n,
                    steps_each=[n] * len(row["seeds"]),
                    speedup=1.0,
                    speedup_min=1.0,
                    speedup_max=1.0,
                )
        return rows

    def variant_stage(self) -> list[str]:
        """Each variant alone; returns the ones that reached the target sooner than the baseline."""
        run_specs = [
            spec
            for name, ov in VARIANTS.items()
            for spec in specs("variant", name, (*self.tuned(), *ov), self.scale.seeds)
        ]
        rows = self.rows(self.run("variant", run_specs))
        winners = [row["label"] for row in rows if row["speedup"] > 1.0]
        self.decisions["winners"] = winners
        return winners

    def combo_overrides(self, factor: float, muon_lr: float | None) -> tuple[str, ...]:
        lr = self.decisions["lr"] * factor
        ov = [f"lr={lr:g}", f"min_lr={lr / 10:g}", f"max_steps={self.scale.max_steps}"]
        for name in self.decisions["winners"]:
            ov += VARIANTS[name]
        if muon_lr is not None:
            ov.append(f"muon_lr={muon_lr:g}")
        return tuple(ov)

    def combo_stage(self) -> dict[str, Any]:
        """The winners together at a few learning rates; returns the best row (fewest steps to target)."""
        muon = "muon" in self.decisions["winners"]
        run_specs = []
        for factor in self.scale.combo_lr_factors:
            for muon_lr in self.scale.muon_lrs if muon else (None,):
                label = f"combo lr x{factor:g}" + (f" muon_lr={muon_lr:g}" if muon_lr else "")
                run_specs += specs("combo", label, self.combo_overrides(factor, muon_lr), self.scale.seeds)
        if not self.decisions["winners"]:
            self.decisions["combo"] = None
            return {}
        rows = self.rows(self.run("combo", run_specs))
        best = min(rows, key=lambda row: (row["steps"], row["val"]))
        self.decisions["combo"] = best
        return best

    def half_stage(self) -> dict[str, Any]:
        """The best combination with max_steps halved (its schedule compressed to match)."""
        combo = self.decisions.get("combo")
        if not combo:
            return {}
        half = self.scale.max_steps // 2
        ov = [o for o in combo["overrides"] if not o.startswith(("max_steps=", "warmup_steps="))]
        ov += [f"warmup_steps={max(1, int(self.base_value('warmup_steps', '100')) // 2)}", f"max_steps={half}"]
        rows = self.rows(
            self.run("half", specs("half", f"{combo['label']}, half the steps", tuple(ov), self.scale.seeds))
        )
        self.decisions["half"] = rows[0]
        return rows[0]

    def winner_overrides(self) -> tuple[str, ...]:
        """The best combination's settings (the tuned baseline's if none), without its step count."""
        combo = self.decisions.get("combo")
        chosen = combo["overrides"] if combo else list(self.tuned())
        return tuple(o for o in chosen if not o.startswith("max_steps="))

    def recipe_stage(self) -> dict[str, Any]:
        """Short runs (a quarter of the steps, seed 1, equal tokens) of the winner, one change at a time: a
        WSD schedule, half the batch for twice the steps, dropout 0.1. Compared on best val loss (the
        checkpoint a run keeps)."""
        combo = self.decisions.get("combo")
        if not self.scale.recipe or not combo:
            return {}
        batch, steps = int(self.base_value("batch_size", "64")), max(2, self.scale.max_steps // 4)
        warmup = max(1, int(self.base_value("warmup_steps", "100")) // 4)
        every = max(1, int(self.base_value("eval_every", "50")) // 2)
        ov = (*self.winner_overrides(), f"max_steps={steps}", f"warmup_steps={warmup}", f"eval_every={every}")
        changes = {
            f"winner (cosine, batch {batch}, dropout 0)": (),
            "wsd schedule": ("schedule=wsd",),
            f"batch {batch // 2}, {2 * steps} steps": (
                f"batch_size={batch // 2}",
                f"max_steps={2 * steps}",
                f"warmup_steps={2 * warmup}",
                f"eval_every={2 * every}",
            ),
            "dropout 0.1": ("model.dropout=0.1",),
        }
        run_specs = [
            spec
            for label, extra in changes.items()
            for spec in specs("recipe", label, (*ov, *extra), self.scale.seeds[:1])
        ]
        results = self.run("recipe", run_specs)
        best = min(results, key=lambda r: r["best_val_loss"])
        self.decisions["recipe"] = {
            "label": best["label"],
            "overrides": list(best["overrides"]),
            "best_val_loss": best["best_val_loss"],
        }
        return self.decisions["recipe"]

    def all_rows(self) -> list[dict[str, Any]]:
        rows = self.rows(self.results["lr"])
        for stage in ("variant", "combo", "half"):
            rows += self.rows(self.results.get(stage, []))
        return rows


def run_experiments(
    out_dir: str | Path,
    scale: str | Scale = "full",
    config: str | Path | None = None,
    workers: int = 1,
    data_dir: str | Path | None = None,
    extra: tuple[str, ...] = (),
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> Experiments:
    """All stages in order, then ``summary.json``, ``results.md`` and the figures in ``out_dir``."""
    from .plots import experiment_figures

    s = SCALES[scale] if isinstance(scale, str) else scale
    s = replace(s, base=(*s.base, *extra))
    grid = Grid(
        Path(out_dir),
        config=config,
        base=s.base,
        data_dir=None if data_dir is None else Path(data_dir),
        workers=workers,
        progress=progress,
    )
    exp = Experiments(grid, s)
    started = time.perf_counter()
    range_file = Path(out_dir) / "lr_range.json"
    if not range_file.is_file():
        cfg = load_config(config, [*s.base, f"max_steps={s.range_steps}"])
        atomic_write_text(range_file, json.dumps(lr_range_test(cfg, steps=s.range_steps, data_dir=data_dir)))
    say(f"lr range test: {range_file}")
    say(f"stage lr: tuned baseline lr = {exp.lr_stage():g}, target val loss {exp.decisions['target']:.4f}")
    say(f"stage variant: faster than the baseline: {', '.join(exp.variant_stage()) or 'none'}")
    combo = exp.combo_stage()
    if combo:
        say(f"stage combo: best {combo['label']}: {combo['speedup']:.2f}x fewer steps to target")
        half = exp.half_stage()
        say(f"stage half: {half['label']}: final val {half['val']:.4f} vs target {exp.decisions['target']:.4f}")
    recipe = exp.recipe_stage()
    if recipe:
        say(f"stage recipe: best {recipe['label']}: val {recipe['best_val_loss']:.4f}")
    exp.decisions["seconds"] = round(time.perf_counter() - started, 1)
    write_report(exp)
    experiment_figures(exp, Path(out_dir))
    return exp


def write_report(exp: Experiments) -> list[Path]:
    """Write ``summary.json`` and ``results.md`` into the grid's folder; return the files that changed.

    Re-reading finished runs must leave a committed experiment as it was (``git status`` clean), so a file
    is rewritten only when its text changes, and wall times come from the runs that trained: a stage that
    trained nothing in this call keeps the time the previous ``summary.json`` recorded for it, and so does
    the total (``decisions["seconds"]``) when no stage trained.
    """
    out = exp.grid.out_dir
    rows = exp.all_rows()
    summary = {
        "decisions": _timed_decisions(exp.decisions, _previous_decisions(out / "summary.json")),
        "rows": rows,
        "recipe": [
            {
                "label": r["label"],
                "best_val_loss": r["best_val_loss"],
                "final": r["final"],
                "step": r["step"],
                "seconds": r["seconds"],
            }
            for r in exp.results.get("recipe", [])
        ],
    }
    texts = {
        out / "summary.json": json.dumps(summary, indent=1, default=str),
        out / "results.md": markdown_table(rows, exp.decisions["target"]),
    }
    return [path for path, text in texts.items() if _write_if_changed(path, text)]


def _previous_decisions(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("decisions", {})
    except (OSError, ValueError, AttributeError):
        return {}


def _timed_decisions(decisions: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """``decisions`` with the timings of this call merged over the ``previous`` ones, in the key order a
    fresh run writes (stage times first, the total last), so that unchanged content gives unchanged text."""
    now = decisions.get("stage_seconds", {})  # only the stages that trained in this call
    stage_seconds = {**previous.get("stage_seconds", {}), **now}
    merged: dict[str, Any] = {"stage_seconds": stage_seconds} if stage_seconds else {}
    merged.update((k, v) for k, v in decisions.items() if k not in ("stage_seconds", "seconds"))
    seconds = decisions.get("seconds") if now or "seconds" not in previous else previous["seconds"]
    if seconds is not None:
        merged["seconds"] = seconds
    return merged


def _write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` (atomically) unless the file already holds exactly it."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write_text(path, text)
    return True


def resumable_ladder(
    path: str | Path,
    settings: dict[str, Any],
    rungs: list[tuple[str, Callable[[], dict[str, Any]]]],
    reuse: bool = True,
    say: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Each rung's record (``{"rung": label, **train()}``), training every rung at most once.

    The records are saved to ``path`` after each rung with the ``settings`` they were trained under. With
    ``reuse`` (a run that continues: the overnight notebook in mode ``auto``, started again after an
    interruption or after it finished), the rungs already saved under the same settings are read back
    and only the missing ones train: a finished ladder is skipped, an interrupted one resumes at the
    rung it was on. Without ``reuse``, or under other settings, every rung trains again.
    """
    path = Path(path)
    saved: dict[str, Any] = {}
    if reuse and path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = {}  # a damaged file: train again
    records = saved.get("ladder", []) if saved.get("settings") == settings else []
    done: list[dict[str, Any]] = []
    for record, (label, _) in zip(records, rungs):  # the saved rungs, in order, as long as they match
        if not isinstance(record, dict) or record.get("rung") != label:
            break
        done.append(record)
    if done:
        left = len(rungs) - len(done)
        say(
            f"ladder read from {paths.shown(path)}: "
            + (
                f"{len(done)} of {len(rungs)} rungs trained by an earlier run; training the other {left}"
                if left
                else f"all {len(rungs)} rungs, trained by an earlier run (delete it to train again)"
            )
        )
    for label, train in rungs[len(done) :]:
        done.append({"rung": label, **train()})
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"settings": settings, "ladder": done}))
    return done


def update_readme(block: str, readme: str | Path, name: str = "experiments") -> bool:
    """Replace the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in ``readme`` with
    ``block``; return False (file untouched) when the markers are missing."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(readme, f"{head}{start}\n{block.strip()}\n{end}{tail}")
    return True
