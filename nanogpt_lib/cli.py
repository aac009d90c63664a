"""The ``nanogpt`` command line: a thin argparse front end over the library.

Errors the user can fix (every ``errors.NanoGPTError``) are printed as one line (``error: ...``) with exit
status 2, never a traceback (``NANOGPT_DEBUG=1`` shows it). Module-level imports are the standard library
and tiny modules only: each command imports what it needs, so ``--help`` and argument errors answer at once
(torch, datasets and the trainer take seconds to import).

One command line: every command has a description and every option its help with its default; the
weights are ``--weights`` (sample, eval), a folder written is ``--out`` (export, sweep), a JSON file of
figures is ``--json`` (eval, bench); every long command takes ``--no-progress``; ``--threads`` sets torch's
threads where a default of all cores can be the wrong one (sample, eval).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

from . import DIST_NAME, __version__, paths
from .errors import NanoGPTError, one_line
from .files import USER_ERRNOS, os_error_line


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, except where there is none to show (a flag, or an
    option whose default is computed: its help then says what the default is, in words)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS)) or "default" in text:
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with :class:`HelpFormatter` for the command and every subcommand."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _top_k(text: str) -> int | None:
    """A positive k, or 0 / none: no top-k cut."""
    if text.strip().lower() in ("0", "none", "off"):
        return None
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{e} (or 0 / none: no top-k cut)") from None


def _no_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs and CI)")


def _threads(p: argparse.ArgumentParser, default_words: str) -> None:
    p.add_argument("--threads", type=_positive_int, metavar="N", help=f"torch threads (default: {default_words})")


def _set_threads(n: int | None) -> None:
    if n is not None:
        import torch

        torch.set_num_threads(n)


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="turn a text source into token files data/<name>/{train,val}.bin",
        description="Tokenize a text source with GPT-2's BPE (or, with --vocab N, a BPE trained on "
        "its train split) into data/<name>/: train.bin and val.bin (uint16 token ids), "
        "meta.json and the own tokenizer's ranks. Whole documents go to one split.",
    )
    p.add_argument(
        "source",
        nargs="?",
        default="shakespeare",
        help="shakespeare (shipped, offline), openwebtext (streamed from the hub), "
        "a hub dataset id owner/name, or a .txt/.jsonl/.parquet file or folder",
    )
    p.add_argument("--name", help="output folder data/NAME (default: from the source; with --vocab N, SOURCE-bpeN)")
    p.add_argument("--text-field", default="text", help="field holding the text")
    p.add_argument("--max-docs", type=_positive_int, help="take only the first N documents (default: all)")
    p.add_argument(
        "--revision", help="hub revision (default: the hub's; for openwebtext its parquet export, refs/convert/parquet)"
    )
    p.add_argument("--hub-config", help="hub dataset configuration name (default: the dataset's own)")
    p.add_argument("--split", dest="hub_split", default="train", help="hub split to read")
    p.add_argument("--val-every", type=_positive_int, default=10, help="one document in N is validation")
    p.add_argument(
        "--val-offset",
        dest="val_offset",
        type=int,
        default=0,
        help="picks which document of each group of N is validation (hashed with the group's "
        "number: another value gives another fixed split; not a random seed like train's)",
    )
    p.add_argument("--seed", dest="val_offset", type=int, help=argparse.SUPPRESS)  # the old spelling
    p.add_argument("--data-dir", type=Path, help="parent folder of data/NAME (default: the project's data/)")
    p.add_argument(
        "--vocab",
        type=int,
        metavar="N",
        help="train an own byte-level BPE of N tokens (257 to 65,535, <|endoftext|> included) on the "
        "train split with rustbpe (default: GPT-2's 50,257)",
    )
    p.add_argument("--force", action="store_true", help="rebuild even if the data is current")
    _no_progress(p)


def _run_prepare(args: argparse.Namespace) -> None:
    from .prepare import PrepareConfig, prepare

    cfg = PrepareConfig(
        source=args.source,
        name=args.name,
        text_field=args.text_field,
        max_docs=args.max_docs,
        revision=args.revision,
        hub_config=args.hub_config,
        hub_split=args.hub_split,
        val_every=args.val_every,
        seed=args.val_offset,
        data_dir=args.data_dir,
        force=args.force,
        progress=not args.no_progress,
        vocab=args.vocab,
    )
    prepare(cfg)


def _run_info(args: argparse.Namespace) -> None:
    import numpy
    import tiktoken
    import torch

    print(
        f"{DIST_NAME} {__version__}  python {platform.python_version()}  torch {torch.__version__}  "
        f"numpy {numpy.__version__}  tiktoken {tiktoken.__version__}"
    )
    from .data import DatasetError, load_meta, verify_dataset
    from .devices import describe_devices
    from .prepare import describe

    print(describe_devices())
    root = Path(args.data_dir or paths.data_dir())
    if root.exists() and not root.is_dir():
        raise DatasetError(f"--data-dir {paths.shown(root)} is a file, not a folder of prepared data sets")
    # every folder with a meta.json, readable or not: a damaged one is reported, never taken for "no data set"
    folders = sorted(d for d in root.glob("*") if (d / "meta.json").is_file())
    where = paths.shown(root)
    print(f"prepared datasets in {where}:" if folders else f"no prepared datasets in {where}: run `nanogpt prepare`")
    failed = []
    for folder in folders:
        try:
            meta = load_meta(folder)
        except DatasetError as e:
            print(f"  {folder.name:<16} DAMAGED: {e}")
            failed.append(folder.name)
            continue
        try:
            print("  " + describe(meta))
        except (KeyError, TypeError, ValueError):
            print(f"  {folder.name:<16} meta.json is incomplete")
        if args.verify:
            try:
                verify_dataset(folder)
                print(f"  {'':<16} verified: sizes, sha256 and token ids match meta.json")
            except DatasetError as e:
                print(f"  {'':<16} FAILED: {e}")
                failed.append(folder.name)
    if failed and args.verify:
        raise DatasetError(
            f"{len(failed)} data set(s) failed verification ({', '.join(failed)}): "
            "rebuild each with `nanogpt prepare SOURCE --name NAME --force`"
        )


BENCHMARKS = ("data", "prepare", "train", "phases", "sample")


def _run_bench(args: argparse.Namespace) -> None:
    from . import bench

    which = list(BENCHMARKS) if args.which == "all" else [args.which]
    bench.run(which, fast=args.fast, out=args.json, progress=not args.no_progress)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .runctl import EXIT_PAUSED  # train.EXIT_PAUSED, without train's imports (matplotlib) for every command

    p = sub.add_parser(
        "train",
        help="train a GPT (pause with Ctrl-C, resume by running it again)",
        description="Train from a TOML config plus --set overrides. Ctrl-C or SIGTERM finishes "
        "the step, saves a checkpoint and exits; running again resumes.",
        epilog=f"exit status: 0 finished; {EXIT_PAUSED} paused by a signal, checkpoint saved "
        "(EX_TEMPFAIL: run the same command again to resume); 2 a usage or data error.",
    )
    p.add_argument(
        "--config", type=Path, help="TOML file (default: the built-in defaults, which are configs/default.toml)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set lr=3e-4 --set model.n_layer=6 (repeatable; default: none)",
    )
    p.add_argument(
        "--name", help="run name, a plain folder name: runs/NAME (same as --set name=NAME; default: the config's)"
    )
    p.add_argument(
        "--mode",
        default="auto",
        choices=["auto", "new", "resume", "reset"],
        help="auto: resume if the run has a checkpoint, else new; reset: discard it and start over",
    )
    p.add_argument(
        "--device", help="auto, cpu, cuda, cuda:N or mps (same as --set device=...; default: the config's, auto)"
    )
    p.add_argument(
        "--minutes",
        type=float,
        metavar="N",
        help="train for N minutes, evaluations and checkpoints included: after a few steps the trainer "
        "measures its speed and fixes the step budget so the lr decay ends on time (same as --set "
        "minutes=N; replaces the config's max_steps; default: train max_steps steps)",
    )
    p.add_argument(
        "--export", type=Path, metavar="DIR", help="after training, export the best weights to DIR (default: no export)"
    )
    p.add_argument("--force", action="store_true", help="with --export trained_model/: replace the shipped model")
    _no_progress(p)


def _run_train(args: argparse.Namespace) -> None:
    from .config import ConfigError, load_config
    from .train import EXIT_PAUSED, train

    overrides = list(args.overrides)
    if args.name is not None:  # an empty --name is refused by the config, not taken for no name
        overrides.append(f"name={args.name}")
    if args.device:
        overrides.append(f"device={args.device}")
    if args.minutes is not None:
        overrides.append(f"minutes={args.minutes!r}")
    cfg = load_config(args.config, overrides)
    if cfg.minutes is not None and any(o.partition("=")[0].strip() == "max_steps" for o in overrides):
        raise ConfigError(
            "--minutes and --set max_steps both set the run's length: give one of them "
            "(a minutes run decides its own max_steps)"
        )
    if args.export:  # a bad destination is found now, not after the whole run
        _export_destination(args.export, args.force)
    result = train(cfg, mode=args.mode, progress=not args.no_progress)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one summary (rank 0's), not one per rank
        print(result.summary())
    if args.export and result.status == "finished":
        _export(result.run_dir, "best", args.export, args.force)
    if result.status == "paused":
        raise SystemExit(EXIT_PAUSED)  # a pre-empted job, not a finished one: schedulers requeue on it


# Threads for one sample: measured, not guessed. A 200-token sample of the shipped model on a 2-core AMD EPYC
# (AVX512-BF16), 1 and 2 threads interleaved in one process, 7 rounds: median 1.9 s on 1 thread, 6.2 s on 2
# with the machine busy (2 threads fight each other and the other jobs: 1.8-9.3 s); idle, the two were even
# (1.8-2.0 s). A batch of one is too small to split, so 1 is never slower and often far faster.
SAMPLE_THREADS = 1


def _weights(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights",
        type=Path,
        metavar="PATH",
        help="a run folder (its latest ckpt.pt), an export folder or a weights file "
        "(default: the shipped trained_model/)",
    )


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="val loss of trained weights beside uniform, unigram and untrained",
        description="Loss on the whole validation split of trained weights, and for scale: "
        "uniform guessing, a unigram model of the training split, the untrained model; "
        "in nats/token and in bits per character and per byte of the val text.",
    )
    _weights(p)
    p.add_argument(
        "--dataset",
        help="prepared dataset in data/ (default: the plays under the model's own tokenizer: "
        "shakespeare for GPT-2's, shakespeare-bpeN for our BPE of N tokens)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to this JSON file (default: none)")
    _threads(p, "torch's, one per core")
    _no_progress(p)


def _run_eval(args: argparse.Namespace) -> None:
    import json

    from .evaluate import REFERENCES, reference_losses
    from .files import atomic_write_text, check_writable_file
    from .sample import load_model

    _set_threads(args.threads)
    if args.json:  # a folder or a link there is found now, not after the whole evaluation
        check_writable_file(args.json, "--json")
    model = load_model(args.weights, device=args.device)
    losses = reference_losses(model, args.dataset, progress=not args.no_progress)
    print(
        f"val loss on data/{losses['dataset']} ({losses['val_tokens']:,} tokens, {losses['val_chars']:,} characters, "
        f"{losses['val_bytes']:,} bytes):"
    )
    print(f"  {'':<10} {'nats/token':>10} {'bits/char':>10} {'bits/byte':>10}")
    for key in REFERENCES:
        print(f"  {key:<10} {losses[key]:>10.4f} {losses['bpc'][key]:>10.4f} {losses['bpb'][key]:>10.4f}")
    if args.json:
        atomic_write_text(args.json, json.dumps(losses, indent=1))


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="the experiments: lr sweep, each variant, the best combination (resumable)",
        description="Run the measured experiments (see nanogpt_lib/experiments.py): grids of short "
        "runs, each in OUT/<run>; finished runs are never redone. Writes summary.json, "
        "results.md and plots to OUT.",
    )
    p.add_argument(
        "--scale",
        default="full",
        choices=["full", "tiny"],
        help="full: the experiments of experiments/README.md, 36 runs (30 of 1,500 steps, 2 of 750, "
        "4 short recipe runs; about 11 minutes on one H100 with --workers 8); "
        "tiny: seconds, checks the machinery",
    )
    p.add_argument("--out", type=Path, metavar="DIR", help="folder of the runs (default: runs/experiments-SCALE)")
    p.add_argument("--config", type=Path, help="TOML file under every run (default: the built-in defaults)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key in every run, e.g. --set device=cuda (repeatable; default: none)",
    )
    p.add_argument("--workers", type=_positive_int, default=1, help="runs at a time")
    _no_progress(p)


def _run_sweep(args: argparse.Namespace) -> None:
    from .config import load_config
    from .devices import pick_device
    from .experiments import run_experiments

    pick_device(load_config(args.config, list(args.overrides)).device)  # a bad config or device: before any run
    out = args.out or paths.runs_dir() / f"experiments-{args.scale}"
    exp = run_experiments(
        out,
        args.scale,
        config=args.config,
        workers=args.workers,
        extra=tuple(args.overrides),
        progress=not args.no_progress,
    )
    print((out / "results.md").read_text())
    print(f"{exp.decisions['seconds']:,.0f}s; results in {paths.shown(out)}")


def _csv(kind: type) -> Callable[[str], list]:
    """An argparse type for a comma-separated list (``--vocab gpt2,4096``, ``--minutes 5,10``)."""

    def parse(text: str) -> list:
        try:
            items = [kind(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {kind.__name__}, got {text!r}"
            ) from None
        if not items:
            raise argparse.ArgumentTypeError("expected at least one value")
        return items

    return parse


def _add_laptop(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "laptop",
        help="the per-minute experiment: recipe (tokenizer and shape) x minutes x seed (resumable, hours)",
        description="Train the grid of configs/laptop_grid.toml (see nanogpt_lib/laptop.py): each "
        "recipe (a tokenizer and the model shaped around it), `train --minutes N`, each seed; one result per "
        "run in OUT (finished runs are never redone, an unfinished one resumes), then "
        "OUT/results.md (bits/char per recipe x minutes x CPU class) and a plot.",
    )
    p.add_argument("--grid", type=Path, help="grid file (default: configs/laptop_grid.toml)")
    p.add_argument(
        "--recipes", type=_csv(str), metavar="LIST", help="only these recipes, e.g. gpt2,bpe2048-4x128 (default: all)"
    )
    p.add_argument(
        "--minutes", type=_csv(float), metavar="LIST", help="only these budgets, e.g. 5,10 (default: the grid's)"
    )
    p.add_argument("--seeds", type=_csv(int), metavar="LIST", help="only these seeds, e.g. 0 (default: the grid's)")
    p.add_argument("--out", type=Path, metavar="DIR", help="results folder (default: experiments/minutes)")
    p.add_argument("--plan", action="store_true", help="print the runs left and the time they take; train nothing")
    p.add_argument("--report", action="store_true", help="only rewrite the table and plot from the results in OUT")
    _no_progress(p)


def _run_laptop(args: argparse.Namespace) -> None:
    from . import laptop

    out = args.out or paths.project_root() / "experiments" / "minutes"
    if args.report:
        results = laptop.read_results(out)
        laptop.write_report(results, out)
        print(laptop.markdown(laptop.summarize(results)) if results else f"no results in {paths.shown(out)} yet")
        return
    grid_file = args.grid or paths.shipped(paths.project_root() / "configs" / "laptop_grid.toml", "the grid file")
    grid = laptop.select(laptop.load_grid(grid_file), args.recipes, args.minutes, args.seeds)
    if args.plan:
        print(laptop.plan_line(grid, out))
        print("\n".join(run.name for run in grid.runs() if not laptop.result_path(out, run).is_file()))
        return
    results = laptop.run_grid(grid, out, progress=not args.no_progress)
    if results:
        print(laptop.markdown(laptop.summarize(results)))
    print(f"results in {paths.shown(out)}")


def _export_destination(out: Path, force: bool) -> Path:
    from .export import check_destination

    return check_destination(out, force, protected=paths.trained_model_dir())


def _export(run_dir: Path, which: str, out: Path | None, force: bool = False) -> None:
    """Publish the run's best (or last) weights, with its metrics and loss plot, to ``out`` (default
    ``RUN/export/``) as one unit; the shipped ``trained_model/`` only with ``force``."""
    from .export import CONFIG_FILE, WEIGHTS_FILE, ExportError, copy_from, publish, read_export, run_artifacts
    from .rundir import RunDir

    run = RunDir(run_dir)
    if not run_dir.is_dir():
        raise ExportError(
            f"no run folder {paths.shown(run_dir)}: name one under runs/ (e.g. runs/default), "
            "trained by `nanogpt train`"
        )
    out = _export_destination(out or run.export, force)
    extras = run_artifacts(run_dir)  # the run's metrics, loss plot and notebook travel with its weights
    if which == "best":
        best = read_export(run.best) or _legacy_best(run.best)  # verified: sizes and sha256
        if best is None:
            raise ExportError(
                f"{paths.shown(run.best)} holds no best weights (no evaluation finished yet): "
                "use --which last for the latest checkpoint"
            )
        record, live = best
        record = {k: v for k, v in record.items() if k != "files"}
        publish(out, {**{n: copy_from(p) for n, p in live.items()}, **extras}, record)
        step = record.get("step")
    else:
        from .checkpoint import export_weights
        from .sample import load_model

        model = load_model(run_dir, device="cpu")
        step = model.meta.get("step")
        export_weights(
            model,
            model.config,
            out,
            {"step": step, "run": run_dir.name},
            also=extras,
            tokenizer=model.meta.get("tokenizer"),
        )
    published = read_export(out, check=())  # what the record lists: the tokenizer's ranks too, if its own
    names = [WEIGHTS_FILE, CONFIG_FILE, *(n for n in (published[1] if published else ()) if n != WEIGHTS_FILE)]
    print(
        f"exported the {which} weights of {paths.shown(run_dir)} (step {step}) to {paths.shown(out)}/: "
        f"{', '.join(names)}"
    )


def _legacy_best(folder: Path) -> tuple[dict, dict[str, Path]] | None:
    """A best/ written before exports recorded their files: its config.json and weights, as they are."""
    import json

    from .export import CONFIG_FILE, WEIGHTS_FILE, ExportError

    if not (folder / WEIGHTS_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
        return None
    try:
        record = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except ValueError:
        raise ExportError(f"{folder / CONFIG_FILE} is damaged (not JSON): use --which last") from None
    return record, {WEIGHTS_FILE: folder / WEIGHTS_FILE}


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="publish a run's weights as safetensors + config.json (to RUN/export/)",
        description="Publish a run's weights, config.json (with each file's sha256), metrics and "
        "loss plot as one unit, the folder that sample and eval read with --weights: "
        "a crash leaves the previous export or the new one.",
    )
    p.add_argument("run", type=Path, help="run folder, e.g. runs/default")
    p.add_argument(
        "--which",
        choices=["best", "last"],
        default="best",
        help="best: lowest val loss (default); last: the latest checkpoint",
    )
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="folder to write (default: RUN/export/)")
    p.add_argument(
        "--force", action="store_true", help="allow --out trained_model/, replacing the shipped model the notebooks use"
    )


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="generate text from trained weights, streamed to the terminal",
        description="Continue a prompt with trained weights (the shipped ones by default): "
        "temperature, top-k and top-p sampling with a KV cache, streamed as it comes.",
    )
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max-new-tokens", type=_positive_int, default=200, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (always the likeliest token)")
    p.add_argument(
        "--top-k",
        type=_top_k,
        default=200,
        metavar="K",
        help="sample among the K likeliest tokens; 0 or none: no top-k cut",
    )
    p.add_argument(
        "--top-p",
        type=float,
        default=None,
        metavar="P",
        help="nucleus sampling: the smallest set of tokens with probability mass P (default: off)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="the random seed: the same seed, weights and options give the same text (default: a new sample each time)",
    )
    p.add_argument(
        "--num-samples",
        type=_positive_int,
        default=1,
        help="N samples generated together in one batch (about the cost of one on a CPU), printed "
        "one after another; 1 streams the text as it comes",
    )
    _weights(p)
    p.add_argument("--ckpt", dest="weights", type=Path, help=argparse.SUPPRESS)  # the old spelling of --weights
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    _threads(p, f"{SAMPLE_THREADS} for one sample, measured fastest on a CPU; torch's, one per core, for a batch")


def _run_sample(args: argparse.Namespace) -> None:
    from .sample import generate_texts, load_model, stream_text

    _set_threads(args.threads or (SAMPLE_THREADS if args.num_samples == 1 else None))
    model = load_model(args.weights, device=args.device)
    if args.num_samples > 1:
        texts = generate_texts(
            model,
            args.prompt,
            args.num_samples,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
        )
        for i, text in enumerate(texts, 1):
            print(("\n" if i > 1 else "") + f"---------- sample {i} of {len(texts)} ----------")
            print(args.prompt + text, flush=True)
        return
    print(args.prompt, end="", flush=True)
    for piece in stream_text(
        model,
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    ):
        print(piece, end="", flush=True)
    print()


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="nanogpt",
        description="Build, train and sample a small GPT (the nanogpt workbook's "
        "library, nanogpt_lib). `nanogpt COMMAND --help` for a command's options.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"{DIST_NAME} {__version__}",
        help="print the package's name and version and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    _add_prepare(sub)
    info = sub.add_parser(
        "info",
        help="prepared datasets, versions and devices",
        description="The prepared datasets (tokens, documents, sizes), the library's and torch's "
        "versions and the devices. `nanogpt doctor` checks the whole set-up.",
    )
    info.add_argument("--data-dir", type=Path, help="where prepared datasets live (default: the project's data/)")
    info.add_argument(
        "--verify",
        action="store_true",
        help="read every prepared file: sizes, sha256 and token ids must match meta.json",
    )
    doctor = sub.add_parser(
        "doctor",
        help="check the set-up before class: versions, CPU, data, weights, Jupyter",
        description="Check what a learner or teacher needs: Python and torch, the device and "
        "CPU class, whether bf16 is fast here, threads, the prepared data, the "
        "shipped weights (verified), JupyterLab, ipywidgets and jupyterlab-rise. "
        "Exit status 1 when something needs fixing.",
    )
    doctor.add_argument(
        "--no-jupyter",
        action="store_true",
        help="skip the JupyterLab extension check (it runs `jupyter labextension list`, a few seconds)",
    )
    _add_train(sub)
    _add_sample(sub)
    _add_export(sub)
    _add_sweep(sub)
    _add_laptop(sub)
    _add_eval(sub)
    b = sub.add_parser(
        "bench",
        help="side-by-side benchmarks that print ratios",
        description="Measure ours against a baseline in one run; print medians, spread and ratios.",
    )
    b.add_argument("which", nargs="?", default="all", choices=[*BENCHMARKS, "all"], help="which benchmark")
    b.add_argument("--fast", action="store_true", help="a few seconds: check it runs, figures are rough")
    b.add_argument(
        "--json",
        type=Path,
        default=paths.runs_dir() / "bench.json",
        metavar="FILE",
        help="JSON file of the figures (default: runs/bench.json)",
    )
    b.add_argument("--out", dest="json", type=Path, help=argparse.SUPPRESS)  # the old spelling of --json
    _no_progress(b)
    return parser


def _run_doctor(args: argparse.Namespace) -> None:
    from .doctor import report

    if not report(extensions=not args.no_jupyter):
        raise SystemExit(1)


COMMANDS = {
    "prepare": _run_prepare,
    "info": _run_info,
    "doctor": _run_doctor,
    "bench": _run_bench,
    "train": _run_train,
    "sample": _run_sample,
    "sweep": _run_sweep,
    "eval": _run_eval,
    "laptop": _run_laptop,
    "export": lambda a: _export(a.run, a.which, a.out, a.force),
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = os.environ.get("NANOGPT_DEBUG", "") not in ("", "0")
    if not debug:  # libraries' log lines (datasets' "Failed to read schema ...") never come before our one line
        logging.disable(logging.CRITICAL)
    try:
        return _run(args, debug)
    finally:
        logging.disable(logging.NOTSET)


def _run(args: argparse.Namespace, debug: bool) -> int:
    try:
        COMMANDS[args.command](args)
    except BrokenPipeError:  # e.g. `nanogpt sample | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted; nothing was half-written", file=sys.stderr)
        return 130
    except Exception as e:
        if debug or not _is_user_error(e, args.command):
            raise
        plain_os_error = isinstance(e, OSError) and not isinstance(e, NanoGPTError)  # ours say it all in str()
        print(f"error: {os_error_line(e) if plain_os_error else one_line(e)}", file=sys.stderr)
        return 2
    return 0


def _is_user_error(e: Exception, command: str) -> bool:
    if isinstance(e, NanoGPTError):  # whichever module raised it: one base, so catching imports nothing
        return True
    if isinstance(e, OSError):  # a full disk, a refused or read-only folder, from any command
        return e.errno in USER_ERRNOS
    # bad sampling arguments and the like, raised by the library with a clear line
    return isinstance(e, ValueError) and command in ("sample", "train")


if __name__ == "__main__":
    sys.exit(main())
