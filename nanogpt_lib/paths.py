"""Where the project's folders are: data, runs and the shipped model (the project home).

The project home is, in this order: ``$NANOGPT_HOME`` if set; the clone that holds this package (a clone
on ``PYTHONPATH`` or an editable install, ``pip install -e .``); else the current folder. The last case is
a regular ``pip install .``: the package then lives in site-packages, away from the shipped corpus and
weights, so the commands are run from the clone (``cd`` into it) or with ``NANOGPT_HOME`` pointing at it.
What the project ships is asked for through :func:`shipped`, whose error says exactly that in one line.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import NanoGPTError


class ProjectFilesError(NanoGPTError, RuntimeError):
    """A file the project ships (the corpus, the weights) is not in the project home."""


def _clone_root() -> Path | None:
    """The clone holding this package, or None when the package was installed into site-packages."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() else None


def check_plain_name(name: object, what: str) -> str:
    """``name`` if it is one plain folder name (``runs/NAME``, ``data/NAME``), else a ValueError naming ``what``.

    Never a path that leads elsewhere: ``--mode reset`` deletes in a run folder and ``prepare`` writes into
    ``data/NAME``, so ``..``, ``../x``, ``/home/me`` or ``a/b`` must not be one."""
    bad = (
        not isinstance(name, str)
        or not name.strip()
        or name in (".", "..")
        or "\0" in name
        or any(sep in name for sep in ("/", "\\", os.sep))
        or Path(name).is_absolute()
    )
    if bad:
        raise ValueError(f"{what} must be a plain folder name (no '/', '\\', '..' or empty name), got {name!r}")
    return name


def project_root() -> Path:
    """``$NANOGPT_HOME`` if set, else the clone holding ``nanogpt_lib/``, else the current folder."""
    env = os.environ.get("NANOGPT_HOME")
    if env:
        return Path(env).expanduser()
    return _clone_root() or Path.cwd()


def home_source() -> str:
    """How :func:`project_root` was chosen, in words (for ``nanogpt doctor`` and errors)."""
    if os.environ.get("NANOGPT_HOME"):
        return "NANOGPT_HOME"
    return "the clone holding nanogpt_lib" if _clone_root() else "the current folder (nanogpt_lib is installed)"


def shipped(path: Path, what: str) -> Path:
    """``path``, a file or folder the project ships, if it exists; else a one-line error saying what to do."""
    if path.exists():
        return path
    raise ProjectFilesError(
        f"{what} not found at {path}: the project home is {project_root()} ({home_source()}); "
        "run nanogpt from a clone of the project (cd into it) or set NANOGPT_HOME to the clone"
    )


def data_dir() -> Path:
    """Prepared datasets live in ``data/<name>/``."""
    return project_root() / "data"


def shakespeare_dir() -> Path:
    """The shipped corpus: one plain-text file per play."""
    return data_dir() / "shakespeare" / "plays"


def runs_dir() -> Path:
    """Training runs live in ``runs/<name>/``."""
    return project_root() / "runs"


def trained_model_dir() -> Path:
    """The weights we ship, so sampling works on a fresh clone."""
    return project_root() / "trained_model"


def shown(path: str | Path) -> str:
    """``path`` relative to the project root when inside it (messages and notebooks stay machine-free)."""
    try:
        return str(Path(path).resolve().relative_to(project_root().resolve()))
    except ValueError:
        return str(path)
