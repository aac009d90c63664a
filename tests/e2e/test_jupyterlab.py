"""End to end: JupyterLab in a real (headless) browser shows the notebooks' widgets and plots.

The library tests and nbval run the notebooks' code, but neither sees what a reader sees: whether the
widget extension loads, whether the sampler renders and its Generate button works through the browser.
This test starts JupyterLab from the installed environment on a loopback port with a random token and
throwaway Jupyter folders, drives Debian's ``chromium`` with Playwright on copies of the notebooks (the
committed ones are never rewritten), and saves a screenshot of each step in ``$E2E_ARTIFACTS`` (default:
the test's tmp folder).

Needs ``/usr/bin/chromium`` (``apt-get install chromium``; ``$E2E_CHROMIUM`` names another) and
``playwright`` (the ``e2e`` extra; its own browser download is never used). Without them it skips, except
under CI (``CI`` set), where a missing browser is a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium"))  # Debian's package
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NOTEBOOKS = ["06_sampling.ipynb", "01_data_prep.ipynb"]


def _require(ok: bool, reason: str) -> None:
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback only
        return json.loads(r.read())


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("E2E_ARTIFACTS") or tmp_path_factory.mktemp("e2e-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots in {folder}")
    return folder


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    """A JupyterLab server over a tmp folder holding copies of the notebooks; yields (base url, token)."""
    _require(CHROMIUM.exists(), f"{CHROMIUM} not found: apt-get install chromium")
    _require(importlib.util.find_spec("playwright") is not None, 'playwright not installed: pip install -e ".[e2e]"')
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    root.mkdir()
    for name in NOTEBOOKS:
        shutil.copy(REPO / "notebooks" / name, root / name)
    env = dict(os.environ)
    for var, sub in [("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("JUPYTER_DATA_DIR", "data"), ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
                     ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"), ("IPYTHONDIR", "ipython")]:
        env[var] = str(tmp / sub)
    env["NANOGPT_HOME"] = str(REPO)  # load_model() reads the repo's trained_model/
    env["MPLBACKEND"] = "agg"
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--ServerApp.port={port}",
           "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--ServerApp.port_retries=0", "--allow-root"]
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed in the finaliser
    proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n"
                                   + (tmp / "server.log").read_text(errors="replace")[-3000:])
            try:
                _get_json(f"{base}/api/status?token={token}")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("jupyter lab did not answer /api/status within 60 s") from None
                time.sleep(0.3)
        yield base, token
    finally:
        try:  # kernels first, so none outlives the server
            for kernel in _get_json(f"{base}/api/kernels?token={token}"):
                req = urllib.request.Request(f"{base}/api/kernels/{kernel['id']}?token={token}", method="DELETE")
                urllib.request.urlopen(req, timeout=10).close()  # noqa: S310
        except Exception:  # noqa: BLE001 - best effort; the server is stopped below either way
            pass
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def browser_context(lab, tmp_path_factory: pytest.TempPathFactory):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, 'playwright not installed: pip install -e ".[e2e]"')
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(60_000)
        try:
            yield context
        finally:
            context.close()


def _open(context, lab, name: str):
    base, token = lab
    page = context.new_page()
    page.goto(f"{base}/lab/tree/{name}?token={token}")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(state="visible", timeout=120_000)
    return page


def _wait_idle(lab, page, timeout: float = 240) -> None:
    """Until no cell shows ``[*]`` and the kernel reports idle a few times in a row."""
    base, token = lab
    deadline, quiet = time.monotonic() + timeout, 0
    while quiet < 4:
        assert time.monotonic() < deadline, f"the kernel did not go idle within {timeout} s"
        busy_cells = page.locator(".jp-InputPrompt", has_text="[*]").count()
        states = [k["execution_state"] for k in _get_json(f"{base}/api/kernels?token={token}")]
        quiet = quiet + 1 if states and not busy_cells and all(s == "idle" for s in states) else 0
        time.sleep(0.5)


def _wait_stable(locator, button, seconds: float = 2.0, timeout: float = 120) -> str:
    """The locator's text once the button says Generate again and the text has stopped changing."""
    deadline, last, since = time.monotonic() + timeout, None, time.monotonic()
    while True:
        assert time.monotonic() < deadline, f"the output did not settle within {timeout} s: {last!r}"
        text = locator.text_content() if locator.count() else ""
        ready = button.inner_text().strip() == "Generate" and button.is_enabled()
        if text != last or not ready:
            last, since = text, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return text
        time.sleep(0.25)


def _control(sampler, label: str):
    return sampler.locator(f".widget-inline-hbox:has(> label.widget-label:text-is('{label}'))")


def _set_readout(sampler, label: str, value: str) -> None:
    readout = _control(sampler, label).locator(".widget-readout")
    readout.click()
    readout.press("Control+a")
    readout.type(value)
    readout.press("Enter")


def test_sampler_widget_generates_the_library_text(browser_context, lab, artifacts: Path) -> None:
    from nanogpt_lib.sample import generate_text, load_model

    page = _open(browser_context, lab, "06_sampling.ipynb")
    page.screenshot(path=artifacts / "06-1-opened.png")
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
    page.wait_for_timeout(1000)
    _wait_idle(lab, page)
    page.screenshot(path=artifacts / "06-2-ran-all.png", full_page=True)

    for bad in ["Loading widget...", "Error displaying widget", "model not found", "No such file",
                "Traceback"]:
        n = page.get_by_text(bad).count()
        assert n == 0, f"the notebook shows {bad!r} ({n}x) after Run All"
    button = page.locator("button.jupyter-button", has_text="Generate")
    assert button.count() == 1, f"expected one Generate button, found {button.count()} (widget not rendered?)"
    sampler = page.locator(".widget-vbox", has=button).last
    sampler.scroll_into_view_if_needed()
    assert button.is_visible()
    output = sampler.locator(".widget-output .jp-OutputArea-output pre").last

    prompt = "JULIET:"
    _control(sampler, "prompt").locator("input").fill(prompt)
    _control(sampler, "prompt").locator("input").press("Enter")
    _set_readout(sampler, "temperature", "0")
    seed = _control(sampler, "seed").locator("input")
    seed.fill("0")
    seed.press("Enter")
    assert _control(sampler, "temperature").locator(".widget-readout").inner_text().strip() in ("0.00", "0")
    max_tokens = int(_control(sampler, "max tokens").locator(".widget-readout").inner_text())
    top_k = int(_control(sampler, "top-k").locator(".widget-readout").inner_text())
    page.screenshot(path=artifacts / "06-3-greedy-settings.png", full_page=True)

    button.click()
    greedy_shown = _wait_stable(output, button)
    page.screenshot(path=artifacts / "06-4-greedy-generated.png", full_page=True)
    expected = prompt + generate_text(load_model(), prompt, max_new_tokens=max_tokens, temperature=0.0,
                                      top_k=top_k, seed=0)
    assert greedy_shown.rstrip() == expected.rstrip(), (
        f"the widget's greedy text differs from generate_text:\n--- widget\n{greedy_shown}\n--- library\n{expected}")

    _set_readout(sampler, "temperature", "1.0")
    button.click()
    sampled_shown = _wait_stable(output, button)
    page.screenshot(path=artifacts / "06-5-sampled-generated.png", full_page=True)
    assert sampled_shown.startswith(prompt), f"the sampled output does not start with the prompt: {sampled_shown!r}"
    assert sampled_shown.rstrip() != greedy_shown.rstrip(), "temperature 1.0 gave the greedy text again"
    page.close()


def test_data_prep_plots_render(browser_context, lab, artifacts: Path) -> None:
    page = _open(browser_context, lab, "01_data_prep.ipynb")
    images = page.locator(".jp-OutputArea-output img[src^='data:image/png']")
    deadline = time.monotonic() + 60
    while images.count() < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    page.screenshot(path=artifacts / "01-plots.png", full_page=True)
    assert images.count() >= 2, f"expected >= 2 PNG plots in 01_data_prep.ipynb's outputs, found {images.count()}"
    page.close()
