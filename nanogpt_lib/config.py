"""Training configuration: a dataclass, TOML files, and ``--set key=value`` overrides with type checks.

A TOML file holds TrainConfig fields at the top level and the model's GPTConfig fields under ``[model]``;
overrides name model fields as ``model.n_layer=6``. Unknown keys and wrongly typed values are errors that
say what is valid, so a typo never trains the wrong model overnight.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import NanoGPTError
from .model import GPTConfig
from .paths import check_plain_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(NanoGPTError, ValueError):
    """A config file or override that cannot be used; the message says what is valid."""


# Training defaults are the measured winners (notebooks/08_experiments.ipynb, experiments/README.md): the recipe's
# model (GPTConfig.recipe(): RoPE and ReLU^2), Muon for its matrices, lr 2e-3. A [model] table or model.* override
# changes the recipe's model, key by key; GPTConfig's docstring says why a bare GPTConfig() stays GPT-2.
MAX_SEED = 2**63 - 1  # torch.manual_seed takes a 64-bit integer; numpy's generators any non-negative one
# The model's vocabulary is padded up to a multiple of 64 rows: the embedding and the LM head are the largest
# matmuls of a small model, and CPU (oneDNN/AVX-512) and GPU (tensor-core) kernels work in tiles of 16-64
# rows, so a ragged last tile runs at a fraction of the speed; the padding rows are never a target.
VOCAB_MULTIPLE = 64
AUTO_VOCAB = GPTConfig.vocab_size  # 50,304: GPT-2's 50,257 padded; a config that keeps it means "the data's"


@dataclass
class TrainConfig:
    """Everything a training run needs; defaults are the seed's model on the shipped corpus."""

    name: str = "default"  # run folder runs/<name>
    dataset: str = "shakespeare"  # prepared data in data/<dataset>
    model: GPTConfig = field(default_factory=GPTConfig.recipe)
    # batches: tokens per step = batch_size * grad_accum * block_size (* world size under torchrun)
    batch_size: int = 64
    grad_accum: int = 1
    seed: int = 1337
    # AdamW with linear warmup to lr, then cosine decay to min_lr at max_steps ("cosine"), or constant until
    # the last decay_frac of the steps and a linear decay to min_lr there ("wsd": warmup-stable-decay)
    max_steps: int = 1500
    # train for this many minutes instead (None: off): after a few steps the trainer measures its speed and
    # replaces max_steps by the steps that fit (evaluations and checkpoints included), so the decay ends on time
    minutes: float | None = None
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int = 100
    schedule: str = "wsd"
    decay_frac: float = 0.2
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    # "adamw", or "muon": Muon at muon_lr for the blocks' matrices, AdamW at lr for the rest (same schedule)
    optimizer: str = "muon"
    muon_lr: float = 0.02
    muon_momentum: float = 0.95
    muon_weight_decay: float = 0.0  # decoupled, at Muon's rate: w -= muon_lr * muon_weight_decay * w per step
    # evaluation, logging, checkpoints (in optimizer steps)
    eval_every: int = 100
    eval_batches: int = 20
    log_every: int = 10
    ckpt_every: int = 200
    # system
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    compile: bool = False
    threads: int = 0  # CPU threads for torch in `nanogpt train`, train() and sweeps; 0 keeps torch's default (a
    # Trainer made in a notebook runs on the notebook's own count: torch.set_num_threads there)

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = GPTConfig.recipe(**self.model)
        for key in ("name", "dataset"):  # runs/NAME and data/DATASET: never a path that leads elsewhere
            try:
                check_plain_name(getattr(self, key), key)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        floats = [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]
        floats += [(f"model.{f.name}", getattr(self.model, f.name)) for f in dataclasses.fields(self.model)]
        for key, value in floats:  # nan passes every comparison below and inf most of them
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{key} must be a finite number, got {value!r}")
        if not (isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED):
            raise ConfigError(f"seed must be a whole number from 0 to 2**63 - 1, got {self.seed!r}")
        checks = {
            "batch_size": self.batch_size >= 1,
            "grad_accum": self.grad_accum >= 1,
            "max_steps": self.max_steps >= 1,
            "eval_every": self.eval_every >= 1,
            "eval_batches": self.eval_batches >= 1,
            "log_every": self.log_every >= 1,
            "ckpt_every": self.ckpt_every >= 1,
            "lr": self.lr > 0,
            "min_lr": 0 <= self.min_lr <= self.lr,
            "warmup_steps": self.warmup_steps >= 0,
            "decay_frac": 0 < self.decay_frac <= 1,
            "muon_lr": self.muon_lr > 0,
            "grad_clip": self.grad_clip >= 0,
            "threads": self.threads >= 0,
            "weight_decay": self.weight_decay >= 0,
            "beta1": 0 <= self.beta1 < 1,
            "beta2": 0 <= self.beta2 < 1,
            "muon_momentum": 0 <= self.muon_momentum < 1,
            "muon_weight_decay": self.muon_weight_decay >= 0,
        }
        if self.minutes is not None:
            checks["minutes"] = self.minutes > 0
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(
                f"invalid value for {', '.join(bad)}: " + ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
            )
        for key, valid in {"schedule": ("cosine", "wsd"), "optimizer": ("adamw", "muon")}.items():
            if getattr(self, key) not in valid:
                raise ConfigError(f"{key} must be one of {', '.join(valid)}, got {getattr(self, key)!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        typed, model_typed = _check_types(data, strings=True)
        try:
            return cls(model=GPTConfig.recipe(**model_typed), **typed)
        except (TypeError, ValueError) as e:
            raise ConfigError(str(e)) from None


def padded_vocab(n_tokens: int) -> int:
    """``n_tokens`` rounded up to a multiple of :data:`VOCAB_MULTIPLE` (GPT-2's 50,257 -> 50,304)."""
    return -(-n_tokens // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def fit_vocab(cfg: TrainConfig, data_vocab: int) -> TrainConfig:
    """``cfg`` with the model's vocabulary fitted to a data set of ``data_vocab`` tokens.

    A config that leaves ``model.vocab_size`` at its default (:data:`AUTO_VOCAB`, GPT-2's padded 50,304) gets
    the data set's vocabulary padded (:func:`padded_vocab`): 50,304 again for GPT-2's data, 4,096 for data
    prepared with ``--vocab 4096``, so a small own tokenizer never trains 46,000 rows no id can reach. Any
    other value is the user's and is kept (``data.TokenData`` refuses one below the data's largest id).
    """
    if cfg.model.vocab_size != AUTO_VOCAB or padded_vocab(data_vocab) == AUTO_VOCAB:
        return cfg  # the same object: a notebook that changes its config after making a Trainer sees it used
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=padded_vocab(data_vocab)))


def _check_types(data: dict[str, Any], strings: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """The top-level and model values of ``data``, checked against the fields' types. ``strings``: values may
    be text to parse (``--set``); False for a TOML file, whose values are typed."""
    data = dict(data)
    model = data.pop("model", {})
    if not isinstance(model, dict):
        raise ConfigError(f"model must be a table of model settings ([model] with n_layer = ..., ...), got {model!r}")
    _check_keys(data, TrainConfig, prefix="")
    _check_keys(model, GPTConfig, prefix="model.")
    top = {k: _coerce(k, v, _field_types(TrainConfig)[k], strings) for k, v in data.items()}
    return top, {k: _coerce(f"model.{k}", v, _field_types(GPTConfig)[k], strings) for k, v in model.items()}


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def valid_keys() -> list[str]:
    top = [k for k in _field_types(TrainConfig) if k != "model"]
    return top + [f"model.{k}" for k in _field_types(GPTConfig)]


def _check_keys(data: dict[str, Any], cls: type, prefix: str) -> None:
    unknown = sorted(set(data) - set(_field_types(cls)))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; valid keys: {', '.join(valid_keys())}"
        )


def _coerce(key: str, value: Any, kind: Any, strings: bool = True) -> Any:
    """Check ``value`` against the field's type; strings from ``--set`` are parsed (``strings``), while a
    TOML file's string ``"4"`` for a number is refused: TOML has numbers, and a quoted one is a mistake."""
    if not strings and isinstance(value, str) and kind is not str:
        raise ConfigError(
            f"{key} expects {getattr(kind, '__name__', kind)}, got the string {value!r} (write it without quotes)"
        )
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:  # e.g. int | None
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        kind = options[0]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif kind in (int, float):
        numbers = (int,) if kind is int else (int, float)  # an int may stand for a float, not the reverse
        if isinstance(value, numbers) and not isinstance(value, bool):
            return kind(value)
        if isinstance(value, str):
            try:
                return kind(value)
            except ValueError:
                pass
    elif kind is str and isinstance(value, str):
        return value
    raise ConfigError(f"{key} expects {getattr(kind, '__name__', kind)}, got {value!r}")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["lr=3e-4", "model.n_layer=6"]`` -> nested dict (values still strings; checked by from_dict)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {pair!r} is not key=value (e.g. --set lr=3e-4 or --set model.n_layer=6)")
        key = key.strip()
        if key.startswith("model."):
            out.setdefault("model", {})[key[len("model.") :]] = value.strip()
        else:
            out[key] = value.strip()
    return out


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = {**base, **{k: v for k, v in overrides.items() if k != "model"}}
    model = base.get("model", {})
    if not isinstance(model, dict):
        raise ConfigError(f"model must be a table of model settings ([model] with n_layer = ..., ...), got {model!r}")
    merged["model"] = {**model, **overrides.get("model", {})}
    return merged


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then the TOML file (if any), then ``key=value`` overrides; all type-checked."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except IsADirectoryError:
            raise ConfigError(f"--config {path} is a folder: name a TOML file, e.g. configs/default.toml") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}): save it as UTF-8") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from None
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror}") from None
        try:
            _check_types(data)  # the file's own types, before --set's strings join them
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    return TrainConfig.from_dict(merge(data, parse_overrides(overrides or [])))
