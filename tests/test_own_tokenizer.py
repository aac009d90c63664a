"""Issue 23: a data set's own byte-level BPE (``prepare --vocab N``), carried through data, checkpoints, exports
and sampling; GPT-2's stays what older data sets, checkpoints and exports decode with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nanogpt_lib import prepare as prep
from nanogpt_lib import tokenizer as tok
from nanogpt_lib.checkpoint import export_weights, load_weights
from nanogpt_lib.cli import main
from nanogpt_lib.config import load_config
from nanogpt_lib.data import DatasetError, TokenData, load_meta, verify_dataset
from nanogpt_lib.export import FILES_KEY
from nanogpt_lib.model import GPT, GPTConfig
from nanogpt_lib.prepare import PrepareConfig, is_val, prepare
from nanogpt_lib.sample import generate, generate_text, load_model
from nanogpt_lib.train import TrainError, train

from tiny import SMALL_RUN

VOCAB = 300  # a few dozen merges of the small corpora below: trained in milliseconds
# Only the validation documents of VAL_ONLY_DOCS hold this word: a tokenizer trained on all the text merges it.
VAL_WORD = "xylophone"


def ranks_of(folder: Path) -> dict[bytes, int]:
    meta = json.loads((folder / "meta.json").read_text())
    return tok.parse_ranks((folder / meta["tokenizer"]["file"]).read_text(), "test")


def own(folder: Path, vocab: int = VOCAB, **kw) -> dict:
    return prepare(
        PrepareConfig(
            source=str(folder), data_dir=folder.parent / "data", name="own", vocab=vocab, progress=False, **kw
        )
    )


@pytest.fixture
def val_only_dir(tmp_path: Path) -> tuple[Path, list[str]]:
    folder = tmp_path / "corpus"
    folder.mkdir()
    docs = [
        (f"{VAL_WORD} " * 40 if is_val(i, 0, 10) else "") + f"Document {i}: the cat sat on the mat. " * 8
        for i in range(30)
    ]
    for i, text in enumerate(docs):
        (folder / f"doc{i:02d}.txt").write_text(text, encoding="utf-8")
    return folder, docs


def test_round_trip_and_ranks_are_tiktoken_compatible(docs):
    text = "".join(docs)
    ranks = tok.train_ranks(docs, VOCAB)
    assert len(ranks) == VOCAB - 1  # <|endoftext|> is the last id, not a rank
    assert all(ranks[bytes([b])] == b for b in range(256))  # every byte is a token: any text encodes
    saved = tok.ranks_text(ranks)
    assert tok.parse_ranks(saved, "test") == ranks  # the file format loses nothing
    enc = tok.resolve({**tok.entry_for(saved), "ranks": saved})
    assert enc.n_vocab == VOCAB and enc.eot_token == VOCAB - 1
    ids = enc.encode_ordinary(text)
    assert max(ids) < VOCAB - 1 and len(ids) < len(text.encode()) / 2  # merges learned from the text compress it
    odd = "naïve café — 漢字 ✓\n\t tabs"  # bytes never seen in training still round-trip, as byte tokens
    assert enc.decode(enc.encode_ordinary(text + odd)) == text + odd


def test_prepare_trains_on_the_train_split_and_records_the_tokenizer(val_only_dir):
    folder, docs = val_only_dir
    meta = own(folder)
    out = folder.parent / "data" / "own"
    entry = meta["tokenizer"]
    ranks_file = out / entry["file"]
    assert entry["sha256"] == tok.hashlib.sha256(ranks_file.read_bytes()).hexdigest()
    assert entry["vocab_size"] == meta["vocab_size"] == VOCAB and meta["eot_id"] == VOCAB - 1
    assert entry["pattern"] == tok.GPT2_PAT_STR
    assert sorted(p.name for p in out.iterdir()) == sorted(["meta.json", "train.bin", "val.bin", entry["file"]])
    # train split only: no token holds a piece of the val-only word, which training on all the text merges
    assert not any(b"xy" in t for t in ranks_of(out))
    assert any(b"xy" in t for t in tok.train_ranks(docs, VOCAB))
    enc = tok.for_data(meta, out)
    for split in ("train", "val"):
        mine = [d for i, d in enumerate(docs) if is_val(i, 0, 10) == (split == "val")]
        expected = [i for d in mine for i in [*enc.encode_ordinary(d), enc.eot_token]]
        assert np.fromfile(out / f"{split}.bin", dtype=np.uint16).tolist() == expected
        info = meta["splits"][split]
        assert info["chars"] == sum(len(d) for d in mine)
        assert info["text_bytes"] == sum(len(d.encode()) for d in mine)


def test_the_vocab_is_part_of_the_request(txt_dir, capsys):
    first = own(txt_dir)
    assert own(txt_dir) == first and "is current" in capsys.readouterr().out
    second = own(txt_dir, vocab=280)
    out = txt_dir.parent / "data" / "own"
    assert second["vocab_size"] == 280 and second["tokenizer"]["file"] != first["tokenizer"]["file"]
    assert not (out / first["tokenizer"]["file"]).exists()  # the replaced data set's tokenizer went with it
    gpt2 = prepare(PrepareConfig(source=str(txt_dir), data_dir=out.parent, name="own", progress=False))
    assert gpt2["tokenizer"] == "gpt2" and gpt2["vocab_size"] == tok.N_VOCAB
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.bin", "val.bin"]


def test_without_a_name_an_own_bpe_never_replaces_the_gpt2_data_set(txt_dir, capsys):
    data = txt_dir.parent / "data"
    gpt2 = prepare(PrepareConfig(source=str(txt_dir), data_dir=data, progress=False))
    gpt2_train = (data / txt_dir.name / "train.bin").read_bytes()
    assert main(["prepare", str(txt_dir), "--vocab", "280", "--data-dir", str(data), "--no-progress"]) == 0
    mine = json.loads((data / f"{txt_dir.name}-bpe280" / "meta.json").read_text())  # SOURCE-bpeN, as the grid's
    assert mine["vocab_size"] == 280 and gpt2["tokenizer"] == "gpt2"
    assert (data / txt_dir.name / "train.bin").read_bytes() == gpt2_train  # GPT-2's tokens untouched
    assert load_meta(data / txt_dir.name)["tokenizer"] == "gpt2"


@pytest.mark.parametrize("vocab, message", [(256, "at least 257"), (65_536, "at most 65,535")])
def test_a_vocab_out_of_range_is_one_line_exit_2(txt_dir, tmp_path, capsys, vocab, message):
    assert main(["prepare", str(txt_dir), "--vocab", str(vocab), "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "d").exists()


def test_an_altered_or_missing_tokenizer_file_is_refused(txt_dir, capsys):
    meta = own(txt_dir)
    out = txt_dir.parent / "data" / "own"
    ranks_file = out / meta["tokenizer"]["file"]
    good = ranks_file.read_text()
    lines = good.splitlines()
    (a, _), (b, _) = lines[200].split(), lines[201].split()
    lines[200], lines[201] = f"{b} 200", f"{a} 201"  # two merges swapped: still a well-formed ranks file
    ranks_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"sha256.*not the tokenizer these ids were made with"):
        TokenData(out, 8)
    with pytest.raises(tok.TokenizerFilesError, match="sha256"):
        tok.for_data(meta, out)
    assert main(["info", "--verify", "--data-dir", str(out.parent)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "failed verification (own)" in err
    ranks_file.unlink()
    with pytest.raises(DatasetError, match=r"tokenizer file .* is missing"):
        verify_dataset(out)
    rebuilt = own(txt_dir)  # prepare sees the data set is not whole and builds it again
    assert rebuilt["tokenizer"] == meta["tokenizer"] and ranks_file.read_text() == good


def test_an_interrupted_rebuild_keeps_the_previous_data_set_and_its_tokenizer(txt_dir, monkeypatch):
    first = own(txt_dir)
    out = txt_dir.parent / "data" / "own"
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted(self, docs):  # the new tokenizer file is written by now, the new splits are not
        assert len([p for p in out.iterdir() if p.suffix == ".tiktoken"]) == 2
        raise KeyboardInterrupt

    monkeypatch.setattr(prep._SplitWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        own(txt_dir, vocab=280)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing new is left, nothing old is lost
    assert TokenData(out, 8).tokenizer["sha256"] == first["tokenizer"]["sha256"]


TINY = [
    *SMALL_RUN,
    "dataset=own",
    "warmup_steps=1",
    "lr=3e-3",
    "max_steps=2",
    "eval_every=2",
    "log_every=1",
    "threads=1",
]


def test_prepare_train_export_sample_with_the_own_tokenizer(txt_dir, monkeypatch, capsys):
    home = txt_dir.parent
    monkeypatch.setenv("NANOGPT_HOME", str(home))
    meta = own(txt_dir)
    # 320 rows, 20 of them padding past the 300 tokens: sampling must never emit those
    cfg = load_config(None, [*TINY, "model.vocab_size=320", "name=mine"])
    assert train(cfg, progress=False).status == "finished"
    run = home / "runs" / "mine"
    assert torch.load(run / "ckpt.pt", weights_only=True)["tokenizer"]["sha256"] == meta["tokenizer"]["sha256"]
    assert main(["export", str(run), "--out", str(home / "exp")]) == 0
    record = json.loads((home / "exp" / "config.json").read_text())
    name = meta["tokenizer"]["file"]
    assert record["tokenizer"]["sha256"] == record[FILES_KEY][name]["sha256"] == meta["tokenizer"]["sha256"]
    for where in (run, run / "best", home / "exp"):  # the checkpoint, the best weights, the export
        model = load_model(where, device="cpu")
        enc = model.tokenizer
        assert enc.n_vocab == VOCAB and enc is tok.for_data(meta, home / "data" / "own")
        prompt = "Document 3: word"
        text = generate_text(model, prompt, max_new_tokens=12, temperature=0)
        ids = generate(
            model,
            torch.tensor([enc.encode_ordinary(prompt)]),
            12,  # limited to the model's tokenizer
            temperature=0,
        )[0, len(enc.encode_ordinary(prompt)) :].tolist()
        assert text == enc.decode(ids) and max(ids) < VOCAB
    # near-uniform draws over all 320 rows: with the 20 padding rows allowed, 200 draws would hit one with
    # probability 1 - (300/320)^200 > 0.99999; they must never come, nor break the decoding
    wild = generate(model, torch.tensor([[0]]), 200, temperature=100.0, seed=0)[0, 1:]
    assert int(wild.max()) < VOCAB
    assert generate_text(model, "D", max_new_tokens=50, temperature=100.0, top_k=None, seed=0)
    capsys.readouterr()
    assert (
        main(["sample", "--weights", str(home / "exp"), "--prompt", "Document", "--max-new-tokens", "5", "--seed", "1"])
        == 0
    )
    assert capsys.readouterr().out.strip()
    (home / "exp" / name).write_text("QUFB 0\n")  # not the tokenizer the export names
    with pytest.raises(tok.TokenizerFilesError, match="sha256"):
        load_model(home / "exp", device="cpu")
    ckpt = torch.load(run / "ckpt.pt", weights_only=True)
    ckpt["tokenizer"]["ranks"] = ckpt["tokenizer"]["ranks"].replace(" 298\n", " 297\n")
    (home / "edited").mkdir()
    torch.save(ckpt, home / "edited" / "ckpt.pt")
    with pytest.raises(tok.TokenizerFilesError, match="the checkpoint's tokenizer has sha256"):
        load_model(home / "edited", device="cpu")
    own(txt_dir, vocab=280)  # the data set now holds other ids: the run cannot go on from them
    with pytest.raises(TrainError, match="another tokenizer"):
        train(load_config(None, [*TINY, "model.vocab_size=320", "name=mine", "max_steps=4"]), progress=False)


def test_gpt2_data_checkpoints_and_exports_still_decode_with_gpt2(txt_dir, tmp_path):
    prepare(PrepareConfig(source=str(txt_dir), data_dir=tmp_path / "data", progress=False))
    assert TokenData(tmp_path / "data" / "txt", 8).tokenizer == "gpt2"
    config = GPTConfig(block_size=8, vocab_size=64, n_layer=1, n_head=2, n_embd=16)
    model = GPT(config)
    export_weights(model, config, tmp_path / "exp")  # as exports were written before issue 23
    assert "tokenizer" not in json.loads((tmp_path / "exp" / "config.json").read_text())
    assert load_model(tmp_path / "exp", device="cpu").tokenizer is tok.get_tokenizer()
    (tmp_path / "run").mkdir()
    torch.save(
        {"model": model.state_dict(), "config": {"model": config.to_dict()}, "step": 0}, tmp_path / "run" / "ckpt.pt"
    )  # a checkpoint from before issue 23: no "tokenizer" entry
    assert load_weights(tmp_path / "run")[1]["tokenizer"] == "gpt2"
    assert load_model(tmp_path / "run", device="cpu").tokenizer is tok.get_tokenizer()
