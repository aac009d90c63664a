"""The notebook sampler widget: its callback streams exactly what generate_text returns."""

from __future__ import annotations

import itertools

import pytest
import torch

widgets = pytest.importorskip("ipywidgets")

from nanogpt_lib.course.widgets import SamplerWidget, sampler_widget, stream_into  # noqa: E402
from nanogpt_lib.model import GPT  # noqa: E402
from nanogpt_lib.sample import generate_text  # noqa: E402

from tiny import SMALL_MODEL  # noqa: E402


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(SMALL_MODEL).eval()


def shown(output: widgets.Output) -> str:
    return "".join(o["text"] for o in output.outputs if o["output_type"] == "stream" and o["name"] == "stdout")


def test_callback_equals_generate_text(model):
    widget, generate_into = sampler_widget(model, prompt="To be", max_new_tokens=12, seed=3)
    assert isinstance(widget, SamplerWidget) and generate_into.__name__ == "generate_into"
    settings = widget.settings()
    assert settings == {
        "prompt": "To be",
        "temperature": 0.8,
        "top_k": 200,
        "top_p": 1.0,
        "max_new_tokens": 12,
        "seed": 3,
    }  # top-p 1.0: off
    text = generate_into(widget.output, **settings)
    assert text and text == generate_text(model, "To be", max_new_tokens=12, temperature=0.8, top_k=200, seed=3)
    assert text == generate_text(model, **settings)  # the settings are generate_text's keyword arguments
    assert shown(widget.output) == "To be" + text and len(widget.output.outputs) == 1
    # a second call replaces the first sample instead of adding to it
    greedy = generate_into(widget.output, "To be", 0.0, 1, 5, 0)
    assert greedy == generate_text(model, "To be", max_new_tokens=5, temperature=0)
    assert shown(widget.output) == "To be" + greedy


def test_output_grows_piece_by_piece(model):
    seen: list[str] = []
    output = widgets.Output()
    output.observe(lambda change: seen.append(shown(output)), "outputs")
    text = stream_into(model, output, "ROMEO:", temperature=0, top_k=None, max_new_tokens=8, seed=None)
    grown = [s for s in seen if s]
    assert grown[-1] == "ROMEO:" + text and len(grown) >= 2
    assert grown[0] == "ROMEO:" and all(b.startswith(a) for a, b in itertools.pairwise(grown))  # prompt, then appends
    assert stream_into(model, output, "x", temperature=0, top_k=None, max_new_tokens=0, seed=None) == ""
    assert shown(output) == "x"


def test_button_runs_the_callback_and_reports_errors(model):
    widget, _ = sampler_widget(model, prompt="x", temperature=0.0, max_new_tokens=4)
    assert widget.top_k.disabled  # greedy: top-k does nothing
    widget.temperature.value = 1.0
    assert not widget.top_k.disabled
    widget.button.click()
    expected = generate_text(model, "x", max_new_tokens=4, temperature=1.0, top_k=200, seed=0)
    assert shown(widget.output) == "x" + expected
    assert not widget.button.disabled and widget.button.description == "Generate"
    widget.prompt.value = ""
    widget.button.click()  # an empty prompt: the message goes to the output, nothing is raised
    (item,) = widget.output.outputs
    assert item["name"] == "stderr" and "prompt is empty" in item["text"]
    assert not widget.button.disabled


def test_top_p_control_reaches_the_sampler(model):
    widget, generate_into = sampler_widget(
        model, prompt="To be", temperature=1.5, top_k=500, top_p=0.3, max_new_tokens=16, seed=5
    )
    assert widget.top_p.value == pytest.approx(0.3) and not widget.top_p.disabled
    settings = widget.settings()
    text = generate_into(widget.output, **settings)
    assert text == generate_text(
        model, "To be", max_new_tokens=16, temperature=1.5, top_k=500, top_p=settings["top_p"], seed=5
    )
    # The cut matters: at temperature 1.5 the random model's distribution is nearly flat, so keeping only the
    # likeliest tokens holding 30% of the mass changes the draws (a test that would pass with top_p ignored
    # would be worthless).
    assert text != generate_text(model, "To be", max_new_tokens=16, temperature=1.5, top_k=500, seed=5)
    widget.top_p.value = 1.0  # the slider's top is off: the same as no top-p at all
    assert generate_into(widget.output, **widget.settings()) == generate_text(
        model, "To be", max_new_tokens=16, temperature=1.5, top_k=500, top_p=None, seed=5
    )
    widget.temperature.value = 0.0
    assert widget.top_p.disabled and widget.top_k.disabled  # greedy ignores both cuts
    assert sampler_widget(model)[0].top_p.value == 1.0  # off unless asked for
