"""The ``nanogpt`` command line: a thin argparse front end over the library.

Errors the user can fix are printed as one line (``error: ...``) with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

from . import __version__, paths
from .data import DatasetError
from .prepare import PrepareConfig, PrepareError, describe, prepare, read_meta

USER_ERRORS: tuple[type[Exception], ...] = (PrepareError, DatasetError)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="turn a text source into token files data/<name>/{train,val}.bin",
                       description="Tokenize a text source with GPT-2's BPE into data/<name>/.")
    p.add_argument("source", nargs="?", default="shakespeare",
                   help="shakespeare (default, shipped, offline), openwebtext (streamed from the hub), "
                        "a hub dataset id owner/name, or a .txt/.jsonl/.parquet file or folder")
    p.add_argument("--name", help="output folder data/NAME (default: from the source)")
    p.add_argument("--text-field", default="text", help="field holding the text (default: text)")
    p.add_argument("--max-docs", type=_positive_int, help="take only the first N documents")
    p.add_argument("--revision", help="hub revision (openwebtext defaults to the hub's parquet export, refs/convert/parquet)")
    p.add_argument("--hub-config", help="hub dataset configuration name")
    p.add_argument("--split", dest="hub_split", default="train", help="hub split to read (default: train)")
    p.add_argument("--val-every", type=_positive_int, default=10, help="one document in N is validation (10)")
    p.add_argument("--seed", type=int, default=0, help="which document of each N is validation (0)")
    p.add_argument("--data-dir", type=Path, help="parent folder of data/NAME (default: the project's data/)")
    p.add_argument("--force", action="store_true", help="rebuild even if the data is current")


def _run_prepare(args: argparse.Namespace) -> None:
    cfg = PrepareConfig(
        source=args.source, name=args.name, text_field=args.text_field, max_docs=args.max_docs,
        revision=args.revision, hub_config=args.hub_config, hub_split=args.hub_split,
        val_every=args.val_every, seed=args.seed, data_dir=args.data_dir, force=args.force,
    )
    prepare(cfg)


def _run_info(args: argparse.Namespace) -> None:
    import numpy
    import tiktoken
    import torch

    print(f"nanogpt_lib {__version__}  python {platform.python_version()}  torch {torch.__version__}  "
          f"numpy {numpy.__version__}  tiktoken {tiktoken.__version__}")
    from .devices import describe_devices

    print(describe_devices())
    root = args.data_dir or paths.data_dir()
    metas = [m for d in sorted(Path(root).glob("*")) if (m := read_meta(d))]
    print(f"prepared datasets in {root}:" if metas else f"no prepared datasets in {root}: run `nanogpt prepare`")
    for meta in metas:
        print("  " + describe(meta))


BENCHMARKS = ("data", "prepare")


def _run_bench(args: argparse.Namespace) -> None:
    from . import bench

    which = list(BENCHMARKS) if args.which == "all" else [args.which]
    bench.run(which, fast=args.fast, out=args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nanogpt", description="Build, train and sample a small GPT.")
    parser.add_argument("--version", action="version", version=f"nanogpt_lib {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_prepare(sub)
    info = sub.add_parser("info", help="prepared datasets, versions and devices")
    info.add_argument("--data-dir", type=Path, help="where prepared datasets live (default: data/)")
    b = sub.add_parser("bench", help="side-by-side benchmarks that print ratios",
                       description="Measure ours against a baseline in one run; print medians, spread and ratios.")
    b.add_argument("which", nargs="?", default="all", choices=[*BENCHMARKS, "all"])
    b.add_argument("--fast", action="store_true", help="a few seconds: check it runs, figures are rough")
    b.add_argument("--out", type=Path, default=paths.runs_dir() / "bench.json", help="JSON file of the figures")
    return parser


COMMANDS = {"prepare": _run_prepare, "info": _run_info, "bench": _run_bench}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was half-written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
