"""Text sources -> token files: ``data/<name>/{train,val}.bin`` (uint16 token ids) and ``meta.json``.

Every source goes through ``datasets.load_dataset(..., streaming=True)``: the shipped Shakespeare corpus,
local ``.txt``/``.jsonl``/``.parquet`` files, and Hugging Face hub datasets (OpenWebText from the hub's
parquet export). Streaming means nothing is downloaded in full and no dataset cache is left behind.

Documents are tokenized in batches on all cores, each followed by ``<|endoftext|>``, and routed whole to
train or val by a deterministic rule, so memory is bounded by ``chunk_chars``, not by the corpus.

The ids are GPT-2's, or with ``vocab`` (``--vocab N``) those of a byte-level BPE trained by ``rustbpe`` on
the train split alone (val text never shapes the tokenizer), kept beside the ids as ``tokenizer-SHA.tiktoken``
and named with its sha256 in meta.json: the tokenizer is part of the data set. meta.json also records each
split's characters and UTF-8 bytes of document text, so losses convert to bits per character.

A data set is published as one unit (see :func:`_publish`): ``meta.json`` is the commit record and names
the split files it vouches for, so a run killed at any point leaves either the previous data set or the
new one complete, never a mix, with the usual names ``train.bin``, ``val.bin`` and ``meta.json`` at rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tiktoken
from tqdm.auto import tqdm

from . import paths
from .data import SPLIT_IDS, DatasetError, check_files, load_meta, own_bpe_name, split_file
from .errors import NanoGPTError, one_line
from .files import (
    USER_ERRNOS,
    atomic_link,
    atomic_write_text,
    clean_stale_tmp,
    fsync_dir,
    os_error_line,
    refuse_symlink,
)
from .files import tmp_path as _tmp_name
from .tokenizer import (
    GPT2_PAT_STR,
    MAX_VOCAB,
    MIN_VOCAB,
    RANKS_FILE,
    TokenizerFilesError,
    entry_for,
    for_data,
    get_tokenizer,
    ranks_text,
    train_ranks,
)
from .tokenizer import NAME as TOKENIZER_NAME

OPENWEBTEXT_ID = "Skylion007/openwebtext"
# datasets >= 4 refuses script-based hub datasets; the hub's automatic parquet export still loads.
PARQUET_EXPORT_REVISION = "refs/convert/parquet"
LOCAL_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
META_VERSION = 1
SPLITS = tuple(SPLIT_IDS)
_GEN = re.compile(r"^\.(train|val)\.bin\.gen-[0-9a-f]+$")  # split files named by meta.json mid-publication
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class PrepareError(NanoGPTError):
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
    vocab: int | None = None  # train an own byte-level BPE of this many tokens (with <|endoftext|>); None: GPT-2's


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
            raise PrepareError(f"{path} holds no .txt, .jsonl or .parquet files: put the corpus there or name a file")
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

    def name(base: str) -> str:  # the default never lets an own BPE overwrite the GPT-2 data set of the same text
        return cfg.name or (own_bpe_name(base, cfg.vocab) if cfg.vocab else base)

    if src == "shakespeare":
        folder = paths.shipped(paths.shakespeare_dir(), "the shipped corpus")
        return _local_source(folder, "shakespeare", name("shakespeare"), cfg)
    if src in ("openwebtext", OPENWEBTEXT_ID):
        return _hub_source(OPENWEBTEXT_ID, name("openwebtext"), cfg, PARQUET_EXPORT_REVISION)
    path = Path(src).expanduser()
    if path.exists():
        return _local_source(path, "local", name(path.stem.lower()), cfg)
    looks_like_path = src.startswith((".", "/", "~")) or Path(src).suffix.lower() in LOCAL_BUILDERS
    if looks_like_path:
        raise PrepareError(f"path not found: {src}")
    if _HUB_ID.match(src):
        return _hub_source(src, name(src.split("/")[-1].lower()), cfg, None)
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
    except Exception as e:  # a local file that is not what its name says (a fake .parquet): name it
        if source.kind == "hub":
            raise
        files = source.load_kwargs.get("data_files", [])
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        detail = f"{type(e).__name__}: {one_line(e, first=True)}" if str(e).strip() else type(e).__name__
        raise PrepareError(f"could not read {shown} as {source.builder}: {detail}") from None


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
        except Exception as e:  # noqa: BLE001 - datasets wraps decoding errors in several ways; name the culprit
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
        "tokenizer": TOKENIZER_NAME if cfg.vocab is None else {"bpe_vocab": cfg.vocab, "pattern": GPT2_PAT_STR},
    }


def _is_current(out: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    """The meta of ``out`` if it was built from ``request`` and its files match it, else None."""
    try:
        meta = load_meta(out)
        check_files(out, meta)
    except DatasetError:
        return None
    if meta.get("version") != META_VERSION or meta.get("request") != request:
        return None
    try:
        for_data(meta, out)  # a missing or altered tokenizer file: rebuild, as for a damaged split
    except TokenizerFilesError:
        return None
    return meta


class _SplitWriter:
    """Appends uint16 tokens to a temporary file, counting, hashing and tracking the largest id, and counts
    the characters and UTF-8 bytes of the documents' text (not the separators) for bits per character."""

    def __init__(self, path: Path, eot_id: int) -> None:
        self.path, self.eot_id = path, eot_id
        self.chars = self.text_bytes = 0
        self.fh = open(path, "wb")  # noqa: SIM115 - held across write() calls, closed (after fsync) by close()
        self.sha = hashlib.sha256()
        self.tokens = 0
        self.docs = 0
        self.max_id = -1

    def count_text(self, texts: list[str]) -> None:
        """Add the documents' characters and UTF-8 bytes (what bits per character divide by)."""
        self.chars += sum(len(t) for t in texts)
        self.text_bytes += sum(len(t.encode("utf-8")) for t in texts)

    def write(self, docs: list[list[int]]) -> None:
        if not docs:
            return
        arr = np.fromiter(
            itertools.chain.from_iterable([*d, self.eot_id] for d in docs),
            dtype=np.uint16,
            count=sum(len(d) + 1 for d in docs),
        )
        buf = arr.tobytes()
        self.fh.write(buf)
        self.sha.update(buf)
        self.tokens += arr.size
        self.docs += len(docs)
        self.max_id = max(self.max_id, int(arr.max()))

    def close(self) -> dict[str, Any]:
        if not self.fh.closed:
            try:
                self.fh.flush()
                os.fsync(self.fh.fileno())
            finally:
                self.fh.close()
        return {
            "tokens": self.tokens,
            "docs": self.docs,
            "bytes": self.tokens * 2,
            "sha256": self.sha.hexdigest(),
            "max_id": self.max_id,
            "chars": self.chars,
            "text_bytes": self.text_bytes,
        }


# ---- publishing a data set as one unit -----------------------------------------------------------
# meta.json is the commit record: readers open the split files it names, and it is replaced atomically.
# 1. the new splits, complete and fsynced, get unique names .train.bin.gen-XXXX (the old set is untouched);
# 2. meta.json is replaced by one naming them: the commit point, the new set is live;
# 3. train.bin and val.bin become hard links to them (each replaced atomically);
# 4. meta.json is replaced by one naming train.bin and val.bin, and the .gen files are removed.
# A kill before 2 leaves the old set, after it the new one; a later prepare finishes 3-4 and removes
# what a killed run left behind.


def _naming(meta: dict[str, Any], files: dict[str, str]) -> dict[str, Any]:
    splits = {split: {**meta["splits"][split], "file": files[split]} for split in SPLITS}
    return {**meta, "splits": splits}


def _write_meta(out: Path, meta: dict[str, Any]) -> None:
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2))


def _commit(out: Path, meta: dict[str, Any], written: dict[str, Path]) -> dict[str, Any]:
    """Steps 1-2: make the new set live under unique names; return the meta.json that names them."""
    token = secrets.token_hex(4)
    gen = {split: out / f".{split}.bin.gen-{token}" for split in SPLITS}
    for split in SPLITS:
        os.replace(written[split], gen[split])
    fsync_dir(out)
    pending = _naming(meta, {split: gen[split].name for split in SPLITS})
    _write_meta(out, pending)
    return pending


def _settle(out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Steps 3-4: give the live split files their usual names and remove leftover .gen files."""
    if any(split_file(out, meta, split).name != f"{split}.bin" for split in SPLITS):
        for split in SPLITS:
            src = split_file(out, meta, split)
            if src.name != f"{split}.bin":
                atomic_link(src, out / f"{split}.bin")
        fsync_dir(out)
        meta = _naming(meta, {split: f"{split}.bin" for split in SPLITS})
        _write_meta(out, meta)
    _remove_unnamed_gen(out)
    return meta


def _remove_unnamed_gen(out: Path) -> None:
    """Remove .gen split files and tokenizer files that meta.json does not name (a run killed before or
    after its commit, or the tokenizer of the data set this one replaced)."""
    try:
        meta = load_meta(out)
        named = {split_file(out, meta, split).name for split in SPLITS}
        tokenizer = meta.get("tokenizer")
        if isinstance(tokenizer, dict):
            named.add(str(tokenizer.get("file")))
    except DatasetError:
        named = set()
    for p in out.iterdir():
        if (_GEN.match(p.name) or RANKS_FILE.match(p.name)) and p.name not in named:
            p.unlink(missing_ok=True)


def _with_max_ids(out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Record each split's largest id in a meta.json written before it was recorded (one read)."""
    if all(isinstance(meta["splits"][split].get("max_id"), int) for split in SPLITS):
        return meta
    splits = {}
    for split in SPLITS:
        tokens = np.memmap(split_file(out, meta, split), dtype=np.uint16, mode="r")
        splits[split] = {**meta["splits"][split], "max_id": int(tokens.max())}
    try:
        _write_meta(out, {**meta, "splits": splits})
    except OSError:  # a read-only copy stays usable; TokenData then checks vocab_size instead
        return meta
    return {**meta, "splits": splits}


def _tokenize_into(
    docs: Iterable[str], writers: dict[str, _SplitWriter], cfg: PrepareConfig, total: int | None, enc: tiktoken.Encoding
) -> None:
    # disable only when asked: an explicit disable=False would override TQDM_DISABLE
    bar = tqdm(
        total=total,
        unit="doc",
        desc="tokenizing",
        dynamic_ncols=True,
        mininterval=0.5,
        **({} if cfg.progress else {"disable": True}),
    )
    start, n_tokens, index = time.perf_counter(), 0, 0
    batch: list[str] = []
    chars = 0

    def flush() -> None:
        nonlocal n_tokens, index, batch, chars
        ids = enc.encode_ordinary_batch(batch, num_threads=cfg.num_threads)
        routed: dict[str, tuple[list[list[int]], list[str]]] = {"train": ([], []), "val": ([], [])}
        for doc, text in zip(ids, batch):
            split = routed["val" if is_val(index, cfg.seed, cfg.val_every) else "train"]
            split[0].append(doc)
            split[1].append(text)
            index += 1
        for split, (chunk, texts) in routed.items():
            writers[split].write(chunk)
            writers[split].count_text(texts)
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


def _tokenizer(out: Path, source: Source, cfg: PrepareConfig) -> tuple[tiktoken.Encoding, Any]:
    """GPT-2's Encoding and meta entry, or with ``cfg.vocab`` a BPE trained on the train split's documents.

    The trained ranks are written into ``out`` under a name made of their sha256, which no meta.json names
    yet (or, for the same ranks, names already with this very content): the live data set is untouched until
    the commit, and a run that stops before it leaves a file the next prepare removes.
    """
    if cfg.vocab is None:
        return get_tokenizer(), TOKENIZER_NAME
    docs = iter_documents(source, cfg.text_field, cfg.max_docs)
    train_docs = (text for i, text in enumerate(docs) if not is_val(i, cfg.seed, cfg.val_every))
    bar = tqdm(
        train_docs,
        unit="doc",
        desc="training tokenizer",
        dynamic_ncols=True,
        mininterval=0.5,
        **({} if cfg.progress else {"disable": True}),
    )
    try:
        text = ranks_text(train_ranks(bar, cfg.vocab))
    finally:
        bar.close()
    entry = entry_for(text)
    atomic_write_text(out / entry["file"], text)
    if entry["vocab_size"] < cfg.vocab:
        print(
            f"the train split has too few distinct pairs for {cfg.vocab:,} tokens: the tokenizer has "
            f"{entry['vocab_size']:,}"
        )
    return for_data({"tokenizer": entry}, out), entry


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
    if cfg.vocab is not None and not MIN_VOCAB <= cfg.vocab <= MAX_VOCAB:
        raise PrepareError(
            f"--vocab {cfg.vocab} is out of range: at least {MIN_VOCAB} (256 byte tokens and "
            f"<|endoftext|>), at most {MAX_VOCAB:,} (the ids are stored as uint16)"
        )
    try:  # data/NAME: one plain folder, as run names are (`..` would write into the project's root)
        if cfg.name is not None:
            paths.check_plain_name(cfg.name, "--name")
        source = resolve_source(cfg)
        paths.check_plain_name(source.name, "the data set's name")
    except ValueError as e:
        raise PrepareError(f"{e}: choose it with --name") from None
    root = Path(cfg.data_dir or paths.data_dir())
    if root.exists() and not root.is_dir():
        raise PrepareError(f"--data-dir {root} is a file: name a folder (data sets go to DATA_DIR/NAME)")
    out = root / source.name
    if out.exists() and not out.is_dir():
        raise PrepareError(f"{out} is a file, not a data set folder: move it away or choose another --name")
    if source.kind != "hub" and out.resolve() == Path(source.fingerprint["path"]).resolve():
        raise PrepareError(f"the output folder {out} is the source folder itself: choose another --name")
    with _one_prepare_at_a_time(root, source.name):
        return _build(cfg, source, out)


@contextlib.contextmanager
def _one_prepare_at_a_time(root: Path, name: str) -> Iterator[None]:
    """Hold ``DATA_DIR/.NAME.lock`` while data set NAME is checked and written; a second prepare waits.

    Two prepares of one data set at once (two chapters opened on a fresh clone, a notebook and a terminal)
    would each publish a set and remove the other's split files as leftovers. With the lock the second
    waits, then finds the set current. It sits beside the folder, as the run lock does, and is removed on
    release; a folder the lock had to make is removed again if nothing else was written there.
    """
    import filelock  # here: importing it takes 0.1 s, and the command line imports this module for --help

    path = root / f".{name}.lock"
    refuse_symlink(path)
    made_root = not root.exists()
    lock: Any = filelock.FileLock(str(path), thread_local=False)
    try:
        root.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            print(f"waiting for another prepare of {paths.shown(root / name)} to finish", flush=True)
            lock.acquire()
    except OSError as e:
        if e.errno not in USER_ERRNOS:
            raise
        # A data folder this process may not write (a class's read-only copy): no prepare can publish there
        # either, so there is nothing to guard; a current set is used, and a build says why it cannot write.
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            with contextlib.suppress(OSError):  # removed while held, as the run lock is (Windows refuses: it stays)
                os.unlink(path)
            lock.release()
        if made_root:
            with contextlib.suppress(OSError):  # not empty: a data set was written there
                root.rmdir()


def _build(cfg: PrepareConfig, source: Source, out: Path) -> dict[str, Any]:
    """The body of :func:`prepare`, under the data set's lock: nothing when current, else tokenize and publish."""
    request = _request(cfg, source)
    if not cfg.force and (meta := _is_current(out, request)):
        clean_stale_tmp(out)
        meta = _with_max_ids(out, _settle(out, meta))  # finish what a killed run left half-published
        print(
            f"{paths.shown(out)} is current ({meta['splits']['train']['tokens']:,} train tokens); --force rebuilds it"
        )
        return meta

    made_out = not out.exists()  # removed again if the run leaves it empty (the data folder: the lock's part)
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(out)
    tmp = {split: _tmp_name(out / f"{split}.bin") for split in SPLITS}
    started = time.perf_counter()
    committed = False
    try:
        enc, tokenizer = _tokenizer(out, source, cfg)
        writers = {split: _SplitWriter(tmp[split], enc.eot_token) for split in SPLITS}
        try:
            files = source.load_kwargs.get("data_files", [])
            total = len(files) if source.builder == "text" else cfg.max_docs  # one .txt file is one doc
            if cfg.max_docs and total:
                total = min(total, cfg.max_docs)
            _tokenize_into(iter_documents(source, cfg.text_field, cfg.max_docs), writers, cfg, total, enc)
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
        if max(s["max_id"] for s in stats.values()) >= enc.n_vocab:  # the tokenizer's ids must fit its vocabulary
            raise PrepareError(f"token id {max(s['max_id'] for s in stats.values())} >= vocab size {enc.n_vocab}")
        meta = {
            "version": META_VERSION,
            "name": source.name,
            "source": cfg.source,
            "source_kind": source.kind,
            "request": request,
            "tokenizer": tokenizer,
            "vocab_size": enc.n_vocab,
            "eot_id": enc.eot_token,
            "dtype": "uint16",
            "split_rule": (
                f"document i is validation when i % {cfg.val_every} equals "
                f"blake2b('{{seed}}:{{i // {cfg.val_every}}}') % {cfg.val_every}, seed {cfg.seed}"
            ),
            "splits": stats,
            "seconds": round(time.perf_counter() - started, 3),
        }
        meta = _commit(out, meta, tmp)
        committed = True
        meta = _settle(out, meta)
    except OSError as e:
        if e.errno not in USER_ERRNOS:
            raise
        state = (
            "the new data set is complete; run prepare again to tidy the folder"
            if committed
            else "the previous data set, if any, is intact"
        )
        raise PrepareError(f"{os_error_line(e, e.filename or out)}; {state}") from None
    finally:
        for f in tmp.values():
            f.unlink(missing_ok=True)
        _remove_unnamed_gen(out)
        if made_out and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
    t, v = stats["train"], stats["val"]
    print(
        f"wrote {paths.shown(out)}: train {t['tokens']:,} tokens ({t['docs']:,} docs), val {v['tokens']:,} tokens "
        f"({v['docs']:,} docs) in {meta['seconds']:.1f}s, {enc.n_vocab:,}-token vocabulary ({enc.name})"
    )
    return meta


def describe(meta: dict[str, Any]) -> str:
    """One line about a prepared dataset, for ``nanogpt info``."""
    t, v = meta["splits"]["train"], meta["splits"]["val"]
    return (
        f"{meta['name']:<16} source={meta['source']:<20} train {t['tokens']:>12,} tok {t['docs']:>8,} docs | "
        f"val {v['tokens']:>11,} tok {v['docs']:>7,} docs | {(t['bytes'] + v['bytes']) / 2**20:,.1f} MiB | "
        f"tokenizer {_tokenizer_name(meta.get('tokenizer'))}"
    )


def _tokenizer_name(entry: Any) -> str:
    """``gpt2``, or an own tokenizer's name (``bpe-N``, N its vocabulary)."""
    return str(entry.get("name")) if isinstance(entry, dict) else str(entry or TOKENIZER_NAME)
