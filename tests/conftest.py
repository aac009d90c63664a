"""Shared fixtures: small local corpora in each format the pipeline reads, made on the fly (no network), a
prepared project home, and every test on one torch thread.

One thread because the tests' models are tiny: each op is microseconds of work, and on a busy 2-core machine
torch's two threads spent it waiting for each other (test_model and test_variants: 55 s on two threads, 12 s on
one; a ch05 exercise check 282 s against 14 s).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub; fail fast instead of retrying
os.environ.setdefault("TQDM_DISABLE", "1")
# torch reads OMP_NUM_THREADS once, when it is imported (nanogpt_lib imports it below, and so does every process
# the tests start): this process, the subprocesses that copy os.environ (CLI runs, torchrun workers) and nbval's
# and papermill's kernels, which inherit it, all start on one thread. A count the caller set stays.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from nanogpt_lib.devices import cpu_threads

from tiny import DOCS, prepared_home, write_docs


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """nbval's notebook cells are ``slow``: a chapter is one run of 30-90 s, its cells in order, so the quick
    loop (``-m "not slow"``) leaves out whole notebooks rather than the cells a later one depends on."""
    for item in items:
        if type(item).__module__.partition(".")[0] == "nbval":
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def docs() -> list[str]:
    return list(DOCS)


@pytest.fixture
def txt_dir(tmp_path: Path) -> Path:
    return write_docs(tmp_path / "txt")  # the folder the home fixture prepares, when a test asks for both


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


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Each test on one torch thread, the count restored after: a test that sets its own (a thread-count
    test, a config's ``threads``) still can, and one that leaks a count does not change the next test."""
    with cpu_threads(1):
        yield


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project home with data/txt prepared; NANOGPT_HOME points this process and its children at it."""
    root = prepared_home(tmp_path)
    monkeypatch.setenv("NANOGPT_HOME", str(root))
    return root


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same home made once for a module whose tests each use their own run names (preparing it again per
    test is the cost saved). NANOGPT_HOME is left to the module's tests: a module fixture cannot monkeypatch."""
    return prepared_home(tmp_path_factory.mktemp("shared"))
