"""An interactive sampler for notebooks: a prompt, a few knobs, a Generate button, text streamed as it comes.

The work is done by a plain function, so a notebook (or a test) can run exactly what the button runs and
check the result: an exception inside a widget callback only reaches the kernel's log, never the cell.
Needs ipywidgets (the ``notebooks`` extra: ``pip install -e ".[notebooks]"``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import ipywidgets as widgets
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError('nanogpt_lib.course.widgets needs ipywidgets: pip install -e ".[notebooks]"') from e

from ..model import GPT
from ..sample import stream_text

# generate_into(output, prompt, temperature, top_k, max_new_tokens, seed, top_p=None) -> the generated text
GenerateInto = Callable[..., str]


def _stdout(text: str) -> dict[str, Any]:
    return {"output_type": "stream", "name": "stdout", "text": text}


def stream_into(
    model: GPT,
    output: widgets.Output,
    prompt: str,
    temperature: float,
    top_k: int | None,
    max_new_tokens: int,
    seed: int | None,
    top_p: float | None = None,
) -> str:
    """Sample a continuation of ``prompt`` into ``output`` as it is generated; return the continuation.

    The output shows the prompt followed by the new text, which grows one decoded piece at a time. It is
    held as a single stdout item that is replaced as it grows (rather than one item appended per token),
    so the page redraws one block of text per token, however long the sample gets. Arguments go to
    :func:`nanogpt_lib.sample.stream_text` unchanged, so the result equals ``generate_text`` with the same
    settings; bad ones (an empty prompt, a negative temperature) raise its ``ValueError``. ``top_p`` None or
    1.0 is off.
    """
    pieces = stream_text(
        model, prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed
    )
    shown = prompt
    output.outputs = (_stdout(shown),)  # the prompt at once, replacing any earlier sample
    for piece in pieces:
        shown += piece
        output.outputs = (_stdout(shown),)
    return shown[len(prompt) :]


class SamplerWidget(widgets.VBox):
    """The controls, the Generate button and the output area, with the controls as attributes."""

    def __init__(
        self,
        prompt: str = "ROMEO:",
        temperature: float = 0.8,
        top_k: int = 200,
        max_new_tokens: int = 100,
        seed: int = 0,
        top_p: float | None = None,
    ) -> None:
        style = {"description_width": "110px"}
        wide = widgets.Layout(width="420px")
        self.prompt = widgets.Text(value=prompt, description="prompt", style=style, layout=wide)
        self.temperature = widgets.FloatSlider(
            value=temperature,
            min=0.0,
            max=2.0,
            step=0.05,
            description="temperature",
            style=style,
            layout=wide,
            tooltip="0 = greedy: always the likeliest token",
        )
        self.top_k = widgets.IntSlider(
            value=top_k,
            min=1,
            max=500,
            description="top-k",
            style=style,
            layout=wide,
            tooltip="sample among the k likeliest tokens",
        )
        self.top_p = widgets.FloatSlider(
            value=1.0 if top_p is None else top_p,
            min=0.05,
            max=1.0,
            step=0.05,
            description="top-p",
            style=style,
            layout=wide,
            tooltip="sample among the likeliest tokens holding this much probability; 1 = off",
        )
        self.max_new_tokens = widgets.IntSlider(
            value=max_new_tokens, min=1, max=500, description="max tokens", style=style, layout=wide
        )
        self.seed = widgets.IntText(
            value=seed,
            description="seed",
            style=style,
            layout=widgets.Layout(width="220px"),
            tooltip="the same seed and settings give the same text",
        )
        self.button = widgets.Button(description="Generate", button_style="primary", icon="play")
        self.output = widgets.Output(
            layout=widgets.Layout(border="1px solid #ccc", padding="4px", min_height="60px", width="95%")
        )
        self._greedy(temperature == 0)
        self.temperature.observe(lambda change: self._greedy(change["new"] == 0), "value")
        super().__init__(
            [
                self.prompt,
                self.temperature,
                self.top_k,
                self.top_p,
                self.max_new_tokens,
                widgets.HBox([self.seed, self.button]),
                self.output,
            ]
        )

    def _greedy(self, greedy: bool) -> None:
        """Greedy decoding (temperature 0) ignores top-k and top-p: grey them out."""
        self.top_k.disabled = self.top_p.disabled = greedy

    def settings(self) -> dict[str, Any]:
        """The controls' current values, as keyword arguments of the ``generate_into`` callback (and of
        ``generate_text``); ``top_p`` 1.0 is off."""
        return {
            "prompt": self.prompt.value,
            "temperature": float(self.temperature.value),
            "top_k": int(self.top_k.value),
            "top_p": float(self.top_p.value),
            "max_new_tokens": int(self.max_new_tokens.value),
            "seed": int(self.seed.value),
        }


def sampler_widget(model: GPT, **defaults: Any) -> tuple[SamplerWidget, GenerateInto]:
    """A sampler for ``model``, and the callback its button runs.

    ``defaults`` set the controls' starting values (``prompt``, ``temperature``, ``top_k``, ``top_p``,
    ``max_new_tokens``, ``seed``; ``top_p`` None or 1.0 is off). The callback, ``generate_into(output, prompt,
    temperature, top_k, max_new_tokens, seed, top_p=None) -> str``, streams a sample into ``output`` and
    returns the generated text (the prompt's continuation, as ``generate_text`` returns it). The button
    calls it with the controls' values, disables itself while it runs, and shows any error (an empty
    prompt, say) in the output area.
    """
    widget = SamplerWidget(**defaults)

    def generate_into(
        output: widgets.Output,
        prompt: str,
        temperature: float,
        top_k: int,
        max_new_tokens: int,
        seed: int,
        top_p: float | None = None,
    ) -> str:
        return stream_into(model, output, prompt, temperature, top_k, max_new_tokens, seed, top_p)

    def on_click(_button: widgets.Button) -> None:
        widget.button.disabled, widget.button.description = True, "Generating..."
        try:
            generate_into(widget.output, **widget.settings())
        except Exception as e:  # noqa: BLE001 - a callback's exception would only reach the kernel's log
            widget.output.outputs = ({"output_type": "stream", "name": "stderr", "text": f"{type(e).__name__}: {e}\n"},)
        finally:
            widget.button.disabled, widget.button.description = False, "Generate"

    widget.button.on_click(on_click)
    return widget, generate_into
