"""The training loop: evaluation, metrics, checkpoints, pause/resume/reset, and DDP under torchrun.

Resume is exact: a checkpoint holds the weights, the optimizer, the step and the RNG states, the learning
rate is a function of the step, and batch ``k`` is a function of ``(seed, k)`` alone (see ``data.py``).
So stopping at step k and resuming to n gives bitwise the run that went straight to n (on CPU).

Nothing that runs after a restore may draw from the global RNG, or dropout masks after a resume would
differ from the straight run's.

Ctrl-C, SIGTERM (cloud pre-emption) and a notebook's interrupt finish the current step, write a
checkpoint, and return "paused" (``nanogpt train`` then exits with :data:`EXIT_PAUSED`); by hand, a second
Ctrl-C aborts and the previous checkpoint stands. Under torchrun the ranks agree on the pause step. The
signal, lock and rank machinery is in ``runctl.py``.

A run of ``minutes`` (``nanogpt train --minutes N``) measures its speed over its first steps and then fixes
its step budget (:func:`decide_budget`); a WSD run checks it again on the way to its decay, while the rate is
flat, and moves its end if the machine's speed drifted (:func:`replan_budget`). The budget is kept in the
checkpoint, so a resumed run continues the decided schedule instead of measuring again, and stays bitwise the
straight run.

Every evaluation gives the val loss also in bits per character and per byte of the val text
(``data.TextStats``), the units in which runs with different tokenizers compare.

The pieces the trainer only puts together live elsewhere: the step in ``step.train_step``, the rate in
``schedule.lr_at``, the optimizers in ``optim.build_optimizers``, the run folder's names in ``rundir.RunDir``
and the GPU datasheet peaks in ``devices.peak_flops``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import paths
from .checkpoint import export_weights, load_checkpoint, load_model_state, model_state, save_checkpoint
from .config import VOCAB_MULTIPLE, TrainConfig, fit_vocab
from .data import TextStats, TokenData, load_meta, text_stats
from .devices import choose_precision, cpu_threads, peak_flops, pick_device
from .files import USER_ERRNOS, AtomicWriteError, atomic_write_text, os_error_line, refuse_symlink
from .limits import TooLargeError, check_model_fits
from .model import GPT, GPTConfig
from .optim import build_optimizers, scale_lrs
from .plots import save_loss_plot
from .runctl import EXIT_PAUSED, PauseSignals, RunLock, TrainError, launched_by_torchrun, setup_distributed
from .rundir import CKPT, PREV_CKPT, RUN_FILES, RunDir, read_metrics
from .schedule import lr_at, wsd_decay_start
from .step import train_step
from .tokenizer import identity as tokenizer_identity

MODES = ("auto", "new", "resume", "reset")
EVAL_SEED_OFFSET = 1_000_003  # eval batches come from their own stream, fixed across evals

RESUME_KEYS = ("model", "optimizer", "step", "best_val", "rng")  # what a checkpoint needs to resume from
# A minutes run measures its step time on the steps after the first SETTLE_STEPS of its call: at least
# MEASURE_STEPS of them, and at least MEASURE_SHARE of the budget's time. The first steps are slower than the
# rest (kernels chosen and caches filled on first use, the data's and the weights' pages touched for the first
# time, torch.compile compiling on the first step and again on a recompile) and would make the budget short;
# the median over the window ignores a slow step in it (an evaluation, a checkpoint, another process's burst).
# The share: ten 0.12 s steps (1.2 s) of a small model on a 2-core VM measured 0.115 s/step where the whole
# run went at 0.146 (the budget 27% long), and another run's ten steps caught a burst that made it 11% short:
# a window of 3% of the budget (18 s of a 10-minute run) averages over such swings and costs no time, since
# the steps it measures train like any other.
SETTLE_STEPS = 5
MEASURE_STEPS = 10
MEASURE_SHARE = 0.03
# Even so, a machine's speed drifts over minutes (a VM's first minute ran 10-15% faster than the rest, so
# 10-minute runs ended 16% late; another process's burst in the window made one end 15% early), so a WSD
# minutes run checks its plan on the way to the decay: halfway from the decision to the decay, then halfway
# from there (1/2, 3/4, 7/8 of the flat phase, while an evaluation and a checkpoint fit in the half), each
# time from the speed of the steps since the last check (evaluations and checkpoints included), the most
# recent speed being the best guess of the rest. WSD's rate is flat there whatever the end, so a new end
# changes no rate already used. It moves the end only when the projected end misses the deadline by more than
# REPLAN_SLACK of the minutes and REPLAN_STEPS steps (a steady clock never re-plans), and only in the process
# that decided (a resumed run keeps the budget in its checkpoint).
REPLAN_SLACK = 0.02
REPLAN_STEPS = 3  # nor when it misses by less than this many steps (a short run's steps are a coarse ruler)
UNDECIDED = 2**62  # the schedule's end while a minutes run has not decided its budget: warmup, then flat lr
DATA_KEYS = ("seed", "batch_size", "grad_accum", "dataset")  # settings that change which batches come next

# CKPT, PREV_CKPT, RUN_FILES (their home is rundir) and lr_at (schedule) are re-exported: code that imported
# them from here keeps working.
__all__ = [
    "CKPT",
    "EXIT_PAUSED",
    "PREV_CKPT",
    "RUN_FILES",
    "Budget",
    "TrainError",
    "TrainResult",
    "Trainer",
    "decide_budget",
    "lr_at",
    "replan_budget",
    "replan_point",
    "train",
    "train_step",
]


@dataclass(frozen=True)
class Budget:
    """The step budget a minutes run decided (and planned again on the way), kept in its checkpoints (a resumed
    run never measures again)."""

    minutes: float
    max_steps: int
    step_s: float  # median seconds of a training step, measured
    overhead_s: float  # evaluation and checkpoint seconds per step (each one's measured time, spread)
    decided_at: int  # the step at which it was decided
    decay_from: int  # the step from which the schedule decays to min_lr
    replanned_at: int | None = None  # the last step at which its end moved (None: as decided)

    def line(self) -> str:
        """``minutes 10: 742 steps at 0.79 s/step (+0.012 s/step for evaluations and checkpoints), decay from
        step 594``: what the trainer prints when it decides, and the summary line repeats."""
        again = "" if self.replanned_at is None else f", planned again at step {self.replanned_at:,}"
        return (
            f"minutes {self.minutes:g}: {self.max_steps:,} steps at {self.step_s:.3g} s/step "
            f"(+{self.overhead_s:.2g} s/step for evaluations and checkpoints), decay from step {self.decay_from:,}"
            f"{again}"
        )

    def seconds_left(self, step: int) -> float:
        return max(self.max_steps - step, 0) * (self.step_s + self.overhead_s)


def decide_budget(
    cfg: TrainConfig, step: int, elapsed_s: float, step_times: list[float], eval_s: float, ckpt_s: float
) -> Budget:
    """The steps that fit in ``cfg.minutes`` (rank 0 decides; the other ranks receive its budget).

    ``elapsed_s`` is the time the run has taken up to ``step``; each later step costs the median of
    ``step_times`` plus its share of the evaluations (``eval_s`` each, every ``eval_every`` steps) and the
    checkpoints (``ckpt_s`` each, every ``ckpt_every``), and the last step its own evaluation and checkpoint.
    The budget is a whole number of steps, so the run ends on time or up to one step early.
    """
    assert cfg.minutes is not None
    step_s = statistics.median(step_times)
    overhead = eval_s / cfg.eval_every + ckpt_s / cfg.ckpt_every
    left = cfg.minutes * 60 - elapsed_s - eval_s - ckpt_s
    max_steps = step + max(math.floor(left / (step_s + overhead)), 0)
    if max_steps <= max(cfg.warmup_steps, step):
        raise TrainError(
            f"minutes {cfg.minutes:g} fit only {max_steps} steps at {step_s:.3g} s/step (evaluations "
            f"and checkpoints included), no more than the warmup ({cfg.warmup_steps} steps) or the "
            f"{step} steps that measured the speed: give the run more minutes or fewer warmup steps"
        )
    decided = dataclasses.replace(cfg, max_steps=max_steps)
    decay_from = wsd_decay_start(decided) if cfg.schedule == "wsd" else cfg.warmup_steps
    return Budget(cfg.minutes, max_steps, step_s, overhead, step, decay_from)


def replan_point(cfg: TrainConfig, budget: Budget, since: int) -> int | None:
    """The step at which a WSD minutes run plans again after planning at step ``since``: halfway from there to
    its decay (so 1/2, 3/4, 7/8 ... of the flat phase); None once the half would not hold an evaluation and a
    checkpoint (the speed measured would leave out their share of the time)."""
    half = (budget.decay_from - since) // 2
    return since + half if half >= max(cfg.eval_every, cfg.ckpt_every) else None


def replan_budget(
    cfg: TrainConfig, budget: Budget, step: int, elapsed_s: float, per_step_s: float, final_s: float
) -> Budget:
    """``budget`` planned again at ``step``, with ``elapsed_s`` of the run gone, from ``per_step_s``, the
    mean time of the steps since the last plan (evaluations and checkpoints included), and ``final_s`` left
    for the last evaluation and checkpoint; the same budget when its end lands within ``REPLAN_SLACK`` of the
    deadline (or ``REPLAN_STEPS`` steps).

    The decay still starts after ``step`` (a run far slower than planned gets a shorter decay, never a rate
    that jumps down).
    """
    deadline = budget.minutes * 60
    projected = elapsed_s + (budget.max_steps - step) * per_step_s + final_s
    if abs(projected - deadline) <= max(REPLAN_SLACK * deadline, REPLAN_STEPS * per_step_s):
        return budget
    max_steps = step + max(math.floor((deadline - elapsed_s - final_s) / per_step_s), 1)
    while wsd_decay_start(dataclasses.replace(cfg, max_steps=max_steps)) <= step:  # the decay must lie ahead
        max_steps += 1
    decay_from = wsd_decay_start(dataclasses.replace(cfg, max_steps=max_steps))
    return dataclasses.replace(
        budget,
        max_steps=max_steps,
        step_s=max(per_step_s - budget.overhead_s, 0.0),
        decay_from=decay_from,
        replanned_at=step,
    )


@dataclass
class TrainResult:
    """What a call to :func:`train` did."""

    run_dir: Path
    step: int
    status: str  # "finished" | "paused"
    best_val_loss: float | None
    last_eval: dict[str, float] = field(default_factory=dict)
    tokens_per_s: float = 0.0
    seconds: float = 0.0
    steps_run: int = 0  # optimizer steps taken by this call (0: the run had already finished)
    best_val_bpc: float | None = None  # the best val loss in bits per character of the val text
    budget: Budget | None = None  # a minutes run's decided step budget

    def summary(self) -> str:
        """One line for the end of a run: where it stopped, its best val loss, and this call's speed.

        A call that trained no step (the run was already finished, so it only re-evaluated) says so
        instead of reporting 0 tokens/s.
        """
        best = "none yet" if self.best_val_loss is None else f"{self.best_val_loss:.4f}"
        if self.best_val_bpc is not None:
            best += f" ({self.best_val_bpc:.4f} bits/char)"
        speed = (
            f"{self.steps_run:,} steps at {self.tokens_per_s:,.0f} tokens/s"
            if self.steps_run
            else "no step left to train"
        )
        budget = f"; {self.budget.line()}" if self.budget else ""
        return (
            f"{self.status} at step {self.step}: best val loss {best}; this call: {speed}, "
            f"{self.seconds:,.0f}s{budget}; run folder {paths.shown(self.run_dir)}"
        )


def _prepare_run_dir(run: RunDir, mode: str) -> bool:
    """Apply ``mode`` (on rank 0, under the run lock); return True when the run resumes from its checkpoint.

    A run that starts from scratch owns the folder: what an earlier attempt left (the metrics of a run
    killed before its first checkpoint, its best weights) is removed, so its log never mixes with a stale one.
    """
    run_dir = run.path
    refuse_symlink(run_dir, *run.run_files())  # reset must not delete through a link
    has_ckpt = run.has_checkpoint()
    if mode == "resume" and not has_ckpt:
        raise TrainError(f"nothing to resume: {run.ckpt} does not exist (use --mode new or auto)")
    if mode == "new" and run_dir.exists() and any(run_dir.iterdir()):
        raise TrainError(f"run {run_dir} already exists: --mode resume continues it, --mode reset starts it over")
    resume = has_ckpt and mode in ("auto", "resume")
    if mode == "auto":
        print(f"{'resuming' if resume else 'starting new run'} in {paths.shown(run_dir)}", flush=True)
    if not resume:
        stale = [target for target in run.run_files() if target.exists()]
        if stale and mode == "auto":
            print(
                f"removing {', '.join(t.name for t in stale)} of an earlier attempt that wrote no checkpoint",
                flush=True,
            )
        for target in stale:
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    return resume


def _check_runs_dir(run_dir: Path) -> None:
    """Before anything is written: the runs folder must be a folder, the run folder not a link or a file."""
    runs = run_dir.parent
    if runs.exists() and not runs.is_dir():
        raise TrainError(f"{runs} is a file, not the folder of runs: move it away, or set NANOGPT_HOME elsewhere")
    refuse_symlink(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainError(f"{run_dir} is a file, not a run folder: move it away or train under another --name")


def _data_changes(saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """The settings that choose the batches (seed, batch size, ...) that differ from the checkpoint's."""
    return [
        f"{key} {saved[key]} -> {getattr(cfg, key)}"
        for key in DATA_KEYS
        if key in saved and saved[key] != getattr(cfg, key)
    ]


def _reapply(optimizers: list[torch.optim.Optimizer], configured: list[list[dict[str, Any]]]) -> list[str]:
    """Put the config's hyperparameters back after ``load_state_dict`` restored the checkpoint's; name the
    ones that differ. A changed lr, weight decay, betas or momentum on resume is applied, never ignored."""
    changes: dict[str, str] = {}
    for opt, groups in zip(optimizers, configured):
        for group, values in zip(opt.param_groups, groups):
            for key, value in values.items():
                if key != "lr" and group.get(key) != value:  # lr itself is set by the schedule every step
                    changes.setdefault(f"{type(opt).__name__} {key}", f"{group.get(key)} -> {value}")
                group[key] = value
    return [f"{k} {v}" for k, v in changes.items()]


class Trainer:
    """One run: ``Trainer(cfg).run()``. Notebooks may call :meth:`run` again after a pause to resume."""

    def __init__(
        self,
        cfg: TrainConfig,
        mode: str = "auto",
        runs_dir: str | Path | None = None,
        data_dir: str | Path | None = None,
        progress: bool = True,
        on_eval: Callable[[dict[str, Any]], None] | None = None,
        artifacts: bool = True,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """``artifacts=False`` skips the best-weights export and the loss plot at each evaluation (for
        sweeps of many short runs, where only metrics.jsonl matters). ``clock`` (seconds) times the steps,
        evaluations and checkpoints from which a minutes run decides its budget: tests pass one that ticks
        evenly, so the decision is the same on a busy machine and a quiet one."""
        if mode not in MODES:
            raise TrainError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        self.cfg = cfg
        self.artifacts = artifacts
        self.dist = setup_distributed()
        self.rundir = RunDir(Path(runs_dir or paths.runs_dir()) / cfg.name)
        self.run_dir = self.rundir.path
        if self.dist.main:
            _check_runs_dir(self.run_dir)
        self._lock = RunLock(self.rundir.lock, cfg.name)
        self.progress = progress and self.dist.main
        self.on_eval = on_eval
        # cfg.threads is applied by train() and sweeps around their run (and given back after); a Trainer made
        # in a notebook runs on the notebook's own count and never changes it (a by-hand step before or after
        # it would otherwise run on another count, with another reduction order: notebook 05 compares them).
        self.threads = torch.get_num_threads()
        try:
            device = pick_device(cfg.device)
        except ValueError as e:
            raise TrainError(str(e)) from None
        if device.type == "cuda" and self.dist.world > 1:
            device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        self.precision = choose_precision(device, cfg.dtype)
        folder = Path(data_dir or paths.data_dir()) / cfg.dataset
        self.cfg = cfg = self._fit_vocab(cfg, load_meta(folder))
        self.data = TokenData(folder, cfg.model.block_size, cfg.model.vocab_size)
        try:
            check_model_fits(cfg.model, 4, "this config")  # weights, gradients and two optimizer moments
        except TooLargeError as e:
            raise TrainError(str(e)) from None
        torch.manual_seed(cfg.seed)
        self.model = GPT(cfg.model).to(device)
        try:
            ns_dtype = self.precision.dtype if self.precision.autocast else torch.float32  # Muon's, like the model's
            self.optimizers = build_optimizers(self.model, cfg, device.type, ns_dtype=ns_dtype)
        except RuntimeError as e:
            raise TrainError(str(e)) from None
        self.scaler = torch.amp.GradScaler("cuda") if self.precision.grad_scaler else None
        self.step = 0
        self.best_val: float | None = None
        self.clock = clock
        self.budget: Budget | None = None  # a minutes run's, once decided (or restored from its checkpoint)
        # (run start, time and step of the last plan, last evaluation + checkpoint seconds, next replan step)
        # while this process will plan again
        self._replan: tuple[float, float, int, float, int] | None = None
        self._text: TextStats | None = None  # the val split's text size, for bits per character
        self._sched = cfg  # the config the lr schedule reads (see _schedule_cfg)
        self._saved_step: int | None = None  # the step of the newest checkpoint of this run, if any
        with self._exclusive():
            # Rank 0 alone touches the run folder and reads the checkpoint; the others get it from rank 0.
            ckpt = self.dist.broadcast(self.dist.agree(lambda: self._open(mode) if self.dist.main else None))
            if ckpt is not None:
                self.dist.agree(lambda: self._restore(ckpt))
            self._stamp = self._ckpt_stamp()
        self.ddp_model: torch.nn.Module = self.model
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp_model = DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        if cfg.compile:
            self.ddp_model = torch.compile(self.ddp_model)
        self.peak_flops: float | None = None  # the datasheet peak MFU is measured against (devices.peak_flops)

    def _fit_vocab(self, cfg: TrainConfig, meta: dict[str, Any]) -> TrainConfig:
        """The config with the model's vocabulary fitted to the data set's tokenizer (``config.fit_vocab``)."""
        fitted = fit_vocab(cfg, meta["vocab_size"])
        if fitted.model.vocab_size != cfg.model.vocab_size and self.dist.main:
            print(
                f"model.vocab_size {fitted.model.vocab_size:,}: the data set's {meta['vocab_size']:,} tokens padded "
                f"to a multiple of {VOCAB_MULTIPLE}",
                flush=True,
            )
        return fitted

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.grad_accum * self.cfg.model.block_size * self.dist.world

    @property
    def max_steps(self) -> int | None:
        """The step the run ends at: the config's, a minutes run's decided budget, or None until it decides."""
        if self.budget is not None:
            return self.budget.max_steps
        return None if self.cfg.minutes is not None else self.cfg.max_steps

    def _at_end(self) -> bool:
        return self.max_steps is not None and self.step >= self.max_steps

    def _schedule_cfg(self) -> TrainConfig:
        """The config with the end the lr schedule uses: before a minutes run decides, a schedule that never
        ends (warmup, then the peak lr: a step's rate must not depend on a budget not yet decided)."""
        end = UNDECIDED if self.max_steps is None else self.max_steps
        if self._sched.max_steps != end:
            self._sched = dataclasses.replace(self._sched, max_steps=end)
        return self._sched

    # ---- the run folder and checkpoints -----------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the run lock (on rank 0) while writing to the run folder; a taken lock fails every rank."""
        self.dist.agree(lambda: self._lock.acquire() if self.dist.main else None)
        try:
            yield
        finally:
            self._lock.release()

    def _ckpt_stamp(self) -> tuple[int, int] | None:
        path = self.rundir.ckpt
        if not self.dist.main or not path.is_file():
            return None
        st = path.stat()
        return st.st_mtime_ns, st.st_size

    def _check_unchanged(self) -> None:
        """Refuse to go on if another trainer wrote this run while this one held no lock (between calls)."""
        if self.dist.main and self._ckpt_stamp() != self._stamp:
            raise TrainError(
                f"run {self.cfg.name!r} was changed by another trainer since this one last saved it: "
                "make a new Trainer (mode resume) to continue from its checkpoint"
            )

    def _open(self, mode: str) -> dict[str, Any] | None:
        """Rank 0: apply ``mode`` to the run folder; return the checkpoint to resume from, or None."""
        if _prepare_run_dir(self.rundir, mode):
            return load_checkpoint(self.rundir.ckpt)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.rundir.config, json.dumps(self.cfg.to_dict(), indent=2))
        return None

    def _state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        state = {
            "model": model_state(self.model),
            "optimizer": [opt.state_dict() for opt in self.optimizers],
            "step": self.step,
            "best_val": self.best_val,
            "config": self.cfg.to_dict(),
            "rng": rng,
            "precision": self.precision.name,  # an auto choice is kept on resume, not re-measured
            "tokenizer": self.data.tokenizer,  # issue 23: "gpt2", or the data set's own ranks, inline
            "budget": None if self.budget is None else dataclasses.asdict(self.budget),  # never re-measured
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def save(self, signals: PauseSignals | None = None) -> None:
        """Write the checkpoint (rank 0); a second Ctrl-C meanwhile waits until the file is whole."""
        with signals.saving() if signals else contextlib.nullcontext():
            if self.dist.main:
                save_checkpoint(self.rundir.ckpt, self._state())
        self._saved_step = self.step
        self._stamp = self._ckpt_stamp()

    def _restore(self, ckpt: dict[str, Any]) -> None:
        path = self.rundir.ckpt
        missing = [k for k in RESUME_KEYS if k not in ckpt]
        if missing or not isinstance(ckpt.get("rng"), dict) or "torch" not in ckpt.get("rng", {}):
            raise TrainError(
                f"{path} lacks {', '.join(missing) or 'rng.torch'}: it was not written by `nanogpt train`, "
                "so the run cannot resume from it; start over with --mode reset"
            )
        saved = GPTConfig.from_dict(ckpt["config"]["model"])
        if saved != self.cfg.model:
            raise TrainError(
                f"{path} holds a model of shape {saved.to_dict()}, the config asks for {self.cfg.model.to_dict()}: "
                "use --mode reset to start over, or another run name"
            )
        if tokenizer_identity(ckpt.get("tokenizer")) != tokenizer_identity(self.data.tokenizer):  # issue 23
            raise TrainError(
                f"{path} was trained on ids of another tokenizer than data set {self.cfg.dataset!r} "
                "has now (prepared again with another --vocab?): use --mode reset or another run name"
            )
        load_model_state(self.model, ckpt["model"], path)
        saved_opts = ckpt["optimizer"] if isinstance(ckpt["optimizer"], list) else [ckpt["optimizer"]]
        if len(saved_opts) != len(self.optimizers):
            raise TrainError(
                f"{path} was trained with {len(saved_opts)} optimizer(s), this config uses "
                f"{len(self.optimizers)} (optimizer = {self.cfg.optimizer!r}): use --mode reset"
            )
        configured = [
            [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] for opt in self.optimizers
        ]
        for opt, saved_state in zip(self.optimizers, saved_opts):
            opt.load_state_dict(saved_state)
        changes = _reapply(self.optimizers, configured) + _data_changes(ckpt["config"], self.cfg)
        if self.scaler is not None and "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.cfg.dtype == "auto" and "precision" in ckpt:
            self.precision = choose_precision(self.device, ckpt["precision"])
        self.step = self._saved_step = int(ckpt["step"])
        self.best_val = ckpt["best_val"]
        if isinstance(ckpt.get("budget"), dict):  # a minutes run keeps the budget it decided, whatever minutes say now
            self.budget = Budget(**ckpt["budget"])
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        if "cuda" in ckpt["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["rng"]["cuda"]])
        self._truncate_metrics()
        if self.dist.main:
            print(f"resumed {self.run_dir.name} at step {self.step}", flush=True)
            if changes:
                print(
                    f"the config's settings replace the checkpoint's (hyperparameters; a changed seed, batch size "
                    f"or data set changes the batches from here on): {', '.join(changes)}",
                    flush=True,
                )
            if self.budget is not None:
                print(f"the budget this run decided stands: {self.budget.line()}", flush=True)

    def _truncate_metrics(self) -> None:
        """Drop records logged after the checkpoint (a killed run's tail) so the log matches a straight run."""
        path = self.rundir.metrics
        if not self.dist.main or not path.exists():
            return
        keep = [r for r in read_metrics(path) if r.get("step", math.inf) <= self.step]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.main:
            return
        path = self.rundir.metrics
        try:
            refuse_symlink(path)
            with open(path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        except OSError as e:
            if e.errno not in USER_ERRNOS:
                raise
            kept = "" if self._saved_step is None else f"; the checkpoint of step {self._saved_step} is intact"
            raise AtomicWriteError(e.errno, e.strerror, str(path), f"{os_error_line(e, path)}{kept}") from None

    # ---- the loop ---------------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        p = self.precision
        return torch.autocast(self.device.type, dtype=p.dtype) if p.autocast else contextlib.nullcontext()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss over ``eval_batches`` fixed batches of each split (the same batches at every eval), and
        the val loss in bits per character and per byte of the val text (``val_bpc``, ``val_bpb``)."""
        self.model.eval()
        out = {}
        for split in ("train", "val"):
            total = 0.0
            for k in range(self.cfg.eval_batches):
                x, y = self.data.get_batch(
                    split, k, self.cfg.batch_size, self.cfg.seed + EVAL_SEED_OFFSET, device=self.device
                )
                with self._autocast():
                    _, loss = self.model(x, y)
                total += loss.item()
            out[f"{split}_loss"] = total / self.cfg.eval_batches
        self.model.train()
        text = self.text_stats()
        out["val_bpc"] = text.bits_per_char(out["val_loss"])
        out["val_bpb"] = text.bits_per_byte(out["val_loss"])
        return out

    def text_stats(self) -> TextStats:
        """The val split's tokens, characters and bytes (counted once, at the first evaluation)."""
        if self._text is None:
            self._text = text_stats(self.data.folder, "val")
        return self._text

    def _train_step(self) -> torch.Tensor:
        """One step of the run (``step.train_step``) at the schedule's rate; the loss averaged over the ranks."""
        cfg, world = self.cfg, self.dist.world
        scale_lrs(self.optimizers, lr_at(self.step, self._schedule_cfg()) / cfg.lr)  # one schedule, every base rate

        def batch(micro: int) -> tuple[torch.Tensor, torch.Tensor]:
            # The global micro-batch index: the same batches whether spread over ranks or accumulated.
            k = (self.step * cfg.grad_accum + micro) * world + self.dist.rank
            return self.data.get_batch("train", k, cfg.batch_size, cfg.seed, device=self.device)

        def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with self._autocast():
                return self.ddp_model(x, y)[1]

        mean = train_step(
            self.model,
            self.optimizers,
            batch,
            loss_of=loss_of,
            accum=cfg.grad_accum,
            grad_clip=cfg.grad_clip,
            scaler=self.scaler,
            no_sync=self.ddp_model.no_sync if world > 1 else None,
        )
        self.step += 1
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(mean, op=dist.ReduceOp.AVG)
        return mean

    def _applied_lrs(self) -> dict[str, float]:
        """The rates the last step used, read from the optimizers (what was applied is what is logged)."""
        lrs = {"lr": self.optimizers[0].param_groups[0]["lr"]}
        if self.cfg.optimizer == "muon":
            lrs["muon_lr"] = self.optimizers[-1].param_groups[0]["lr"]
        return lrs

    def _eval_and_save(self) -> dict[str, float]:
        cfg = self.cfg
        result = self.evaluate()
        record = {"kind": "eval", "step": self.step, **result}
        self._log(record)
        improved = self.best_val is None or result["val_loss"] < self.best_val
        if improved:
            self.best_val = result["val_loss"]
            if self.dist.main and self.artifacts:
                export_weights(
                    self.model,
                    cfg.model,
                    self.rundir.best,
                    {"step": self.step, "val_loss": result["val_loss"], "run": cfg.name},
                    tokenizer=self.data.tokenizer,
                )  # issue 23: the export decodes with it
        if self.dist.main and self.artifacts:
            save_loss_plot(self.run_dir)
        if self.on_eval:
            self.on_eval(record)
        return result

    def _diverged(self, loss_value: float) -> TrainError:
        kept = (
            "no checkpoint was written yet, so start again"
            if self._saved_step is None
            else f"the last good checkpoint ({paths.shown(self.rundir.ckpt)}, step {self._saved_step}) is "
            "kept; resume from it"
        )
        return TrainError(
            f"loss is {loss_value} at step {self.step}: training stopped; {kept} "
            "after lowering lr or raising warmup_steps"
        )

    def run(self) -> TrainResult:
        """Train to ``max_steps`` (or until paused); return where it stopped."""
        with self._exclusive():
            self.dist.agree(self._check_unchanged)
            return self._run()

    def _run(self) -> TrainResult:
        cfg = self.cfg
        self.peak_flops = peak_flops(self.device, self.precision)
        start_step, started = self.step, time.perf_counter()
        self.text_stats()  # counted now (decoding the split, once per process), not inside a timed evaluation
        meter = (  # a minutes run, undecided
            _Meter(self.clock, start_step, MEASURE_SHARE * 60 * cfg.minutes) if self.max_steps is None else None
        )
        last_eval: dict[str, float] = {}
        status = "finished"
        if self.dist.main:
            end = self.max_steps if self.max_steps is not None else f"the steps that fit in {cfg.minutes:g} minutes"
            print(
                f"device {self.device}, precision {self.precision.name}, {self.model.num_params():,} params, "
                f"{self.tokens_per_step:,} tokens/step, steps {self.step}->{end}",
                flush=True,
            )
        bar = tqdm(
            total=self.max_steps,
            initial=self.step,
            disable=not self.progress,
            unit="step",
            dynamic_ncols=True,
            desc=cfg.name,
        )
        self.model.train()
        self._window = [0.0, 0]  # seconds and steps since the last logged step (tokens/s)
        prefix = f"rank {self.dist.rank}: " if self.dist.world > 1 else ""
        signals = PauseSignals(launched=launched_by_torchrun(), prefix=prefix)
        try:
            with signals.installed():
                while not self._at_end():
                    step_start = time.perf_counter()
                    loss_value = self._train_step().item()  # .item() waits for the device
                    self._window[0] += time.perf_counter() - step_start  # tokens/s: training steps only
                    self._window[1] += 1
                    if not math.isfinite(loss_value):  # the loss is all-reduced: every rank stops here
                        raise self._diverged(loss_value)
                    if self.step % cfg.log_every == 0 or self._at_end():
                        self._log_step(loss_value, bar)
                    bar.update(1)
                    if self.step % cfg.eval_every == 0 or self._at_end():
                        last_eval = self._report_eval(bar, meter)
                    if self.step % cfg.ckpt_every == 0 or self._at_end():
                        self._timed_save(signals, meter)
                    if meter is not None and meter.tick(self.step):
                        last_eval = self._decide(meter, signals, bar) or last_eval
                        meter = None
                    elif meter is None and cfg.minutes is not None:
                        now = self.clock()  # each step's end, read as the meter read it before the decision
                        if self._replan is not None and self.step >= self._replan[-1]:
                            self._plan_again(signals, bar, now)
                    finished = self._at_end()  # a signal in the last step: the run is done, not paused
                    if self.dist.any(signals.requested) and not finished:  # agreed: all ranks pause at this step
                        if self._saved_step != self.step:
                            self.save(signals)
                        self.dist.barrier()  # no rank exits (so torchrun stops none) before the file is whole
                        status = "paused"
                        minutes = f" --minutes {cfg.minutes:g}" if cfg.minutes is not None else ""
                        if self.dist.main:
                            print(
                                f"paused at step {self.step}; checkpoint {paths.shown(self.rundir.ckpt)}. "
                                f"Resume with: nanogpt train --name {cfg.name} --mode resume{minutes} "
                                "(plus the same --config/--set)",
                                flush=True,
                            )
                        break
        finally:
            bar.close()
        if not last_eval and status == "finished":  # nothing left to train (a finished run resumed)
            last_eval = self.evaluate()
        elapsed = time.perf_counter() - started
        tps = self.tokens_per_step * (self.step - start_step) / max(elapsed, 1e-9)
        best_bpc = None if self.best_val is None else self.text_stats().bits_per_char(self.best_val)
        return TrainResult(
            self.run_dir,
            self.step,
            status,
            self.best_val,
            last_eval,
            tps,
            elapsed,
            self.step - start_step,
            best_bpc,
            self.budget,
        )

    def _log_step(self, loss_value: float, bar: tqdm) -> None:
        """Log the step's loss, rates and speed; show them (and a minutes run's time left) on the bar."""
        seconds, steps = self._window
        tps = self.tokens_per_step * steps / seconds
        speed = {"tokens_per_s": round(tps, 1)}
        shown = {"loss": f"{loss_value:.3f}", "tok_s": f"{tps:,.0f}"}
        if self.peak_flops is not None:  # MFU only against a datasheet peak
            speed["mfu"] = round(tps * self.model.flops_per_token() / self.peak_flops, 4)
            shown["mfu"] = f"{speed['mfu']:.1%}"
        if self.cfg.minutes is not None:
            shown["left"] = "measuring" if self.budget is None else _minutes_text(self.budget.seconds_left(self.step))
        self._log({"kind": "step", "step": self.step, "loss": loss_value, **self._applied_lrs(), **speed})
        bar.set_postfix(shown, refresh=False)
        self._window = [0.0, 0]

    def _report_eval(self, bar: tqdm, meter: _Meter | None) -> dict[str, float]:
        """Evaluate (timed for a minutes run still measuring), log, and write the line under the bar."""
        start = self.clock()
        result = self._eval_and_save()
        if meter is not None:
            meter.eval_s = self.clock() - start
        if self.dist.main:
            bar.write(
                f"step {self.step}: train {result['train_loss']:.4f}, val {result['val_loss']:.4f} "
                f"({result['val_bpc']:.4f} bits/char)"
            )
        return result

    def _timed_save(self, signals: PauseSignals, meter: _Meter | None) -> None:
        start = self.clock()
        self.save(signals)
        if meter is not None:
            meter.ckpt_s = self.clock() - start

    def _decide(self, meter: _Meter, signals: PauseSignals, bar: tqdm) -> dict[str, float] | None:
        """A minutes run, measured: time an evaluation and a checkpoint if none was timed yet, decide the
        budget on rank 0, give it to every rank, log it, and write it into a checkpoint at once (a run
        killed later resumes with it). Returns the evaluation made here, if one was."""
        result = self._report_eval(bar, meter) if meter.eval_s is None else None
        if meter.ckpt_s is None:
            self._timed_save(signals, meter)
        elapsed = self.clock() - meter.start
        self.budget = self.dist.broadcast(
            self.dist.agree(
                lambda: (
                    decide_budget(
                        self.cfg, self.step, elapsed, meter.step_times, meter.eval_s or 0.0, meter.ckpt_s or 0.0
                    )
                    if self.dist.main
                    else None
                )
            )
        )
        self._log({"kind": "budget", "step": self.step, **dataclasses.asdict(self.budget)})
        bar.total = self.budget.max_steps
        bar.refresh()
        if self.dist.main:
            bar.write(self.budget.line())
        self.save(signals)
        point = replan_point(self.cfg, self.budget, self.step) if self.cfg.schedule == "wsd" else None
        if point is not None:  # see REPLAN_SLACK: this process checks the plan again on the way to the decay
            self._replan = (meter.start, meter.last, self.step, (meter.eval_s or 0.0) + (meter.ckpt_s or 0.0), point)
        return result

    def _plan_again(self, signals: PauseSignals, bar: tqdm, now: float) -> None:
        """A WSD minutes run at a replan point (the clock read ``now``): plan its end again from the speed since
        the last plan (rank 0 plans, every rank receives it); a changed budget is logged, shown and saved at
        once. The next point is halfway to the (new) decay."""
        assert self._replan is not None and self.budget is not None
        start, last_t, last_step, final_s, _ = self._replan
        per_step = (now - last_t) / max(self.step - last_step, 1)
        budget = self.dist.broadcast(
            self.dist.agree(
                lambda: (
                    replan_budget(self.cfg, self.budget, self.step, now - start, per_step, final_s)
                    if self.dist.main
                    else None
                )
            )
        )
        point = replan_point(self.cfg, budget, self.step)
        self._replan = None if point is None else (start, now, self.step, final_s, point)
        if budget == self.budget:
            return
        self.budget = budget
        self._log({"kind": "budget", "step": self.step, **dataclasses.asdict(budget)})
        bar.total = budget.max_steps
        bar.refresh()
        if self.dist.main:
            bar.write(budget.line())
        self.save(signals)

    def close(self) -> None:
        self._lock.release()
        if self.dist.world > 1:
            # Every rank arrives, then DDP's reducer (which holds the process group) is freed while the peers
            # are still alive: freed later, after a peer had exited, its gloo group's destructor waited forever.
            self.dist.barrier()
            self.ddp_model = self.model
        self.dist.close()


class _Meter:
    """A minutes run's measurements before it decides: step times after the settling steps, and the time of
    one evaluation and one checkpoint, all read from the trainer's clock."""

    def __init__(self, clock: Callable[[], float], start_step: int, window_s: float = 0.0) -> None:
        self.clock, self.start_step, self.window_s = clock, start_step, window_s
        self.start = self.last = clock()
        self.step_times: list[float] = []
        self.eval_s: float | None = None
        self.ckpt_s: float | None = None

    def tick(self, step: int) -> bool:
        """Time the step just finished (from the previous tick); True once the window is measured: at least
        ``MEASURE_STEPS`` steps and ``window_s`` seconds of them."""
        now = self.clock()
        if step - self.start_step > SETTLE_STEPS:
            self.step_times.append(now - self.last)
        self.last = now
        return len(self.step_times) >= MEASURE_STEPS and sum(self.step_times) >= self.window_s


def _minutes_text(seconds: float) -> str:
    """``7:32`` (minutes:seconds), or ``1:02:03`` past an hour."""
    m, s = divmod(round(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def train(cfg: TrainConfig, mode: str = "auto", **kwargs: Any) -> TrainResult:
    """Build a :class:`Trainer` and run it (the ``nanogpt train`` entry point)."""
    with cpu_threads(cfg.threads):
        trainer = Trainer(cfg, mode=mode, **kwargs)
        try:
            return trainer.run()
        finally:
            trainer.close()
