"""Many fixed-step variants of a recipe, side by side on one machine, each judged on the whole val split.

A learning rate or a model shape can be compared at the number of steps a laptop fits in ten minutes without
training on the laptop: steps, unlike minutes, do not care which machine runs them. So this tool trains a list
of runs (``--runs``: a JSON list of ``{"name", "steps", "set": [overrides]}``) on top of ``--config`` (its
``minutes`` removed: the steps are the run's own), in ``--workers`` processes of one thread each, and appends
one JSON line per finished run to ``--out``: whole-val nats/token and bits per character, the run's last
train/val evaluation, its steps and seconds. On a CUDA machine many tiny models share the GPU this way (each
is bound by its kernel launches, not the GPU's arithmetic); on a CPU use ``--workers`` = cores.

The step counts are the laptop's: measure each shape's CPU step time there and scale the recipe's ten-minute
steps by it (experiments/README.md, "Many variants at once" says what was run and how).

    python tools/fixed_step_sweep.py --runs runs.json --out results.jsonl --workers 12 --device cuda
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any


def train_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one run to its steps and measure it on the whole val split; never raises (a failed run is a line)."""
    import torch

    from nanogpt_lib.config import load_config
    from nanogpt_lib.data import text_stats
    from nanogpt_lib.evaluate import val_loss
    from nanogpt_lib.train import Trainer

    torch.set_num_threads(1)
    run = job["run"]
    started = time.perf_counter()
    try:
        steps = int(run["steps"])
        overrides = [
            f"name={run['name']}",
            f"max_steps={steps}",
            f"eval_every={max(steps // 2, 1)}",  # two evaluations: the curve is not what is compared
            f"ckpt_every={steps}",
            f"device={job['device']}",
            "threads=1",
            *run.get("set", []),
        ]
        cfg = load_config(job["config"], overrides)
        cfg.minutes = None  # the steps are the run's own
        trainer = Trainer(cfg, mode="new", runs_dir=job["runs_dir"], progress=False, artifacts=False)
        try:
            outcome = trainer.run()
            nats = val_loss(trainer.model, trainer.data)
            text = text_stats(trainer.data.folder, "val")
            return {
                "name": run["name"],
                "set": run.get("set", []),
                "steps": outcome.step,
                "val_loss": nats,
                "val_bpc": text.bits_per_char(nats),
                "last_eval": outcome.last_eval,
                "params": trainer.model.num_params(),
                "seconds": round(time.perf_counter() - started, 1),
                "device": str(trainer.device),
                "precision": trainer.precision.name,
            }
        finally:
            trainer.close()
    except Exception as e:  # noqa: BLE001 - one bad run must not lose the others
        return {
            "name": run["name"],
            "set": run.get("set", []),
            "error": f"{type(e).__name__}: {e}",
            "trace": traceback.format_exc()[-2000:],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, help='JSON list of {"name", "steps", "set": [overrides]}')
    parser.add_argument("--out", required=True, help="results, one JSON line per run (appended)")
    parser.add_argument("--config", default="configs/ten_minutes.toml")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    runs = json.loads(Path(args.runs).read_text())
    out = Path(args.out)
    done = set()
    if out.is_file():  # a rerun skips what is recorded
        done = {json.loads(line)["name"] for line in out.read_text().splitlines() if line.strip()}
    runs_dir = tempfile.mkdtemp(prefix="fixed-step-")
    jobs = [
        {"run": r, "config": args.config, "device": args.device, "runs_dir": runs_dir}
        for r in runs
        if r["name"] not in done
    ]
    print(f"{len(jobs)} runs ({len(done)} recorded already), {args.workers} workers", flush=True)
    try:
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            for result in pool.imap_unordered(train_one, jobs):
                with out.open("a") as f:  # one line per run, written as it ends: a killed sweep keeps its results
                    f.write(json.dumps(result) + "\n")
                if "error" in result:
                    print(f"{result['name']}: FAILED {result['error']}", flush=True)
                else:
                    print(
                        f"{result['name']}: {result['val_bpc']:.4f} bits/char, {result['steps']} steps, "
                        f"{result['seconds']} s",
                        flush=True,
                    )
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
