"""The notebook extra installs a JupyterLab set that JupyterLab itself lists as compatible: RISE (slides)
and ipywidgets' manager (the explorers) enabled, and no enabled extension marked incompatible.

jupyterlab-rise 0.43 pulls in jupyterlab-mathjax3 4.3.0, a JupyterLab 3 extension that 4.x marks X; the
`notebooks` extra pins 0.42.0, which does not. An environment installed before the pin keeps the old
package: `pip uninstall jupyterlab-mathjax3 && pip install -e ".[notebooks]"` (what `nanogpt doctor` says)."""

from __future__ import annotations

import pytest

from nanogpt_lib import doctor

pytest.importorskip("jupyterlab", reason="the notebooks extra is not installed")


def test_jupyterlab_lists_every_extension_compatible_and_the_course_ones_enabled():
    exts = doctor.labextensions()
    for needed in doctor.LAB_EXTENSIONS:
        assert exts.get(needed, (False, False)) == (True, True), (needed, exts)
    incompatible = sorted(name for name, (enabled, compatible) in exts.items() if enabled and not compatible)
    assert not incompatible, f"`jupyter labextension list` marks {incompatible} incompatible with this JupyterLab"
