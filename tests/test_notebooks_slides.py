"""Every chapter presents as a slideshow (jupyterlab-rise): its headings start slides, every cell is marked.

The marks are made by tools/mark_slides.py; this checks the committed chapters hold them (a chapter edited
since, with a new heading, fails here until the tool is run again). tests/e2e opens one as a slideshow.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
_spec = importlib.util.spec_from_file_location("mark_slides", ROOT / "tools" / "mark_slides.py")
mark_slides = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mark_slides)


def slide_types(nb: dict) -> list[str | None]:
    return [c.get("metadata", {}).get("slideshow", {}).get("slide_type") for c in nb["cells"]]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_headings_start_slides(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    types = slide_types(nb)
    for i, cell in enumerate(nb["cells"]):
        first = "".join(cell["source"]).lstrip().split("\n", 1)[0]
        if cell["cell_type"] == "markdown" and first.startswith(("# ", "## ")):
            assert types[i] == "slide", f"cell {i} ({first[:50]!r}) is a heading but starts no slide"
        if cell["cell_type"] == "markdown" and first.startswith("### "):
            assert types[i] == "subslide", f"cell {i} ({first[:50]!r}) should start a subslide"
    assert types[0] == "slide" and all(t in {"slide", "subslide", "-"} for t in types), types
    assert nb["metadata"].get("rise", {}).get("scroll") is True  # long outputs scroll instead of overflowing


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapters_are_marked_as_the_tool_marks_them(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert not mark_slides.mark(nb), f"{path.name}: run `python tools/mark_slides.py` (its slide marks are stale)"


def test_the_rules():
    md = lambda text: {"cell_type": "markdown", "source": [text]}  # noqa: E731
    code = {"cell_type": "code", "source": ["x = 1"]}
    assert mark_slides.slide_type(md("intro"), None) == "slide"
    assert mark_slides.slide_type(md("## 2. Temperature"), code) == "slide"
    assert mark_slides.slide_type(md("### Exercise 03.1 — a mask"), md("text")) == "subslide"
    assert mark_slides.slide_type(md("So the scores..."), code) == "subslide"
    assert mark_slides.slide_type(md("More text"), md("text")) == "-"
    assert mark_slides.slide_type(code, md("text")) == "-"
