"""`nanogpt prepare` on local files of every kind, the hub code path, atomicity, idempotence, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nanogpt_lib import paths
from nanogpt_lib import prepare as prep
from nanogpt_lib.cli import main
from nanogpt_lib.prepare import PrepareConfig, PrepareError, is_val, prepare
from nanogpt_lib.tokenizer import EOT_ID, decode, encode


def expected_split(docs: list[str], split: str, seed: int = 0, every: int = 10) -> np.ndarray:
    ids: list[int] = []
    for i, doc in enumerate(docs):
        if is_val(i, seed, every) == (split == "val"):
            ids += [*encode(doc), EOT_ID]
    return np.array(ids, dtype=np.uint16)


def read_split(out: Path, split: str) -> np.ndarray:
    return np.fromfile(out / f"{split}.bin", dtype=np.uint16)


def check_output(out: Path, docs: list[str], seed: int = 0, every: int = 10) -> dict:
    meta = json.loads((out / "meta.json").read_text())
    for split in ("train", "val"):
        tokens = read_split(out, split)
        assert np.array_equal(tokens, expected_split(docs, split, seed, every))
        info = meta["splits"][split]
        assert info["tokens"] == tokens.size and info["bytes"] == 2 * tokens.size
        assert info["sha256"] == hashlib.sha256((out / f"{split}.bin").read_bytes()).hexdigest()
        assert info["max_id"] == int(tokens.max()) and info["file"] == f"{split}.bin"
    assert meta["splits"]["train"]["docs"] + meta["splits"]["val"]["docs"] == len(docs)
    assert meta["tokenizer"] == "gpt2" and meta["vocab_size"] == 50257
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.bin", "val.bin"]  # nothing left over
    return meta


def test_txt_folder(txt_dir, docs, tmp_path):
    meta = prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "data"))
    check_output(tmp_path / "data" / "txt", docs)
    assert meta["source_kind"] == "local"


def test_jsonl_with_text_field(jsonl_file, docs, tmp_path):
    prepare(PrepareConfig(source=str(jsonl_file), text_field="body", data_dir=tmp_path / "d", name="j"))
    check_output(tmp_path / "d" / "j", docs)


def test_parquet(parquet_file, docs, tmp_path):
    prepare(PrepareConfig(source=str(parquet_file), data_dir=tmp_path / "d", seed=3, val_every=4))
    check_output(tmp_path / "d" / "corpus", docs, seed=3, every=4)


def test_max_docs_takes_a_prefix(jsonl_file, docs, tmp_path):
    prepare(PrepareConfig(source=str(jsonl_file), text_field="body", max_docs=12, data_dir=tmp_path))
    check_output(tmp_path / "corpus", docs[:12])


def test_chunking_does_not_change_output(txt_dir, docs, tmp_path):
    prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "a"))
    prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "b", chunk_chars=50, num_threads=1))
    for split in ("train", "val"):
        assert (tmp_path / "a/txt" / f"{split}.bin").read_bytes() == (tmp_path / "b/txt" / f"{split}.bin").read_bytes()


def test_hub_code_path_on_a_local_parquet_export(tmp_path, docs, monkeypatch):
    """The openwebtext source goes through load_dataset(id, revision=parquet export, streaming=True)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = tmp_path / "openwebtext_repo"
    (repo / "plain_text" / "train").mkdir(parents=True)
    pq.write_table(pa.table({"text": docs[:15]}), repo / "plain_text/train/0000.parquet")
    pq.write_table(pa.table({"text": docs[15:]}), repo / "plain_text/train/0001.parquet")
    calls = []
    import datasets

    real = datasets.load_dataset

    def spy(path, **kwargs):
        calls.append((path, kwargs))
        return real(path, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", spy)
    monkeypatch.setattr(prep, "OPENWEBTEXT_ID", str(repo))
    meta = prepare(PrepareConfig(source="openwebtext", max_docs=20, data_dir=tmp_path / "d"))
    check_output(tmp_path / "d" / "openwebtext", docs[:20])
    assert meta["source_kind"] == "hub"
    assert calls == [(str(repo), {"streaming": True, "split": "train", "revision": "refs/convert/parquet"})]


def test_hub_id_offline_says_network_is_needed(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PrepareError, match=r"need the network.*local"):
        prepare(PrepareConfig(source="someone/some-dataset", data_dir=tmp_path))
    assert not (tmp_path / "some-dataset").exists()


def test_streaming_leaves_no_dataset_cache(jsonl_file, tmp_path, monkeypatch):
    import datasets.config

    cache = tmp_path / "hf_cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    prepare(PrepareConfig(source=str(jsonl_file), text_field="body", data_dir=tmp_path / "d"))
    leftovers = [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")] if cache.exists() else []
    assert leftovers == []


def test_shipped_corpus(tmp_path):
    plays = sorted(paths.shakespeare_dir().glob("*.txt"))
    meta = prepare(PrepareConfig(data_dir=tmp_path))
    out = tmp_path / "shakespeare"
    assert meta["splits"]["train"]["docs"] + meta["splits"]["val"]["docs"] == len(plays)
    assert meta["splits"]["val"]["docs"] >= 2
    texts = {split: decode(read_split(out, split).tolist()).split("<|endoftext|>")[:-1] for split in ("train", "val")}
    originals = [p.read_text(encoding="utf-8") for p in plays]
    assert sorted(texts["train"] + texts["val"]) == sorted(originals)
    assert [t for i, t in enumerate(originals) if is_val(i, 0, 10)] == texts["val"]


# ---- atomicity and idempotence ----------------------------------------------------------------


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failure_mid_write_keeps_previous_output(txt_dir, tmp_path, monkeypatch, exc):
    prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d", chunk_chars=200))
    out = tmp_path / "d" / "txt"
    before = _snapshot(out)
    writes = {"n": 0}
    real_write = prep._SplitWriter.write

    def failing_write(self, docs):
        writes["n"] += 1
        if writes["n"] == 3:  # after some tokens already went to the temporary files
            raise exc
        real_write(self, docs)

    monkeypatch.setattr(prep._SplitWriter, "write", failing_write)
    with pytest.raises(type(exc)):
        prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d", chunk_chars=200, force=True))
    assert writes["n"] == 3
    assert _snapshot(out) == before  # same files, same bytes, no temporary leftovers


def test_failure_on_first_run_leaves_nothing(txt_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(prep._SplitWriter, "write", lambda self, docs: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError):
        prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d"))
    assert not (tmp_path / "d").exists()  # nor the data folder it made, nor its lock


def test_a_second_prepare_of_a_data_set_waits_for_the_first(txt_dir, docs, tmp_path):
    """Two prepares of one data set (two notebooks on a fresh clone) would each remove the other's split files:
    the second waits on ``DATA_DIR/.NAME.lock``, says so, and writes only once the first has let go."""
    import filelock

    data = tmp_path / "d"
    data.mkdir()
    held = filelock.FileLock(str(data / ".txt.lock"), thread_local=False)
    held.acquire(timeout=0)
    code = f"from nanogpt_lib.prepare import prepare; prepare(source={str(txt_dir)!r}, data_dir={str(data)!r})"
    env = {**os.environ, "PYTHONPATH": str(paths.project_root())}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        first = proc.stdout.readline() if ready else "(nothing in 120 s)"
        assert first.startswith("waiting for another prepare of "), first
        assert proc.poll() is None and not (data / "txt").exists()  # waiting, nothing written
    finally:
        held.release()
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and rest.startswith("wrote "), rest
    check_output(data / "txt", docs)
    assert sorted(p.name for p in data.iterdir()) == ["txt"]  # the lock is gone with its holder


def test_output_folder_may_not_be_the_source(txt_dir, tmp_path):
    with pytest.raises(PrepareError, match="is the source folder itself"):
        prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path))


def test_rerun_is_a_no_op_and_force_rebuilds(txt_dir, tmp_path, capsys):
    prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d"))
    out = tmp_path / "d" / "txt"
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d"))
    assert "is current" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d", force=True))
    assert "wrote" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} != stamps


def test_a_data_folder_that_refuses_the_lock_still_serves_a_current_set(txt_dir, tmp_path, capsys, monkeypatch):
    """A class's read-only copy of data/: the lock file cannot be made there, and nothing else can be written
    either, so a current data set is used as before instead of failing on its lock."""
    import errno

    import filelock

    prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d"))

    def lock_fails_with(code: int):
        def acquire(self, *args, **kwargs):
            raise OSError(code, os.strerror(code), self.lock_file)

        monkeypatch.setattr(filelock.FileLock, "acquire", acquire)

    lock_fails_with(errno.EROFS)
    meta = prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d"))
    assert "is current" in capsys.readouterr().out and meta["splits"]["train"]["docs"] > 0
    lock_fails_with(errno.EIO)
    with pytest.raises(OSError, match="Input/output error"):  # not a folder the user can fix: the error stands
        prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d"))


def test_changed_input_or_options_rebuild(txt_dir, tmp_path, capsys):
    prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d"))
    (txt_dir / "doc00.txt").write_text("changed text", encoding="utf-8")
    prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d"))
    assert "wrote" in capsys.readouterr().out
    prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d", seed=1))
    assert "wrote" in capsys.readouterr().out


def test_damaged_output_is_rebuilt(txt_dir, tmp_path, capsys):
    prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d"))
    with open(tmp_path / "d" / "txt" / "train.bin", "ab") as fh:
        fh.write(b"\x00\x00")
    prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d"))
    assert "wrote" in capsys.readouterr().out


# ---- bad input: one line naming the problem and the fix ----------------------------------------


def test_unknown_source(tmp_path):
    with pytest.raises(PrepareError, match=r"unknown source 'nonsense'.*shakespeare.*openwebtext"):
        prepare(PrepareConfig(source="nonsense", data_dir=tmp_path))


def test_missing_path(tmp_path):
    with pytest.raises(PrepareError, match=re.escape("path not found: ./no/such/file.txt")):
        prepare(PrepareConfig(source="./no/such/file.txt", data_dir=tmp_path))


def test_empty_corpus(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    for i in range(12):
        (folder / f"{i}.txt").write_text("")
    with pytest.raises(PrepareError, match="empty corpus"):
        prepare(PrepareConfig(source=str(folder), data_dir=tmp_path / "d"))
    assert not (tmp_path / "d" / "empty").exists()


def test_folder_without_text_files(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"\x89PNG")
    with pytest.raises(PrepareError, match=re.escape("no .txt, .jsonl or .parquet")):
        prepare(PrepareConfig(source=str(tmp_path / "imgs"), data_dir=tmp_path / "d"))


def test_non_utf8_file_is_named(txt_dir, tmp_path):
    (txt_dir / "doc05.txt").write_bytes("caf\u00e9 latin-1".encode("latin-1"))
    with pytest.raises(PrepareError, match=r"non-UTF-8 file: .*doc05\.txt"):
        prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d"))
    assert not (tmp_path / "d" / "txt").exists()


def test_missing_text_field_lists_fields(jsonl_file, tmp_path):
    with pytest.raises(PrepareError, match=r"no text field 'text'.*body, id"):
        prepare(PrepareConfig(source=str(jsonl_file), data_dir=tmp_path))


def test_non_positive_max_docs(txt_dir, tmp_path):
    with pytest.raises(PrepareError, match="--max-docs must be a positive"):
        prepare(PrepareConfig(source=str(txt_dir), max_docs=0, data_dir=tmp_path))


def test_too_few_documents_to_split(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("a single document")
    with pytest.raises(PrepareError, match="too few to split"):
        prepare(PrepareConfig(source=str(path), data_dir=tmp_path / "d"))


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    assert main(["prepare", "nonsense", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown source") and err.count("\n") == 1 and "Traceback" not in err


def test_cli_prepare_and_info(txt_dir, tmp_path, capsys):
    assert main(["prepare", str(txt_dir), "--name", "mine", "--data-dir", str(tmp_path)]) == 0
    assert main(["info", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mine" in out and "torch" in out and "devices: " in out


def test_progress_bar_respects_tqdm_disable(txt_dir, tmp_path, capsys):
    """conftest sets TQDM_DISABLE=1 (tqdm reads it at import): an explicit disable=False would override it."""
    assert os.environ.get("TQDM_DISABLE") == "1"
    prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d", progress=True))
    assert "tokenizing" not in capsys.readouterr().err


def test_a_meta_json_from_before_max_ids_gets_them_on_the_next_run(txt_dir, tmp_path):
    meta = prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d"))
    old = {
        **meta,
        "splits": {s: {k: v for k, v in i.items() if k not in ("max_id", "file")} for s, i in meta["splits"].items()},
    }
    (tmp_path / "d" / "txt" / "meta.json").write_text(json.dumps(old))
    stamp = (tmp_path / "d" / "txt" / "train.bin").stat().st_mtime_ns
    again = prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "d"))
    assert (tmp_path / "d" / "txt" / "train.bin").stat().st_mtime_ns == stamp  # not rebuilt: one read
    for split in ("train", "val"):
        assert again["splits"][split]["max_id"] == meta["splits"][split]["max_id"]
    assert json.loads((tmp_path / "d" / "txt" / "meta.json").read_text()) == again


def test_non_utf8_jsonl_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(PrepareError, match=r"non-UTF-8 file: .*bad\.jsonl"):
        prepare(PrepareConfig(source=str(path), data_dir=tmp_path / "d"))
