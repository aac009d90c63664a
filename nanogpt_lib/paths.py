"""Where the project's folders are: data, runs and the shipped model.

A clone (or an editable install) keeps them beside the package; ``NANOGPT_HOME`` points elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path


def check_plain_name(name: object, what: str) -> str:
    """``name`` if it is one plain folder name (``runs/NAME``, ``data/NAME``), else a ValueError naming ``what``.

    Never a path that leads elsewhere: ``--mode reset`` deletes in a run folder and ``prepare`` writes into
    ``data/NAME``, so ``..``, ``../x``, ``/home/me`` or ``a/b`` must not be one."""
    bad = (not isinstance(name, str) or not name.strip() or name in (".", "..") or "\0" in name
           or any(sep in name for sep in ("/", "\\", os.sep)) or Path(name).is_absolute())
    if bad:
        raise ValueError(f"{what} must be a plain folder name (no '/', '\\', '..' or empty name), got {name!r}")
    return name


def project_root() -> Path:
    """``$NANOGPT_HOME`` if set, else the folder holding ``nanogpt_lib/`` (the clone)."""
    env = os.environ.get("NANOGPT_HOME")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[1]


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
