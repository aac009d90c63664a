"""Checkpoints and exported weights: written atomically, verified on load, read without executing code.

A training checkpoint is a ``torch.save`` of tensors and plain Python values only (no pickled objects), so
``torch.load(weights_only=True)`` reads it. Exported weights are safetensors plus a ``config.json`` that
records their size and sha256, published as one unit (``export.py``). Every file goes to a temporary name, is
fsynced, then renamed: a crash mid-write leaves the previous file.

Checkpoints are verified before they are unpickled: ``torch.save`` writes a zip whose every record carries
a CRC32, and ``torch.load`` does not check them (flipped bytes load as wrong numbers). Checking them with
``zipfile`` costs a read of the file (measured 0.06 s for an 88 MB checkpoint, against 0.3 s to sha256 it
and 0.12 s to load it), needs no extra file, and catches flipped, truncated and empty files alike. The
previous good checkpoint is kept as ``ckpt.prev.pt`` (a hard link, so no copy) and ``load_checkpoint``
falls back to it when the newest fails verification.
"""

from __future__ import annotations

import json
import pickle
import struct
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .errors import NanoGPTError, one_line
from .export import CONFIG_FILE, WEIGHTS_FILE, ExportError, publish, read_export
from .files import atomic_link, atomic_write
from .limits import TooLargeError, check_model_fits
from .model import GPT, GPTConfig
from .rundir import CKPT, is_training_checkpoint
from .tokenizer import is_gpt2, portable

TIED_KEY = "lm_head.weight"  # tied to transformer.wte.weight; stored once
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since 1.6
PICKLE_MAGIC = b"\x80"  # the legacy (pre-zip) torch format starts with a pickle protocol byte


class CheckpointError(NanoGPTError):
    """A checkpoint or weights file that cannot be used; the message says why."""


def previous_path(path: str | Path) -> Path:
    """Where the previous good checkpoint of ``path`` is kept: ``ckpt.pt`` -> ``ckpt.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def checkpoint_problem(path: str | Path) -> str | None:
    """Why the file at ``path`` is damaged (empty, truncated, a record failing its CRC32), or None."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
        if not head:
            return "the file is empty"
        if head != ZIP_MAGIC:
            return None if head[:1] == PICKLE_MAGIC else "not a PyTorch checkpoint (no zip header)"
        with zipfile.ZipFile(path) as zf:
            if not any(i.CRC for i in zf.infolist() if i.file_size):
                return None  # saved with torch.serialization.set_crc32_options(False): nothing to check
            bad = zf.testzip()
        return f"record {bad} fails its CRC32 check" if bad else None
    except (zipfile.BadZipFile, EOFError, ValueError, struct.error, NotImplementedError) as e:
        return f"truncated or damaged: {one_line(e, first=True)}"
    except OSError as e:
        return f"unreadable: {one_line(e, first=True)}"


class _RecordingWriter:
    """Passes writes through and keeps the first OSError: ``torch.save`` replaces it with a vague
    RuntimeError ("unexpected pos"), which would hide a full disk."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.error = fh, None

    def write(self, data: bytes) -> int:
        try:
            return self.fh.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self.fh.flush()


def _torch_save(state: dict[str, Any], fh: Any) -> None:
    crc_was_on = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(True)  # load verifies them
    writer = _RecordingWriter(fh)
    try:
        torch.save(state, writer)
    except RuntimeError:
        if writer.error is not None:
            raise writer.error from None
        raise
    finally:
        torch.serialization.set_crc32_options(crc_was_on)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors and plain values only) atomically, keeping the previous good checkpoint.

    Order: the new file is written and fsynced under a temporary name; the current ``ckpt.pt``, if it
    verifies, becomes ``ckpt.prev.pt``; then the new file is renamed to ``ckpt.pt``. A crash at any point
    leaves a complete ``ckpt.pt``. A damaged ``ckpt.pt`` is not rotated in, so ``ckpt.prev.pt`` stays the
    last good one; a run's first save removes a ``ckpt.prev.pt`` left by an earlier run of that name.
    """
    path = Path(path)
    prev = previous_path(path)

    def rotate() -> None:
        if path.is_file():
            if checkpoint_problem(path) is None:
                atomic_link(path, prev)
        else:
            prev.unlink(missing_ok=True)

    atomic_write(path, lambda fh: _torch_save(state, fh), before_replace=rotate)


class _Damaged(Exception):
    """The bytes of a checkpoint are damaged (as opposed to holding something refused)."""


def _read(path: Path, map_location: str | torch.device) -> Any:
    problem = checkpoint_problem(path)
    if problem:
        raise _Damaged(problem)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" in str(e).lower() or "unsupported global" in str(e).lower():
            raise CheckpointError(
                f"{path} holds pickled Python objects, which are refused (they could run code): "
                f"{one_line(e, first=True)}"
            ) from None
        raise _Damaged(f"UnpicklingError: {one_line(e, first=True)}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, struct.error) as e:
        raise _Damaged(f"{type(e).__name__}: {one_line(e, first=True)}") from None


def _check_training_checkpoint(ckpt: Any, path: Path) -> None:
    """A ``ckpt*.pt`` must hold the weights and the config that shaped them."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a training checkpoint (it holds a {type(ckpt).__name__}, not a dict)")
    for key in ("model", "config"):
        if not isinstance(ckpt.get(key), dict):
            raise CheckpointError(
                f"{path} has no {key!r} entry: it was not written by `nanogpt train` "
                "(export weights with config.json instead, or start the run over with --mode reset)"
            )
    if not isinstance(ckpt["config"].get("model"), dict):
        raise CheckpointError(f"{path}: its 'config' has no 'model' section: it was not written by `nanogpt train`")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Read a checkpoint after verifying it; if the newest is damaged, fall back to ``ckpt.prev.pt``
    with a one-line message. Files holding pickled objects are refused, never executed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    prev = previous_path(path)
    try:
        ckpt = _read(path, map_location)
    except _Damaged as damage:
        if not prev.is_file():
            raise CheckpointError(
                f"{path} is corrupt or truncated ({damage}) and there is no previous checkpoint "
                f"{prev.name} to fall back on: start over with --mode reset"
            ) from None
        try:
            ckpt = _read(prev, map_location)
        except _Damaged as also:
            raise CheckpointError(
                f"{path} is corrupt or truncated ({damage}), and so is {prev.name} ({also}): "
                "start over with --mode reset"
            ) from None
        step = ckpt.get("step") if isinstance(ckpt, dict) else None
        at = f" (step {step})" if step is not None else ""
        print(
            f"warning: {path} is damaged ({damage}); using the previous checkpoint {prev.name}{at}",
            file=sys.stderr,
            flush=True,
        )
        path = prev
    if is_training_checkpoint(path):
        _check_training_checkpoint(ckpt, path)
    return ckpt


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights without wrappers (DDP, torch.compile) and with a tied head stored once."""
    raw = getattr(model, "module", model)
    raw = getattr(raw, "_orig_mod", raw)
    tied = getattr(getattr(raw, "config", None), "tie_head", True)
    return {k: v for k, v in raw.state_dict().items() if not (tied and k == TIED_KEY)}


def load_model_state(model: GPT, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load weights strictly, allowing only a tied head to be absent (it shares wte's tensor)."""
    state = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in state.items()}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of another shape: the weights are not of the model config.json describes
        sizes = (line.strip() for line in str(e).splitlines() if "size mismatch" in line)
        detail = next(sizes, one_line(e, first=True))
        raise CheckpointError(f"{source} does not fit the model its config describes: {detail}") from None
    missing = [k for k in missing if not (model.config.tie_head and k == TIED_KEY)]
    if missing or unexpected:
        raise CheckpointError(f"{source} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def export_weights(
    model: torch.nn.Module,
    config: GPTConfig,
    folder: str | Path,
    extra: dict[str, Any] | None = None,
    also: dict[str, Callable[[BinaryIO], None]] | None = None,
    tokenizer: Any = None,
) -> Path:
    """Publish ``folder/gpt2_trained_weights.safetensors`` and ``folder/config.json`` (plus the files ``also``
    writes) as one unit: a crash leaves the previous export or this one, whole (see ``export.py``).

    ``tokenizer`` (a data set's own, with its ranks inline: ``tokenizer.portable``) travels as its ranks file,
    named in config.json, so the export decodes with it; GPT-2's (``None`` or ``"gpt2"``) adds nothing.
    """
    folder = Path(folder)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model_state(model).items()}
    writers = {WEIGHTS_FILE: lambda fh: fh.write(save(tensors, metadata={"format": "pt"})), **(also or {})}
    record = {"model": config.to_dict(), **(extra or {})}
    if not is_gpt2(tokenizer):
        ranks = portable(tokenizer)["ranks"].encode()  # checked against its sha256 on the way
        writers[tokenizer["file"]] = lambda fh: fh.write(ranks)
        record["tokenizer"] = {k: v for k, v in tokenizer.items() if k != "ranks"}
    publish(folder, writers, record)
    return folder / WEIGHTS_FILE


def _model_config(d: Any, source: Path) -> GPTConfig:
    if not isinstance(d, dict):
        raise CheckpointError(f'{source}: no model settings (an object under "model"): export the weights again')
    try:
        return GPTConfig.from_dict(d)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: bad model settings: {one_line(e, first=True)}") from None


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is corrupt or truncated ({one_line(e, first=True)})") from None


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> tuple[GPT, dict[str, Any]]:
    """A GPT from exported weights: a folder (``config.json`` + safetensors or a seed-style ``.pth``),
    a ``.safetensors``/``.pth`` file beside a ``config.json``, or a run folder's ``ckpt.pt``.

    The meta's ``"tokenizer"`` is the one the weights were trained with, its ranks inline and verified
    (``tokenizer.portable``): ``"gpt2"`` for checkpoints and exports that name none (GPT-2's, and all older ones).
    """
    path = Path(path)
    try:  # an export that records its files: open the ones it names, after checking their sha256
        exported = read_export(path if path.is_dir() else path.parent, check=(WEIGHTS_FILE,))
    except ExportError as e:
        raise CheckpointError(str(e)) from None
    if exported is not None and (path.is_dir() or path.name == WEIGHTS_FILE) and WEIGHTS_FILE in exported[1]:
        path = exported[1][WEIGHTS_FILE]
    elif path.is_dir():
        candidates = [
            path / WEIGHTS_FILE,
            path / CKPT,
            *sorted(path.glob("*.safetensors")),
            *sorted(path.glob("*.pth")),
        ]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise CheckpointError(f"no weights in {path} (expected {WEIGHTS_FILE}, {CKPT} or a .pth file)")
        path = found[0]
    if not path.is_file():
        raise CheckpointError(f"no weights at {path}")
    if is_training_checkpoint(path):
        ckpt = load_checkpoint(path)
        config = _model_config(ckpt["config"]["model"], path)
        state, meta = (
            ckpt["model"],
            {"model": ckpt["config"]["model"], "step": ckpt.get("step"), "tokenizer": portable(ckpt.get("tokenizer"))},
        )  # older ones: GPT-2
    elif exported is not None and path == exported[1].get(WEIGHTS_FILE):
        meta = {**exported[0], "tokenizer": portable(exported[0].get("tokenizer"), path.parent)}
        config = _model_config(meta.get("model"), path.parent / CONFIG_FILE)
        state = _load_safetensors(path)
    else:
        cfg_file = path.parent / CONFIG_FILE
        if not cfg_file.is_file():
            raise CheckpointError(f"{cfg_file} is missing: it holds the model's shape for {path.name}")
        try:
            meta = json.loads(cfg_file.read_text())
        except ValueError as e:
            raise CheckpointError(f"{cfg_file} is not valid JSON: {one_line(e, first=True)}") from None
        settings = meta.get("model", meta) if isinstance(meta, dict) else meta
        if not isinstance(settings, dict):
            kind = {list: "a list", str: "a string"}.get(type(settings), type(settings).__name__)
            raise CheckpointError(
                f"{cfg_file} holds {kind}, not an object with the model's settings "
                '({"model": {"n_layer": ..., ...}}): export the weights again with `nanogpt export`'
            )
        config = _model_config(settings, cfg_file)
        if path.suffix == ".safetensors":
            state = _load_safetensors(path)
        else:  # the seed's .pth: a plain state dict, read without unpickling objects
            state = load_checkpoint(path)
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise CheckpointError(f"{path} is not a state dict of tensors")
    try:
        check_model_fits(config, 1, str(path))
    except TooLargeError as e:
        raise CheckpointError(str(e)) from None
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:  # sampling from them fails deep in torch.multinomial; say where the fault is
        raise CheckpointError(
            f"{path} holds NaN or infinite weights ({', '.join(broken[:3])}): the training diverged "
            "before they were saved; use an earlier checkpoint or retrain with a lower lr"
        )
    model = GPT(config)
    load_model_state(model, state, path)
    return model.to(device).eval(), meta
