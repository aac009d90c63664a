"""The learning-rate schedule explorer: ``lr_at``'s curve for cosine and WSD, redrawn as sliders move.

The numbers come from :func:`nanogpt_lib.schedule.lr_at` itself (never a copy of its formula), so what the
explorer shows is what a run with those settings would apply. :func:`lr_curve` and :func:`schedule_figure`
are plain functions (a notebook or a test calls them headless); :func:`explorer` only wires four sliders
(warmup, decay fraction, peak and minimum rate) to them. The widget needs ipywidgets (the ``notebooks`` extra).
"""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ...config import ConfigError, TrainConfig
from ...schedule import lr_at, wsd_decay_start
from . import figure_png

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SCHEDULES = ("cosine", "wsd")


def schedule_config(
    schedule: str, warmup_steps: int, decay_frac: float, lr: float, min_lr: float, max_steps: int
) -> TrainConfig:
    """The training config whose schedule these are (everything else the defaults). Settings no run would
    accept (a minimum above the peak, a decay fraction outside (0, 1]) raise the config's own ConfigError."""
    try:
        return replace(
            TrainConfig(),
            schedule=schedule,
            warmup_steps=int(warmup_steps),
            decay_frac=float(decay_frac),
            lr=float(lr),
            min_lr=float(min_lr),
            max_steps=int(max_steps),
        )
    except ValueError as e:  # ConfigError is a ValueError; a dataclass replace re-runs the checks
        raise ConfigError(str(e)) from None


def lr_curve(
    schedule: str, warmup_steps: int, decay_frac: float, lr: float, min_lr: float, max_steps: int
) -> list[float]:
    """``lr_at(step)`` for step 0 .. max_steps - 1: the AdamW rate each step of such a run applies (Muon's
    is its own base rate times the same factor ``lr_at / lr``)."""
    cfg = schedule_config(schedule, warmup_steps, decay_frac, lr, min_lr, max_steps)
    return [lr_at(step, cfg) for step in range(cfg.max_steps)]


def schedule_figure(warmup_steps: int, decay_frac: float, lr: float, min_lr: float, max_steps: int) -> Figure:
    """Both schedules on one axis, the warmup shaded, the WSD decay's start marked."""
    # imported here: lr_curve and the schedule's numbers need no plotting library
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.2), layout="constrained")
    ax = fig.add_subplot()
    steps = range(int(max_steps))
    for schedule in SCHEDULES:
        ax.plot(steps, lr_curve(schedule, warmup_steps, decay_frac, lr, min_lr, max_steps), label=schedule)
    if warmup_steps:
        ax.axvspan(0, warmup_steps, color="gray", alpha=0.15, label="warmup")
    decay_start = wsd_decay_start(schedule_config("wsd", warmup_steps, decay_frac, lr, min_lr, max_steps))
    ax.axvline(decay_start, color="tab:orange", ls=":", lw=1, label="WSD decay starts")
    ax.set(
        xlabel="step",
        ylabel="learning rate (lr_at)",
        ylim=(0, lr * 1.08),
        title=f"peak {lr:.2g}, min {min_lr:.2g}, warmup {warmup_steps}, WSD decays over the last {decay_frac:.0%}",
    )
    ax.legend(fontsize=8, loc="lower center")
    return fig


def _shown(fig: Figure | None, error: str | None = None) -> tuple[dict[str, Any], ...]:
    """An Output widget's content: the figure as one PNG, or the reason there is none."""
    if fig is None:
        return ({"output_type": "stream", "name": "stdout", "text": f"{error}\n"},)
    png = base64.b64encode(figure_png(fig)).decode("ascii")
    return (
        {
            "output_type": "display_data",
            "metadata": {},
            "data": {"image/png": png, "text/plain": "<learning-rate schedules>"},
        },
    )


def explorer(
    max_steps: int = 1500, warmup_steps: int = 100, decay_frac: float = 0.2, lr: float = 2e-3, min_lr: float = 2e-4
) -> Any:
    """Sliders for warmup, WSD's decay fraction, the peak and the minimum rate over a ``max_steps`` run (the
    recipe's defaults), and the plot of both schedules, redrawn on every change. Returns the widget (a VBox
    with ``warmup``, ``decay``, ``peak``, ``minimum`` and ``plot`` attributes, and ``redraw()``)."""
    try:
        import ipywidgets as widgets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('the schedule explorer needs ipywidgets: pip install -e ".[notebooks]"') from e

    style = {"description_width": "110px"}
    wide = widgets.Layout(width="420px")
    warmup = widgets.IntSlider(
        value=warmup_steps, min=0, max=max_steps // 2, description="warmup steps", style=style, layout=wide
    )
    decay = widgets.FloatSlider(
        value=decay_frac,
        min=0.05,
        max=1.0,
        step=0.05,
        description="decay fraction",
        style=style,
        layout=wide,
        tooltip="WSD: the last part of the run that decays",
    )
    peak = widgets.FloatLogSlider(
        value=lr,
        base=10,
        min=-4,
        max=-1,
        step=0.1,
        description="peak lr",
        style=style,
        layout=wide,
        readout_format=".1e",
    )
    minimum = widgets.FloatLogSlider(
        value=min_lr,
        base=10,
        min=-6,
        max=-1,
        step=0.1,
        description="min lr",
        style=style,
        layout=wide,
        readout_format=".1e",
    )
    plot = widgets.Output(layout=widgets.Layout(min_height="260px"))
    for control, part in ((warmup, "warmup"), (decay, "decay"), (peak, "peak"), (minimum, "min"), (plot, "plot")):
        control.add_class(f"nanogpt-schedule-{part}")

    box = widgets.VBox([warmup, decay, peak, minimum, plot])

    def redraw(_change: Any = None) -> None:
        try:
            fig = schedule_figure(warmup.value, decay.value, peak.value, minimum.value, max_steps)
        except ConfigError as e:  # e.g. min above peak: say why instead of drawing
            plot.outputs = _shown(None, f"no schedule: {e}")
            return
        plot.outputs = _shown(fig)

    for control in (warmup, decay, peak, minimum):
        control.observe(redraw, "value")
    box.warmup, box.decay, box.peak, box.minimum, box.plot, box.redraw = warmup, decay, peak, minimum, plot, redraw
    redraw()
    return box
