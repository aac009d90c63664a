"""Checkpoints and exported weights: written atomically, read without executing code.

A training checkpoint is a ``torch.save`` of tensors and plain Python values only (no pickled objects), so
``torch.load(weights_only=True)`` reads it. Exported weights are safetensors plus a ``config.json``.
Every file goes to a temporary name, is fsynced, then renamed: a crash mid-write leaves the previous file.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .files import atomic_write, atomic_write_text
from .model import GPT, GPTConfig

WEIGHTS_FILE = "gpt2_trained_weights.safetensors"  # the seed's trained_model/gpt2_trained_weights.pth, made safe
CONFIG_FILE = "config.json"
TIED_KEY = "lm_head.weight"  # tied to transformer.wte.weight; stored once


class CheckpointError(Exception):
    """A checkpoint or weights file that cannot be used; the message says why."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``state`` holds tensors and plain values only, so it loads with ``weights_only=True``."""
    atomic_write(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path} holds pickled Python objects, which are refused (they could run code): {str(e).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt or truncated ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights without wrappers (DDP, torch.compile) and with a tied head stored once."""
    raw = getattr(model, "module", model)
    raw = getattr(raw, "_orig_mod", raw)
    tied = getattr(getattr(raw, "config", None), "tie_head", True)
    return {k: v for k, v in raw.state_dict().items() if not (tied and k == TIED_KEY)}


def load_model_state(model: GPT, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load weights strictly, allowing only a tied head to be absent (it shares wte's tensor)."""
    state = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (model.config.tie_head and k == TIED_KEY)]
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def export_weights(model: torch.nn.Module, config: GPTConfig, folder: str | Path,
                   extra: dict[str, Any] | None = None) -> Path:
    """Write ``folder/gpt2_trained_weights.safetensors`` and ``folder/config.json``."""
    folder = Path(folder)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model_state(model).items()}
    atomic_write(folder / WEIGHTS_FILE, lambda fh: fh.write(save(tensors, metadata={"format": "pt"})))
    atomic_write_text(folder / CONFIG_FILE, json.dumps({"model": config.to_dict(), **(extra or {})}, indent=2))
    return folder / WEIGHTS_FILE


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> tuple[GPT, dict[str, Any]]:
    """A GPT from exported weights: a folder (``config.json`` + safetensors or a seed-style ``.pth``),
    a ``.safetensors``/``.pth`` file beside a ``config.json``, or a run folder's ``ckpt.pt``."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / WEIGHTS_FILE, path / "ckpt.pt", *sorted(path.glob("*.safetensors")),
                      *sorted(path.glob("*.pth"))]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise CheckpointError(f"no weights in {path} (expected {WEIGHTS_FILE}, ckpt.pt or a .pth file)")
        path = found[0]
    if not path.is_file():
        raise CheckpointError(f"no weights at {path}")
    if path.name.endswith(".pt") and path.name.startswith("ckpt"):
        ckpt = load_checkpoint(path)
        config = GPTConfig.from_dict(ckpt["config"]["model"])
        state, meta = ckpt["model"], {"model": ckpt["config"]["model"], "step": ckpt.get("step")}
    else:
        cfg_file = path.parent / CONFIG_FILE
        if not cfg_file.is_file():
            raise CheckpointError(f"{cfg_file} is missing: it holds the model's shape for {path.name}")
        try:
            meta = json.loads(cfg_file.read_text())
        except ValueError as e:
            raise CheckpointError(f"{cfg_file} is not valid JSON: {e}") from None
        config = GPTConfig.from_dict(meta.get("model", meta))
        if path.suffix == ".safetensors":
            try:
                state = load_file(path)
            except (SafetensorError, OSError) as e:
                raise CheckpointError(f"{path} is corrupt or truncated ({e})") from None
        else:  # the seed's .pth: a plain state dict, read without unpickling objects
            state = load_checkpoint(path)
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise CheckpointError(f"{path} is not a state dict of tensors")
    model = GPT(config)
    load_model_state(model, state, path)
    return model.to(device).eval(), meta

