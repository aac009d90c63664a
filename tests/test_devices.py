"""Device and precision choice: the bf16 measurement and the CPU class."""

from __future__ import annotations

import pytest
import torch

from nanogpt_lib import devices


def test_the_bf16_measurement_leaves_the_global_rng_and_threads_alone():
    """It runs after a checkpoint's RNG state may have been restored: drawing from the global RNG there
    would change a resumed run's dropout masks."""
    torch.manual_seed(123)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    fp32, bf16 = devices._time_matmuls(reps=1)
    assert fp32 > 0 and bf16 > 0
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads


def test_the_bf16_measurement_works_when_first_asked_under_no_grad():
    """Its first caller may be an evaluation (the loss asks the CPU class inside ``torch.no_grad``): the
    measurement's backward must still have a graph (it raised "does not require grad" there)."""
    with torch.no_grad():
        fp32, bf16 = devices._time_matmuls(reps=1)
    assert fp32 > 0 and bf16 > 0


@pytest.mark.parametrize(
    "capability, speedup, amx, expected",
    [
        ("AVX2", 0.05, False, "AVX2"),
        ("AVX2", 3.0, True, "AVX2"),
        ("DEFAULT", 1.0, False, "DEFAULT"),
        ("AVX512", 0.9, False, "AVX512"),
        ("AVX512", 2.5, False, "AVX512-BF16"),
        ("AVX512", 6.0, True, "AMX"),
        ("AVX512", 1.1, True, "AVX512"),  # AMX on the chip but oneDNN capped below it: bf16 measured slow
    ],
)
def test_cpu_class_combines_torch_capability_and_the_measured_bf16_speed(
    monkeypatch, capability, speedup, amx, expected
):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(devices, "cpu_bf16_speedup", lambda: speedup)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    devices.cpu_class.cache_clear()
    try:
        assert devices.cpu_class() == expected
    finally:
        devices.cpu_class.cache_clear()


def test_this_cpus_class_agrees_with_the_precision_choice():
    """Whatever machine runs the suite (AVX512-BF16 natively, AVX2 when emulated): bf16 is the CPU's automatic
    precision exactly when its class has native bf16."""
    native_bf16 = devices.cpu_class() in ("AVX512-BF16", "AMX")
    assert (devices.choose_precision(torch.device("cpu")).dtype == torch.bfloat16) == native_bf16


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512_bf16 avx512_vnni
"""


def test_cpu_info_reads_the_model_and_the_flags_that_set_training_speed():
    assert devices.cpu_info(CPUINFO) == ("AMD EPYC 9R14 96-Core Processor", ["avx2", "avx512f", "avx512_bf16"])
    model, flags = devices.cpu_info("model name : Intel Xeon\nflags : avx2 avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert model == "Intel Xeon" and flags == ["avx2", "avx512f", "avx512_bf16", "amx_tile"]
    assert devices.cpu_info("processor : 0\n")[1] == []  # no flags line (an Arm board): none claimed
