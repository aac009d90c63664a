"""Exported weights (safetensors, seed-style .pth), load_model and text sampling."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
import torch

from nanogpt_lib import sample, screen
from nanogpt_lib.checkpoint import CheckpointError, export_weights, load_weights
from nanogpt_lib.model import GPT
from nanogpt_lib.paths import ProjectFilesError
from nanogpt_lib.sample import generate, generate_text, generate_texts, load_model, sample_next, stream_text
from nanogpt_lib.screen import HeadScreen
from nanogpt_lib.tokenizer import decode, encode

from tiny import SMALL_MODEL


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(SMALL_MODEL).eval()


def same_weights(a: GPT, b: GPT) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_safetensors_export_round_trip(model, tmp_path):
    path = export_weights(model, SMALL_MODEL, tmp_path / "out", {"step": 7})
    assert path.name == "gpt2_trained_weights.safetensors"
    loaded, meta = load_weights(tmp_path / "out")
    assert same_weights(model, loaded) and meta["step"] == 7
    assert loaded.lm_head.weight is loaded.transformer.wte.weight  # tying survives the export


def test_meta_and_tokenizer_say_where_a_model_came_from(model, tmp_path):
    """GPT.meta and GPT.tokenizer: empty on a model built here, filled by load_model from the weights file."""
    from nanogpt_lib.evaluate import model_tokenizer

    assert (model.meta, model.tokenizer, model_tokenizer(model)) == ({}, None, None)
    export_weights(model, SMALL_MODEL, tmp_path / "out", {"step": 7, "val_loss": 4.5})
    loaded = load_model(tmp_path / "out", device="cpu")
    assert (loaded.meta["step"], loaded.meta["val_loss"], loaded.meta["model"]) == (7, 4.5, SMALL_MODEL.to_dict())
    assert model_tokenizer(loaded) == "gpt2" and sample.encoding_of(loaded) is loaded.tokenizer
    assert GPT(SMALL_MODEL).meta == {}  # not shared between models


def test_seed_style_pth_state_dict_loads(model, tmp_path):
    """The seed shipped trained_model/gpt2_trained_weights.pth: a plain state dict (maybe from torch.compile)."""
    state = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "gpt2_trained_weights.pth")
    (tmp_path / "config.json").write_text(json.dumps(SMALL_MODEL.to_dict()))
    loaded, _ = load_weights(tmp_path / "gpt2_trained_weights.pth")
    assert same_weights(model, loaded)


def test_pth_with_pickled_objects_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"w": Evil()}, tmp_path / "w.pth")
    (tmp_path / "config.json").write_text(json.dumps(SMALL_MODEL.to_dict()))
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_weights(tmp_path / "w.pth")


def test_bad_weights_files(model, tmp_path):
    with pytest.raises(CheckpointError, match="no weights in"):
        load_weights(tmp_path)
    export_weights(model, SMALL_MODEL, tmp_path / "out")
    f = tmp_path / "out" / "gpt2_trained_weights.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_weights(tmp_path / "out")
    export_weights(model, SMALL_MODEL, tmp_path / "other")
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model": {**SMALL_MODEL.to_dict(), "n_layer": 3}}))
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_weights(tmp_path / "other")


def test_generate_text_is_the_greedy_continuation(model, tmp_path):
    export_weights(model, SMALL_MODEL, tmp_path)
    loaded = load_model(tmp_path, device="cpu")
    text = generate_text(loaded, "ROMEO:", max_new_tokens=12, temperature=0)
    ids = generate(model, torch.tensor([encode("ROMEO:")]), 12, temperature=0)[0, len(encode("ROMEO:")) :]
    assert text == decode(ids.tolist())
    pieces = list(stream_text(loaded, "ROMEO:", max_new_tokens=12, temperature=0))
    assert "".join(pieces) == text and len(pieces) >= 2
    a = generate_text(loaded, "To be", max_new_tokens=10, temperature=1.0, seed=3)
    assert a == generate_text(loaded, "To be", max_new_tokens=10, temperature=1.0, seed=3)


def test_stream_never_shows_half_a_character(model, monkeypatch):
    """A character split over two tokens is held back until complete."""
    snowman = encode("☃")  # three UTF-8 bytes, encoded as more than one token
    assert len(snowman) > 1
    monkeypatch.setattr(sample, "generate_stream", lambda model, idx, n, **kw: iter(snowman + encode(" ok")))
    pieces = list(stream_text(model, "x", max_new_tokens=5))
    assert "".join(pieces) == "☃ ok" and all("\ufffd" not in p for p in pieces)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": -1.0}, "temperature must be >= 0"),
        ({"top_k": 0}, "top_k must be >= 1"),
        ({"max_new_tokens": -1}, "max_new_tokens must be >= 0"),
        ({"top_p": 1.5}, "top_p must be in"),
    ],
)
def test_bad_sampling_arguments(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_text(model, "x", **kwargs)


def test_empty_prompt(model):
    with pytest.raises(ValueError, match="prompt is empty"):
        generate_text(model, "")


def test_missing_trained_model_folder(tmp_path, monkeypatch):
    """The project home has no shipped weights: the error names the home and says how to point at a clone."""
    monkeypatch.setenv("NANOGPT_HOME", str(tmp_path))
    with pytest.raises(ProjectFilesError, match=r"shipped weights \(trained_model/\) not found.*NANOGPT_HOME"):
        load_model()


def test_padding_ids_are_never_sampled(model):
    """The vocabulary is padded 50257 -> 50304; those rows are not tokens and must never come out."""
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.fill_(1.0)  # every hidden state becomes all-ones ...
        model.transformer.wte.weight[50257:] = 1.0  # ... so the padding rows have the largest logits
    prompt = torch.tensor([encode("x")])
    raw = generate(model, prompt, 3, temperature=0, vocab_limit=model.config.vocab_size)[0, 1:]
    assert raw.min().item() >= 50257  # without the limit the model would emit padding
    assert generate(model, prompt, 3, temperature=0)[0, 1:].max().item() < 50257  # the default limit
    text = generate_text(model, "x", max_new_tokens=5, temperature=0)
    assert all(t < 50257 for t in encode(text)) and text


def test_generate_texts_samples_a_batch_reproducibly(model):
    """N samples in one batch: greedy rows all equal the single greedy continuation; sampled rows are
    reproducible with a seed and differ from one another."""
    greedy = generate_text(model, "ROMEO:", max_new_tokens=8, temperature=0)
    assert generate_texts(model, "ROMEO:", 3, max_new_tokens=8, temperature=0) == [greedy] * 3
    texts = generate_texts(model, "ROMEO:", 4, max_new_tokens=8, temperature=1.0, top_k=None, seed=5)
    assert len(texts) == 4 and len(set(texts)) > 1
    assert texts == generate_texts(model, "ROMEO:", 4, max_new_tokens=8, temperature=1.0, top_k=None, seed=5)
    with pytest.raises(ValueError, match="num_samples"):
        generate_texts(model, "x", 0)


@pytest.mark.parametrize("temperature", [1e-45, 1e-30, 1e-38])
def test_a_tiny_temperature_is_greedy_not_nan(model, temperature):
    """1e-45 is a float32 denormal (and 1e-50 would round to 0): dividing logits by it gave inf and NaN
    probabilities. It samples the argmax, as temperature 0 does."""
    logits = torch.tensor([[1.0, 3.0, -2.0, 2.9999]])
    gen = torch.Generator().manual_seed(0)
    assert [sample.sample_next(logits, temperature, gen=gen).item() for _ in range(20)] == [1] * 20
    p = torch.tensor([encode("ROMEO:")])
    assert torch.equal(generate(model, p, 6, temperature=temperature, seed=1), generate(model, p, 6, temperature=0))


def test_cli_num_samples_prints_each_sample(model, tmp_path, capsys):
    from nanogpt_lib.cli import main

    export_weights(model, SMALL_MODEL, tmp_path)
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(tmp_path),
                "--prompt",
                "ROMEO:",
                "--num-samples",
                "3",
                "--max-new-tokens",
                "5",
                "--temperature",
                "0",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    greedy = generate_text(model, "ROMEO:", max_new_tokens=5, temperature=0)
    for i in (1, 2, 3):
        assert f"---------- sample {i} of 3 ----------\nROMEO:{greedy}\n" in out


@pytest.mark.parametrize(
    "knobs",
    [
        dict(temperature=0.7, top_k=5),
        dict(temperature=1.3, top_p=0.8),
        dict(temperature=0.9, top_k=6, top_p=0.7),
        dict(temperature=1.0),
    ],
)
def test_sample_next_draws_from_the_cut_distribution(knobs):
    # The exact distribution, computed independently in float64: softmax(logits / T), keep the k likeliest,
    # then the likeliest tokens until the mass above a token reaches p, renormalise. 40,000 seeded draws
    # must land on kept tokens only, each with its probability: the standard error of a frequency is at most
    # sqrt(0.25 / 40,000) = 0.0025, so 6 standard errors is a bound a correct sampler never crosses here.
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0, 0.0, 1.5, -2.0, 2.5, 1.0, -0.5, 0.2, 0.8])
    ranked = (logits.double() / knobs["temperature"]).softmax(-1).sort(descending=True)
    p = ranked.values.clone()
    p[knobs.get("top_k", len(p)) :] = 0  # top-k, then renormalise
    p /= p.sum()
    if "top_p" in knobs:  # top-p on what top-k left: drop a token once the mass ranked above it reaches p
        p[(p.cumsum(-1) - p) >= knobs["top_p"]] = 0
        p /= p.sum()
    expected = torch.zeros_like(p).scatter(-1, ranked.indices, p)
    keep = expected > 0
    n = 40_000
    drawn = sample_next(logits.expand(n, -1), gen=torch.Generator().manual_seed(0), **knobs)
    freq = torch.bincount(drawn.flatten(), minlength=len(logits)).double() / n
    assert freq[~keep].sum() == 0, "drew a token outside the cut"
    bound = 6 * (expected * (1 - expected) / n).sqrt() + 1e-12
    assert ((freq - expected).abs() <= bound).all(), (freq, expected)


@pytest.mark.parametrize(
    "knobs",
    [dict(temperature=0), dict(temperature=0.8, top_k=200, seed=1), dict(temperature=1.0, top_k=20, top_p=0.9, seed=2)],
)
@pytest.mark.parametrize("softcap", [0.0, 3.0])
@pytest.mark.parametrize("kind", ["int8", "fp16"])
def test_the_screened_head_samples_what_the_full_head_does(knobs, softcap, kind, monkeypatch):
    """Top-k and greedy sampling on a CPU screen the logits in int8 or float16 and keep float32 logits for the
    candidates only (screen.HeadScreen): the same tokens as the full float32 head, for one prompt and for
    two or four in one batch, soft-capped or not; a seed model with its head scaled up so the logits are far
    apart (a trained model's are) and the padding ids can never be drawn."""
    torch.manual_seed(0)
    m = GPT(replace(SMALL_MODEL, logit_softcap=softcap)).eval()
    with torch.no_grad():
        m.lm_head.weight.mul_(20.0)
    p = torch.randint(0, 50257, (4, 5), generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(screen, "pick_kind", lambda vocab, n_embd: kind)
    prompts = [p[:1], p[:2], p] if kind == "int8" else [p[:1], p[:2]]  # as many rows as each kind screens
    screened = [generate(m, q, 12, **knobs) for q in prompts]
    monkeypatch.setattr(sample, "_SCREEN_MAX_K", 0)  # every k above it: the full head
    for q, tokens in zip(prompts, screened):
        assert torch.equal(tokens, generate(m, q, 12, **knobs))
    assert int(screened[-1].max()) < 50257


def test_a_changed_head_is_screened_anew(monkeypatch):
    """Sampling keeps the last head's screen (screen.screen_for) while the head is unchanged, and makes a new
    one after an in-place change (an optimizer step, a load, an edit): the tokens stay the full head's."""
    torch.manual_seed(0)
    m = GPT(SMALL_MODEL).eval()
    with torch.no_grad():
        m.lm_head.weight.mul_(20.0)
    p = torch.randint(0, 50257, (1, 5), generator=torch.Generator().manual_seed(0))
    generate(m, p, 4, temperature=0)
    first = screen.screen_for(m.lm_head.weight, 1, 50257)
    assert screen.screen_for(m.lm_head.weight, 1, 50257) is first
    with torch.no_grad():
        m.lm_head.weight.neg_()
    assert screen.screen_for(m.lm_head.weight, 1, 50257) is not first
    screened = generate(m, p, 12, temperature=0)
    monkeypatch.setattr(sample, "_SCREEN_MAX_K", 0)  # the full head
    assert torch.equal(screened, generate(m, p, 12, temperature=0))


@pytest.mark.parametrize("kind", ["int8", "fp16"])
def test_the_screen_keeps_the_true_top_k_and_gives_way_to_overflow(model, kind):
    """The kept candidates hold the k largest float32 logits with their exact values, also where 100 tokens'
    logits lie about as close together (1e-3 relative) as the screen rounds them (float16 5e-4, int8 about
    4e-3 of a row's largest weight), and k = 50 cuts through them: screening without the bound misses some.
    A hidden state so large that a screened logit overflows hands the step back to the full head (None)."""
    g = torch.Generator().manual_seed(3)
    h = 30 * torch.randn(2, 32, generator=g)
    with torch.no_grad():  # tokens 0-99 nearly parallel to h's rows: the top of both rows, nearly tied
        model.lm_head.weight[:100] = h.sum(0) / h.sum(0).norm() * (1 + 1e-3 * torch.randn(100, 32, generator=g))
    head = HeadScreen(model.lm_head.weight, kind=kind)
    logits, ids = head.candidates(h, 50)
    full = model.logits(h)
    top = torch.topk(full, 50, dim=-1)
    for r in range(2):
        assert set(top.indices[r].tolist()) <= set(ids[r].tolist())
        kept = logits[r] > float("-inf")
        torch.testing.assert_close(logits[r][kept], full[r][ids[r][kept]], rtol=1e-6, atol=1e-5)
    head.err_row, head.err_abs, head.err_max = torch.zeros_like(head.err_row), 0.0, 0.0
    missed = [set(top.indices[r].tolist()) - set(head.candidates(h, 50)[1][r].tolist()) for r in range(2)]
    assert any(missed)
    huge = 1e5 if kind == "fp16" else 1e37  # past float16's 65504, or bf16's 3.4e38
    assert head.candidates(h * huge, 50) is None


@pytest.mark.parametrize("kind", ["int8", "fp16"])
def test_the_screen_bounds_hold_on_random_heads(kind):
    """Every screened logit is within its row's bound of the float32 logit, on heads of very different row
    scales (a row of zeros, rows from 1e-3 to 1e3, heavy tails) and hidden states of several sizes, float16's
    subnormals included: the bound the screen's exactness rests on (screen.py's docstring)."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(512, 64, generator=g) * torch.logspace(-3, 3, 512)[:, None]
    weight[7] = 0.0
    weight[8:16] = torch.distributions.StudentT(1.5).sample((8, 64))  # heavy tails: a few huge weights a row
    head = HeadScreen(weight, kind=kind)
    for scale in (1e-3, 1.0, 1e3):
        h = scale * torch.randn(16, 64, generator=g)
        approx = head.screened(h)
        finite = approx.isfinite()  # float16 overflows past 65504 (then the screen gives way: tested above)
        assert finite.float().mean() > 0.5
        err = (approx - h @ weight.T).abs()[finite]
        bound = head.bound(h)[finite]
        assert (err <= bound).all(), float((err / bound).max())


def test_the_greedy_screen_gives_way_to_overflow_on_either_side(model):
    """Greedy (k = 1) takes the screened row's maximum: a logit past +65504 (inf in float16) hands the step
    back to the full head, and so does a row whose logits are all so negative that the threshold (the top
    logit less the margin) reaches past -65504, where overflowed logits would hide, even though the top one is
    finite; a row well inside float16's range screens and keeps the true argmax."""
    with torch.no_grad():
        model.lm_head.weight.abs_().mul_(50.0)  # logits of an all-negative h: all negative, about 10 per unit
    head = HeadScreen(model.lm_head.weight, kind="fp16")
    direction = -torch.ones(1, 32)
    unit = float(model.logits(direction).max().detach())
    for top, trusted in ((-3e4, True), (-6.54e4, False)):
        h = direction * (top / unit)  # scaled so the largest logit is `top`
        approx = torch.nn.functional.linear(h.half(), head.low).float()
        assert torch.isfinite(approx.max()) and torch.isinf(approx.min())  # overflow only below the top
        found = head.candidates(h, 1)
        assert (found is not None) == trusted, top
        if trusted:
            assert int(model.logits(h).argmax()) in found[1][0].tolist()
    assert head.candidates(-direction * 1e4, 1) is None  # a logit of +inf


def test_sampling_a_model_in_training_mode_uses_no_dropout_and_keeps_its_mode():
    """A model left in training mode (dropout on) samples what it samples in eval mode, and is still in
    training mode afterwards: sampling switches it per token, and leaves an eval model alone."""
    torch.manual_seed(0)
    m = GPT(replace(SMALL_MODEL, dropout=0.5))
    p = torch.randint(0, 50257, (1, 5), generator=torch.Generator().manual_seed(0))
    in_training = generate(m, p, 8, temperature=0.8, top_k=50, seed=3)
    assert m.training and all(mod.training for mod in m.modules())
    assert torch.equal(in_training, generate(m.eval(), p, 8, temperature=0.8, top_k=50, seed=3))
    assert not any(mod.training for mod in m.modules())
