"""The library's import graph: no cycles, and the course code sits on top of the library, never under it.

Every ``import`` counts, the ones inside functions too: a lazy import hides a cycle from Python's loader,
not from a reader.
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nanogpt_lib"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules ``path`` imports (``from . import x`` names module ``x`` where it is one)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            module = node.module if node.level == 0 else ".".join(p for p in (base, node.module) if p)
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # a name inside a module counts as the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


@functools.cache
def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports(p, modules) for p in paths}


def test_the_graph_is_read():
    g = graph()
    assert "nanogpt_lib.train" in g["nanogpt_lib.cli"]
    assert "nanogpt_lib.model" in g["nanogpt_lib.course.exercises.ch03"]
    assert "nanogpt_lib.course.explorers.tokens" in g["nanogpt_lib.course.exercises.ch02"]


def cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``g`` (a package ``__init__`` importing its own submodules is not an arrow back)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g[m]):
            if m.startswith(n + "."):  # a submodule importing its package's __init__
                continue
            if state.get(n) == 1:
                return [*stack[stack.index(n) :], n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = 2
        stack.pop()
        return None

    for m in sorted(g):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_cycles():
    assert cycle(graph()) is None, " -> ".join(cycle(graph()) or [])


def test_a_cycle_is_found():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("module", sorted(m for m in graph() if not m.startswith("nanogpt_lib.course")))
def test_the_library_does_not_import_the_course(module):
    course = sorted(n for n in graph()[module] if n.startswith("nanogpt_lib.course"))
    assert not course, f"{module} imports the course's {course}"


def loaded_after_import(module: str) -> set[str]:
    """The modules a fresh interpreter holds after ``import module`` (what it really loads, lazily or not)."""
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent)
    return set(proc.stdout.split())


def test_the_schedule_explorer_needs_neither_the_trainer_nor_matplotlib():
    """The schedule's numbers live in schedule.py: the explorer (and ch05's checks through it) import no
    trainer (run folder, DDP, plotting) and no matplotlib until a figure is drawn."""
    loaded = loaded_after_import("nanogpt_lib.course.explorers.schedule")
    assert "nanogpt_lib.schedule" in loaded  # the check sees the imports it is about
    assert "nanogpt_lib.train" not in loaded
    assert not {m for m in loaded if m.split(".")[0] == "matplotlib"}


LAYOUT = PACKAGE.parent / "docs" / "layout.md"


def layers() -> list[str]:
    """The library's rows of docs/layout.md, in order, as module names (a folder row covers its package)."""
    rows = re.findall(r"^\| `nanogpt_lib/([^`]+)`", LAYOUT.read_text(), re.M)
    return [
        "nanogpt_lib" if r == "__init__.py" else "nanogpt_lib." + r.removesuffix(".py").strip("/").replace("/", ".")
        for r in rows
    ]


def upward_arrows(g: dict[str, set[str]], order: list[str]) -> list[str]:
    """Imports from a module to one listed below it in ``order`` (every module must fall under a row)."""

    def row(m: str) -> int:
        rows = [i for i, r in enumerate(order) if m == r or (r != "nanogpt_lib" and m.startswith(r + "."))]
        assert rows, f"{m} has no row in docs/layout.md"
        return rows[0]  # the package root's row is the package's __init__ alone, not everything under it

    rows = {m: row(m) for m in g}  # every module, imports or not
    return sorted(f"{m} -> {n}" for m, deps in g.items() for n in deps if row(n) > rows[m])


def test_the_layout_map_lists_every_module_and_its_order_is_the_import_order():
    """docs/layout.md is the map: each library module has its row, and a module imports only rows above it."""
    assert upward_arrows(graph(), layers()) == []


def test_an_upward_arrow_and_a_missing_row_are_found():
    order = ["nanogpt_lib", "nanogpt_lib.a", "nanogpt_lib.b"]
    assert upward_arrows({"nanogpt_lib.a": {"nanogpt_lib.b"}, "nanogpt_lib.b": {"nanogpt_lib"}}, order) == [
        "nanogpt_lib.a -> nanogpt_lib.b"
    ]
    with pytest.raises(AssertionError, match="has no row"):
        upward_arrows({"nanogpt_lib.c": set()}, order)
