"""Boxes and arrows on a blank axes: the few drawing moves the chapters' flow diagrams share."""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch


def blank(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure of ``width`` x ``height`` inches whose axes run 0..width and 0..height, with no frame: one
    unit is one inch, so boxes keep their shape whatever the figure's size."""
    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    return fig, ax


def box(
    ax: Axes,
    x: float,
    y: float,
    w: float,
    h: float,
    title: str,
    body: str = "",
    colour: str = "#e0ecff",
    size: float = 8.0,
) -> None:
    """A rounded box with its lower-left corner at (x, y), a bold ``title`` and smaller ``body`` lines."""
    ax.add_patch(
        FancyBboxPatch(
            (x, y),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.06",
            facecolor=colour,
            edgecolor="#334155",
            linewidth=0.8,
        )
    )
    if body:
        ax.text(x + w / 2, y + h - 0.08, title, ha="center", va="top", fontsize=size + 1, fontweight="bold")
        ax.text(x + w / 2, y + h / 2 - 0.12, body, ha="center", va="center", fontsize=size, linespacing=1.3)
    else:
        ax.text(x + w / 2, y + h / 2, title, ha="center", va="center", fontsize=size + 1, fontweight="bold")


def arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], label: str = "") -> None:
    """An arrow from ``start`` to ``end``, with an optional ``label`` beside its middle."""
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, color="#334155", lw=0.9))
    if label:
        ax.text(
            (start[0] + end[0]) / 2 + 0.05,
            (start[1] + end[1]) / 2,
            label,
            fontsize=7,
            color="#475569",
            ha="left",
            va="center",
        )


def texts(fig: Figure) -> list[str]:
    """Every text drawn on ``fig`` (titles, box labels, tick labels): what a test reads instead of pixels."""
    out = [t.get_text() for ax in fig.axes for t in ax.texts]
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    if fig._suptitle is not None:
        out.append(fig._suptitle.get_text())
    return [t for t in out if t]
