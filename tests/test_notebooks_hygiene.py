"""The committed notebooks, read as files: what a learner sees must not depend on the machine that saved it.

nbval checks that marked cells reproduce their outputs; this checks what nbval cannot: saved outputs hold
no temporary paths and no progress-bar residue, checked cells hold no memory addresses (they change on
every run), every notebook opens by naming the library module it teaches, and the widget import is guarded
so a notebook runs where ipywidgets is missing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The chapters and their solutions (notebooks/solutions/NN_*.ipynb).
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").glob("**/[0-9][0-9]_*.ipynb") if ".ipynb_checkpoints" not in p.parts)

# What tqdm leaves in an output: "42%|####  |", "[00:03<00:05, 7.1it/s]", "0doc [00:00, ?doc/s]".
TQDM_RESIDUE = re.compile(r"\d+%\||\[\d+:\d\d[<,]|[\d?.]+\s?[A-Za-z]*/s\]")
TEMP_PATH = re.compile(r"/tmp/|/var/folders/|\\Temp\\|\\AppData\\Local\\Temp", re.IGNORECASE)
MODULE = re.compile(r"nanogpt_lib(?:/(\w+)\.py|\.(\w+))")


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def output_texts(cell: dict) -> list[str]:
    """Every text a code cell's outputs show: streams, errors and each text-like representation."""
    texts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            texts.append("".join(out["text"]))
        if out.get("output_type") == "error":
            texts.append("\n".join(out.get("traceback", [])))
        for mime, value in out.get("data", {}).items():
            if mime.startswith("text/") or mime.endswith("json"):
                texts.append(
                    value
                    if isinstance(value, str)
                    else "".join(value)
                    if isinstance(value, list)
                    else json.dumps(value)
                )
    return texts


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 7, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_hold_no_temporary_paths_or_progress_bars(path):
    found = []
    for i, cell in enumerate(cells(path)):
        for text in output_texts(cell):
            for what, pattern in (("a temporary path", TEMP_PATH), ("a progress bar", TQDM_RESIDUE)):
                if m := pattern.search(text):
                    found.append(f"cell {i}: {what}: {text[max(0, m.start() - 40) : m.end() + 40]!r}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_checked_cells_hold_no_memory_addresses(path):
    # An object's default repr ("<... at 0x7f...>") differs on every run: nbval would fail on any other run.
    found = [
        f"cell {i}"
        for i, cell in enumerate(cells(path))
        if cell["cell_type"] == "code"
        and "NBVAL_CHECK_OUTPUT" in source(cell)
        and any(re.search(r"at 0x[0-9a-fA-F]+", text) for text in output_texts(cell))
    ]
    assert not found, f"checked outputs with memory addresses: {found}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_opening_cell_names_the_module_it_teaches(path):
    first = cells(path)[0]
    assert first["cell_type"] == "markdown"
    named = {a or b for a, b in MODULE.findall(source(first))}
    existing = {
        name
        for name in named
        if (ROOT / "nanogpt_lib" / f"{name}.py").is_file() or (ROOT / "nanogpt_lib" / name / "__init__.py").is_file()
    }  # a module or a package
    assert existing, f"the opening cell names no nanogpt_lib module (found {sorted(named) or 'none'})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_widget_imports_are_guarded(path):
    # ipywidgets is an extra: a notebook must still run without it (its widget cell says how to install it).
    widget_import = re.compile(r"^\s*(from|import) (ipywidgets|nanogpt_lib\.course\.widgets)\b", re.M)
    for i, cell in enumerate(cells(path)):
        code = source(cell)
        if cell["cell_type"] == "code" and widget_import.search(code):
            assert re.search(r"^\s*try:", code, re.M) and "except ImportError" in code, (
                f"cell {i} imports widgets outside try/except ImportError"
            )


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if "solutions" not in p.parts], ids=lambda p: p.stem)
def test_exercise_cells_run_unanswered_and_show_one_verdict(path):
    # A chapter's exercise cell ends in check(...); (the ';' keeps a bare False from showing under the verdict);
    # run as committed, i.e. unanswered, it says how to answer and raises nothing.
    found = []
    for i, cell in enumerate(cells(path)):
        code = source(cell).rstrip()
        if cell["cell_type"] != "code" or not re.search(r"^check\(", code, re.M):
            continue
        last = code.splitlines()[-1]
        if not last.endswith(";"):
            found.append(f"cell {i}: {last!r} should end in ';'")
        outs = cell.get("outputs", [])
        if any(o.get("output_type") in ("error", "execute_result") for o in outs):
            found.append(f"cell {i}: an error or a displayed value under the check")
        if outs and not any("not answered yet" in "".join(o.get("text", "")) for o in outs):
            found.append(f"cell {i}: the committed output does not say how to answer")
    assert not found, "\n".join(found)


def test_the_patterns_catch_what_they_are_for():
    # The checks above are only as good as their patterns: each must match the residue it is meant to find.
    for bar in (
        "tokenizing: 0doc [00:00, ?doc/s]",
        " 42%|####      | 5/12 [00:03<00:05,  1.2it/s]",
        "step 10 [01:02, 3.5it/s]",
    ):
        assert TQDM_RESIDUE.search(bar), bar
    for fine in ("train 1,320,910 tokens", "5.3M tokens/s", "100% of the mass", "lr 0.002 [checked]"):
        assert not TQDM_RESIDUE.search(fine), fine
    assert TEMP_PATH.search("wrote /tmp/nanogpt-01-ok05c9xv/data/notes")
    assert not TEMP_PATH.search("wrote <temporary folder>/data/notes")
    assert {a or b for a, b in MODULE.findall("`nanogpt_lib/sample.py` and nanogpt_lib.model")} == {"sample", "model"}
