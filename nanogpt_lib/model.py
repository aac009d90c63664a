"""A GPT-2-style language model in one file: config, layers, the model, its optimizers and GPT-2 import.

The names follow GPT-2 (``transformer.wte``, ``transformer.h.{i}.attn.c_attn``, ...) so that OpenAI's weights
map onto it one to one, and the whole model reads top to bottom as in "Attention Is All You Need" with
GPT-2's changes: learned positions, LayerNorm before each sub-layer, a final LayerNorm, a tied LM head.

Later variants are switches in :class:`GPTConfig`, all off in ``GPTConfig.gpt2()`` (GPT-2 as published; the
default recipe's ``GPTConfig.recipe()`` turns on RoPE and ReLU²): rotary
positions (RoPE, Su et al. 2021), ReLU-squared MLP (So et al. 2021, "Primer"), QK-norm (Henry et al. 2020),
an untied LM head, and tanh soft-capping of the logits (Gemma 2). The optimizers (AdamW, and Muon from
``optim.py``) are set up in :meth:`GPT.configure_optimizers`. The chunked LM-head loss is in ``loss.py``; the
sampling loop (temperature, top-k, top-p, KV cache, sliding window) in ``sample.py``.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file
from torch.nn import functional as F

from . import fused
from .loss import linear_cross_entropy
from .optim import Muon

KV = tuple[torch.Tensor, torch.Tensor]  # one layer's cached keys and values, each (B, n_head, T, head_dim)


# The switches the default training recipe turns on (the measured winners: notebooks/08_experiments.ipynb,
# experiments/README.md): rotary positions and a ReLU^2 MLP. ``GPTConfig.recipe()`` is that model.
RECIPE_SWITCHES: dict[str, Any] = {"pos": "rope", "mlp": "relu2"}


@dataclass
class GPTConfig:
    """The model's shape and variant switches, at the workbook's seed size (about 7M parameters).

    Two models have a name, so that code says which one it means:

    - :meth:`GPTConfig.gpt2` is GPT-2's architecture as published (learned positions, GELU, biases, a tied
      head). It is also what a bare ``GPTConfig()`` gives: every switch off. That is on purpose: a weights
      file whose ``config.json`` predates a switch has no key for it, and ``from_dict`` fills the missing keys
      from these defaults, so old exports and checkpoints load as the GPT-2 they are; the course builds
      GPT-2 first and turns switches on one by one; GPT-2 imports, the baselines and benchmarks mean it.
    - :meth:`GPTConfig.recipe` is the model the course trains and ships (``TrainConfig().model``): GPT-2 with
      the :data:`RECIPE_SWITCHES` on (RoPE, ReLU²).
    """

    block_size: int = 64  # longest context, in tokens
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64: faster matmuls, unused rows
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm, as in GPT-2
    # variants (defaults = GPT-2)
    pos: str = "learned"  # "learned" position table (wpe) | "rope": rotate queries and keys by position
    mlp: str = "gelu"  # "gelu" (tanh approximation) | "relu2": relu(x)**2
    qk_norm: bool = False  # RMS-normalise each head's queries and keys (with a learned gain) before attention
    tie_head: bool = True  # the LM head shares wte's matrix; False gives it its own, zero-initialised
    logit_softcap: float = 0.0  # > 0: logits = cap * tanh(logits / cap); 0 = off

    def __post_init__(self) -> None:
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                "each head gets n_embd // n_head dimensions"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        choices = {"pos": ("learned", "rope"), "mlp": ("gelu", "relu2")}
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"GPTConfig.{name} must be one of {', '.join(valid)}, got {getattr(self, name)!r}")
        if self.pos == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"RoPE rotates pairs of dimensions: head size {self.n_embd // self.n_head} must be even")
        if not self.logit_softcap >= 0:
            raise ValueError(f"GPTConfig.logit_softcap must be >= 0 (0 = off), got {self.logit_softcap!r}")

    @classmethod
    def gpt2(cls, **overrides: Any) -> GPTConfig:
        """GPT-2's architecture as published, every variant switch off (the same as a bare ``GPTConfig()``)."""
        return cls(**overrides)

    @classmethod
    def recipe(cls, **overrides: Any) -> GPTConfig:
        """The default recipe's model (``TrainConfig().model``): GPT-2 plus RoPE and ReLU²; ``overrides`` win."""
        return cls(**{**RECIPE_SWITCHES, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(f"unknown GPTConfig key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
        return cls(**d)


class Rotary(nn.Module):
    """RoPE: rotate each pair (m, m + head_dim/2) of a head's dimensions by position * frequency m.

    The score q_i . k_j then depends on i - j alone, so the model learns relative positions and needs no
    position table. A pair is one dimension of the first half and its twin in the second half (the "rotate
    half" layout of GPT-NeoX and Llama's Hugging Face port), not two neighbours (even, odd) as in the paper:
    the two layouts are the same rotation of permuted dimensions, and halves need no interleaving.
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # derived, so not in checkpoints

    def forward(self, x: torch.Tensor, t0: int = 0) -> torch.Tensor:
        """Rotate ``x`` (B, n_head, T, head_dim) whose first position is ``t0``."""
        pos = torch.arange(t0, t0 + x.size(2), device=x.device, dtype=torch.float32)
        angles = torch.outer(pos, self.inv_freq)  # (T, head_dim / 2)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        # cat([x1 cos - x2 sin, x1 sin + x2 cos]) for the halves x1, x2 of x, backward by hand (fused.py)
        return fused.rotate(x, cos, sin)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees itself and the positions before it."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout
        head_dim = config.n_embd // config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.rotary = Rotary(head_dim) if config.pos == "rope" else None
        if config.qk_norm:
            self.q_norm, self.k_norm = nn.RMSNorm(head_dim), nn.RMSNorm(head_dim)

    def qkv(self, x: torch.Tensor, t0: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each head's queries, keys and values of ``x`` (B, T, C), each (B, n_head, T, head_dim), the first
        position at ``t0``: QK-norm and RoPE applied, what the scores are made from (the attention explorer
        recomputes the weights from them, since the fused kernel never hands them out)."""
        B, T, C = x.size()
        q, k, v = (
            t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            for t in self.c_attn(x).split(self.n_embd, dim=2)
        )
        if hasattr(self, "q_norm"):  # gains cast to q's dtype: under autocast q is bf16, and mixed is slow
            q, k = (
                fused.rms_norm(t, norm.weight.to(t.dtype), norm.eps)  # F.rms_norm, backward by hand
                for t, norm in ((q, self.q_norm), (k, self.k_norm))
            )
        if self.rotary is not None:  # cached keys are stored rotated, at their own positions
            q, k = self.rotary(q, t0), self.rotary(k, t0)
        return q, k, v

    def forward(self, x: torch.Tensor, past: KV | None = None) -> tuple[torch.Tensor, KV]:
        """``past`` holds the keys/values of earlier positions (KV cache); returns them extended by ``x``'s."""
        B, T, C = x.size()
        q, k, v = self.qkv(x, 0 if past is None else past[0].size(2))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        dropout = self.dropout if self.training else 0.0
        if past is None and _explicit_attention(q, dropout):
            y = fused.causal_attention(q, k, v)  # the formula below with T = S, backward by hand (fused.py)
        elif past is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        else:
            # Decoding: the T new queries sit at the end of the S keys, query i sees keys up to S - T + i.
            # For a query or a few, plain matmuls beat the fused kernel's fixed cost (7 ms -> 0.05 ms on CPU).
            S = k.size(2)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            if T > 1:
                mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)
                att = att.masked_fill(~mask, float("-inf"))
            y = att.softmax(dim=-1) @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
        return self.resid_dropout(self.c_proj(y)), (k, v)


def _explicit_attention(q: torch.Tensor, dropout: float) -> bool:
    """Whether a whole block's causal attention is computed by plain matmuls (:func:`fused.causal_attention`)
    instead of the fused kernel: on a CPU, in bf16 or fp16 (under autocast), without dropout, at blocks of at
    most 128 positions.

    There the fused kernel's backward was most of the trunk's: at B=64, T=64, 4 heads of 32, bf16, one thread
    of an AVX512-BF16 CPU, forward + backward took 153 ms against 52 ms with plain matmuls (and 108 ms with
    SDPA's own math backend), the whole trunk's backward 2.7x its forward. The matmuls see bf16
    probabilities where the fused kernel keeps them in float32: errors of 5e-3 against 3e-3 of the largest
    gradient entry (both bf16's 2^-8 rounding, measured against float64). In float32 the fused kernel was
    the faster (59 ms against 75) and stays; longer blocks keep it too, since the (T, T) scores grow with T.
    """
    return q.is_cpu and q.dtype in (torch.bfloat16, torch.float16) and dropout == 0.0 and q.size(2) <= 128


class ReLU2(nn.Module):
    """relu(x)^2: as cheap as ReLU, and once differentiable at 0 (slope 2 relu(x), continuous; the second
    derivative jumps from 0 to 2), where ReLU has a kink; trained faster in Primer's search."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused.relu_squared(x)  # F.relu(x).square(), backward by hand (fused.py)


class MLP(nn.Module):
    """Position-wise feed-forward network, 4x wide, with GPT-2's tanh-approximated GELU (or ReLU^2)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.act = nn.GELU(approximate="tanh") if config.mlp == "gelu" else ReLU2()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    """One transformer layer: pre-LayerNorm attention then MLP, each added to the residual stream."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, past: KV | None = None) -> tuple[torch.Tensor, KV]:
        a, kv = self.attn(self.ln_1(x), past)
        x = x + a
        return x + self.mlp(self.ln_2(x)), kv


class GPT(nn.Module):
    """Decoder-only transformer language model (GPT-2 architecture, with :class:`GPTConfig`'s switches).

    Besides ``config``, two attributes say where a model's weights came from; ``sample.load_model`` fills
    them, and a model built here keeps the empty defaults:

    - ``meta``: what its weights file records (``"step"``, ``"val_loss"``, ``"model"``, ``"tokenizer"`` ...);
    - ``tokenizer``: the tiktoken encoding its ids mean; None here stands for GPT-2's (``sample.encoding_of``).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.meta: dict[str, Any] = {}
        self.tokenizer: Any = None
        layers = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))  # token embeddings
        if config.pos == "learned":  # learned position embeddings; RoPE rotates q and k in attention instead
            layers["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        self.transformer = nn.ModuleDict(
            dict(
                **layers,
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_head:
            self.transformer.wte.weight = self.lm_head.weight  # weight tying: one matrix reads and writes tokens
        self.apply(self.init_weights)
        # GPT-2: scale the projections that write into the residual stream, whose variance grows with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if not config.tie_head:  # every token starts equally likely (loss ln V); the head learns from step 1
            nn.init.zeros_(self.lm_head.weight)

    @staticmethod
    def init_weights(module: nn.Module) -> None:
        """GPT-2's initialisation of one module (``model.apply(GPT.init_weights)``): Linear and Embedding
        weights N(0, 0.02), Linear biases 0. Public so that a model written by hand starts where ours does;
        ``GPT.__init__`` then shrinks the residual projections (``c_proj``) by 1/sqrt(2 n_layer)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    # ---- forward ----------------------------------------------------------------------------------

    def trunk(self, idx: torch.Tensor, past: list[KV] | None = None) -> tuple[torch.Tensor, list[KV]]:
        """Everything before the LM head: ``(h, present)``, the final-LayerNorm hidden states (B, T, n_embd) of
        ``idx`` (B, T) placed after the ``past`` positions if given, and each layer's keys and values so far.

        Sampling feeds ``present`` back as ``past`` (a KV cache: one new token per step); the loss and the
        explorers take ``h`` alone (:meth:`hidden`).
        """
        t0 = 0 if past is None else past[0][0].size(2)
        T = idx.size(1)
        if t0 + T > self.config.block_size:
            raise ValueError(f"sequence of {t0 + T} tokens is longer than block_size {self.config.block_size}")
        x = self.transformer.wte(idx)
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe(torch.arange(t0, t0 + T, dtype=torch.long, device=idx.device))
        x = self.transformer.drop(x)
        present = []
        for i, block in enumerate(self.transformer.h):
            x, kv = block(x, None if past is None else past[i])
            present.append(kv)
        return self.transformer.ln_f(x), present

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T, n_embd) states before the LM head, e.g. for a loss computed in chunks of positions."""
        return self.trunk(idx)[0]

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, all_logits: bool = False
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(logits, loss)``: the mean next-token cross-entropy over ``targets`` (-1 is ignored).

        With targets, the loss comes from :func:`linear_cross_entropy`, which never holds the (B, T, vocab)
        logits (the LM head and its loss are most of a step at n_embd 128), and logits are None unless
        ``all_logits``. Without targets only the last position goes through the LM head (all that sampling
        needs), unless ``all_logits``.
        """
        h = self.hidden(idx)
        if targets is not None and not all_logits:
            return None, linear_cross_entropy(
                h.view(-1, h.size(-1)), self.lm_head.weight, targets.view(-1), softcap=self.config.logit_softcap
            )
        logits = self.logits(h if all_logits else h[:, [-1], :])
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """The LM head on hidden states, soft-capped if the config says so."""
        logits = self.lm_head(h)
        cap = self.config.logit_softcap
        return cap * torch.tanh(logits / cap) if cap > 0 else logits

    # ---- bookkeeping ------------------------------------------------------------------------------

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; ``non_embedding`` drops the lookup tables: the position table, and wte when the
        head is untied (tied, wte is also the LM head's matmul, so it stays)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= sum(self.transformer[k].weight.numel() for k in ("wpe",) if k in self.transformer)
            n -= 0 if self.config.tie_head else self.transformer.wte.weight.numel()
        return n

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward), PaLM appendix B: 6N + 12 L H Q T.

        6N: a multiply-add (2 FLOPs) per weight forward, twice that backward, N = num_params() which holds
        wte, so the tied LM head matmul is counted (the embedding lookup itself is free). 12LHQT: the
        attention scores and weighted sum over a full block, counted as if unmasked. LayerNorm, GELU and
        softmax are left out.
        """
        c = self.config
        return 6 * self.num_params() + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * c.block_size

    def estimate_mfu(self, tokens_per_s: float, peak_flops: float) -> float:
        """Model FLOPs utilisation: achieved training FLOP/s as a fraction of the device's peak."""
        return self.flops_per_token() * tokens_per_s / peak_flops

    def configure_optimizers(
        self,
        weight_decay: float,
        lr: float,
        betas: tuple[float, float],
        device_type: str,
        optimizer: str = "adamw",
        muon_lr: float = 0.02,
        muon_momentum: float = 0.95,
        ns_dtype: torch.dtype = torch.float32,
        muon_weight_decay: float = 0.0,
    ) -> list[torch.optim.Optimizer]:
        """The optimizers of one step, as a list.

        ``adamw``: one AdamW that decays matrices (matmul weights, embeddings), not biases or gains.
        ``muon``: Muon (momentum, then the update orthogonalised by Newton-Schulz) for the blocks' 2-D
        weights, with AdamW as above for the embeddings, the LM head, biases and gains, which Muon is not
        meant for. Muon's weights are decayed by ``muon_weight_decay`` (decoupled, at Muon's rate; 0 by default:
        its updates have a fixed size, and decay is another knob).
        Each group keeps its base rate in ``base_lr`` so a schedule can scale all of them together.
        ``ns_dtype``: the dtype of Muon's Newton-Schulz matmuls, bf16 only where bf16 measured faster (the
        trainer passes its precision's).
        """
        if optimizer not in ("adamw", "muon"):
            raise ValueError(f"optimizer must be adamw or muon, got {optimizer!r}")
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        hidden = [p for n, p in named if optimizer == "muon" and p.dim() == 2 and n.startswith("transformer.h.")]
        rest = [p for n, p in named if not any(p is q for q in hidden)]
        groups = [
            {"params": [p for p in rest if p.dim() >= 2], "weight_decay": weight_decay, "base_lr": lr},
            {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0, "base_lr": lr},
        ]
        # The fused kernel on CUDA only. On a CPU it measured 8 ms a step against 29-39 ms for the per-tensor loop
        # (7.2M parameters, 1 thread, AVX2: ~1% of a step), but two torchrun ranks with fused CPU AdamW disagreed
        # on a pause and hung (tests/test_faults_train.py, torch 2.13), so the CPU keeps the default loop.
        fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
        opts: list[torch.optim.Optimizer] = [
            torch.optim.AdamW(groups, lr=lr, betas=betas, **({"fused": True} if fused else {}))
        ]
        if optimizer == "muon":
            opts.append(
                Muon(
                    [{"params": hidden, "base_lr": muon_lr}],
                    lr=muon_lr,
                    momentum=muon_momentum,
                    weight_decay=muon_weight_decay,
                    ns_dtype=ns_dtype,
                )
            )
        return opts

    def crop_block_size(self, block_size: int) -> None:
        """Shrink the context (e.g. an imported GPT-2's 1024) by keeping the first position embeddings."""
        if not 1 <= block_size <= self.config.block_size:
            raise ValueError(f"block_size must be in 1..{self.config.block_size}, got {block_size}")
        self.config = replace(self.config, block_size=block_size)
        if "wpe" not in self.transformer:  # RoPE has no table to crop
            return
        wpe = self.transformer.wpe
        wpe.weight = nn.Parameter(wpe.weight.detach()[:block_size].clone())
        wpe.num_embeddings = block_size

    # ---- GPT-2 import -----------------------------------------------------------------------------

    @classmethod
    def from_pretrained_dir(cls, path: str | Path) -> GPT:
        """A GPT from a local Hugging Face GPT-2 folder: ``config.json`` + ``model.safetensors`` or
        ``pytorch_model.bin``. The vocabulary keeps the checkpoint's size (50257 for GPT-2, no padding)."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"no GPT-2 folder at {path}")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path / 'config.json'} is missing: it holds the model's shape")
        hf = json.loads((path / "config.json").read_text())
        if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"{path}: activation_function {hf['activation_function']!r} is not GPT-2's tanh GELU")
        try:
            config = GPTConfig.gpt2(
                block_size=hf.get("n_positions", hf.get("n_ctx")),
                vocab_size=hf["vocab_size"],
                n_layer=hf["n_layer"],
                n_head=hf["n_head"],
                n_embd=hf["n_embd"],
            )
        except KeyError as e:
            raise ValueError(f"{path / 'config.json'} lacks {e.args[0]!r}; is it a GPT-2 config?") from None
        if (path / "model.safetensors").is_file():
            state = load_file(path / "model.safetensors")
        elif (path / "pytorch_model.bin").is_file():
            state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        else:
            raise FileNotFoundError(f"no weights in {path}: expected model.safetensors or pytorch_model.bin")

        conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        sd: dict[str, torch.Tensor] = {}
        for k, v in state.items():
            if k.endswith((".attn.bias", ".attn.masked_bias")):  # causal-mask buffers, not weights
                continue
            key = k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k
            sd[key] = v.t() if key.endswith(conv1d) else v  # GPT-2's Conv1D stores (in, out)
        head = sd.pop("lm_head.weight", None)
        model = cls(config)
        ours = model.state_dict()
        expected = set(ours) - {"lm_head.weight"}
        if set(sd) != expected:
            raise ValueError(
                f"{path} does not hold GPT-2 weights: missing {sorted(expected - set(sd))[:5]}, "
                f"unexpected {sorted(set(sd) - expected)[:5]}"
            )
        for k, v in sd.items():
            if v.shape != ours[k].shape:
                raise ValueError(f"{path}: {k} has shape {tuple(v.shape)}, config.json implies {tuple(ours[k].shape)}")
        if head is not None and not torch.equal(head, sd["transformer.wte.weight"]):
            raise ValueError(f"{path}: lm_head.weight differs from wte; only a tied LM head is supported")
        with torch.no_grad():
            for k, v in sd.items():
                ours[k].copy_(v)
        return model
