"""Every chapter presents as a slideshow (jupyterlab-rise): its headings start slides, every cell is marked,
each heading's slide carries speaker notes, helper cells are skipped, and no slide is taller than a screen.

The marks are made by tools/mark_slides.py; this checks the committed chapters hold them (a chapter edited
since, with a new heading, fails here until the tool is run again). tests/e2e opens one as a slideshow.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
_spec = importlib.util.spec_from_file_location("mark_slides", ROOT / "tools" / "mark_slides.py")
mark_slides = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mark_slides)

# The tallest slide, in screen lines of source (a code line is one; a markdown line wraps every 100
# characters). RISE fills a 1920x1080 screen; at JupyterLab's 14 px code font and 1.3 line height a line is
# about 18 px, so the ~880 px left after the slide's margins, the cells' padding and a few output lines hold
# about 48 lines: 40 leaves room for a short output. Longer outputs scroll (RISE's "scroll" is on).
MAX_SLIDE_LINES = 40
WRAP = 100


def slide_types(nb: dict) -> list[str | None]:
    return [c.get("metadata", {}).get("slideshow", {}).get("slide_type") for c in nb["cells"]]


def _first_line(cell: dict) -> str:
    return "".join(cell["source"]).lstrip().split("\n", 1)[0]


def missing_notes(nb: dict) -> list[str]:
    """The headings whose slide (up to the next slide or subslide) holds no notes cell."""
    types = slide_types(nb)
    missing = []
    for cells in mark_slides.slides(nb):
        head = nb["cells"][cells[0]]
        is_heading = head["cell_type"] == "markdown" and _first_line(head).startswith(("# ", "## ", "### "))
        if is_heading and not any(types[i] == "notes" for i in cells):
            missing.append(f"cell {cells[0]} {_first_line(head)[:50]!r}")
    return missing


def screen_lines(cell: dict) -> int:
    """How many screen lines the cell's source takes on a slide (markdown wraps; code wraps too, rarely)."""
    return sum(max(1, math.ceil(len(line) / WRAP)) for line in "".join(cell["source"]).split("\n"))


def tall_slides(nb: dict, bound: int = MAX_SLIDE_LINES) -> list[str]:
    """The slides whose shown cells (neither notes nor skipped) take more than ``bound`` screen lines."""
    types = slide_types(nb)
    tall = []
    for cells in mark_slides.slides(nb):
        height = sum(screen_lines(nb["cells"][i]) for i in cells if types[i] not in ("notes", "skip"))
        if height > bound:
            tall.append(f"cell {cells[0]} {_first_line(nb['cells'][cells[0]])[:50]!r}: {height} lines")
    return tall


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_headings_start_slides(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    types = slide_types(nb)
    for i, cell in enumerate(nb["cells"]):
        first = _first_line(cell)
        if cell["cell_type"] == "markdown" and first.startswith(("# ", "## ")):
            assert types[i] == "slide", f"cell {i} ({first[:50]!r}) is a heading but starts no slide"
        if cell["cell_type"] == "markdown" and first.startswith("### "):
            assert types[i] == "subslide", f"cell {i} ({first[:50]!r}) should start a subslide"
    assert types[0] == "slide" and all(t in {"slide", "subslide", "-", "fragment", "notes", "skip"} for t in types)
    assert nb["metadata"].get("rise", {}).get("scroll") is True  # long outputs scroll instead of overflowing


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapters_are_marked_as_the_tool_marks_them(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert not mark_slides.mark(nb), f"{path.name}: run `python tools/mark_slides.py` (its slide marks are stale)"


def shown_set_up(nb: dict) -> list[int]:
    """The code cells between the title and the first ``##`` section (parameters, imports) that are shown:
    a teacher presents the lesson, not its set-up; the tool skips them once they are marked as helpers."""
    types = slide_types(nb)
    first_section = next(
        (i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown" and _first_line(c).startswith("## ")),
        len(nb["cells"]),
    )
    return [i for i in range(first_section) if nb["cells"][i]["cell_type"] == "code" and types[i] != "skip"]


def buried_headings(nb: dict) -> list[str]:
    """Headings inside a markdown cell rather than at its start: they start no slide, so split the cell there."""
    return [
        f"cell {i} {m.group(0)[:50]!r}"
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "markdown"
        for m in re.finditer(r"^#{1,3} .*$", "".join(c["source"]).lstrip(), re.M)
        if m.start() > 0
    ]


def presentation_problems(nb: dict) -> list[str]:
    """Everything that keeps a marked chapter from presenting well: shown set-up, buried headings, missing
    notes, tall slides."""
    return (
        [f"set-up cell {i} is shown (start it with `# setup`)" for i in shown_set_up(nb)]
        + [f"heading inside a cell, split it there: {h}" for h in buried_headings(nb)]
        + [f"no `Notes:` cell: {m}" for m in missing_notes(nb)]
        + [f"too tall, split it (text after code starts a subslide): {t}" for t in tall_slides(nb)]
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_heading_has_notes_and_every_slide_fits(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    problems = presentation_problems(nb)
    assert problems == [], f"{path.name}:\n" + "\n".join(problems)


md = lambda text: {"cell_type": "markdown", "source": [text], "metadata": {}}  # noqa: E731
code = lambda text: {"cell_type": "code", "source": [text], "metadata": {}}  # noqa: E731


def test_the_rules():
    x = code("x = 1")
    assert mark_slides.slide_type(md("intro"), None) == "slide"
    assert mark_slides.slide_type(md("## 2. Temperature"), x) == "slide"
    assert mark_slides.slide_type(md("### Exercise 03.1 — a mask"), md("text")) == "subslide"
    assert mark_slides.slide_type(md("So the scores..."), x) == "subslide"
    assert mark_slides.slide_type(md("More text"), md("text")) == "-"
    assert mark_slides.slide_type(x, md("text")) == "-"
    assert mark_slides.slide_type(md("Notes:\n- say why"), x) == "notes"
    assert mark_slides.slide_type(md("The notes: below"), x) == "subslide"  # only a leading `Notes:` counts


def test_the_helper_rules():
    imports = code("%matplotlib inline\nimport math\nfrom a import (\n  b,\n  c,\n)")
    assert mark_slides.slide_type(imports, None) == "skip"
    assert mark_slides.slide_type(code('import os\nos.environ["X"] = "1"\nimport json'), None) == "skip"
    assert mark_slides.slide_type(code("# NBVAL_IGNORE_OUTPUT\n# setup: the machine\nprint(1)"), None) == "skip"
    params = {**code("n = 3"), "metadata": {"tags": ["parameters"]}}
    assert mark_slides.slide_type(params, None) == "skip"
    assert mark_slides.slide_type(code("import math\nprint(math.pi)"), None) == "-"  # it also does something
    assert mark_slides.slide_type(code("# the set-up of the plot\nplt.plot(x)"), None) == "-"
    frag = {**code("y = 2"), "metadata": {"slideshow": {"slide_type": "fragment"}}}
    assert mark_slides.slide_type(frag, md("text")) == "fragment"


def test_notes_and_skipped_cells_do_not_count_as_the_previous_cell():
    nb = {
        "metadata": {},
        "cells": [
            md("# Title"),
            code("import math"),
            md("Why it matters"),
            code("x = 1"),
            md("Notes:\n- a"),
            md("Next step"),
        ],
    }
    mark_slides.mark(nb)
    # the text after the import starts no subslide (the import is not shown); the text after the notes
    # follows the code cell, so it does
    assert slide_types(nb) == ["slide", "skip", "-", "-", "notes", "subslide"]


def test_missing_notes_and_tall_slides_are_found():
    nb = {
        "metadata": {},
        "cells": [
            md("# Title"),
            md("Notes:\n- a"),
            md("## 1. One"),
            code("x = 1"),
            md("plain text"),
            md("### 1.1 Step"),
            code("\n".join(["y = 1"] * 30)),
        ],
    }
    mark_slides.mark(nb)
    assert missing_notes(nb) == ["cell 2 '## 1. One'", "cell 5 '### 1.1 Step'"]  # not the plain subslide
    assert tall_slides(nb) == []
    assert tall_slides(nb, bound=30) == ["cell 5 '### 1.1 Step': 31 lines"]
    nb["cells"][4]["source"] = ["plain text\n\n### 1.2 Buried\n"]
    assert buried_headings(nb) == ["cell 4 '### 1.2 Buried'"]
    nb["cells"][6]["source"] = ["z" * 250]  # a long line wraps to three screen lines
    assert screen_lines(nb["cells"][6]) == 3
