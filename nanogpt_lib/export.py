"""Exports published as one unit: ``config.json`` is the commit record, naming each file with its size and sha256.

An export folder (``RUN/export/``, a run's ``best/``, ``trained_model/``) holds the weights (safetensors),
``config.json`` (the model's shape), the ranks of a data set's own tokenizer (``tokenizer-SHA.tiktoken``, named
under ``"tokenizer"`` in config.json; none for GPT-2's) and, from ``nanogpt export``, the run's ``metrics.jsonl``
and ``loss.png``.
Written as two renames, a crash between them left new weights beside the old shape: the previous export was
gone and the new one did not load. Now, as ``prepare`` does with ``meta.json``:

1. each new file is written and fsynced under a unique hidden name ``.NAME.gen-XXXXXXXX``; the old export is
   untouched;
2. ``config.json`` is replaced by one naming those files: the commit point;
3. each file gets its usual name (a hard link, each replaced atomically);
4. ``config.json`` is replaced by one naming the usual names; the ``.gen`` files, and what the previous export
   had that this one lacks (an old ``metrics.jsonl``, ``loss.png`` or notebook), are removed.

A crash before 2 leaves the old export whole, from 2 on the new one; the next export tidies up. Readers open the
files ``config.json`` names and check their sizes and sha256, so a flipped byte is refused, never sampled from.
This module imports no torch: the command line checks a destination before any work starts.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .errors import NanoGPTError
from .files import atomic_link, atomic_write, atomic_write_text, clean_stale_tmp, fsync_dir, refuse_symlink
from .rundir import METRICS, NOTEBOOK, PLOT
from .tokenizer import RANKS_FILE

WEIGHTS_FILE = "gpt2_trained_weights.safetensors"  # the seed's trained_model/gpt2_trained_weights.pth, made safe
CONFIG_FILE = "config.json"
FILES_KEY = "files"  # config.json's record of the export's files: {name: {"file", "bytes", "sha256"}}
# Files an export may hold; those the new one lacks are removed from the folder once it is committed.
ARTIFACTS = (WEIGHTS_FILE, METRICS, PLOT, NOTEBOOK)  # the weights, and what travels with them from the run folder
_GEN = re.compile(r"^\.(.+)\.gen-[0-9a-f]{8}$")
_HASH_CHUNK = 1 << 22


class ExportError(NanoGPTError):
    """An export folder that cannot be written or read; the message says why and what to do."""


def sha256_file(path: str | Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _read_record(folder: Path) -> dict[str, Any] | None:
    """``folder/config.json`` when it is a parsable object, else None (a missing or damaged one)."""
    try:
        record = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def check_destination(folder: str | Path, force: bool = False, protected: Path | None = None) -> Path:
    """Refuse, before any work, a destination that is a file, a symbolic link, the shipped model (unless
    ``force``), or a folder holding something other than an export."""
    folder = Path(folder)
    refuse_symlink(folder)
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"{folder} is a file, not a folder: choose a folder for the export (--out DIR)")
    if protected is not None and folder.resolve() == protected.resolve() and not force:
        raise ExportError(
            f"{folder} holds the shipped model, which the notebooks and `nanogpt sample` use: "
            "add --force to replace it, or export elsewhere (the default is RUN/export/)"
        )
    if folder.is_dir():
        names = {p.name for p in folder.iterdir()}
        if names and CONFIG_FILE not in names:
            raise ExportError(
                f"{folder} is not empty and holds no export (no {CONFIG_FILE}): choose a new or "
                "empty folder, so that nothing of yours is replaced"
            )
    return folder


def publish(folder: str | Path, writers: dict[str, Callable[[BinaryIO], None]], record: dict[str, Any]) -> Path:
    """Write the files ``writers`` produce (name -> ``write(fh)``) and ``record`` as ``config.json`` into
    ``folder``, as one unit (see the module's docstring); return the folder."""
    folder = Path(folder)
    refuse_symlink(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(folder)  # what a killed export left (an export folder is ours)
    token = secrets.token_hex(4)
    files: dict[str, dict[str, Any]] = {}
    for name, write in writers.items():  # 1. the new files, under names no reader opens yet
        gen = folder / f".{name}.gen-{token}"
        atomic_write(gen, write)
        files[name] = {"file": gen.name, "bytes": gen.stat().st_size, "sha256": sha256_file(gen)}
    _write_record(folder, {**record, FILES_KEY: files})  # 2. the commit point
    return _settle(folder)


def _write_record(folder: Path, record: dict[str, Any]) -> None:
    atomic_write_text(folder / CONFIG_FILE, json.dumps(record, indent=2))


def _settle(folder: Path) -> Path:
    """Steps 3-4: the live files get their usual names; what no longer belongs to the export is removed."""
    record = _read_record(folder) or {}
    files = record.get(FILES_KEY, {})
    if any(info["file"] != name for name, info in files.items()):
        for name, info in files.items():
            if info["file"] != name:
                atomic_link(folder / info["file"], folder / name)
        fsync_dir(folder)
        files = {name: {**info, "file": name} for name, info in files.items()}
        _write_record(folder, {**record, FILES_KEY: files})
    for p in folder.iterdir():
        stale = (p.name in ARTIFACTS or RANKS_FILE.match(p.name)) and p.name not in files  # the previous export's
        if (_GEN.match(p.name) or stale) and not p.is_dir():
            p.unlink(missing_ok=True)
    fsync_dir(folder)
    return folder


def read_export(
    folder: str | Path, check: tuple[str, ...] | None = None
) -> tuple[dict[str, Any], dict[str, Path]] | None:
    """The record and the live files of the export in ``folder``; None for a folder whose ``config.json``
    records no files (an export from before the record, or a run folder).

    Each file in ``check`` (default: all) must have the size and sha256 the record gives: a damaged one is
    a one-line :class:`ExportError`. Loading checks the weights only: a text file's bytes may change in a
    checkout that converts line ends, and the weights do not depend on them.
    """
    folder = Path(folder)
    record = _read_record(folder)
    if record is None or FILES_KEY not in record:
        return None
    files = record[FILES_KEY]
    again = "export the weights again (`nanogpt export`)"
    if not isinstance(files, dict):
        raise ExportError(f"{folder / CONFIG_FILE}: its {FILES_KEY!r} entry is not a list of files: {again}")
    live = {}
    for name, info in files.items():
        file = info.get("file") if isinstance(info, dict) else None
        if not isinstance(file, str) or Path(file).name != file or file in ("", ".", ".."):
            raise ExportError(f"{folder / CONFIG_FILE} names {file!r} for {name}, not a file in {folder}: {again}")
        path = folder / file
        if not path.is_file():
            raise ExportError(f"{path} is missing: the export in {folder} is incomplete: {again}")
        if check is not None and name not in check:
            live[name] = path
            continue
        if path.stat().st_size != info.get("bytes") or sha256_file(path) != info.get("sha256"):
            raise ExportError(
                f"{path} is corrupt or truncated: its size or sha256 differs from the record in {CONFIG_FILE}: {again}"
            )
        live[name] = path
    return record, live


def copy_from(path: Path) -> Callable[[BinaryIO], None]:
    """A writer for :func:`publish` that copies the file at ``path``."""
    return lambda fh: fh.write(path.read_bytes())


def run_artifacts(run_dir: Path) -> dict[str, Callable[[BinaryIO], None]]:
    """The run's metrics, loss plot and executed notebook, where they exist, as writers for :func:`publish`."""
    return {name: copy_from(run_dir / name) for name in ARTIFACTS[1:] if (run_dir / name).is_file()}


def sign_legacy(folder: str | Path, names: tuple[str, ...] = (WEIGHTS_FILE,)) -> None:
    """Record the sizes and sha256 of an export written before the record (the shipped ``trained_model/``)."""
    folder = Path(folder)
    record = _read_record(folder)
    if record is None:
        raise ExportError(f"{folder / CONFIG_FILE} is missing or not a JSON object")
    files = {n: {"file": n, "bytes": (folder / n).stat().st_size, "sha256": sha256_file(folder / n)} for n in names}
    _write_record(folder, {**record, FILES_KEY: files})
