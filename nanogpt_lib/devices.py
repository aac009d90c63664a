"""Which devices exist, and which one to use (cuda > mps > cpu unless the user names one)."""

from __future__ import annotations

import torch


def available_devices() -> list[str]:
    """Device types usable in this process, best first."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return [*found, "cpu"]


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` picks the best available; a named device that is missing is an error listing the others."""
    available = available_devices()
    if requested == "auto":
        return torch.device(available[0])
    if torch.device(requested).type not in available:
        raise ValueError(f"device {requested!r} is not available here; available: {', '.join(available)}")
    return torch.device(requested)


def describe_devices() -> str:
    lines = [f"devices: {', '.join(available_devices())} (cpu threads: {torch.get_num_threads()})"]
    if torch.cuda.is_available():
        lines.append(f"  cuda: {torch.cuda.get_device_name()} (bf16: {torch.cuda.is_bf16_supported()})")
    return "\n".join(lines)
