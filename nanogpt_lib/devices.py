"""Which devices exist, and which one to use (cuda > mps > cpu unless the user names one)."""

from __future__ import annotations

import contextlib
import functools
import math
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import NanoGPTError


def available_devices() -> list[str]:
    """Device types usable in this process, best first."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return [*found, "cpu"]


class DeviceError(NanoGPTError, ValueError):
    """A device name that is unknown or not available here; the message lists the available ones."""


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` picks the best available; a named device that is unknown or missing is an error listing the others."""
    available = available_devices()
    if requested == "auto":
        return torch.device(available[0])
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):  # "bogus": torch's message lists every backend it was built with
        device = None
    if device is None or device.type not in available:
        raise DeviceError(f"device {requested!r} is not available here; available: {', '.join(available)}")
    return device


# /proc/cpuinfo flags that decide training speed on a CPU, in the order the classes build on each other.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


def cpu_info(cpuinfo: str | None = None) -> tuple[str, list[str]]:
    """The CPU's model name and which of :data:`SPEED_FLAGS` it has, from ``/proc/cpuinfo`` (Linux; on other
    systems the model is ``platform.processor()`` and the flags are unknown, an empty list)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return platform.processor() or platform.machine(), []
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return fields.get("model name", platform.machine()), [f for f in SPEED_FLAGS if f in flags]


def describe_devices() -> str:
    """What ``nanogpt info`` prints: the devices, and the CPU's class (measured, about 0.1 s)."""
    lines = [
        f"devices: {', '.join(available_devices())} (cpu threads: {torch.get_num_threads()})",
        f"  cpu: {cpu_class()}, bf16 matmuls {cpu_bf16_speedup():.2f}x fp32 (bf16 is used above 1.25x)",
    ]
    if torch.cuda.is_available():
        lines.append(f"  cuda: {torch.cuda.get_device_name()} (bf16: {torch.cuda.is_bf16_supported()})")
    return "\n".join(lines)


@dataclass(frozen=True)
class Precision:
    """How to run a device's math: ``autocast`` to ``dtype`` (or plain fp32), and whether fp16 needs a scaler."""

    dtype: torch.dtype
    autocast: bool
    grad_scaler: bool

    @property
    def name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


FP32 = Precision(torch.float32, autocast=False, grad_scaler=False)


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch CPU threads (0: leave the count alone), then give the caller back its own."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _time_matmuls(reps: int = 7) -> tuple[float, float]:
    """Fastest CPU seconds of a forward+backward of an LM-head-shaped matmul, in fp32 and under bf16 autocast.

    On one thread and in CPU time (not wall time): the ratio is a property of the instruction set, and CPU
    time leaves out the moments the process waits for the machine, which on a busy machine (other jobs,
    two threads each waiting for the other) swung a wall-clock ratio of about 3 anywhere from 1.2 to 5.
    The two dtypes alternate, so what remains of the disturbance hits both; the minimum is the figure
    least disturbed. Where bf16 is emulated one round decides (it is 10-20x slower, far from the 1.25x bar).
    """
    gen = torch.Generator().manual_seed(0)  # never the global RNG: a resumed run must draw the same dropout
    x = torch.randn(256, 128, generator=gen, requires_grad=True)
    w = torch.randn(8192, 128, generator=gen, requires_grad=True)
    best = {torch.float32: math.inf, torch.bfloat16: math.inf}
    with cpu_threads(1):
        for i in range(reps + 1):
            for dtype in best:
                start = time.process_time()
                # enable_grad: the first caller may be an evaluation under no_grad
                with torch.enable_grad():
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                        out = x @ w.t()
                    out.float().sum().backward()
                if i:  # the first round warms up oneDNN
                    best[dtype] = min(best[dtype], time.process_time() - start)
            if best[torch.bfloat16] > 2 * best[torch.float32]:  # emulated bf16 (AVX2): clear at once, and slow
                break
    return best[torch.float32], best[torch.bfloat16]


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup() -> float:
    """fp32 time / bf16-autocast time on this CPU, measured once per process (a fraction of a second).

    CPUs with AVX512-BF16 or AMX run bf16 matmuls faster than fp32; AVX2-only CPUs emulate them ~100x
    slower. A measurement, not a flag check, decides.
    """
    fp32, bf16 = _time_matmuls()
    return fp32 / bf16


@functools.lru_cache(maxsize=1)
def cpu_class() -> str:
    """The CPU's class as far as training speed goes: ``AVX2``, ``AVX512``, ``AVX512-BF16`` or ``AMX`` (or
    torch's own name for other kinds, e.g. ``DEFAULT`` on Arm).

    The vector width is torch's (``get_cpu_capability``, which honours ``ATEN_CPU_CAPABILITY``); native
    bf16 is the measured speed-up, not a flag, since oneDNN can be capped below what the chip has
    (``ONEDNN_MAX_CPU_ISA``); AMX is told from AVX512-BF16 by its tile flag.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "AVX512":
        return capability
    if cpu_bf16_speedup() <= 1.25:
        return "AVX512"
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()  # private in torch 2.x: guarded
    return "AMX" if amx else "AVX512-BF16"


def choose_precision(device: torch.device, requested: str = "auto") -> Precision:
    """``auto``: bf16 on CUDA that supports it (else fp16 with a grad scaler), fp32 on MPS (no GradScaler
    there, and fp16 autocast has not measured faster), bf16 on a CPU only where it measures faster."""
    kind = device.type
    if requested == "float32":
        return FP32
    if requested == "auto":
        if kind == "cuda":
            requested = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        elif kind == "cpu" and cpu_bf16_speedup() > 1.25:
            requested = "bfloat16"
        else:
            return FP32
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[requested]
    return Precision(dtype, autocast=True, grad_scaler=(dtype == torch.float16 and kind == "cuda"))


# Datasheet dense peaks (FLOP/s, bf16/fp16 tensor cores; fp32 counts half) of GPUs a learner may have.
GPU_PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "4090": 165e12, "3090": 71e12}


def peak_flops(device: torch.device, precision: Precision) -> float | None:
    """The device's peak FLOP/s for the MFU figure: its datasheet figure for a known GPU, else None (MFU
    unknown). Never measured: a peak measured at start-up on a busy machine came out low and made a run
    at 333 tokens/s read 33% MFU; a figure that depends on the moment's load is no yardstick. CPUs and
    Apple GPUs have no single published figure for their many models, so they report no MFU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in GPU_PEAK_FLOPS.items():
        if key in name:
            return value if precision.autocast else value / 2
    return None
