"""Chapter 02's diagram: byte-pair merges applied to a short text, one row per merge, each symbol a box as
wide as its bytes, the pieces the latest merge made highlighted."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ._draw import blank


def apply_merge(symbols: list[bytes], pair: tuple[bytes, bytes]) -> list[bytes]:
    """``symbols`` with every occurrence of ``pair``, left to right, replaced by the joined symbol."""
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def _show(piece: bytes) -> str:
    return piece.decode("utf-8", errors="replace").replace(" ", "␣").replace("\n", "↵")


def merges_figure(text: str, merges: list[tuple[bytes, bytes]]) -> Figure:
    """Row 0 is ``text``'s bytes; row k applies the k-th of ``merges`` (pairs of byte strings, in rank order),
    labelled with the pair and the symbols left. Built from the merges a trainer actually learned."""
    symbols = [bytes([b]) for b in text.encode("utf-8")]
    rows: list[tuple[str, list[bytes], bytes | None]] = [(f"bytes: {len(symbols)} symbols", symbols, None)]
    for k, pair in enumerate(merges, start=1):
        symbols = apply_merge(symbols, pair)
        label = f"merge {k}: {_show(pair[0])} + {_show(pair[1])} → {len(symbols)}"
        rows.append((label, symbols, pair[0] + pair[1]))
    unit = 0.16  # inches per byte
    n_bytes = len(text.encode("utf-8"))
    fig, ax = blank(max(6.0, 2.3 + n_bytes * unit), 0.4 * len(rows) + 0.7)
    for r, (label, row, new) in enumerate(rows):
        y = 0.4 * (len(rows) - 1 - r) + 0.1
        ax.text(2.2, y + 0.15, label, ha="right", va="center", fontsize=7)
        x = 2.3
        for piece in row:
            w = len(piece) * unit
            ax.add_patch(
                Rectangle(
                    (x, y),
                    w,
                    0.3,
                    facecolor="#fbbf24" if piece == new else "#e0ecff",
                    edgecolor="#334155",
                    linewidth=0.6,
                )
            )
            ax.text(x + w / 2, y + 0.15, _show(piece), ha="center", va="center", fontsize=6.5, family="monospace")
            x += w
    ax.set_title(
        f"{len(merges)} merges turn {n_bytes} bytes into {len(rows[-1][1])} symbols\n"
        "(highlighted: the pieces the row's merge made)",
        fontsize=9,
    )
    return fig
