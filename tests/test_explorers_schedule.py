"""The schedule explorer: its curves are lr_at's, its figure is labelled, and its widget redraws on change."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest

from nanogpt_lib.config import ConfigError, TrainConfig
from nanogpt_lib.course.explorers import schedule
from nanogpt_lib.train import lr_at

SETTINGS = dict(warmup_steps=30, decay_frac=0.25, lr=3e-3, min_lr=1e-4, max_steps=200)


@pytest.mark.parametrize("name", ["cosine", "wsd"])
def test_curve_is_lr_at(name):
    curve = schedule.lr_curve(name, **SETTINGS)
    cfg = replace(TrainConfig(), schedule=name, **SETTINGS)
    assert curve == [lr_at(step, cfg) for step in range(200)]  # the library's own numbers: equal, not close
    assert curve[29] == 3e-3 and curve[0] == 3e-3 / 30  # warmup reaches the peak at its last step
    assert min(curve) >= 1e-4 and curve[-1] < 3e-3 / 2


def test_wsd_is_flat_then_linear():
    curve = schedule.lr_curve("wsd", **SETTINGS)
    start = 200 - round(0.25 * 200)
    assert set(curve[30:start]) == {3e-3}  # the stable phase
    drops = [a - b for a, b in zip(curve[start:], curve[start + 1 :])]
    assert all(d == pytest.approx(drops[0], rel=1e-9) for d in drops)  # one straight line down


def test_bad_settings_are_the_configs_errors():
    with pytest.raises(ConfigError, match="min_lr"):
        schedule.lr_curve("wsd", **{**SETTINGS, "min_lr": 1e-2})
    with pytest.raises(ConfigError, match="decay_frac"):
        schedule.lr_curve("wsd", **{**SETTINGS, "decay_frac": 0.0})
    with pytest.raises(ConfigError, match="schedule"):
        schedule.lr_curve("linear", **SETTINGS)


def test_figure_has_both_curves_labelled():
    fig = schedule.schedule_figure(**SETTINGS)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "step" and "learning rate" in ax.get_ylabel()
    assert "peak 0.003" in ax.get_title() and "25%" in ax.get_title()
    lines = {line.get_label(): line for line in ax.get_lines()}
    for name in ("cosine", "wsd"):
        assert list(lines[name].get_ydata()) == schedule.lr_curve(name, **SETTINGS)
    assert "WSD decay starts" in lines and lines["WSD decay starts"].get_xdata()[0] == 150
    assert schedule.figure_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def png_of(widget) -> bytes:
    (item,) = widget.plot.outputs
    return base64.b64decode(item["data"]["image/png"])


def test_widget_redraws_on_change(monkeypatch):
    pytest.importorskip("ipywidgets")
    seen = []
    real = schedule.schedule_figure
    monkeypatch.setattr(schedule, "schedule_figure", lambda *a: seen.append(a) or real(*a))
    w = schedule.explorer(max_steps=300)
    classes = {
        part: getattr(w, attr)._dom_classes
        for part, attr in (
            ("warmup", "warmup"),
            ("decay", "decay"),
            ("peak", "peak"),
            ("min", "minimum"),
            ("plot", "plot"),
        )
    }
    assert classes == {part: (f"nanogpt-schedule-{part}",) for part in classes}
    assert seen[-1] == (100, 0.2, 2e-3, 2e-4, 300)  # drawn once at start, with the recipe's values
    first = png_of(w)
    assert first[:8] == b"\x89PNG\r\n\x1a\n"

    w.warmup.value = 40
    assert seen[-1][0] == 40 and png_of(w) != first
    w.decay.value = 0.5
    assert seen[-1][1] == 0.5
    w.peak.value = 1e-2
    assert seen[-1][2] == pytest.approx(1e-2)
    w.minimum.value = 1e-5
    assert seen[-1][3] == pytest.approx(1e-5) and len(seen) == 5 and len(w.plot.outputs) == 1

    w.minimum.value = 1e-1  # above the peak: no figure, the reason instead
    (item,) = w.plot.outputs
    assert item["output_type"] == "stream" and "min_lr" in item["text"]
    w.minimum.value = 1e-4  # and back
    assert png_of(w)[:8] == b"\x89PNG\r\n\x1a\n"
