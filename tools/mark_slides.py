"""Mark the chapters' cells for jupyterlab-rise, so a teacher can present any chapter as a slideshow.

Usage: ``python tools/mark_slides.py [notebooks/NN_*.ipynb ...]`` (default: every chapter). It rewrites only
cell and notebook metadata (never sources or outputs), and only where it differs, so running it twice
changes nothing. tests/test_notebooks_slides.py checks the chapters are marked as this tool marks them, that
every heading's slide has speaker notes, and that no slide is taller than a screen.

The rules, in the order a chapter is built (../shared/COURSE.md):
- a markdown cell whose source starts with ``Notes:`` is the **speaker notes** of the slide it sits in
  (``notes``: RISE shows it in the speaker view, never on the slide);
- a **helper** code cell is skipped (``skip``): one whose code is only imports (and ``%`` magics, and
  ``os.environ[...] = ...`` settings that must precede an import), one tagged ``parameters`` (papermill's
  defaults), or one whose first line (after ``# NBVAL_...`` directives) starts with ``# setup``;
- a ``#`` or ``##`` heading starts a **slide** (the chapter's title, each numbered section, the summary,
  the exercises);
- a ``###`` heading starts a **subslide** (a step inside a section: "Temperature by hand", each exercise);
- any other text that follows a shown code cell starts a subslide too: the narrative moves on, so the next
  explanation, its code and the check below it share one slide;
- everything else (code, and text right after text) stays on the slide above (``-``), so a cell and its
  output are never split from the explanation that introduces them; a cell a chapter marked ``fragment``
  (it appears on a click) keeps that mark.
Notes and skipped cells are not shown, so "follows" means: follows the last cell shown.
Notebook metadata turns on scrolling (a long output never runs off the slide) and a plain theme.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RISE = {"scroll": True, "theme": "simple", "transition": "none", "enable_chalkboard": False}
SHOWN_ON_PREVIOUS = ("-", "fragment")  # the types that keep a cell on the slide above


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return src if isinstance(src, str) else "".join(src)


def is_notes(cell: dict) -> bool:
    """A markdown cell that holds the speaker notes of its slide."""
    return cell["cell_type"] == "markdown" and _source(cell).lstrip().startswith("Notes:")


def _only_imports(code: str) -> bool:
    """Whether ``code`` does nothing but import (magics and os.environ settings allowed around the imports)."""
    lines = [line for line in code.splitlines() if not line.lstrip().startswith("%")]
    try:
        body = ast.parse("\n".join(lines)).body
    except SyntaxError:
        return False

    def allowed(stmt: ast.stmt) -> bool:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            return True
        return isinstance(stmt, ast.Assign) and "os.environ" in ast.unparse(stmt.targets[0])

    return bool(body) and any(isinstance(s, (ast.Import, ast.ImportFrom)) for s in body) and all(map(allowed, body))


def is_helper(cell: dict) -> bool:
    """A code cell a slideshow skips: set-up a teacher does not present (see the rules above)."""
    if cell["cell_type"] != "code":
        return False
    if "parameters" in cell.get("metadata", {}).get("tags", []):
        return True
    code = _source(cell)
    first = next((ln for ln in code.splitlines() if ln.strip() and not ln.startswith("# NBVAL_")), "")
    return first.lower().startswith("# setup") or _only_imports(code)


def slide_type(cell: dict, previous: dict | None) -> str:
    """The slide type the rules above give ``cell``, which follows the shown cell ``previous`` (None: none yet)."""
    if is_notes(cell):
        return "notes"
    if is_helper(cell):
        return "skip"
    if cell["cell_type"] == "markdown":
        first = _source(cell).lstrip().split("\n", 1)[0]
        if first.startswith(("# ", "## ")) or previous is None:
            return "slide"
        if first.startswith("### ") or previous["cell_type"] == "code":
            return "subslide"
    current = cell.get("metadata", {}).get("slideshow", {}).get("slide_type")
    return "fragment" if current == "fragment" else "-"


def mark(nb: dict) -> bool:
    """Set every cell's slide type and the notebook's RISE settings; return whether anything changed."""
    changed = False
    previous = None
    for cell in nb["cells"]:
        want = slide_type(cell, previous)
        if cell.get("metadata", {}).get("slideshow", {}).get("slide_type") != want:
            cell.setdefault("metadata", {}).setdefault("slideshow", {})["slide_type"] = want
            changed = True
        if want not in ("notes", "skip"):
            previous = cell
    if nb["metadata"].get("rise") != RISE:
        nb["metadata"]["rise"] = dict(RISE)
        changed = True
    return changed


def slides(nb: dict) -> list[list[int]]:
    """The cells of each slide and subslide, in order: indices, starting with the cell that opens it."""
    out: list[list[int]] = []
    for i, cell in enumerate(nb["cells"]):
        kind = cell.get("metadata", {}).get("slideshow", {}).get("slide_type")
        if kind in ("slide", "subslide") or not out:
            out.append([])
        out[-1].append(i)
    return out


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
