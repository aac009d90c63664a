"""Explorers: interactive views of the trained model's insides (attention, tokens, learning-rate schedule).

Each module holds plain drawing functions (testable without widgets, and called by the notebooks headless)
and a small ``explorer(...)`` function that only wires ipywidgets controls to them.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only drawn figures come in: importing the package must not import matplotlib
    from matplotlib.figure import Figure


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """A figure as PNG bytes: what an explorer's Image or Output widget shows."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
