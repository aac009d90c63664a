"""The tests' tiny corpus, models and runs, named once: a test file that needs another size says why beside it.

Every architecture field is written out. A bare ``GPTConfig()`` or ``load_config(None)`` means whatever the
library's default model is at the time, and a test that compares two runs bitwise or reads a shape must not
change when that default does: the models here are GPT-2's architecture (learned positions, GELU), the runs
train the recipe's (RoPE, ReLU²), as they did when the tests were written.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from nanogpt_lib.model import GPTConfig
from nanogpt_lib.prepare import PrepareConfig, prepare

# 30 documents, the i-th of 5 + 7i phrases over 17 distinct words: every format and split can be made of them
DOCS = [f"Document {i}: " + " ".join(f"word{j % 17} and more text" for j in range(5 + 7 * i)) for i in range(30)]


def write_docs(folder: Path) -> Path:
    """``DOCS``, one .txt file per document, in ``folder`` (made if missing; the same files if it exists)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(DOCS):
        (folder / f"doc{i:02d}.txt").write_text(text, encoding="utf-8")
    return folder


def prepared_home(root: Path, **prepare_options) -> Path:
    """``root/home``, a project home with ``DOCS`` (written to ``root/txt``) prepared as ``data/txt``;
    ``prepare_options`` go to PrepareConfig (another ``name``, an own ``vocab``)."""
    home = root / "home"
    options = {"name": "txt", "progress": False, **prepare_options}
    prepare(PrepareConfig(source=str(write_docs(root / "txt")), data_dir=home / "data", **options))
    return home


GPT2_ARCH = dict(pos="learned", mlp="gelu", qk_norm=False, tie_head=True, logit_softcap=0.0, bias=True, dropout=0.0)

# The smallest model that runs every path: one layer, two heads of 8 dimensions, an 8-token context and GPT-2's
# padded vocabulary (the shipped tokenizer's ids fit). Exports, CLI runs, evaluation, fault injection.
TINY_MODEL = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=50304, **GPT2_ARCH)
# Two layers at width 32, context 16: where blocks must pass something on (sampling, caches, widgets).
SMALL_MODEL = replace(TINY_MODEL, n_layer=2, n_embd=32, block_size=16)
# SMALL_MODEL on a 100-token vocabulary: the model's own tests (forward, gradients, variants) on small logits.
SMALL_VOCAB_MODEL = replace(SMALL_MODEL, vocab_size=100)


def model_overrides(config: GPTConfig) -> list[str]:
    """``config`` as ``load_config`` overrides (``model.n_layer=1``, ...), all but the vocabulary: a run's
    vocabulary is its data set's (``fit_vocab``)."""
    return [f"model.{k}={v}" for k, v in asdict(config).items() if k != "vocab_size"]


_RECIPE_ARCH = dict(pos="rope", mlp="relu2")  # what the training tests' runs were written against
_CPU_FLOAT32 = ["dtype=float32", "device=cpu"]

# Runs of TINY_MODEL's size on 2 sequences a step, one evaluation batch, the shared corpus (data/txt):
# the trainer's paths (resume, faults, logging) at the least cost.
TINY_RUN = [
    *model_overrides(replace(TINY_MODEL, **_RECIPE_ARCH)),
    "batch_size=2",
    "dataset=txt",
    "eval_batches=1",
    *_CPU_FLOAT32,
]
# One layer at width 32, context 16, 4 sequences a step: long enough runs for a minutes budget or an own
# vocabulary to show (no data set named: the tests pick theirs).
SMALL_RUN = [
    *model_overrides(replace(SMALL_MODEL, n_layer=1, **_RECIPE_ARCH)),
    "batch_size=4",
    "eval_batches=1",
    *_CPU_FLOAT32,
]
# SMALL_MODEL's two layers, 4 sequences, 2 evaluation batches, 2 warmup steps: the runs compared bitwise
# (pause/resume, SIGKILL, torchrun against accumulation), where layers and a schedule must interact.
TWO_LAYER_RUN = [
    *model_overrides(replace(SMALL_MODEL, **_RECIPE_ARCH)),
    "batch_size=4",
    "dataset=txt",
    "eval_batches=2",
    "warmup_steps=2",
    *_CPU_FLOAT32,
]


def sizes_only(run: list[str]) -> list[str]:
    """``run`` less its architecture (``GPT2_ARCH``'s fields): for a run whose model comes from a config file,
    the recipe's, which the test means to follow wherever it goes."""
    arch = {f"model.{k}" for k in GPT2_ARCH}
    return [o for o in run if o.partition("=")[0] not in arch]
