"""The training chapters' diagrams show the config's and the model's real numbers, and follow them."""

from __future__ import annotations

from dataclasses import replace

from nanogpt_lib.config import TrainConfig
from nanogpt_lib.course.diagrams.training import optimizer_split, run_timeline_figure, training_step_figure
from nanogpt_lib.model import GPT, GPTConfig


def texts(fig) -> str:
    "Every text the figure shows: box labels, the title and the legend's entries."
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []
    return "\n".join([t.get_text() for t in ax.texts] + [ax.get_title()] + legend)


def tiny(n_embd: int = 32, vocab: int = 96) -> TrainConfig:
    model = GPTConfig(n_layer=1, n_head=2, n_embd=n_embd, block_size=16, vocab_size=vocab)
    return TrainConfig(
        name="t",
        batch_size=3,
        max_steps=40,
        warmup_steps=4,
        eval_every=10,
        ckpt_every=20,
        optimizer="muon",
        schedule="wsd",
        decay_frac=0.25,
        model=model,
    )


def test_step_diagram_shows_the_real_shapes_and_follows_them() -> None:
    cfg = tiny()
    model = GPT(cfg.model)
    shown = texts(training_step_figure(cfg, model))
    assert "(3, 16) token ids" in shown and "logits (3, 16, 96)" in shown
    assert f"{sum(p.numel() for p in model.parameters()):,} gradients" in shown
    split = optimizer_split(model, "muon")
    assert f"Muon: {len(split['muon'])} block matrices" in shown and "(128, 32)" in shown  # the MLP's c_fc
    wider = replace(cfg, batch_size=5, model=replace(cfg.model, n_embd=48, vocab_size=80))
    shown_wider = texts(training_step_figure(wider, GPT(wider.model)))
    assert "(5, 16) token ids" in shown_wider and "logits (5, 16, 80)" in shown_wider and "(192, 48)" in shown_wider
    adamw_only = texts(training_step_figure(replace(cfg, optimizer="adamw"), model))
    assert "Muon" not in adamw_only  # GPT-2's recipe: one optimizer for every weight


def test_timeline_marks_the_configs_phases_evaluations_and_checkpoints() -> None:
    cfg = tiny()
    shown = texts(run_timeline_figure(cfg))
    assert "warmup: 4 steps" in shown and "decay: steps 30-40" in shown  # the last quarter of 40 steps
    assert "every 10 steps (4x" in shown and "every 20 steps (2x)" in shown
    other = texts(run_timeline_figure(replace(cfg, max_steps=80, eval_every=40, schedule="cosine")))
    assert "every 40 steps (2x" in other and "decay:" not in other
