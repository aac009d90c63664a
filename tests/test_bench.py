"""The benchmarks run and report consistent figures (their speeds are printed, never asserted)."""

from __future__ import annotations

import pytest

from nanogpt_lib import bench


def test_phases_add_up_to_the_step(capsys):
    out = bench.bench_phases(steps=1, batch_size=2, size=64, tiles=((64, 4096),))
    assert set(out["seconds"]) == {
        "trunk forward",
        "LM head + loss (forward and its gradients)",
        "backward (the trunk)",
        "clip_grad_norm_",
        "AdamW.step + zero_grad",
        "Muon.step + zero_grad",
    }
    assert all(t > 0 for t in out["seconds"].values())
    assert out["step_seconds"] == pytest.approx(sum(out["seconds"].values()))
    assert out["head_gflops"] > 0 and out["square_matmul_gflops"] > 0
    assert out["trunk_forward_gflops"] > 0 and out["trunk_backward_gflops"] > 0
    assert set(out["head_paths_gflops"]) == {"chunks of 1024 positions", "tiles of 64 x 4096"}
    printed = capsys.readouterr().out
    assert "where a default-recipe step goes" in printed and "tokens/s" in printed
    assert "the LM head's paths" in printed and "of the machine" in printed


def test_the_cli_offers_every_benchmark():
    from nanogpt_lib.cli import BENCHMARKS, build_parser

    for which in (*BENCHMARKS, "all"):
        assert build_parser().parse_args(["bench", which, "--fast"]).which == which
