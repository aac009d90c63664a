"""Chapter 05's checks: a right answer passes, typical wrong ones fail with a reason that keeps the answer."""

from __future__ import annotations

import math

import pytest
import torch

from nanogpt_lib.course.exercises import verdict
from nanogpt_lib.optim import orthogonalize

from exercise_helpers import todo, wrong


@pytest.mark.parametrize("id", ["05.1", "05.2", "05.3"])
def test_placeholders_are_not_answered(id):
    assert verdict(id, None)[0] is None  # `answer = None  # your answer`
    if id in ("05.1", "05.2", "05.3"):  # a function whose body still raises NotImplementedError
        ok, how = verdict(id, todo)
        assert ok is None and "not answered yet" in how


# ---- 05.1 -------------------------------------------------------------------------------------------------


def accumulate(model, x, y, k):
    for xs, ys in zip(x.chunk(k), y.chunk(k)):
        _, loss = model(xs, ys)
        (loss / k).backward()


def test_accumulate():
    assert verdict("05.1", accumulate)[0] is True

    def unscaled(model, x, y, k):
        for xs, ys in zip(x.chunk(k), y.chunk(k)):
            model(xs, ys)[1].backward()

    def zeroing(model, x, y, k):
        for xs, ys in zip(x.chunk(k), y.chunk(k)):
            model.zero_grad()
            (model(xs, ys)[1] / k).backward()

    def whole_batch(model, x, y, k):
        model(x, y)[1].backward()

    def half_the_batch(model, x, y, k):
        for xs, ys in list(zip(x.chunk(k), y.chunk(k)))[:-1]:
            (model(xs, ys)[1] / k).backward()
        model(x[: x.size(0) // k], y[: y.size(0) // k])  # the right number of calls, one batch twice, one lost

    assert "times too large" in wrong("05.1", unscaled)
    assert "only the last micro-batch" in wrong("05.1", zeroing)
    assert "micro-batches of 4 rows" in wrong("05.1", whole_batch)
    assert "differs from the whole batch" in wrong("05.1", half_the_batch)
    assert "give a function" in wrong("05.1", 3)

    def weighted(model, x, y, k):  # each micro-batch's loss weighted by its share of the rows
        for xs, ys in zip(x.chunk(k), y.chunk(k)):
            (model(xs, ys)[1] * xs.size(0) / x.size(0)).backward()

    def by_autograd(model, x, y, k):  # gradients summed by hand, then written into p.grad
        params = list(model.parameters())
        total = [torch.zeros_like(p) for p in params]
        for xs, ys in zip(x.chunk(k), y.chunk(k)):
            grads = torch.autograd.grad(model(xs, ys)[1] / k, params, allow_unused=True)
            total = [t + (g if g is not None else 0) for t, g in zip(total, grads)]
        for p, t in zip(params, total):
            p.grad = t

    assert verdict("05.1", weighted)[0] is True
    assert verdict("05.1", by_autograd)[0] is True


# ---- 05.2 -------------------------------------------------------------------------------------------------


def lr_1sqrt(step, warmup_steps, max_steps, decay_frac, lr, min_lr):
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay_start = max(max_steps - round(decay_frac * max_steps), warmup_steps)
    if step < decay_start:
        return lr
    t = min((step - decay_start) / max(max_steps - decay_start, 1), 1.0)
    return lr - (lr - min_lr) * math.sqrt(t)


def test_cooldown():
    ok, remark = verdict("05.2", lr_1sqrt)
    assert ok is True and "1-sqrt" in remark

    def as_min_plus(step, warmup_steps, max_steps, decay_frac, lr, min_lr):  # min_lr + (lr - min_lr)(1 - sqrt t)
        rate = lr_1sqrt(step, warmup_steps, max_steps, decay_frac, lr, min_lr)
        start = max(max_steps - round(decay_frac * max_steps), warmup_steps)
        if step < start:
            return rate
        t = min((step - start) / max(max_steps - start, 1), 1.0)
        return min_lr + (lr - min_lr) * (1 - t**0.5)

    def as_tensor(*args):  # a 0-d float64 tensor is a number too
        return torch.tensor(lr_1sqrt(*args), dtype=torch.float64)

    assert verdict("05.2", as_min_plus)[0] is True
    assert verdict("05.2", as_tensor)[0] is True

    def linear(step, warmup_steps, max_steps, decay_frac, lr, min_lr):  # WSD's own decay
        start = max(max_steps - round(decay_frac * max_steps), warmup_steps)
        if step < start:
            return lr_1sqrt(step, warmup_steps, max_steps, decay_frac, lr, min_lr)
        return lr - min((step - start) / max(max_steps - start, 1), 1.0) * (lr - min_lr)

    def upside_down(step, warmup_steps, max_steps, decay_frac, lr, min_lr):  # min_lr + (lr - min_lr) sqrt(t)
        start = max(max_steps - round(decay_frac * max_steps), warmup_steps)
        if step < start:
            return lr_1sqrt(step, warmup_steps, max_steps, decay_frac, lr, min_lr)
        return min_lr + (lr - min_lr) * math.sqrt(min((step - start) / max(max_steps - start, 1), 1.0))

    def warmup_from_zero(step, warmup_steps, *rest):  # lr * step / warmup: the first step would get 0
        return lr_1sqrt(step, warmup_steps, *rest) * (step / (step + 1) if step < warmup_steps else 1)

    def no_clamp(step, warmup_steps, max_steps, decay_frac, lr, min_lr):  # t keeps growing past max_steps
        start = max(max_steps - round(decay_frac * max_steps), warmup_steps)
        if step < start:
            return lr_1sqrt(step, warmup_steps, max_steps, decay_frac, lr, min_lr)
        return lr - (lr - min_lr) * math.sqrt((step - start) / max(max_steps - start, 1))

    assert "WSD's linear decay" in wrong("05.2", linear)
    assert "climbs" in wrong("05.2", upside_down)
    assert "the warmup" in wrong("05.2", warmup_from_zero)
    assert "after max_steps" in wrong("05.2", no_clamp)
    assert "function" in wrong("05.2", 0.002)


# ---- 05.3 -------------------------------------------------------------------------------------------------


def muon_step(W, grad, buf, lr, momentum, nesterov):
    buf = momentum * buf + (1 - momentum) * grad
    update = grad + momentum * (buf - grad) if nesterov else buf
    scale = max(1.0, W.size(0) / W.size(1)) ** 0.5
    return W - lr * scale * orthogonalize(update), buf


def test_muon_step():
    ok, remark = verdict("05.3", muon_step)
    assert ok is True and "Nesterov" in remark

    def with_lerp_in_place(W, grad, buf, lr, momentum, nesterov):  # torch's in-place ops, as the library
        buf.lerp_(grad, 1 - momentum)
        update = grad.lerp(buf, momentum) if nesterov else buf
        W.add_(orthogonalize(update), alpha=-lr * math.sqrt(max(1, W.shape[0] / W.shape[1])))
        return W, buf

    def via_svd(W, grad, buf, lr, momentum, nesterov):  # an exact orthogonalisation is NOT Muon's: it fails
        buf = momentum * buf + (1 - momentum) * grad
        u = grad + momentum * (buf - grad) if nesterov else buf
        U, _, Vh = torch.linalg.svd(u, full_matrices=False)
        return W - lr * max(1.0, W.size(0) / W.size(1)) ** 0.5 * (U @ Vh), buf

    def in_float64(W, grad, buf, lr, momentum, nesterov):
        new_w, new_buf = muon_step(W.double(), grad.double(), buf.double(), lr, momentum, nesterov)
        return new_w.float(), new_buf.float()

    assert verdict("05.3", with_lerp_in_place)[0] is True
    assert verdict("05.3", in_float64)[0] is True
    assert verdict("05.3", via_svd)[0] is False  # Newton-Schulz's five steps stop short of U V^T on purpose

    def summed(W, grad, buf, lr, momentum, nesterov):  # SGD's momentum: a sum, not an average
        buf = momentum * buf + grad
        update = grad + momentum * buf if nesterov else buf
        return W - lr * max(1.0, W.size(0) / W.size(1)) ** 0.5 * orthogonalize(update), buf

    def no_look_ahead(W, grad, buf, lr, momentum, nesterov):
        return muon_step(W, grad, buf, lr, momentum, False)

    def unscaled(W, grad, buf, lr, momentum, nesterov):
        new_w, new_buf = muon_step(W, grad, buf, lr, momentum, nesterov)
        return W + (new_w - W) / max(1.0, W.size(0) / W.size(1)) ** 0.5, new_buf

    assert "an average" in wrong("05.3", summed)
    assert "looks ahead" in wrong("05.3", no_look_ahead)
    assert "tall matrix" in wrong("05.3", unscaled)
    assert "pair of tensors" in wrong("05.3", lambda *a: muon_step(*a)[0])
