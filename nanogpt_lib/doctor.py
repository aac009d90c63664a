"""``nanogpt doctor``: what a learner or a teacher checks before class, each line a finding and, where
something needs doing, the command that does it.

Findings are ``ok`` (fine), ``note`` (worth knowing: slower here, not broken) or ``FIX`` (the course will
not work as written until it is done; the command then exits with status 1). The first chapter's first
cell runs :func:`report`, so a learner sees the same lines in the notebook.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import DIST_NAME, __version__, paths
from .errors import one_line

TORCH_FLOOR = (2, 6)  # torch.serialization.set_crc32_options (checkpoint.py) is the newest API we call
TORCH_TESTED = "2.13.0"  # what CI installs (.ci/run)
NOTEBOOK_PACKAGES = ("jupyterlab", "ipywidgets", "jupyterlab-rise")
# The browser extensions the notebooks need: RISE's slideshows and ipywidgets' explorers.
LAB_EXTENSIONS = ("jupyterlab-rise", "@jupyter-widgets/jupyterlab-manager")


@dataclass(frozen=True)
class Finding:
    """One line of the report: ``status`` is ok, note or FIX; ``fix`` says what to run when it is not ok."""

    topic: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.status:<4}  {self.topic:<15} {self.detail}" + (f"\n{'':<21}-> {self.fix}" if self.fix else "")


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text.split("+")[0])[:2])


def software() -> list[Finding]:
    """Python, torch and the package itself."""
    import torch

    found = [Finding("nanogpt", "ok", f"{DIST_NAME} {__version__} (nanogpt_lib in {Path(__file__).parent})")]
    py_ok = sys.version_info >= (3, 10)
    found.append(
        Finding(
            "python",
            "ok" if py_ok else "FIX",
            platform.python_version(),
            "" if py_ok else "Python 3.10 or later is needed",
        )
    )
    tv = torch.__version__
    if _version_tuple(tv) < TORCH_FLOOR:
        found.append(
            Finding(
                "torch",
                "FIX",
                f"{tv}: older than {'.'.join(map(str, TORCH_FLOOR))}",
                "pip install --upgrade torch (CPU: add --index-url https://download.pytorch.org/whl/cpu)",
            )
        )
    else:
        cuda = f", CUDA {torch.version.cuda} build" if torch.version.cuda else ""
        found.append(Finding("torch", "ok", f"{tv}{cuda} (CI tests {TORCH_TESTED})"))
    return found


def hardware() -> list[Finding]:
    """The device, the CPU's class and flags, whether bf16 is fast, and the threads."""
    import torch

    from .devices import available_devices, cpu_bf16_speedup, cpu_class, cpu_info

    found = []
    devices = available_devices()
    extra = f" ({torch.cuda.get_device_name()})" if "cuda" in devices else ""
    found.append(Finding("device", "ok", f"{devices[0]}{extra}; available: {', '.join(devices)}"))
    model, flags = cpu_info()
    found.append(
        Finding(
            "cpu",
            "ok",
            f"{model}: class {cpu_class()} (torch: {torch.backends.cpu.get_cpu_capability()}; "
            f"flags: {' '.join(flags) or 'unknown'})",
        )
    )
    speedup = cpu_bf16_speedup()
    if speedup > 1.25:
        found.append(Finding("bf16", "ok", f"fast on this CPU ({speedup:.2f}x fp32): CPU training runs in bf16"))
    else:
        found.append(
            Finding(
                "bf16",
                "note",
                f"slow on this CPU ({speedup:.2f}x fp32): CPU training runs in fp32, "
                "so the README's times run longer here",
            )
        )
    omp = os.environ.get("OMP_NUM_THREADS")
    found.append(
        Finding(
            "threads",
            "ok",
            f"torch uses {torch.get_num_threads()} of {os.cpu_count()} cores"
            f"{f' (OMP_NUM_THREADS={omp})' if omp else ''}; one sample uses 1 "
            "(nanogpt sample --threads N to change)",
        )
    )
    return found


def project() -> list[Finding]:
    """The project home, the shipped corpus, the prepared data and the shipped weights (verified)."""
    from .data import DatasetError, load_meta

    root = paths.project_root()
    found = [Finding("project home", "ok", f"{root} ({paths.home_source()})")]
    plays = sorted(paths.shakespeare_dir().glob("*.txt"))
    if not plays:
        found.append(
            Finding(
                "corpus",
                "FIX",
                f"no plays in {paths.shakespeare_dir()}",
                "run nanogpt from a clone of the project (cd into it) or set NANOGPT_HOME to one",
            )
        )
        return found
    found.append(Finding("corpus", "ok", f"{len(plays)} plays in {paths.shown(paths.shakespeare_dir())}"))
    prepared = paths.data_dir() / "shakespeare"
    try:
        meta = load_meta(prepared) if (prepared / "meta.json").is_file() else None
    except DatasetError as e:
        found.append(Finding("data", "FIX", f"data/shakespeare is damaged: {e}", "nanogpt prepare --force"))
    else:
        if meta:
            t, v = meta["splits"]["train"]["tokens"], meta["splits"]["val"]["tokens"]
            found.append(Finding("data", "ok", f"data/shakespeare prepared: {t:,} train and {v:,} val tokens"))
        else:
            found.append(Finding("data", "FIX", "data/shakespeare is not prepared", "nanogpt prepare (a few seconds)"))
    found.append(shipped_weights())
    return found


def shipped_weights() -> Finding:
    """The shipped weights are there, match the sha256 their config.json records, and load (load_model checks
    the checksum: one owner for that rule, export.py)."""
    folder = paths.trained_model_dir()
    restore = "git checkout -- trained_model/ (in the clone)"
    if not (folder / "config.json").is_file():
        return Finding("weights", "FIX", f"{paths.shown(folder)} is missing or incomplete", restore)
    from .sample import load_model

    try:
        model = load_model(device="cpu")
    except Exception as e:  # noqa: BLE001 - a damaged or missing file, whatever it raises: a finding, not a traceback
        return Finding("weights", "FIX", f"{paths.shown(folder)}: {one_line(e, first=True)}", restore)
    return Finding(
        "weights",
        "ok",
        f"{paths.shown(folder)}/: sha256 verified, {model.num_params():,} parameters, "
        f"step {model.meta.get('step', '?')}, val loss {model.meta.get('val_loss', float('nan')):.4f}",
    )


def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def parse_labextensions(listing: str) -> dict[str, tuple[bool, bool]]:
    """``jupyter labextension list``'s output as {extension: (enabled, compatible)}."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", listing)
    found = {}
    for m in re.finditer(r"^\s+(\S+) v\S+ (enabled|disabled)\s+(OK|X)\b", plain, re.MULTILINE):
        found[m.group(1)] = (m.group(2) == "enabled", m.group(3) == "OK")
    return found


def labextensions() -> dict[str, tuple[bool, bool]]:
    """The installed JupyterLab extensions, as JupyterLab itself lists them (a few seconds)."""
    proc = subprocess.run(
        [sys.executable, "-m", "jupyterlab.labextensions", "list"], capture_output=True, text=True, timeout=120
    )
    return parse_labextensions(proc.stdout + proc.stderr)


def jupyter(check_extensions: bool = True) -> list[Finding]:
    """JupyterLab, ipywidgets and jupyterlab-rise installed; their extensions enabled and compatible."""
    versions = {dist: _installed(dist) for dist in NOTEBOOK_PACKAGES}
    missing = [d for d, v in versions.items() if v is None]
    found = [
        Finding(
            "notebooks",
            "FIX" if missing else "ok",
            ", ".join(f"{d} {v or 'MISSING'}" for d, v in versions.items()),
            f'pip install -e ".[notebooks]" (missing: {", ".join(missing)})' if missing else "",
        )
    ]
    if missing or not check_extensions:
        return found
    exts = labextensions()
    needed = [e for e in LAB_EXTENSIONS if not exts.get(e, (False, False))[0]]
    broken = sorted(e for e, (enabled, compatible) in exts.items() if enabled and not compatible)
    if needed:
        found.append(
            Finding(
                "lab extensions",
                "FIX",
                f"not enabled: {', '.join(needed)}",
                "jupyter labextension enable " + " ".join(needed),
            )
        )
    elif broken:
        found.append(
            Finding(
                "lab extensions",
                "FIX",
                f"incompatible with this JupyterLab: {', '.join(broken)}",
                'pip uninstall jupyterlab-mathjax3 && pip install -e ".[notebooks]" '
                "(it pins a jupyterlab-rise that does not pull it in)",
            )
        )
    else:
        found.append(
            Finding("lab extensions", "ok", f"{len(exts)} enabled and compatible, RISE and widgets among them")
        )
    return found


def findings(jupyter_extensions: bool = True) -> list[Finding]:
    """Every check, in the order the report prints them."""
    return [*software(), *hardware(), *project(), *jupyter(jupyter_extensions)]


def report(extensions: bool = True) -> bool:
    """Print the findings; True when nothing needs fixing."""
    all_found = findings(extensions)
    for f in all_found:
        print(f.line())
    fixes = sum(f.status == "FIX" for f in all_found)
    print("all set" if not fixes else f"{fixes} thing(s) to fix, each with its command above")
    return not fixes
