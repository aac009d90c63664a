"""Chapter 04's exercises (the GPT model): a bias-free LayerNorm, the parameter count of a config, what
Adafactor's factored second moment costs, and the memory of the full against the chunked loss.

The truths are measured here, never taken from the learner: ``nn.LayerNorm(bias=False)``, models built on the
``meta`` device and counted, a real ``torch.optim.Adafactor`` after one real step, and the bytes the two loss
paths hold at their peak, counted tensor by tensor as PyTorch creates and frees them (:func:`peak_bytes`).
While an answer runs, the library pieces that would answer it are switched off (see ``off=`` below).
"""

from __future__ import annotations

import numbers
import weakref
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ... import model as model_module
from ...loss import chunk_rows, linear_cross_entropy, reference_cross_entropy, release_buffers
from ...model import GPT, GPTConfig
from ...optim import Muon
from . import Wrong, exercise, expect
from .guard import fn, ops


def _changed(config: GPTConfig) -> str:
    """``GPTConfig(...)`` with the fields that differ from the defaults, as a learner would write it."""
    default = GPTConfig()
    diff = [
        f"{f.name}={getattr(config, f.name)!r}"
        for f in fields(config)
        if getattr(config, f.name) != getattr(default, f.name)
    ]
    return f"GPTConfig({', '.join(diff)})"


def _whole(n: Any, what: str) -> int:
    expect(
        isinstance(n, numbers.Real) and not isinstance(n, bool), f"{what} returned a {type(n).__name__}, not a number"
    )
    expect(float(n).is_integer(), f"{what} returned {n!r}, not a whole number")
    return int(n)


# ---- 04.1 ------------------------------------------------------------------------------------------------------


def _layer_norm_cases(C: int) -> list[tuple[str, torch.Tensor, float, str]]:
    """(what, input, tolerance, hint if it fails). Tolerances: float32 outputs of size ~1-4, where torch's own
    kernel is ~1e-6 from the exact value; rows of mean 100 carry ~6e-6 of rounding in each entry, which a
    correct two-pass formula turns into ~3e-5 (torch's own error there is ~1.5e-5), while E[x^2] - E[x]^2
    loses ~1e-2."""
    g = torch.Generator().manual_seed(0)
    return [
        (
            "inputs of mean 0 and std 1, shape (4, 7, C)",
            torch.randn(4, 7, C, generator=g),
            1e-5,
            "normalise over the last dimension, each position's C entries: subtract their mean, divide by their "
            "standard deviation, multiply by the gain",
        ),
        ("inputs of mean 3 and std 5", 3 + 5 * torch.randn(4, 7, C, generator=g), 1e-5, ""),
        ("a single vector, shape (C,)", torch.randn(C, generator=g), 1e-5, "normalise over the last dimension"),
        (
            "a 4-D input, shape (2, 3, 5, C)",
            torch.randn(2, 3, 5, C, generator=g),
            1e-5,
            "normalise over the last dimension",
        ),
        (
            "rows of mean 100",
            100 + torch.randn(4, 7, C, generator=g),
            2e-4,
            "subtract the mean before squaring: E[x^2] - E[x]^2 loses the digits in float32",
        ),
        (
            "rows with a tiny spread (std 0.001)",
            1e-3 * torch.randn(4, 7, C, generator=g),
            1e-5,
            "eps (1e-5) is added to the variance, inside the square root",
        ),
        (
            "constant rows (variance 0)",
            torch.full((3, C), 2.5),
            1e-5,
            "a constant row has variance 0: eps inside the square root keeps it finite",
        ),
    ]


def _norm_twins() -> list:
    return [
        ops(
            "layer_norm",
            "native_layer_norm",
            "group_norm",
            "native_group_norm",
            "instance_norm",
            "batch_norm",
            "native_batch_norm",
            "_native_batch_norm_legit",
            "_batch_norm_impl_index",
            label="torch's layer_norm and the other normalisation kernels (F., torch., torch.ops.aten.)",
        ),
        fn(nn.LayerNorm.forward, "nn.LayerNorm"),
        fn(nn.GroupNorm.forward, "nn.GroupNorm"),
    ]


@exercise(
    "04.1",
    "A LayerNorm without bias",
    "a class LayerNormNoBias(ndim) -> nn.Module with one learned gain `weight` of shape (ndim,) and no bias, "
    "equal to nn.LayerNorm(ndim, bias=False)",
    off=_norm_twins,
    why="normalise with your own mean and variance",
)
def _check_layer_norm(cls: Callable[[int], nn.Module]) -> str:
    C = 48
    m = cls(C)
    expect(isinstance(m, nn.Module), f"LayerNormNoBias({C}) is a {type(m).__name__}, not an nn.Module")
    params = dict(m.named_parameters())
    expect(not any("bias" in name for name in params), "it has a bias parameter: the point is to have none")
    expect(
        list(params) == ["weight"],
        f"its parameters are {sorted(params) or 'none'}: it should have exactly one, "
        "the gain `weight` (an nn.Parameter, so the optimizer trains it)",
    )
    w = params["weight"]
    expect(tuple(w.shape) == (C,), f"LayerNormNoBias({C}).weight has shape {tuple(w.shape)}, not ({C},)")
    expect(
        torch.equal(w.detach().cpu(), torch.ones(C)),
        "the gain does not start at 1: a fresh LayerNorm leaves the normalised vector unscaled",
    )
    ref = nn.LayerNorm(C, bias=False)
    gain = 1 + 0.3 * torch.randn(C, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        w.copy_(gain)
        ref.weight.copy_(gain)
    for what, x, tol, hint in _layer_norm_cases(C):
        with torch.no_grad():
            y, y_ref = m(x.clone()), ref(x)
        expect(
            isinstance(y, torch.Tensor) and tuple(y.shape) == tuple(x.shape),
            f"for {what} the output is not a tensor of the input's shape {tuple(x.shape)}",
        )
        y = y.float()
        expect(bool(torch.isfinite(y).all()), f"for {what} the output holds NaN or inf" + (f": {hint}" if hint else ""))
        err = (y - y_ref).abs().max().item()
        if err > tol:
            xc = x - x.mean(-1, keepdim=True)
            std = x.std(-1, keepdim=True, unbiased=False)
            for other, why in (
                (
                    xc / torch.sqrt(x.var(-1, keepdim=True, unbiased=True) + 1e-5),
                    "your variance divides by C - 1: nn.LayerNorm divides by C (the biased variance)",
                ),
                (xc / std, "eps is missing: nn.LayerNorm adds 1e-5 to the variance"),
                (xc / (std + 1e-5), "eps goes inside the square root, added to the variance"),
            ):
                expect((y - gain * other).abs().max() > tol, f"for {what} {why}")
            raise Wrong(
                f"for {what} the output differs from nn.LayerNorm(bias=False) by up to {err:.2g}"
                + (f": {hint}" if hint else "")
            )
    # the gain is learned: the same gradients as torch's, for the gain and for the input
    x = (2 + 3 * torch.randn(4, 7, C, generator=torch.Generator().manual_seed(2))).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    r = torch.randn(4, 7, C, generator=torch.Generator().manual_seed(3))
    out = m(x)
    expect(
        out.requires_grad and out.grad_fn is not None,
        "the gain got no gradient: keep the computation differentiable (no .detach(), no torch.no_grad())",
    )
    (out * r).sum().backward()
    (ref(x_ref) * r).sum().backward()
    expect(w.grad is not None, "the gain got no gradient: use self.weight in forward")
    # sums of 28 (gain) or 48 (input) float32 products of size ~1-4: ~1e-6; 1e-4 is room
    expect((w.grad - ref.weight.grad).abs().max() <= 1e-4, "the gain's gradient differs from nn.LayerNorm's")
    expect(
        x.grad is not None and (x.grad - x_ref.grad).abs().max() <= 1e-4,
        "the input's gradient differs from nn.LayerNorm's",
    )
    # and it slots into a model without biases
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=C, block_size=16, vocab_size=97, bias=False)).eval()
    idx = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        before, _ = model(idx, all_logits=True)
        for owner, name in [(b, n) for b in model.transformer.h for n in ("ln_1", "ln_2")] + [
            (model.transformer, "ln_f")
        ]:
            ours = cls(C)
            ours.weight.copy_(getattr(owner, name).weight)
            setattr(owner, name, ours)
        after, _ = model(idx, all_logits=True)
    # the same LayerNorm up to float32 rounding, through 2 blocks: 1e-5 on logits of size ~0.1-1
    expect((after - before).abs().max() <= 1e-5, "put in place of a bias-free GPT's LayerNorms, it changes the logits")
    return "It equals nn.LayerNorm(bias=False), gradients included, and a bias-free GPT's logits do not move."


# ---- 04.2 ------------------------------------------------------------------------------------------------------

_BASE = GPTConfig.gpt2()
_PARAM_CASES: list[tuple[GPTConfig, str]] = [  # one change at a time from GPT-2's layout, each with its hint
    (
        _BASE,
        "count wte, wpe, then per block ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj (weights "
        "and biases; a LayerNorm has a gain and a bias), then ln_f; the tied head adds nothing",
    ),
    (replace(_BASE, n_layer=2), "everything in a block is there once per layer"),
    (
        replace(_BASE, n_embd=64, n_head=2),
        "the widths scale with n_embd: c_attn is (3 n_embd, n_embd), c_fc is (4 n_embd, n_embd)",
    ),
    (replace(_BASE, n_head=8), "heads are slices of the same matrices: n_head changes no count"),
    (replace(_BASE, vocab_size=1000), "wte has vocab_size rows"),
    (replace(_BASE, block_size=256), "the learned position table wpe has block_size rows"),
    (replace(_BASE, pos="rope"), "RoPE rotates queries and keys: no position table"),
    (replace(_BASE, mlp="relu2"), "an activation has no parameters"),
    (replace(_BASE, logit_softcap=30.0), "soft-capping has no parameters"),
    (replace(_BASE, bias=False), "bias=False drops the biases of every Linear and every LayerNorm"),
    (replace(_BASE, tie_head=False), "an untied LM head is a matrix of its own, (vocab_size, n_embd)"),
    (replace(_BASE, qk_norm=True), "QK-norm adds two RMSNorm gains (queries, keys) of n_embd // n_head per layer"),
    (GPTConfig.recipe(), "the default recipe's model"),
    (GPTConfig.gpt2(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257), "GPT-2 small"),
    (
        GPTConfig(
            n_layer=3,
            n_head=3,
            n_embd=96,
            block_size=40,
            vocab_size=500,
            pos="rope",
            bias=False,
            tie_head=False,
            qk_norm=True,
        ),
        "every switch at once",
    ),
]


def _count(config: GPTConfig) -> int:
    with torch.device("meta"):  # shapes only: GPT-2 small costs no memory
        return GPT(config).num_params(non_embedding=False)


def _model_twins() -> list:
    """Every module of nanogpt_lib.model (GPT, Block, attention, MLP, ...): building one and counting its
    parameters would answer without reasoning from the config."""
    classes = [
        c
        for c in vars(model_module).values()
        if isinstance(c, type) and issubclass(c, nn.Module) and c.__module__ == model_module.__name__
    ]
    return [fn(c.__init__, f"nanogpt_lib.model.{c.__name__}") for c in classes] + [fn(GPT.num_params)]


@exercise(
    "04.2",
    "Count the parameters of a config",
    "a function count_params(config) -> int: the parameters of GPT(config) (the tied matrix once), from the "
    "config's numbers alone",
    off=_model_twins,
    why="count from the config's numbers (vocab_size, n_embd, n_layer, ...) without building a model",
)
def _check_count_params(count_params: Callable[[GPTConfig], int]) -> str:
    for config, hint in _PARAM_CASES:
        what = f"count_params({_changed(config)})"
        with torch.random.fork_rng(devices=[]):  # a model built in the answer leaves the caller's RNG alone
            n = _whole(count_params(replace(config)), what)
        truth = _count(config)
        if n != truth:
            raise Wrong(f"{what} is not GPT(config)'s count: {hint}")
    recipe = _count(replace(_BASE, pos="rope", mlp="relu2"))
    return f"All {len(_PARAM_CASES)} configs agree; the default recipe's model has {recipe:,} parameters."


# ---- 04.3 ------------------------------------------------------------------------------------------------------


def adafactor_after_one_step(config: GPTConfig) -> tuple[torch.optim.Optimizer, GPT]:
    """``torch.optim.Adafactor`` (its defaults) over every parameter of ``GPT(config)``, after one real step on
    a batch of 2 x 8 tokens; seeded here, the caller's RNG left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT(config)
        idx = torch.randint(0, config.vocab_size, (2, min(8, config.block_size)))
    opt = torch.optim.Adafactor(model.parameters(), lr=1e-2)
    _, loss = model(idx, idx)
    loss.backward()
    opt.step()
    return opt, model


def second_moment_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of the second-moment statistics an optimizer keeps: its state tensors other than step counters."""
    return sum(
        t.nbytes
        for state in opt.state.values()
        for k, t in state.items()
        if isinstance(t, torch.Tensor) and k != "step"
    )


_ADAFACTOR_CASES = [
    GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=256),
    GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=256, pos="rope", mlp="relu2"),
    GPTConfig(n_layer=3, n_head=2, n_embd=32, block_size=16, vocab_size=256, bias=False),
    GPTConfig(n_layer=1, n_head=4, n_embd=64, block_size=16, vocab_size=300, tie_head=False, qk_norm=True),
    GPTConfig(n_layer=1, n_head=2, n_embd=48, block_size=8, vocab_size=1000, pos="rope", bias=False),
]


def _optimizer_twins() -> list:
    factored = [
        fn(f, f"torch.optim.Adafactor.{n}")
        for n, f in vars(torch.optim.Adafactor).items()
        if callable(f) and n != "__init__"
    ]
    steps = [fn(c.step, f"{c.__name__}.step") for c in (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD, Muon)]
    functional = [
        fn(getattr(torch.optim._adafactor, n), f"torch.optim._adafactor.{n}")
        for n in ("adafactor", "_single_tensor_adafactor", "_multi_tensor_adafactor")
        if hasattr(torch.optim._adafactor, n)
    ]
    return factored + steps + functional + [fn(GPT.configure_optimizers)]


@exercise(
    "04.3",
    "What Adafactor's factored second moment costs",
    "a function adafactor_bytes(config) -> int: the bytes of the second-moment statistics "
    "torch.optim.Adafactor keeps for every parameter of GPT(config) (not its step counters)",
    off=_optimizer_twins,
    why="predict the state from the parameters' shapes, without stepping an optimizer",
)
def _check_adafactor_bytes(adafactor_bytes: Callable[[GPTConfig], int]) -> str:
    for config in _ADAFACTOR_CASES:
        what = f"adafactor_bytes({_changed(config)})"
        with torch.random.fork_rng(devices=[]):  # a model built in the answer leaves the caller's RNG alone
            n = _whole(adafactor_bytes(replace(config)), what)
        opt, model = adafactor_after_one_step(config)
        truth = second_moment_bytes(opt)
        if n == truth:
            continue
        params = list(model.parameters())
        full = sum(4 * p.numel() for p in params)  # a second moment per weight, as AdamW keeps
        tied = model.lm_head.weight.shape if config.tie_head else None
        for guess, why in (
            (
                full,
                "that is one number per weight, Adam's full second moment: Adafactor keeps a "
                "matrix's second moment factored, as statistics of its rows and of its columns",
            ),
            (truth + 4 * len(params), "it counts the step counters too (4 bytes per tensor)"),
            (
                truth + 4 * sum(tied) if tied else None,
                "the tied embedding and LM head are one tensor: it has one state",
            ),
        ):
            expect(n != guess, f"{what}: {why}")
        expect(n * 4 != truth, f"{what}: count bytes (4 per float32), not numbers")
        matrices = [p for p in params if p.dim() >= 2]
        expect(
            n != truth - 4 * sum(p.numel() for p in params if p.dim() < 2) or not any(p.dim() < 2 for p in params),
            f"{what}: the vectors (biases, gains) have a second moment too: a vector cannot be factored",
        )
        raise Wrong(
            f"{what} is not the bytes Adafactor keeps ({len(matrices)} matrices, "
            f"{len(params) - len(matrices)} vectors): look at opt.state[p] of a matrix and of a vector"
        )
    recipe = GPTConfig.recipe()
    with torch.device("meta"):
        shapes = [p.shape for p in GPT(recipe).parameters()]
    factored = sum(4 * (s[0] + s[1]) if len(s) == 2 else 4 * s.numel() for s in shapes)
    full = sum(4 * s.numel() for s in shapes)
    return (
        f"For the default recipe's model that is {factored / 1e3:.0f} kB against {full / 1e6:.1f} MB for "
        f"Adam's second moment ({full / factored:,.0f}x less): a (rows, cols) matrix keeps rows + cols "
        "numbers, not rows x cols."
    )


# ---- 04.4 ------------------------------------------------------------------------------------------------------


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of tensors, created while active, that ``keep`` selects: live now and at the peak.

    Each storage is judged by the tensor that creates it (a later view of it, say a transpose, counts nothing)
    and leaves the count when PyTorch frees it. Exact and the same on every machine, unlike the process's
    resident memory, which allocator caches and other threads move.
    """

    def __init__(self, keep: Callable[[torch.Tensor], bool]) -> None:
        super().__init__()
        self.keep = keep
        self.live: dict[int, int] = {}  # storage address -> bytes counted (0 if not kept)
        self.now = self.peak = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            address = storage.data_ptr()
            if address in self.live or storage.nbytes() == 0:
                continue
            counted = storage.nbytes() if self.keep(t) else 0
            self.live[address] = counted
            self.now += counted
            self.peak = max(self.peak, self.now)
            weakref.finalize(storage, self._free, address)
        return out

    def _free(self, address: int) -> None:
        self.now -= self.live.pop(address, 0)


def peak_bytes(fn: Callable[[], Any], keep: Callable[[torch.Tensor], bool]) -> int:
    """The most bytes that tensors selected by ``keep`` and created by ``fn`` held at once while ``fn`` ran."""
    tracker = _LiveBytes(keep)
    with tracker:
        fn()
    return tracker.peak


def loss_peaks(n_tokens: int, vocab_size: int, chunk: int, n_embd: int = 24) -> tuple[int, int]:
    """Measured (full, chunked): the peak bytes of float32 (positions, vocabulary) tensors during one loss and
    backward, for ``F.cross_entropy(h @ W.T, t)`` and for ``linear_cross_entropy(h, W, t, chunk=chunk)``."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(vocab_size, n_embd, generator=g)

    def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (
            torch.randn(n_tokens, n_embd, generator=g).requires_grad_(),
            W.clone().requires_grad_(),
            torch.randint(0, vocab_size, (n_tokens,), generator=g),
        )

    def full() -> None:
        h, w, t = inputs()
        reference_cross_entropy(h, w, t).backward()  # F.cross_entropy(h @ w.T, t)

    def chunked() -> None:
        h, w, t = inputs()
        linear_cross_entropy(h, w, t, chunk=chunk).backward()

    # (rows, vocabulary): rows are positions, never n_embd here (a (n_embd, vocab) tensor is W's gradient)
    def keep(t: torch.Tensor) -> bool:
        return t.dim() == 2 and t.size(1) == vocab_size and t.size(0) != n_embd

    release_buffers()  # the chunked path reuses a buffer across calls: start without one, so its bytes count
    try:
        return peak_bytes(full, keep), peak_bytes(chunked, keep)
    finally:
        release_buffers()


def _memory_twins() -> list:
    from torch.utils._python_dispatch import TorchDispatchMode

    return [
        fn(TorchDispatchMode.__enter__, "TorchDispatchMode (a memory tracker)"),
        fn(torch.profiler.profile.__init__, "torch.profiler"),
        fn(torch.autograd.profiler.profile.__init__, "torch.autograd.profiler"),
    ]


@exercise(
    "04.4",
    "The memory of the full and the chunked loss",
    "a function loss_memory(n_tokens, vocab_size, chunk) -> (full_bytes, chunked_bytes): the most bytes "
    "that float32 tensors of shape (positions, vocabulary) hold at once during one loss and backward, for "
    "F.cross_entropy(h @ W.T, targets) and for linear_cross_entropy(h, W, targets, chunk=chunk)",
    off=_memory_twins,
    why="predict the bytes from the shapes; measuring them is the check's job",
)
def _check_loss_memory(loss_memory: Callable[[int, int, int], tuple[int, int]]) -> str:
    for N, V, chunk in ((1000, 4096, 128), (300, 1000, 256), (50, 2048, 128), (999, 1000, 300)):
        what = f"loss_memory({N}, {V}, {chunk})"
        answer = loss_memory(N, V, chunk)
        expect(
            isinstance(answer, (tuple, list)) and len(answer) == 2,
            f"{what} returned {type(answer).__name__}, not a pair (full_bytes, chunked_bytes)",
        )
        full, chunked = (_whole(a, what) for a in answer)
        true_full, true_chunked = loss_peaks(N, V, chunk)
        if full != true_full:
            expect(full * 4 != true_full, f"{what}: the full path's count is in numbers, not bytes (4 per float32)")
            expect(
                full != true_full // 3,
                f"{what}: the full path holds more than its logits at the peak: count "
                "what autograd keeps for backward and the gradients backward makes",
            )
            raise Wrong(f"{what}: the full path's bytes are not what it holds at its peak")
        if chunked != true_chunked:
            expect(
                not (chunk > N and chunked == chunk * V * 4),
                f"{what}: with fewer tokens ({N}) than a chunk ({chunk}), how many rows does a chunk have?",
            )
            expect(chunked * 4 != true_chunked, f"{what}: the chunked path's count is in numbers, not bytes")
            expect(
                chunk >= N or chunked != N * V * 4,
                f"{what}: the chunked path never holds every position's logits, only one chunk's",
            )
            raise Wrong(f"{what}: the chunked path's bytes are not what it holds at its peak")
    N, V = 64 * 64, 50304
    full, chunked = loss_memory(N, V, chunk_rows(V))
    return (
        f"At the default batch (64 x 64 tokens, vocabulary {V:,}, chunks of {chunk_rows(V):,}): "
        f"{full / 1e9:.2f} GB for the full path, {chunked / 1e6:.0f} MB chunked."
    )
