"""Text sources -> token files: ``data/<name>/{train,val}.bin`` (uint16 GPT-2 ids) and ``meta.json``.

Every source goes through ``datasets.load_dataset(..., streaming=True)``: the shipped Shakespeare corpus,
local ``.txt``/``.jsonl``/``.parquet`` files, and Hugging Face hub datasets (OpenWebText from the hub's
parquet export). Streaming means nothing is downloaded in full and no dataset cache is left behind.

Documents are tokenized in batches on all cores, each followed by ``<|endoftext|>``, and routed whole to
train or val by a deterministic rule, so memory is bounded by ``chunk_chars``, not by the corpus. Output
is written to temporary files and renamed into place only when complete: an interrupted or failed run
leaves the previous dataset as it was.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from . import paths
from .tokenizer import EOT_ID, N_VOCAB, get_tokenizer
from .tokenizer import NAME as TOKENIZER_NAME

OPENWEBTEXT_ID = "Skylion007/openwebtext"
# datasets >= 4 refuses script-based hub datasets; the hub's automatic parquet export still loads.
PARQUET_EXPORT_REVISION = "refs/convert/parquet"
LOCAL_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
META_VERSION = 1
SPLITS = ("train", "val")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class PrepareError(Exception):
    """Bad input to ``prepare``: the message names the problem and the fix (the CLI prints it alone)."""


@dataclass
class PrepareConfig:
    """What to prepare. ``source`` is ``shakespeare``, ``openwebtext``, a hub id ``owner/name`` or a path."""

    source: str | os.PathLike = "shakespeare"
    name: str | None = None  # output folder data/<name>; derived from the source when None
    text_field: str = "text"  # column holding the text (.jsonl, .parquet and hub datasets)
    max_docs: int | None = None  # take only the first N documents (a subset of a big hub dataset)
    revision: str | None = None  # hub revision; OpenWebText defaults to the parquet export
    hub_config: str | None = None  # hub dataset configuration name, if it has several
    hub_split: str = "train"
    val_every: int = 10  # one document in every `val_every` goes to validation
    seed: int = 0  # picks which document of each group of `val_every` is validation
    data_dir: Path | None = None  # parent of data/<name>; defaults to the project's data/
    force: bool = False
    chunk_chars: int = 4_000_000  # documents are tokenized in batches of about this many characters
    num_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    progress: bool = True  # a tqdm bar (docs/s, tokens/s)


@dataclass
class Source:
    """A resolved source: how to load it with ``datasets`` and what identifies its content."""

    kind: str  # "shakespeare" | "local" | "hub"
    name: str
    builder: str  # first argument to datasets.load_dataset
    load_kwargs: dict[str, Any]
    fingerprint: dict[str, Any]  # goes into meta.json; a change means the data is stale


def _local_files(path: Path) -> list[Path]:
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in LOCAL_BUILDERS)
        if not files:
            raise PrepareError(
                f"{path} holds no .txt, .jsonl or .parquet files: put the corpus there or name a file"
            )
    kinds = {LOCAL_BUILDERS.get(p.suffix.lower()) for p in files}
    if None in kinds:
        raise PrepareError(f"{path}: unsupported file type; use .txt, .jsonl or .parquet")
    if len(kinds) > 1:
        raise PrepareError(f"{path} mixes file types ({', '.join(sorted(kinds))}); keep one type per dataset")
    for p in files:
        if not os.access(p, os.R_OK):
            raise PrepareError(f"cannot read {p}: check its permissions")
    return files


def _local_source(path: Path, kind: str, name: str, cfg: PrepareConfig) -> Source:
    files = _local_files(path)
    builder = LOCAL_BUILDERS[files[0].suffix.lower()]
    kwargs: dict[str, Any] = {"data_files": [str(p) for p in files], "split": "train"}
    if builder == "text":
        kwargs.update(sample_by="document", keep_linebreaks=True)  # one .txt file = one document
    listing = "\n".join(f"{p.relative_to(path) if path.is_dir() else p.name}\t{p.stat().st_size}" for p in files)
    fingerprint = {"path": str(path), "files": len(files), "names_and_sizes_sha256": _sha256(listing)}
    return Source(kind, name, builder, kwargs, fingerprint)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def resolve_source(cfg: PrepareConfig) -> Source:
    """Turn ``cfg.source`` into a loadable :class:`Source`, or a one-line :class:`PrepareError`."""
    src = str(cfg.source).strip()
    if src == "shakespeare":
        folder = paths.shakespeare_dir()
        if not folder.is_dir():
            raise PrepareError(f"shipped corpus not found at {folder}: run from a full clone of the project")
        return _local_source(folder, "shakespeare", cfg.name or "shakespeare", cfg)
    if src in ("openwebtext", OPENWEBTEXT_ID):
        return _hub_source(OPENWEBTEXT_ID, cfg.name or "openwebtext", cfg, PARQUET_EXPORT_REVISION)
    path = Path(src).expanduser()
    if path.exists():
        return _local_source(path, "local", cfg.name or path.stem.lower(), cfg)
    looks_like_path = src.startswith((".", "/", "~")) or Path(src).suffix.lower() in LOCAL_BUILDERS
    if looks_like_path:
        raise PrepareError(f"path not found: {src}")
    if _HUB_ID.match(src):
        return _hub_source(src, cfg.name or src.split("/")[-1].lower(), cfg, None)
    raise PrepareError(
        f"unknown source {src!r}: use shakespeare, openwebtext, a hub dataset id like owner/name, "
        "or a path to .txt, .jsonl or .parquet files"
    )


def _hub_source(dataset_id: str, name: str, cfg: PrepareConfig, default_revision: str | None) -> Source:
    revision = cfg.revision or default_revision
    kwargs: dict[str, Any] = {"split": cfg.hub_split, "revision": revision}
    if cfg.hub_config:
        kwargs["name"] = cfg.hub_config
    return Source("hub", name, dataset_id, kwargs, {"id": dataset_id, **kwargs})


def _stream(source: Source) -> Iterable[dict[str, Any]]:
    import datasets

    try:
        return datasets.load_dataset(source.builder, streaming=True, **source.load_kwargs)
    except ConnectionError as e:
        raise PrepareError(
            f"cannot reach the Hugging Face hub for {source.builder!r} ({e}): hub datasets need the network; "
            "local .txt/.jsonl/.parquet files work offline"
        ) from None
    except FileNotFoundError as e:
        raise PrepareError(f"dataset {source.builder!r} not found: {e}") from None


def _find_bad_file(source: Source) -> str | None:
    """After a read error, name the local text or JSON Lines file that is not valid UTF-8 (or unreadable)."""
    if source.builder not in ("text", "json"):
        return None
    for f in source.load_kwargs.get("data_files", []):
        try:
            with open(f, encoding="utf-8") as fh:
                while fh.read(1 << 20):
                    pass
        except (UnicodeDecodeError, OSError) as e:
            return f"{f} ({type(e).__name__}: {e})"
    return None


def iter_documents(source: Source, text_field: str = "text", max_docs: int | None = None) -> Iterator[str]:
    """Yield the documents' texts in a fixed order, checking the text field on the first record."""
    field_name = "text" if source.builder == "text" else text_field
    rows = iter(_stream(source))
    if max_docs is not None:
        rows = itertools.islice(rows, max_docs)
    first = True
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except ConnectionError as e:
            raise PrepareError(f"lost the connection to the hub while reading ({e}); rerun to start again") from None
        except PrepareError:
            raise
        except Exception as e:  # datasets wraps decoding errors in several ways; name the culprit
            if source.kind == "hub":
                raise PrepareError(f"could not read {source.builder!r}: {type(e).__name__}: {e}") from None
            bad = _find_bad_file(source)
            raise PrepareError(
                f"unreadable or non-UTF-8 file: {bad}" if bad else f"could not read the corpus: {type(e).__name__}: {e}"
            ) from None
        if first:
            if field_name not in row:
                raise PrepareError(
                    f"no text field {field_name!r}; the records have: {', '.join(sorted(row))} "
                    "(choose one with --text-field)"
                )
            first = False
        text = row[field_name]
        if not isinstance(text, str):
            raise PrepareError(f"text field {field_name!r} holds {type(text).__name__}, not text")
        yield text


def is_val(doc_index: int, seed: int, val_every: int) -> bool:
    """Document ``i`` is validation when it is the seeded pick of its group of ``val_every`` documents."""
    group = doc_index // val_every
    digest = hashlib.blake2b(f"{seed}:{group}".encode(), digest_size=8).digest()
    return doc_index % val_every == int.from_bytes(digest, "little") % val_every


def _request(cfg: PrepareConfig, source: Source) -> dict[str, Any]:
    return {
        "source": source.fingerprint,
        "text_field": cfg.text_field,
        "max_docs": cfg.max_docs,
        "val_every": cfg.val_every,
        "seed": cfg.seed,
        "tokenizer": TOKENIZER_NAME,
    }


def read_meta(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def _is_current(out: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    meta = read_meta(out)
    if not meta or meta.get("version") != META_VERSION or meta.get("request") != request:
        return None
    for split in SPLITS:
        f = out / f"{split}.bin"
        if not f.is_file() or f.stat().st_size != meta["splits"][split]["bytes"]:
            return None
    return meta


class _SplitWriter:
    """Appends uint16 tokens to a temporary file, counting and hashing as it goes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh = open(path, "wb")
        self.sha = hashlib.sha256()
        self.tokens = 0
        self.docs = 0

    def write(self, docs: list[list[int]]) -> None:
        if not docs:
            return
        arr = np.fromiter(
            itertools.chain.from_iterable(d + [EOT_ID] for d in docs),
            dtype=np.uint16,
            count=sum(len(d) + 1 for d in docs),
        )
        buf = arr.tobytes()
        self.fh.write(buf)
        self.sha.update(buf)
        self.tokens += arr.size
        self.docs += len(docs)

    def close(self) -> dict[str, Any]:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        return {"tokens": self.tokens, "docs": self.docs, "bytes": self.tokens * 2, "sha256": self.sha.hexdigest()}


def _tokenize_into(docs: Iterable[str], writers: dict[str, _SplitWriter], cfg: PrepareConfig,
                   total: int | None) -> None:
    enc = get_tokenizer()
    bar = tqdm(total=total, unit="doc", desc="tokenizing", dynamic_ncols=True, mininterval=0.5,
               disable=not cfg.progress)
    start, n_tokens, index = time.perf_counter(), 0, 0
    batch: list[str] = []
    chars = 0

    def flush() -> None:
        nonlocal n_tokens, index, batch, chars
        ids = enc.encode_ordinary_batch(batch, num_threads=cfg.num_threads)
        routed: dict[str, list[list[int]]] = {"train": [], "val": []}
        for doc in ids:
            routed["val" if is_val(index, cfg.seed, cfg.val_every) else "train"].append(doc)
            index += 1
        for split, chunk in routed.items():
            writers[split].write(chunk)
        n_tokens += sum(len(d) + 1 for d in ids)
        bar.update(len(batch))
        bar.set_postfix(tok_per_s=f"{n_tokens / max(time.perf_counter() - start, 1e-9):,.0f}", refresh=False)
        batch, chars = [], 0

    try:
        for text in docs:
            batch.append(text)
            chars += len(text)
            if chars >= cfg.chunk_chars or len(batch) >= 4096:
                flush()
        if batch:
            flush()
    finally:
        bar.close()


def prepare(cfg: PrepareConfig | None = None, **overrides: Any) -> dict[str, Any]:
    """Build ``data/<name>/`` from ``cfg.source`` unless it is already current; return its meta.json dict."""
    cfg = cfg or PrepareConfig()
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise PrepareError(f"unknown option {key!r}")
        setattr(cfg, key, value)
    if cfg.max_docs is not None and cfg.max_docs <= 0:
        raise PrepareError(f"--max-docs must be a positive number of documents, got {cfg.max_docs}")
    if cfg.val_every < 2:
        raise PrepareError(f"--val-every must be at least 2 (one document in N is validation), got {cfg.val_every}")
    source = resolve_source(cfg)
    out = Path(cfg.data_dir or paths.data_dir()) / source.name
    if source.kind != "hub" and out.resolve() == Path(source.fingerprint["path"]).resolve():
        raise PrepareError(f"the output folder {out} is the source folder itself: choose another --name")
    request = _request(cfg, source)
    if not cfg.force and (meta := _is_current(out, request)):
        print(f"{paths.shown(out)} is current ({meta['splits']['train']['tokens']:,} train tokens); --force rebuilds it")
        return meta

    created_dir = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    tag = f".tmp-{os.getpid()}"
    tmp = {split: out / f"{split}.bin{tag}" for split in SPLITS}
    tmp_meta = out / f"meta.json{tag}"
    started = time.perf_counter()
    try:
        writers = {split: _SplitWriter(tmp[split]) for split in SPLITS}
        try:
            files = source.load_kwargs.get("data_files", [])
            total = len(files) if source.builder == "text" else cfg.max_docs  # one .txt file is one doc
            if cfg.max_docs and total:
                total = min(total, cfg.max_docs)
            _tokenize_into(iter_documents(source, cfg.text_field, cfg.max_docs), writers, cfg, total)
        finally:
            stats = {split: w.close() for split, w in writers.items()}
        docs = stats["train"]["docs"] + stats["val"]["docs"]
        text_tokens = stats["train"]["tokens"] + stats["val"]["tokens"] - docs  # less one <|endoftext|> a doc
        if text_tokens == 0:
            raise PrepareError(f"empty corpus: {cfg.source} has no text")
        if stats["val"]["docs"] == 0 or stats["train"]["docs"] == 0:
            raise PrepareError(
                f"{cfg.source} has {docs} document(s), too few to split into train and val with "
                f"--val-every {cfg.val_every}: add documents (one .txt file is one document) or lower --val-every"
            )
        meta = {
            "version": META_VERSION,
            "name": source.name,
            "source": cfg.source,
            "source_kind": source.kind,
            "request": request,
            "tokenizer": TOKENIZER_NAME,
            "vocab_size": N_VOCAB,
            "eot_id": EOT_ID,
            "dtype": "uint16",
            "split_rule": (
                f"document i is validation when i % {cfg.val_every} equals "
                f"blake2b('{{seed}}:{{i // {cfg.val_every}}}') % {cfg.val_every}, seed {cfg.seed}"
            ),
            "splits": stats,
            "seconds": round(time.perf_counter() - started, 3),
        }
        with open(tmp_meta, "w") as fh:
            json.dump(meta, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        for split in SPLITS:  # meta.json last: it vouches for the .bin files beside it
            os.replace(tmp[split], out / f"{split}.bin")
        os.replace(tmp_meta, out / "meta.json")
    finally:
        for f in [*tmp.values(), tmp_meta]:
            f.unlink(missing_ok=True)
        if created_dir and not any(out.iterdir()):
            out.rmdir()
    t, v = stats["train"], stats["val"]
    print(
        f"wrote {paths.shown(out)}: train {t['tokens']:,} tokens ({t['docs']:,} docs), val {v['tokens']:,} tokens "
        f"({v['docs']:,} docs) in {meta['seconds']:.1f}s"
    )
    return meta


def describe(meta: dict[str, Any]) -> str:
    """One line about a prepared dataset, for ``nanogpt info``."""
    t, v = meta["splits"]["train"], meta["splits"]["val"]
    return (
        f"{meta['name']:<16} source={meta['source']:<20} train {t['tokens']:>12,} tok {t['docs']:>8,} docs | "
        f"val {v['tokens']:>11,} tok {v['docs']:>7,} docs | {(t['bytes'] + v['bytes']) / 2**20:,.1f} MiB"
    )

