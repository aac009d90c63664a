"""The one public training step (nanogpt_lib/step.py): the Trainer's step is exactly it, so the loops that
reuse it (bench, the lr range test, the course's short runs) train as `nanogpt train` does."""

from __future__ import annotations

import pytest
import torch

from nanogpt_lib.config import load_config
from nanogpt_lib.model import GPT
from nanogpt_lib.optim import build_optimizers, scale_lrs
from nanogpt_lib.prepare import PrepareConfig, prepare
from nanogpt_lib.schedule import lr_at
from nanogpt_lib.step import train_step
from nanogpt_lib.train import Trainer

TINY = [
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "model.block_size=16",
    "batch_size=2",
    "dataset=txt",
    "eval_batches=1",
    "warmup_steps=2",
    "dtype=float32",
    "device=cpu",
    "max_steps=3",
    "grad_accum=2",
    "grad_clip=0.5",
    "name=step",
]


@pytest.fixture
def home(txt_dir, tmp_path, monkeypatch):
    """A project root with data/txt prepared."""
    root = tmp_path / "home"
    prepare(PrepareConfig(source=str(txt_dir), data_dir=root / "data"))
    monkeypatch.setenv("NANOGPT_HOME", str(root))
    return root


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_train_step_is_the_trainers_step_bitwise(home, optimizer):
    """Three steps (two micro-batches each, clipped, warmup then decay) of train_step from the Trainer's
    initial weights give the Trainer's losses and weights bit for bit: the same float operations in the
    same order on one thread, so no tolerance."""
    torch.set_num_threads(1)
    trainer = Trainer(load_config(None, [*TINY, f"optimizer={optimizer}"]), progress=False, artifacts=False)
    try:
        cfg = trainer.cfg
        model = GPT(cfg.model)
        model.load_state_dict(trainer.model.state_dict())
        opts = build_optimizers(model, cfg, "cpu")
        assert [type(o) for o in opts] == [type(o) for o in trainer.optimizers]
        theirs = [trainer._train_step().item() for _ in range(cfg.max_steps)]
        mine = []
        for step in range(cfg.max_steps):
            scale_lrs(opts, lr_at(step, cfg) / cfg.lr)

            def batch(micro: int, step: int = step) -> tuple[torch.Tensor, torch.Tensor]:
                return trainer.data.get_batch("train", step * cfg.grad_accum + micro, cfg.batch_size, cfg.seed)

            mine.append(train_step(model, opts, batch, accum=cfg.grad_accum, grad_clip=cfg.grad_clip).item())
        assert mine == theirs
        trained = trainer.model.state_dict()
        assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
        assert not all(torch.equal(v, trained[k]) for k, v in GPT(cfg.model).state_dict().items())  # it moved
    finally:
        trainer.close()


def test_train_step_accumulates_the_mean_loss():
    """Two micro-batches of one row each leave the gradient of the mean loss over both rows: a step with
    accum=2 matches the step on the whole batch. Plain SGD at rate 1 moves each weight by exactly its gradient
    (Adam would divide near-zero gradients by their own size and magnify rounding). The two gradients are
    float32 sums of the same terms grouped differently: a few ulps of values below 1, so 1e-6 is a wide margin,
    while a missing 1/accum doubles the update (off by the gradient itself, ~1e-2 and up)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randint(0, 64, (2, 8))
    y = torch.randint(0, 64, (2, 8))
    cfg = load_config(
        None, ["model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.block_size=8", "model.vocab_size=64"]
    )
    results = []
    for accum in (1, 2):
        torch.manual_seed(1)
        model = GPT(cfg.model)
        opts = [torch.optim.SGD(model.parameters(), lr=1.0)]
        rows = 2 // accum
        loss = train_step(
            model, opts, lambda m, rows=rows: (x[m * rows : (m + 1) * rows], y[m * rows : (m + 1) * rows]), accum=accum
        )
        results.append((loss.item(), model.state_dict()))
    (whole, w1), (split, w2) = results
    assert split == pytest.approx(whole, rel=1e-6)
    assert all(torch.allclose(w1[k], w2[k], rtol=0, atol=1e-6) for k in w1)
    with pytest.raises(ValueError, match="at least 1"):
        train_step(model, opts, lambda m: (x, y), accum=0)
