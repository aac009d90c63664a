"""Chapters 05 and 06's diagrams: one training step as a flow of real shapes, and a run's timeline.

Both read their numbers from the objects they are given (a ``TrainConfig``, a ``GPT``), never from constants,
so a learner who changes the recipe sees the change in the picture, and a test can check the labels.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from ...config import TrainConfig
from ...model import GPT
from ...schedule import lr_at, wsd_decay_start

_BOX = dict(boxstyle="round,pad=0.4", facecolor="#eef3fb", edgecolor="#4c72b0")
_OPT_BOX = dict(boxstyle="round,pad=0.4", facecolor="#fdf1e4", edgecolor="#dd8452")


def optimizer_split(model: GPT, optimizer: str) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """Parameter names and shapes per optimizer group, by ``GPT.configure_optimizers``' rule: Muon takes the
    blocks' matrices (when the recipe uses Muon), AdamW decays the other matrices and leaves vectors alone."""
    groups: dict[str, list[tuple[str, tuple[int, ...]]]] = {"muon": [], "decay": [], "no_decay": []}
    for name, p in model.named_parameters():
        if optimizer == "muon" and p.dim() == 2 and name.startswith("transformer.h."):
            groups["muon"].append((name, tuple(p.shape)))
        else:
            groups["decay" if p.dim() >= 2 else "no_decay"].append((name, tuple(p.shape)))
    return groups


def _count(model: GPT, entries: list[tuple[str, tuple[int, ...]]]) -> int:
    params = dict(model.named_parameters())
    return sum(params[name].numel() for name, _ in entries)


def training_step_figure(cfg: TrainConfig, model: GPT) -> Figure:
    """One step of ``Trainer._train_step`` as boxes, each labelled with the tensor shapes of this config and
    model: the batch, the logits, the loss, the gradients, the clip, and each optimizer's share of weights."""
    B, T, V = cfg.batch_size, cfg.model.block_size, cfg.model.vocab_size
    n_params = sum(p.numel() for p in model.parameters())
    split = optimizer_split(model, cfg.optimizer)
    muon_shapes = sorted({shape for _, shape in split["muon"]})
    adamw = split["decay"] + split["no_decay"]
    steps = [
        f"1. rate for this step\nlr_at(step) x base_lr\n(AdamW {cfg.lr:g}"
        + (f", Muon {cfg.muon_lr:g})" if cfg.optimizer == "muon" else ")"),
        f"2. batch k = step\nx, y: ({B}, {T}) token ids",
        f"3. forward\nlogits ({B}, {T}, {V:,})\nloss: mean cross-entropy, ()",
        f"4. backward\n{n_params:,} gradients\n({len(dict(model.named_parameters()))} tensors)",
        f"5. clip\nscale all by min(1, {cfg.grad_clip:g} / |g|)",
    ]
    fig = Figure(figsize=(11, 4.2), dpi=100)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    xs = [0.09 + i * 0.2 for i in range(len(steps))]
    for i, (x, text) in enumerate(zip(xs, steps)):
        ax.text(x, 0.72, text, ha="center", va="center", fontsize=8.5, bbox=_BOX)
        if i:
            ax.annotate(
                "",
                xy=(x - 0.085, 0.72),
                xytext=(xs[i - 1] + 0.085, 0.72),
                arrowprops=dict(arrowstyle="->", color="gray"),
            )
    optimizers = [
        f"6a. AdamW: {len(adamw)} tensors, {_count(model, adamw):,} weights\n"
        f"matrices ({len(split['decay'])}): weight decay {cfg.weight_decay:g}\n"
        f"vectors ({len(split['no_decay'])}): no decay"
    ]
    if split["muon"]:
        shapes = ", ".join(f"({r}, {c})" for r, c in muon_shapes)
        optimizers.append(
            f"6b. Muon: {len(split['muon'])} block matrices, {_count(model, split['muon']):,} weights\n"
            f"shapes {shapes}\nmomentum {cfg.muon_momentum:g}, Nesterov, Newton-Schulz"
        )
    for j, text in enumerate(optimizers):
        x = 0.22 + 0.5 * j if len(optimizers) > 1 else 0.5
        ax.text(x, 0.28, text, ha="center", va="center", fontsize=8.5, bbox=_OPT_BOX)
        ax.annotate("", xy=(x, 0.42), xytext=(xs[-1], 0.62), arrowprops=dict(arrowstyle="->", color="gray"))
    ax.text(0.5, 0.05, "then zero the gradients; step += 1", ha="center", fontsize=8.5, color="gray")
    ax.set_title(
        f"One training step of {cfg.name!r}: {B} x {T} = {B * T * cfg.grad_accum:,} tokens, "
        f"{cfg.model.n_layer} layers of width {cfg.model.n_embd}",
        fontsize=10,
    )
    return fig


def run_timeline_figure(cfg: TrainConfig) -> Figure:
    """A run laid out over its steps: the learning rate (``lr_at``), the warmup and (for WSD) the decay phase,
    and where the trainer evaluates and writes checkpoints, all read from ``cfg``."""
    fig = Figure(figsize=(10, 3.2), dpi=100)
    ax = fig.add_subplot()
    steps = range(cfg.max_steps + 1)
    ax.plot(steps, [lr_at(s, cfg) for s in steps], color="tab:blue", label=f"lr_at ({cfg.schedule})")
    ax.axvspan(0, cfg.warmup_steps, color="gray", alpha=0.2, label=f"warmup: {cfg.warmup_steps} steps")
    if cfg.schedule == "wsd":
        start = wsd_decay_start(cfg)
        ax.axvspan(
            start, cfg.max_steps, color="tab:orange", alpha=0.15, label=f"decay: steps {start:,}-{cfg.max_steps:,}"
        )
    evals = list(range(cfg.eval_every, cfg.max_steps + 1, cfg.eval_every))
    ckpts = list(range(cfg.ckpt_every, cfg.max_steps + 1, cfg.ckpt_every))
    top = cfg.lr * 1.1
    ax.plot(
        evals,
        [top] * len(evals),
        "|",
        color="tab:green",
        ms=10,
        label=f"evaluate every {cfg.eval_every} steps ({len(evals)}x, {cfg.eval_batches} batches per split)",
    )
    ax.plot(
        ckpts,
        [top * 1.07] * len(ckpts),
        "v",
        color="tab:red",
        ms=5,
        label=f"checkpoint every {cfg.ckpt_every} steps ({len(ckpts)}x)",
    )
    ax.set(
        xlabel="step",
        ylabel="AdamW learning rate",
        ylim=(0, cfg.lr * 1.3),
        xlim=(0, cfg.max_steps),
        title=f"A run of {cfg.max_steps:,} steps x {cfg.batch_size * cfg.grad_accum * cfg.model.block_size:,} "
        f"tokens: rate, evaluations, checkpoints",
    )
    ax.legend(fontsize=7.5, loc="lower left")
    fig.tight_layout()
    return fig
