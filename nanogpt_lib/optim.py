"""Muon: momentum, then each matrix's update orthogonalised by a Newton-Schulz iteration.

The same update as ``torch.optim.Muon`` (PyTorch >= 2.9; Jordan et al. 2024, "Muon: An optimizer for hidden
layers in neural networks"), written here for one reason: torch's runs the Newton-Schulz matmuls in bf16,
hard-coded. On a CPU without native bf16 (AVX2 only) those matmuls are emulated, and the iteration cost
0.94 s per step on the seed model's 16 block matrices against 0.05 s in fp32. Here the iteration's dtype
is an argument, chosen like the model's precision (bf16 only where it measured faster). It also lets
the default recipe run on a PyTorch older than 2.9.

State and group keys are torch's (``momentum_buffer``; ``lr``, ``momentum``, ``nesterov``, ...), so a
checkpoint written with ``torch.optim.Muon`` resumes with this one and the other way round.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import torch

# The quintic's coefficients (Jordan et al.): chosen for the steepest slope at 0, so that five steps push
# every singular value of the normalised matrix into roughly [0.7, 1.2] rather than converging exactly to 1.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(
    g: torch.Tensor,
    steps: int = 5,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = 1e-7,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """About ``U V^T`` for ``g = U S V^T``: each step maps X to a X + (b A + c A^2) X with A = X X^T.

    Computed in ``dtype``; the result is in ``dtype``. Dividing by the Frobenius norm first puts every
    singular value in [0, 1], where the polynomial pulls them towards 1. A tall matrix is iterated as
    its transpose, so the Gram matrix A is the smaller of the two.
    """
    a, b, c = coefficients
    x = g.to(dtype)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # b A + c A^2
        x = torch.addmm(x, poly, x, beta=a)  # a X + (b A + c A^2) X
    return x.T if tall else x


def lr_ratio(shape: torch.Size, rule: str | None) -> float:
    """How much the rate is scaled for a matrix of ``shape`` (rows, cols), so updates have a similar size.

    ``None``/``original`` (Jordan): sqrt(max(1, rows / cols)); ``match_rms_adamw`` (Liu et al. 2025, "Muon
    is Scalable for LLM Training"): 0.2 sqrt(max(rows, cols)), the RMS of an AdamW update.
    """
    rows, cols = shape[:2]
    if rule is None or rule == "original":
        return math.sqrt(max(1.0, rows / cols))
    if rule == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    raise ValueError(f"adjust_lr_fn must be None, 'original' or 'match_rms_adamw', got {rule!r}")


class Muon(torch.optim.Optimizer):
    """Muon for 2-D parameters; ``ns_dtype`` is the Newton-Schulz iteration's dtype (not saved: it is a
    property of the machine, so a run resumed elsewhere takes that machine's choice)."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        ns_dtype: torch.dtype = torch.float32,
    ) -> None:
        if not lr >= 0 or not momentum >= 0 or not weight_decay >= 0:
            raise ValueError(f"lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        lr_ratio(torch.Size((1, 1)), adjust_lr_fn)  # an unknown rule fails here, not at the first step
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_coefficients=ns_coefficients,
            eps=eps,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
        )
        super().__init__(params, defaults)
        self.ns_dtype = ns_dtype
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(f"Muon takes only 2-D parameters (matrices), got shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu, decay = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - mu)  # an average of past gradients: mu buf + (1 - mu) grad
                # Nesterov: look ahead along the average, (1 - mu) grad + mu buf
                update = p.grad.lerp(buf, mu) if group["nesterov"] else buf
                update = orthogonalize(update, group["ns_steps"], group["ns_coefficients"], group["eps"], self.ns_dtype)
                if decay != 0:  # decoupled weight decay, at the unadjusted rate
                    p.mul_(1 - lr * decay)
                p.add_(update, alpha=-lr * lr_ratio(p.shape, group["adjust_lr_fn"]))
        return loss


class OptimizerSettings(Protocol):
    """The config fields the optimizers are built from (``config.TrainConfig`` has them; named structurally
    here because config imports the model, which imports this module)."""

    optimizer: str
    lr: float
    weight_decay: float
    beta1: float
    beta2: float
    muon_lr: float
    muon_momentum: float
    muon_weight_decay: float


def build_optimizers(
    model: torch.nn.Module, cfg: OptimizerSettings, device_type: str = "cpu", ns_dtype: torch.dtype = torch.float32
) -> list[torch.optim.Optimizer]:
    """The optimizers a run of ``cfg`` steps ``model`` (a GPT) with: the one place that maps a config's
    optimizer settings onto ``GPT.configure_optimizers`` (which splits the parameters into groups), for the
    trainer and for every loop that must step like it (bench, the course's short runs)."""
    return model.configure_optimizers(
        cfg.weight_decay,
        cfg.lr,
        (cfg.beta1, cfg.beta2),
        device_type,
        cfg.optimizer,
        cfg.muon_lr,
        cfg.muon_momentum,
        ns_dtype=ns_dtype,
        muon_weight_decay=cfg.muon_weight_decay,
    )


def scale_lrs(optimizers: Sequence[torch.optim.Optimizer], scale: float) -> None:
    """Set every group's rate to its own ``base_lr`` times ``scale``: one schedule (``schedule.lr_at / lr``)
    moves AdamW's and Muon's rates together, each from its own peak."""
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * scale
