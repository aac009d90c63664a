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

import numpy as np
import torch

from .. import paths


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
        return (
            f"{self.name:<34} {self.median:>14,.1f} {self.unit}/s  "
            f"(spread {min(self.rates):,.1f}..{max(self.rates):,.1f}, n={len(self.rates)})"
        )


def measure(
    name: str, unit: str, fn: Callable[[], Any], items_per_call: float, calls: int, repeats: int, warmup: int = 1
) -> Rate:
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


def bench_data(
    folder: Path, batch_size: int = 64, block_size: int = 64, calls: int = 200, repeats: int = 5
) -> dict[str, Any]:
    """Batches/s of :class:`TokenData` against a loader that reopens the memmap on every call."""
    from ..data import TokenData
    from .baseline import naive_get_batch

    data = TokenData(folder, block_size)
    k = iter(range(10**9))
    rng = np.random.default_rng(0)
    ours = measure(
        "TokenData.get_batch", "batch", lambda: data.get_batch("train", next(k), batch_size), 1, calls, repeats
    )
    naive = measure(
        "naive per-call memmap loader",
        "batch",
        lambda: naive_get_batch(folder, "train", batch_size, block_size, rng),
        1,
        calls,
        repeats,
    )
    return compare(f"batch loader, B={batch_size} T={block_size}", ours, naive)


def bench_prepare(repeats: int = 3) -> dict[str, Any]:
    """Tokens/s of ``prepare`` on the shipped corpus (into a temporary folder, so data/ is untouched)."""
    from ..prepare import PrepareConfig, prepare

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


def _train_stepper(
    make: Callable[[], tuple[torch.nn.Module, Callable, list[torch.optim.Optimizer]]],
    data: Any,
    batch_size: int,
    seed: int,
    clip: float,
) -> Callable[[], torch.Tensor]:
    """One training step per call, the trainer's own (``step.train_step``): a batch, forward and loss, backward,
    gradient clipping, each optimizer's step, ``zero_grad(set_to_none=True)``. Batch k is the same for every
    row."""
    from ..step import train_step

    model, loss_of, opts = make()
    k = iter(range(10**9))

    def step() -> torch.Tensor:
        return train_step(
            model,
            opts,
            lambda _micro: data.get_batch("train", next(k), batch_size, seed),
            loss_of=loss_of,
            grad_clip=clip,
        )

    return step


def bench_train(
    steps: int = 5, repeats: int = 3, batch_size: int = 64, loss_steps: int = 20, compiled: bool = True
) -> dict[str, Any]:
    """Training tokens/s, side by side in one process with the rounds interleaved:

    - the baseline (:class:`~.baseline.PlainGPT`: fp32, full logits and ``F.cross_entropy``, plain AdamW),
    - ours with the GPT-2 architecture and AdamW (the precision chosen by measurement, the chunked loss),
    - ours with the default recipe (RoPE, ReLU^2, Muon), eager and (``compiled``) under ``torch.compile``,
      whose compile time is printed apart.

    Then the baseline and our GPT-2 from the same weights on the same batches: their first losses agree
    (the same function), and after ``loss_steps`` steps neither is worse (faster must not mean worse).
    """
    from ..config import TrainConfig
    from ..data import TokenData
    from ..devices import choose_precision, cpu_class
    from ..loss import chunk_rows
    from ..model import GPT, GPTConfig
    from ..optim import build_optimizers
    from .baseline import PlainGPT

    recipe = TrainConfig()
    gpt2 = TrainConfig(model=GPTConfig.gpt2(), optimizer="adamw")  # GPT-2 as published: what the baseline writes
    data = TokenData(paths.data_dir() / recipe.dataset, recipe.model.block_size, recipe.model.vocab_size)
    precision = choose_precision(torch.device("cpu"), "auto")
    ns_dtype = precision.dtype if precision.autocast else torch.float32
    tokens = batch_size * recipe.model.block_size
    print(
        f"CPU class {cpu_class()}, {torch.get_num_threads()} threads, torch {torch.__version__}; precision "
        f"{precision.name} (bf16 is used where it measured faster), LM-head loss in chunks of "
        f"{chunk_rows(recipe.model.vocab_size)} rows; B={batch_size} T={recipe.model.block_size}"
    )

    def baseline() -> tuple[torch.nn.Module, Callable, list[torch.optim.Optimizer]]:
        torch.manual_seed(0)
        weights = GPT(gpt2.model).state_dict()  # our GPT-2's initialisation: both start from the same weights
        model = PlainGPT(gpt2.model)
        model.load_state_dict(weights)
        return model, model, [model.optimizer(gpt2.lr, gpt2.weight_decay, (gpt2.beta1, gpt2.beta2))]

    def ours(cfg: TrainConfig, compile_it: bool = False) -> Callable[[], Any]:
        def make() -> tuple[torch.nn.Module, Callable, list[torch.optim.Optimizer]]:
            torch.manual_seed(0)
            model = GPT(cfg.model)
            opts = build_optimizers(model, cfg, "cpu", ns_dtype=ns_dtype)
            forward = torch.compile(model) if compile_it else model

            def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                with torch.autocast("cpu", dtype=precision.dtype, enabled=precision.autocast):
                    return forward(x, y)[1]

            return model, loss_of, opts

        return make

    rows = {
        "nanoGPT-style baseline (fp32, full logits, AdamW)": baseline,
        "ours, GPT-2 architecture + AdamW": ours(gpt2),
        "ours, default recipe (RoPE, ReLU^2, Muon)": ours(recipe),
    }
    if compiled:
        rows["ours, default recipe, torch.compile"] = ours(recipe, compile_it=True)
    steppers, first_call = {}, {}
    for name, make in rows.items():
        steppers[name] = _train_stepper(make, data, batch_size, recipe.seed, recipe.grad_clip)
        start = time.perf_counter()
        steppers[name]()  # warm-up; for the compiled row, this is where it compiles
        first_call[name] = time.perf_counter() - start
    rates: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(repeats):  # interleaved: a busy moment on the machine hits every row alike
        for name, step in steppers.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            rates[name].append(tokens * steps / (time.perf_counter() - start))
    base = statistics.median(rates[next(iter(rows))])
    print(f"== training step, {steps} steps x {repeats} interleaved rounds")
    print(f"  {'':<52} {'tokens/s':>9}  {'spread':>15}  {'vs baseline':>11}")
    result: dict[str, Any] = {
        "cpu_class": cpu_class(),
        "precision": precision.name,
        "threads": torch.get_num_threads(),
        "chunk": chunk_rows(recipe.model.vocab_size),
        "batch_size": batch_size,
        "rows": {},
    }
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"  {name:<52} {med:>9,.0f}  {min(r):>7,.0f}..{max(r):<7,.0f}  {med / base:>10.2f}x")
        result["rows"][name] = {"median": med, "min": min(r), "max": max(r), "ratio": med / base}
    if compiled:
        name = "ours, default recipe, torch.compile"
        step_s = tokens / statistics.median(rates[name])
        result["compile_s"] = max(first_call[name] - step_s, 0.0)
        print(f"  torch.compile: {result['compile_s']:.0f} s to compile (the first step), paid once per run")
    if loss_steps:
        result["loss"] = _same_loss(baseline, ours(gpt2), data, batch_size, recipe, loss_steps)
    return result


def _same_loss(
    baseline: Callable, ours: Callable, data: Any, batch_size: int, cfg: Any, loss_steps: int
) -> dict[str, float]:
    """The baseline and our GPT-2 from the same weights on the same batches: first and last loss."""
    out = {}
    for label, make in (("baseline", baseline), ("ours", ours)):
        step = _train_stepper(make, data, batch_size, cfg.seed, cfg.grad_clip)
        losses = [step().item() for _ in range(loss_steps)]
        out[f"{label}_first"], out[f"{label}_last"] = losses[0], losses[-1]
    print(
        f"  same weights, same batches: first loss baseline {out['baseline_first']:.4f}, ours "
        f"{out['ours_first']:.4f}; after {loss_steps} steps {out['baseline_last']:.4f} and {out['ours_last']:.4f}"
    )
    return out


def _interleaved(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each function, ``rounds`` rounds with the functions interleaved in each, after one
    warm-up call each: a busy moment on the machine then hits every function alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def bench_phases(
    steps: int = 5,
    batch_size: int = 64,
    size: int = 2048,
    tiles: tuple[tuple[int, int], ...] = ((1024, 2048), (1024, 4096)),
) -> dict[str, Any]:
    """Where a default-recipe training step's time goes, in the precision the trainer would choose, each part
    against what this CPU can do (``nanogpt bench phases``).

    The step's parts, medians of ``steps`` steps after two warm-up steps: the trunk's forward, the LM head and
    its loss (whose forward also computes the head's gradients, see ``loss.py``), the rest of the backward,
    gradient clipping, and each optimizer's step. Matmul parts are printed in GFLOP/s (PaLM's count: the
    trunk's 2 FLOPs per weight and token forward, twice that backward; the head's three matmuls) against a
    ``size`` x ``size`` matmul in the same precision. Then the LM head's two paths on the same hidden states,
    interleaved: chunks of :func:`~.loss.chunk_rows` positions and each of ``tiles``, with the path
    :func:`~.loss.head_plan` picks here; the figures that fill :data:`~.loss.TILES`."""
    from ..config import TrainConfig
    from ..devices import choose_precision, cpu_class
    from ..loss import chunk_rows, head_plan, linear_cross_entropy
    from ..model import GPT
    from ..optim import build_optimizers

    cfg = TrainConfig()
    precision = choose_precision(torch.device("cpu"), "auto")
    dtype = precision.dtype if precision.autocast else torch.float32  # the matmuls run in this
    torch.manual_seed(0)
    model = GPT(cfg.model)
    opts = build_optimizers(model, cfg, "cpu", ns_dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    T, V, C = cfg.model.block_size, cfg.model.vocab_size, cfg.model.n_embd
    x, y = (torch.randint(0, 50257, (batch_size, T), generator=gen) for _ in range(2))
    head = "LM head + loss (forward and its gradients)"
    names = [
        "trunk forward",
        head,
        "backward (the trunk)",
        "clip_grad_norm_",
        *(f"{type(o).__name__}.step + zero_grad" for o in opts),
    ]
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(steps + 2):
        marks = [time.perf_counter()]
        with torch.autocast("cpu", precision.dtype, enabled=precision.autocast):
            h, _ = model.trunk(x)
            marks.append(time.perf_counter())
            loss = linear_cross_entropy(h.view(-1, C), model.lm_head.weight, y.view(-1))
            marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        marks.append(time.perf_counter())
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
            marks.append(time.perf_counter())
        if i >= 2:
            for name, a, b in zip(names, marks, marks[1:]):
                times[name].append(b - a)
    medians = {n: statistics.median(v) for n, v in times.items()}
    step = sum(medians.values())
    a, b = (torch.randn(size, size, generator=gen).to(dtype) for _ in range(2))
    out = torch.empty(size, size, dtype=dtype)
    square = measure(f"{size}x{size} matmul", "FLOP", lambda: torch.mm(a, b, out=out), 2 * size**3, 3, 3).median
    N = batch_size * T
    trunk_flop = N * (model.flops_per_token() - 6 * V * C) / 3  # forward; PaLM's count less the head
    flops = {names[0]: trunk_flop, head: 3 * 2 * N * C * V, names[2]: 2 * trunk_flop}
    plan = head_plan(torch.device("cpu"), dtype, V)
    print(
        f"== where a default-recipe step goes: CPU class {cpu_class()}, {torch.get_num_threads()} threads, "
        f"{precision.name}, B={batch_size} T={T}, LM head {_plan_name(plan)}"
    )
    for name, t in medians.items():
        rate = (
            f"  {flops[name] / t / 1e9:6,.0f} GFLOP/s = {flops[name] / t / square:4.0%} of the machine"
            if name in flops
            else ""
        )
        print(
            f"  {name:<44} {t * 1e3:8.1f} ms  {t / step:4.0%}  (spread {min(times[name]) * 1e3:,.1f}.."
            f"{max(times[name]) * 1e3:,.1f}){rate}"
        )
    print(
        f"  {'step':<44} {step * 1e3:8.1f} ms  -> {N / step:,.0f} tokens/s; the trunk's backward is "
        f"{medians[names[2]] / medians[names[0]]:.1f}x its forward"
    )
    print(f"  the machine: a {size}x{size} {precision.name} matmul here runs at {square / 1e9:,.0f} GFLOP/s")
    paths = {
        f"chunks of {chunk_rows(V)} positions": {"chunk": chunk_rows(V)},
        **{f"tiles of {r} x {c}": {"tiles": (r, c)} for r, c in tiles},
    }
    hc = h.detach().view(-1, C).float().requires_grad_()

    def head_call(kwargs: dict[str, Any]) -> Callable[[], Any]:
        def call() -> None:
            with torch.autocast("cpu", precision.dtype, enabled=precision.autocast):
                linear_cross_entropy(hc, model.lm_head.weight, y.view(-1), **kwargs)

        return call

    head_times = _interleaved({name: head_call(kw) for name, kw in paths.items()}, max(steps, 1))
    print(f"== the LM head's paths on the same {N} positions, {max(steps, 1)} interleaved rounds")
    head_rates = {}
    for name, ts in head_times.items():
        t = statistics.median(ts)
        head_rates[name] = flops[head] / t / 1e9
        print(
            f"  {name:<44} {t * 1e3:8.1f} ms  (spread {min(ts) * 1e3:,.1f}..{max(ts) * 1e3:,.1f})  "
            f"{head_rates[name]:6,.0f} GFLOP/s = {flops[head] / t / square:4.0%} of the machine"
        )
    return {
        "cpu_class": cpu_class(),
        "precision": precision.name,
        "seconds": medians,
        "step_seconds": step,
        "head_gflops": flops[head] / medians[head] / 1e9,
        "square_matmul_gflops": square / 1e9,
        "trunk_forward_gflops": flops[names[0]] / medians[names[0]] / 1e9,
        "trunk_backward_gflops": flops[names[2]] / medians[names[2]] / 1e9,
        "head_paths_gflops": head_rates,
        "head_path": _plan_name(plan),
    }


def _plan_name(plan: Any) -> str:
    return f"tiles of {plan.rows} x {plan.cols}" if plan.tiled else f"chunks of {plan.rows} positions"


@torch.no_grad()
def nanogpt_sample(model: Any, idx: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy sampling as nanoGPT's ``generate`` does it: each token recomputes the last ``block_size`` tokens
    and reads the whole float32 LM head for the last position (no KV cache, no screen); the baseline of
    ``nanogpt bench sample``."""
    for _ in range(new_tokens):
        h = model.hidden(idx[:, -model.config.block_size :])
        idx = torch.cat([idx, model.logits(h[:, -1, :]).argmax(dim=-1, keepdim=True)], dim=1)
    return idx


def bench_sample(
    new_tokens: int = 200,
    repeats: int = 3,
    block_sizes: tuple[int, ...] = (64, 256, 1024),
    batches: tuple[int, ...] = (1, 4, 16),
) -> dict[str, Any]:
    """Sampling tokens/s: ours (KV cache, the LM head screened in int8 or float16, ``screen.py``) against nanoGPT's
    loop (:func:`nanogpt_sample`: the window recomputed and the whole float32 head read for every token),
    greedy, one sample, from a prompt half a block long (so the window is well filled and slides at the small
    block sizes); then N samples in one batch at block 64 (the CLI's settings), where the LM head's weight
    is read once per step for all N rows."""
    from ..model import GPT, GPTConfig
    from ..sample import generate

    results: dict[str, Any] = {}
    for block in block_sizes:
        torch.manual_seed(0)
        model = GPT(GPTConfig.gpt2(block_size=block)).eval()
        prompt = torch.randint(0, 50257, (1, block // 2))
        times = _interleaved(
            {
                "ours (KV cache, screened head)": lambda m=model, p=prompt: generate(m, p, new_tokens, temperature=0),
                "nanoGPT's loop (recompute, full head)": lambda m=model, p=prompt: nanogpt_sample(m, p, new_tokens),
            },
            repeats,
        )
        ours, naive = (Rate(name, "token", [new_tokens / t for t in ts]) for name, ts in times.items())
        results[f"block_{block}"] = compare(
            f"sampling {new_tokens} tokens, block_size {block}, rounds interleaved", ours, naive
        )
    torch.manual_seed(0)
    model = GPT(GPTConfig.recipe()).eval()  # the default recipe's model, block 64
    rates = {}
    for n in batches:
        prompt = torch.randint(0, 50257, (n, 32), generator=torch.Generator().manual_seed(n))
        rates[n] = measure(
            f"{n} sample(s) in one batch",
            "token",
            lambda p=prompt: generate(model, p, new_tokens, temperature=0.8, top_k=200, seed=0),
            n * new_tokens,
            1,
            repeats,
        )
    print(f"== sampling {new_tokens} tokens per sample, N samples in one batch, block 64, temperature 0.8, top-k 200")
    for rate in rates.values():
        print(f"  {rate}  {rate.median / rates[batches[0]].median:.2f}x N={batches[0]}")
    results["batched"] = {str(n): asdict(rate) for n, rate in rates.items()}
    return results


def run(which: list[str], fast: bool = False, out: Path | None = None, progress: bool = False) -> dict[str, Any]:
    """Run the named benchmarks and write their figures to ``out`` as JSON; ``progress``: a bar over the
    benchmarks (a full ``nanogpt bench`` takes many minutes on a CPU)."""
    from tqdm.auto import tqdm

    from ..prepare import PrepareConfig, prepare

    if "data" in which or "train" in which:
        prepare(PrepareConfig(progress=progress))  # both read data/shakespeare; a no-op when it is current
    jobs: dict[str, Callable[[], Any]] = {
        "data": lambda: bench_data(
            paths.data_dir() / "shakespeare", calls=20 if fast else 200, repeats=2 if fast else 5
        ),
        "prepare": lambda: bench_prepare(repeats=1 if fast else 3),
        "train": lambda: bench_train(
            steps=1 if fast else 5,
            repeats=1 if fast else 3,
            batch_size=8 if fast else 64,
            loss_steps=2 if fast else 20,
            compiled=not fast,
        ),
        "phases": lambda: bench_phases(
            steps=1 if fast else 5,
            batch_size=8 if fast else 64,
            size=256 if fast else 2048,
            tiles=((256, 1024),) if fast else ((1024, 2048), (1024, 4096)),
        ),
        "sample": lambda: bench_sample(
            new_tokens=20 if fast else 200,
            repeats=1 if fast else 3,
            block_sizes=(64,) if fast else (64, 256, 1024),
            batches=(1, 4) if fast else (1, 4, 16),
        ),
    }
    results: dict[str, Any] = {}
    bar = tqdm(
        [name for name in jobs if name in which],
        unit="benchmark",
        desc="bench",
        dynamic_ncols=True,
        **({} if progress else {"disable": True}),
    )  # an explicit disable=False would override TQDM_DISABLE
    for name in bar:
        bar.set_postfix_str(name)
        results[name] = jobs[name]()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
        print(f"figures written to {paths.shown(out)}")
    return results
