"""Default-recipe training steps of this checkout against another commit's, interleaved in one process.

Usage: ``python tools/bench_against_commit.py [COMMIT] [--config TOML] [--rounds N] [--steps N]`` (COMMIT
defaults to 83c1a2c, the code before issue 24; the config to the default recipe, its batch size and data set
used as they are, e.g. ``configs/ten_minutes.toml``). The other commit's ``nanogpt_lib`` is extracted with
``git archive`` into a temporary folder and imported as ``nanogpt_old``, so both build the config's model from
the same seed (the same weights) and step on the same batches, in the precision the trainer picks here;
tokens/s of each, rounds interleaved, then the losses of 20 steps of each from the same start. Needs the
config's prepared data set (``nanogpt prepare``; ``--vocab 4096`` for the ten-minute recipe).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nanogpt_lib import paths  # noqa: E402
from nanogpt_lib.bench import _interleaved, _train_stepper  # noqa: E402
from nanogpt_lib.config import TrainConfig, load_config  # noqa: E402
from nanogpt_lib.data import TokenData  # noqa: E402
from nanogpt_lib.devices import choose_precision, cpu_class  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit", nargs="?", default="83c1a2c")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per round")
    parser.add_argument("--config", type=Path, default=None, help="a training config (default: the default recipe)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.commit, "nanogpt_lib"], check=True, capture_output=True
        ).stdout
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        (Path(tmp) / "nanogpt_lib").rename(Path(tmp) / "nanogpt_old")
        sys.path.insert(0, tmp)
        import nanogpt_old.model as old  # type: ignore[import-not-found]

        import nanogpt_lib.model as new

        cfg = TrainConfig() if args.config is None else load_config(args.config)
        compare({f"old ({args.commit})": old, "this checkout": new}, args.rounds, args.steps, cfg)


def compare(models: dict, rounds: int, steps: int, cfg: TrainConfig) -> None:
    precision = choose_precision(torch.device("cpu"), "auto")
    dtype = precision.dtype if precision.autocast else torch.float32
    data = TokenData(paths.data_dir() / cfg.dataset, cfg.model.block_size, cfg.model.vocab_size)
    B, T = cfg.batch_size, cfg.model.block_size

    def maker(mod):
        def make():
            torch.manual_seed(0)
            model = mod.GPT(mod.GPTConfig(**cfg.model.to_dict()))
            opts = model.configure_optimizers(
                cfg.weight_decay,
                cfg.lr,
                (cfg.beta1, cfg.beta2),
                "cpu",
                cfg.optimizer,
                cfg.muon_lr,
                cfg.muon_momentum,
                ns_dtype=dtype,
            )

            def loss_of(x, y):
                with torch.autocast("cpu", dtype=precision.dtype, enabled=precision.autocast):
                    return model(x, y)[1]

            return model, loss_of, opts

        return make

    print(
        f"CPU class {cpu_class()}, {torch.get_num_threads()} threads, {precision.name}, B={B} T={T}, "
        f"{rounds} rounds of {steps} steps, interleaved"
    )
    steppers = {name: _train_stepper(maker(mod), data, B, cfg.seed, cfg.grad_clip) for name, mod in models.items()}
    times = _interleaved({name: lambda s=step: [s() for _ in range(steps)] for name, step in steppers.items()}, rounds)
    rates = {name: [B * T * steps / t for t in ts] for name, ts in times.items()}
    for name, r in rates.items():
        print(f"  {name:<20} {statistics.median(r):8,.0f} tokens/s  (spread {min(r):,.0f}..{max(r):,.0f})")
    first, last = (statistics.median(r) for r in rates.values())
    print(f"  ratio: {last / first:.2f}x")
    losses = {name: [] for name in models}
    for name, mod in models.items():
        step = _train_stepper(maker(mod), data, B, cfg.seed, cfg.grad_clip)
        losses[name] = [step().item() for _ in range(20)]
    (a, la), (b, lb) = losses.items()
    print(
        f"  20 steps from the same weights on the same batches: {a} {la[0]:.5f} -> {la[-1]:.5f}, "
        f"{b} {lb[0]:.5f} -> {lb[-1]:.5f} (difference {abs(la[-1] - lb[-1]):.1e})"
    )


if __name__ == "__main__":
    main()
