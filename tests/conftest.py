"""Shared fixtures: small local corpora in each format the pipeline reads, made on the fly (no network)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub; fail fast instead of retrying
os.environ.setdefault("TQDM_DISABLE", "1")

DOCS = [f"Document {i}: " + " ".join(f"word{j % 17} and more text" for j in range(5 + 7 * i)) for i in range(30)]


@pytest.fixture
def docs() -> list[str]:
    return list(DOCS)


@pytest.fixture
def txt_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "txt"
    folder.mkdir()
    for i, text in enumerate(DOCS):
        (folder / f"doc{i:02d}.txt").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def jsonl_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(DOCS)), encoding="utf-8")
    return path


@pytest.fixture
def parquet_file(tmp_path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"text": DOCS, "n": list(range(len(DOCS)))}), path)
    return path
