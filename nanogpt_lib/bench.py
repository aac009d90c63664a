"""Side-by-side benchmarks that print figures and ratios (never timed tests, which flake).

Each figure is the median rate over ``repeats`` timed rounds, with the spread (min..max), measured in
one process so the two sides share the machine's state.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import math

import numpy as np
import torch
import torch.nn.functional as F

from . import paths


@dataclass
class Rate:
    """Items per second over repeated rounds."""

    name: str
    unit: str
    rates: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    def __str__(self) -> str:
        return (f"{self.name:<34} {self.median:>14,.1f} {self.unit}/s  "
                f"(spread {min(self.rates):,.1f}..{max(self.rates):,.1f}, n={len(self.rates)})")


def measure(name: str, unit: str, fn: Callable[[], Any], items_per_call: float, calls: int,
            repeats: int, warmup: int = 1) -> Rate:
    """Rate of ``fn`` in items/s: ``repeats`` rounds of ``calls`` calls each, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        rates.append(items_per_call * calls / (time.perf_counter() - start))
    return Rate(name, unit, rates)


def compare(title: str, ours: Rate, baseline: Rate) -> dict[str, Any]:
    ratio = ours.median / baseline.median
    print(f"== {title}\n  {ours}\n  {baseline}\n  ratio: {ratio:.2f}x")
    return {"title": title, "ours": asdict(ours), "baseline": asdict(baseline), "ratio": ratio}


def bench_data(folder: Path, batch_size: int = 64, block_size: int = 64, calls: int = 200,
               repeats: int = 5) -> dict[str, Any]:
    """Batches/s of :class:`TokenData` against a loader that reopens the memmap on every call."""
    from .data import TokenData, naive_get_batch

    data = TokenData(folder, block_size)
    k = iter(range(10**9))
    rng = np.random.default_rng(0)
    ours = measure("TokenData.get_batch", "batch", lambda: data.get_batch("train", next(k), batch_size),
                   1, calls, repeats)
    naive = measure("naive per-call memmap loader", "batch",
                    lambda: naive_get_batch(folder, "train", batch_size, block_size, rng), 1, calls, repeats)
    return compare(f"batch loader, B={batch_size} T={block_size}", ours, naive)


def bench_prepare(repeats: int = 3) -> dict[str, Any]:
    """Tokens/s of ``prepare`` on the shipped corpus (into a temporary folder, so data/ is untouched)."""
    from .prepare import PrepareConfig, prepare

    tokens, rates = 0, []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            meta = prepare(PrepareConfig(data_dir=Path(tmp)))
            elapsed = time.perf_counter() - start
        tokens = meta["splits"]["train"]["tokens"] + meta["splits"]["val"]["tokens"]
        rates.append(tokens / elapsed)
    rate = Rate(f"prepare shakespeare ({tokens:,} tokens)", "token", rates)
    print(f"== prepare throughput\n  {rate}")
    return {"title": "prepare throughput", "ours": asdict(rate)}


def naive_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The same GPT written out plainly in fp32: attention as explicit matmuls, mask and softmax, and a
    full log-softmax over the 50k vocabulary (the training benchmark's baseline)."""
    tr, cfg = model.transformer, model.config
    B, T = x.shape
    C, H = cfg.n_embd, cfg.n_head
    h = tr.wte(x) + tr.wpe(torch.arange(T, device=x.device))
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device))
    for block in tr.h:
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in block.attn.c_attn(block.ln_1(h)).split(C, dim=2))
        att = ((q @ k.transpose(-2, -1)) / math.sqrt(C // H)).masked_fill(~mask, float("-inf")).softmax(dim=-1)
        h = h + block.attn.c_proj((att @ v).transpose(1, 2).reshape(B, T, C))
        h = h + block.mlp.c_proj(F.gelu(block.mlp.c_fc(block.ln_2(h)), approximate="tanh"))
    logits = tr.ln_f(h) @ tr.wte.weight.t()
    return -logits.log_softmax(dim=-1).gather(-1, y[..., None]).mean()


def bench_train(steps: int = 5, repeats: int = 3, batch_size: int = 64, loss_steps: int = 30) -> dict[str, Any]:
    """Training tokens/s of the library's default path (precision chosen by measurement, chunked LM-head
    loss) against :func:`naive_loss` in fp32, at the default config; then the loss each reaches after
    ``loss_steps`` steps from the same init on the same batches (faster must not mean worse)."""
    from .config import TrainConfig
    from .data import TokenData
    from .devices import choose_precision
    from .model import GPT, GPTConfig

    cfg = TrainConfig(model=GPTConfig(), optimizer="adamw", lr=1e-3)  # GPT-2: the model naive_loss writes out
    data = TokenData(paths.data_dir() / cfg.dataset, cfg.model.block_size, cfg.model.vocab_size)
    precision = choose_precision(torch.device("cpu"), "auto")

    def make(seed: int = 0) -> tuple[GPT, torch.optim.Optimizer]:
        torch.manual_seed(seed)
        model = GPT(cfg.model)
        return model, model.configure_optimizers(cfg.weight_decay, cfg.lr, (cfg.beta1, cfg.beta2), "cpu")[0]

    def stepper(fast_path: bool) -> Callable[[], float]:
        model, opt = make()
        k = iter(range(10**9))

        def step() -> float:
            x, y = data.get_batch("train", next(k), batch_size, cfg.seed)
            if fast_path:
                with torch.autocast("cpu", dtype=precision.dtype, enabled=precision.autocast):
                    _, loss = model(x, y)
            else:
                loss = naive_loss(model, x, y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.item()
        return step

    tokens = batch_size * cfg.model.block_size
    ours = measure(f"library default ({precision.name}, chunked CE)", "token", stepper(True), tokens, steps, repeats)
    naive = measure("naive fp32 (eager attention, full CE)", "token", stepper(False), tokens, steps, repeats)
    result = compare(f"training step, B={batch_size} T={cfg.model.block_size}, {torch.get_num_threads()} threads",
                     ours, naive)
    # The default recipe trains a different model (RoPE, ReLU^2) with another optimizer (Muon): its speed
    # per token, for scale; its gain is in steps to a loss (README "Experiments"), not tokens/s.
    recipe = TrainConfig()
    torch.manual_seed(0)
    recipe_model = GPT(recipe.model)
    recipe_opts = recipe_model.configure_optimizers(recipe.weight_decay, recipe.lr, (recipe.beta1, recipe.beta2),
                                                    "cpu", recipe.optimizer, recipe.muon_lr, recipe.muon_momentum)
    k = iter(range(10**9))

    def recipe_step() -> None:
        x, y = data.get_batch("train", next(k), batch_size, cfg.seed)
        with torch.autocast("cpu", dtype=precision.dtype, enabled=precision.autocast):
            _, loss = recipe_model(x, y)
        loss.backward()
        for opt in recipe_opts:
            opt.step()
            opt.zero_grad(set_to_none=True)

    default = measure("default recipe (RoPE, ReLU^2, Muon)", "token", recipe_step, tokens, steps, repeats)
    print(f"  {default}")
    result["default_recipe"] = {"median": default.median, "min": min(default.rates), "max": max(default.rates)}
    final = {}
    for label, fast_path in (("library default", True), ("naive fp32", False)):
        step = stepper(fast_path)
        final[label] = [step() for _ in range(loss_steps)][-1]
    print(f"  loss after {loss_steps} steps from the same init: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()))
    result["loss_after_steps"] = {"steps": loss_steps, **final}
    return result


def bench_sample(new_tokens: int = 200, repeats: int = 3,
                 block_sizes: tuple[int, ...] = (64, 256, 1024)) -> dict[str, Any]:
    """Greedy sampling tokens/s with the KV cache against recomputing the whole window each token, from a
    prompt half a block long (so the window is well filled, and slides at the small block sizes)."""
    from .model import GPT, GPTConfig
    from .sample import generate

    results = {}
    for block in block_sizes:
        torch.manual_seed(0)
        model = GPT(GPTConfig(block_size=block)).eval()
        prompt = torch.randint(0, 50257, (1, block // 2))

        def sampler(cache: bool, model: GPT = model, prompt: torch.Tensor = prompt) -> Callable[[], Any]:
            return lambda: generate(model, prompt, new_tokens, temperature=0, use_cache=cache)

        ours = measure("KV cache", "token", sampler(True), new_tokens, 1, repeats)
        naive = measure("recompute the context", "token", sampler(False), new_tokens, 1, repeats)
        results[f"block_{block}"] = compare(f"sampling {new_tokens} tokens, block_size {block}", ours, naive)
    return results


def run(which: list[str], fast: bool = False, out: Path | None = None) -> dict[str, Any]:
    """Run the named benchmarks and write their figures to ``out`` as JSON."""
    from .prepare import PrepareConfig, prepare

    results: dict[str, Any] = {}
    if "data" in which or "train" in which:
        prepare(PrepareConfig())  # both read data/shakespeare; a no-op when it is current
    if "data" in which:
        results["data"] = bench_data(paths.data_dir() / "shakespeare", calls=20 if fast else 200,
                                     repeats=2 if fast else 5)
    if "prepare" in which:
        results["prepare"] = bench_prepare(repeats=1 if fast else 3)
    if "train" in which:
        results["train"] = bench_train(steps=1 if fast else 5, repeats=1 if fast else 3,
                                       batch_size=8 if fast else 64, loss_steps=2 if fast else 30)
    if "sample" in which:
        results["sample"] = bench_sample(new_tokens=20 if fast else 200, repeats=1 if fast else 3,
                                         block_sizes=(64,) if fast else (64, 256, 1024))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
        print(f"figures written to {out}")
    return results
