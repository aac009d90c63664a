"""Mark the chapters' cells for jupyterlab-rise, so a teacher can present any chapter as a slideshow.

Usage: ``python tools/mark_slides.py [notebooks/NN_*.ipynb ...]`` (default: every chapter). It rewrites only
cell and notebook metadata (never sources or outputs), and only where it differs, so running it twice
changes nothing. tests/test_notebooks_slides.py checks the chapters are marked as this tool marks them.

The rules, in the order a chapter is built (../shared/COURSE.md):
- a ``#`` or ``##`` heading starts a **slide** (the chapter's title, each numbered section, the summary,
  the exercises);
- a ``###`` heading starts a **subslide** (a step inside a section: "Temperature by hand", each exercise);
- any other text that follows a code cell starts a subslide too: the narrative moves on, so the next
  explanation, its code and the check below it share one (scrolling) slide;
- everything else (code, and text right after text) stays on the slide above (``-``), so a cell and its
  output are never split from the explanation that introduces them.
Notebook metadata turns on scrolling (a long output never runs off the slide) and a plain theme.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RISE = {"scroll": True, "theme": "simple", "transition": "none", "enable_chalkboard": False}


def slide_type(cell: dict, previous: dict | None) -> str:
    """The slide type the rules above give ``cell``, which follows ``previous`` (None for the first)."""
    if cell["cell_type"] == "markdown":
        first = "".join(cell["source"]).lstrip().split("\n", 1)[0]
        if first.startswith(("# ", "## ")) or previous is None:
            return "slide"
        if first.startswith("### ") or previous["cell_type"] == "code":
            return "subslide"
    return "-"


def mark(nb: dict) -> bool:
    """Set every cell's slide type and the notebook's RISE settings; return whether anything changed."""
    changed = False
    previous = None
    for cell in nb["cells"]:
        want = slide_type(cell, previous)
        if cell.get("metadata", {}).get("slideshow", {}).get("slide_type") != want:
            cell.setdefault("metadata", {}).setdefault("slideshow", {})["slide_type"] = want
            changed = True
        previous = cell
    if nb["metadata"].get("rise") != RISE:
        nb["metadata"]["rise"] = dict(RISE)
        changed = True
    return changed


def main(paths: list[str]) -> None:
    chapters = [Path(p) for p in paths] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for path in chapters:
        nb = json.loads(path.read_text(encoding="utf-8"))
        if mark(nb):
            # the layout Jupyter itself writes (indent 1, non-ASCII kept, a final newline): a clean diff
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            print(f"marked {path.name}")


if __name__ == "__main__":
    main(sys.argv[1:])
