"""Every relative link in the README and the reference pages points at a file that exists (and, for a link
with an anchor into a Markdown file, at a heading that exists), so moving a section cannot leave the front
page pointing at nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The front page and the pages it sends readers to.
PAGES = sorted(
    {
        ROOT / "README.md",
        ROOT / "experiments" / "README.md",
        ROOT / "notebooks" / "README.md",
        ROOT / "notebooks" / "GLOSSARY.md",
        ROOT / "trained_model" / "README.md",
        *(ROOT / "docs").glob("*.md"),
    }
)

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target); a target may carry a "title" after a space.
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where brackets are not links."""
    return _CODE.sub("", _FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (not hyphens), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading anchors on its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(md: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``md`` (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for line in _FENCE.sub("", md.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(md: Path, text: str | None = None) -> list[str]:
    """Relative links in ``md`` (or in ``text``, written in md's folder) whose file is missing, or whose anchor
    names no heading of a Markdown file."""
    bad = []
    for target in _LINK.findall(_prose(md.read_text(encoding="utf-8") if text is None else text)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ... not checked offline
            continue
        path, _, anchor = target.partition("#")
        dest = (md.parent / path).resolve() if path else md
        if not dest.exists():
            bad.append(f"{target}: no such file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: {dest.name} has no heading with anchor #{anchor}")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert page.exists()
    assert broken_links(page) == []


@pytest.mark.parametrize("chapter", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_every_relative_link_of_a_chapter_resolves(chapter: Path) -> None:
    # the chapters link the glossary's terms (GLOSSARY.md#slug) and each other: a renamed term breaks here
    cells = json.loads(chapter.read_text(encoding="utf-8"))["cells"]
    text = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert broken_links(chapter, text) == []


def test_the_front_page_links_to_every_reference_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in _LINK.findall(_prose(readme))}
    missing = [str(p.relative_to(ROOT)) for p in PAGES if p != ROOT / "README.md" and p.resolve() not in linked]
    assert missing == []


def test_the_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## `nanogpt train`\n\n## Where the time goes\n")
    (tmp_path / "img.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Set up\n\n"
        "[ok](other.md) [ok](other.md#nanogpt-train) [ok](other.md#where-the-time-goes) ![ok](img.png)\n"
        "[ok](#set-up) [web](https://example.org/x) `[not a link](nowhere.md)`\n"
        "```bash\necho [not a link](nowhere.md)\n```\n"
        "[gone](missing.md) [bad anchor](other.md#no-such-heading) ![gone](plots/x.png)\n"
    )
    bad = broken_links(page)
    assert [b.split(":")[0] for b in bad] == ["missing.md", "other.md#no-such-heading", "plots/x.png"]
