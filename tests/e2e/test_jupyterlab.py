"""End to end: JupyterLab in a real (headless) browser shows the notebooks' widgets and plots.

The library tests and nbval run the notebooks' code, but neither sees what a reader sees: whether the
widget extension loads, whether the sampler renders and its Generate button works through the browser.
This test starts JupyterLab from the installed environment on a loopback port with a random token and
throwaway Jupyter folders, drives Debian's ``chromium`` with Playwright on copies of the notebooks (the
committed ones are never rewritten), and saves a screenshot of each step (and of the page at a failure) in
``$E2E_ARTIFACTS`` (default: the test's tmp folder).

Every wait is on a state, never on a point in time, and each is bounded by a generous timeout sized for a
loaded 2-core machine: the notebook fully loaded with its kernel connected and idle before Run All, every
code cell executed (execution counts from this kernel, in order) after it, the widget's own elements
attached, and each Generate click seen starting and finishing on the button itself.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``; ``$E2E_CHROMIUM`` names another) and
``playwright`` (the ``e2e`` extra; its own browser download is never used). Without them it skips, except
under CI (``CI`` set), where a missing browser is a failure.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow  # a browser and a Jupyter server: 10-80 s a test (busy machine, one thread)
REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium"))  # Debian's package
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SAMPLING, DATA_PREP = "07_sampling.ipynb", "01_data_prep.ipynb"
TOKENIZER, ATTENTION = "02_tokenizer.ipynb", "03_attention.ipynb"  # the tokenizer and attention explorers
SCHEDULE = "05_schedule_explorer.ipynb"  # 05's explorer cell alone (05 itself trains: minutes in a browser)

# Upper bounds in seconds, not delays: every wait returns as soon as its state holds. Measured on a 2-core
# machine: server up in ~5 s, notebook + kernel ready in ~5 s, Run All of 06 in ~15 s when idle and ~250 s
# at load average 10 (other test runs beside it, native or emulated AVX2), a Generate click in 1-10 s. The
# bounds leave >3x over the loaded figures and still end a hung run within minutes.
SERVER_S = 180  # jupyter lab answers /api/status
NOTEBOOK_S = 300  # the page shows the whole notebook and its kernel is connected and idle
RUN_ALL_S = 900  # every code cell of 06 has run
WIDGET_S = 180  # the sampler's elements are attached after its cell ran
GENERATE_S = 300  # one Generate click, from the click to the button's return
ACTION_MS = 120_000  # Playwright's default for a click, a fill, a locator wait

# The notebook state as JupyterLab's own objects hold it (the app is exposed with
# --LabApp.expose_app_in_browser). Read from the models, not the DOM: a windowed notebook need not attach
# cells that are out of view, and a cell prompt says nothing about which kernel ran it.
NOTEBOOK_STATE_JS = """(path) => {
  const dialogs = Array.from(document.querySelectorAll('.jp-Dialog'),
                             d => d.innerText.replace(/\\s+/g, ' ').trim());
  const app = window.jupyterapp;
  if (!app) return {app: false, dialogs};
  let panel = null;
  for (const w of app.shell.widgets('main')) if (w.context && w.context.path === path) panel = w;
  if (!panel) return {app: true, panel: false, dialogs};
  const loaded = panel.context.isReady && !!panel.content.model;
  const kernel = panel.sessionContext.session ? panel.sessionContext.session.kernel : null;
  const cells = [];
  if (loaded) {
    for (const cell of panel.content.model.cells) {
      if (cell.type !== 'code') continue;
      const errors = cell.outputs.toJSON().filter(o => o.output_type === 'error')
                                          .map(o => `${o.ename}: ${o.evalue}`);
      cells.push({count: cell.executionCount, running: cell.executionState === 'running', errors});
    }
  }
  return {app: true, panel: true, loaded, n_cells: loaded ? panel.content.model.cells.length : 0,
          session_ready: panel.sessionContext.isReady, kernel: kernel ? kernel.status : null,
          connection: kernel ? kernel.connectionStatus : null, cells, dialogs};
}"""

# Records every label the Generate button shows, so a click is known to have started ("Generating...")
# and finished (back to "Generate", enabled) however fast the kernel answers.
WATCH_BUTTON_JS = """(button) => {
  if (window.__e2eButtonObserver) window.__e2eButtonObserver.disconnect();
  window.__e2eButtonLabels = [];
  window.__e2eButtonObserver = new MutationObserver(
      () => window.__e2eButtonLabels.push(button.textContent.trim()));
  window.__e2eButtonObserver.observe(button, {subtree: true, childList: true, characterData: true,
                                              attributes: true});
}"""
CLICK_DONE_JS = """(button) => window.__e2eButtonLabels.some(label => label.startsWith('Generating'))
  && button.textContent.trim() === 'Generate' && !button.disabled"""


def _require(ok: bool, reason: str) -> None:
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 - loopback only
        return json.loads(r.read())


def _strip(src: Path, dst: Path) -> int:
    """Copy a notebook without outputs, execution counts or saved widget state; return its cell count.

    Run All must then leave a count on every code cell, from this kernel alone, and the page can show no
    sampler but the one this run created (a saved one would render as a dead Generate button)."""
    nb = json.loads(src.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    nb["metadata"].pop("widgets", None)
    dst.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return len(nb["cells"])


def _explorer_cell_alone(src: Path, dst: Path) -> int:
    """A notebook of two cells: the recipe 05 shows its schedule for, then 05's own explorer cell (found by
    the module it imports, so the test follows the chapter's cell as it is edited)."""
    nb = json.loads(src.read_text(encoding="utf-8"))
    cell = next(
        c
        for c in nb["cells"]
        if c["cell_type"] == "code"
        and "from nanogpt_lib.course.explorers.schedule import explorer" in "".join(c["source"])
    )
    setup = (
        "from IPython.display import display\n\nfrom nanogpt_lib.config import TrainConfig\n\nrecipe = TrainConfig()"
    )
    nb["cells"] = [
        {"cell_type": "code", "id": "setup", "metadata": {}, "source": setup, "outputs": [], "execution_count": None},
        {**cell, "outputs": [], "execution_count": None},
    ]
    nb["metadata"].pop("widgets", None)
    dst.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return len(nb["cells"])


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (the server's kernels), from /proc; empty where there is none."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_leftovers(pids: list[int], marker: str) -> list[int]:
    """SIGKILL those of ``pids`` still running whose command line names ``marker`` (our throwaway folder,
    so a recycled pid is never hit); return them."""
    killed = []
    for pid in pids:
        try:
            if marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        except (OSError, ProcessLookupError):
            pass  # already gone
    return killed


def _git_status() -> str | None:
    try:
        r = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain=v1", "--untracked-files=all"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


@pytest.fixture(scope="module", autouse=True)
def tree_unchanged() -> Iterator[None]:
    """The test writes nothing into the working tree (only into tmp folders); checked where git is."""
    before = _git_status()
    yield
    after = _git_status()
    if before is not None and after is not None:
        new = sorted(set(after.splitlines()) - set(before.splitlines()))
        assert not new, f"the browser test changed the working tree (git status): {new}"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("E2E_ARTIFACTS") or tmp_path_factory.mktemp("e2e-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots in {folder}")
    return folder


def _start_server(tmp: Path, root: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str, str]:
    """Start jupyter lab and wait for /api/status; a port taken between choosing and binding is retried."""
    for _attempt in range(3):
        port, token = _free_port(), secrets.token_hex(16)
        cmd = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            f"--ServerApp.port={port}",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.port_retries=0",
            "--LabApp.expose_app_in_browser=True",
            "--allow-root",
        ]
        with open(tmp / "server.log", "ab") as log:
            # Its own session: a Ctrl-C meant for pytest reaches the finaliser, not the server directly.
            proc = subprocess.Popen(
                cmd, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVER_S
        while proc.poll() is None:
            try:
                _get_json(f"{base}/api/status?token={token}")
                return proc, base, token
            except OSError:
                if time.monotonic() > deadline:
                    _stop_server(proc, base, token, tmp)
                    raise RuntimeError(f"jupyter lab did not answer /api/status within {SERVER_S} s") from None
                time.sleep(0.3)
        text = (tmp / "server.log").read_text(errors="replace")
        if "already in use" not in text[-3000:]:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{text[-3000:]}")
    raise RuntimeError("jupyter lab found no free port in 3 tries")


def _stop_server(proc: subprocess.Popen, base: str, token: str, tmp: Path) -> None:
    """Shut the kernels down, stop the server, and make sure no kernel outlives it."""
    kernel_pids = _descendants(proc.pid)
    try:  # kernels first, through the server, so each is shut down cleanly
        for kernel in _get_json(f"{base}/api/kernels?token={token}"):
            url = f"{base}/api/kernels/{kernel['id']}?token={token}"
            req = urllib.request.Request(url, method="DELETE")  # noqa: S310 - the loopback server this test started
            urllib.request.urlopen(req, timeout=30).close()  # noqa: S310 - the same loopback URL
    except Exception:  # noqa: BLE001 - best effort; the server stops them too, and leftovers are killed below
        pass
    kernel_pids += [pid for pid in _descendants(proc.pid) if pid not in kernel_pids]
    proc.send_signal(signal.SIGTERM)  # jupyter server shuts its remaining kernels down on SIGTERM
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
    killed = _kill_leftovers(kernel_pids, str(tmp))
    if killed:
        print(f"killed processes left by jupyter lab: {killed}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, dict[str, int]]]:
    """A JupyterLab server over a tmp folder holding copies of the notebooks.

    Yields (base url, token, {notebook: number of cells}). 06, 02 and 03 are copied without outputs (see
    ``_strip``); 01 with its committed outputs, whose plots one test looks for and which another presents."""
    _require(CHROMIUM.exists(), f"{CHROMIUM} not found: apt-get install chromium")
    _require(importlib.util.find_spec("playwright") is not None, 'playwright not installed: pip install -e ".[e2e]"')
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    root.mkdir()
    n_cells = {name: _strip(REPO / "notebooks" / name, root / name) for name in (SAMPLING, TOKENIZER, ATTENTION)}
    shutil.copy(REPO / "notebooks" / DATA_PREP, root / DATA_PREP)
    n_cells[SCHEDULE] = _explorer_cell_alone(REPO / "notebooks" / "05_training_step.ipynb", root / SCHEDULE)
    n_cells[DATA_PREP] = len(json.loads((root / DATA_PREP).read_text(encoding="utf-8"))["cells"])
    env = dict(os.environ)
    for var, sub in [
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"),
        ("IPYTHONDIR", "ipython"),
    ]:
        env[var] = str(tmp / sub)
    # No "get Jupyter news?" toast over the page (and no request for it).
    news = tmp / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env["NANOGPT_HOME"] = str(REPO)  # load_model() reads the repo's trained_model/
    env["MPLBACKEND"] = "agg"
    proc, base, token = _start_server(tmp, root, env)
    try:
        yield base, token, n_cells
    finally:
        _stop_server(proc, base, token, tmp)


@pytest.fixture(scope="module")
def browser_context(lab, tmp_path_factory: pytest.TempPathFactory):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, 'playwright not installed: pip install -e ".[e2e]"')
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        context.set_default_timeout(ACTION_MS)
        context.set_default_navigation_timeout(NOTEBOOK_S * 1000)
        try:
            yield context
        finally:
            context.close()


def _fail(page, artifacts: Path, shot: str, message: str) -> None:
    with contextlib.suppress(Exception):  # the message matters more than the picture
        page.screenshot(path=artifacts / f"{shot}-FAILED.png", full_page=True)
    pytest.fail(message)


def _poll(
    page, artifacts: Path, shot: str, what: str, timeout: float, check: Callable[[], tuple[bool, object]]
) -> None:
    """Until ``check()`` says done (it may fail itself on a state that cannot recover), at most ``timeout`` s."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        done, detail = check()
        if done:
            print(f"{what}: {time.monotonic() - start:.1f} s")
            return
        if time.monotonic() > deadline:
            _fail(page, artifacts, shot, f"{what}: not reached within {timeout:.0f} s; last state: {detail}")
        time.sleep(0.25)


def _notebook_state(page, name: str, artifacts: Path, shot: str) -> dict[str, Any]:
    state = page.evaluate(NOTEBOOK_STATE_JS, name)
    if state["dialogs"]:  # e.g. "Select Kernel": nothing runs until someone answers it
        _fail(page, artifacts, shot, f"JupyterLab shows a dialog over {name}: {state['dialogs']}")
    errors = [e for cell in state.get("cells", []) for e in cell["errors"]]
    if errors:
        _fail(page, artifacts, shot, f"{name} raised in the browser's kernel: {errors}")
    return state


def _open(context, lab, artifacts: Path, name: str, shot: str):
    """A page showing the whole notebook, its kernel connected and idle: only then is Run All safe.

    JupyterLab draws the first cells before the rest of the notebook has loaded and before its kernel
    session exists (status bar: "No Kernel | Initializing"). A Run All issued then finds no kernel: the
    cells are cleared but never run (or a "Select Kernel" dialog waits for an answer), and the new kernel
    soon reports idle with no cell queued. Waiting for "idle and no [*] prompt" then passed at once, with
    no sampler on the page: the flaky "expected one Generate button, found 0"."""
    base, token, n_cells = lab
    page = context.new_page()
    page.goto(f"{base}/lab/tree/{name}?token={token}")

    def ready() -> tuple[bool, object]:
        s = _notebook_state(page, name, artifacts, shot)
        ok = (
            s.get("loaded")
            and s["n_cells"] == n_cells[name]
            and s["session_ready"]
            and s["kernel"] == "idle"
            and s["connection"] == "connected"
        )
        return bool(ok), {k: v for k, v in s.items() if k != "cells"}

    _poll(page, artifacts, shot, f"{name} loaded with its kernel idle", NOTEBOOK_S, ready)
    return page


def _run_all(page, artifacts: Path, name: str, shot: str) -> list[int]:
    """Run All from the menu; return the code cells' execution counts once every one has run."""
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()

    def all_ran() -> tuple[bool, object]:
        s = _notebook_state(page, name, artifacts, shot)
        cells = s["cells"]
        done = bool(cells) and all(c["count"] is not None and not c["running"] for c in cells) and s["kernel"] == "idle"
        return done, {"kernel": s["kernel"], "counts": [c["count"] for c in cells]}

    _poll(page, artifacts, shot, f"Run All of {name}", RUN_ALL_S, all_ran)
    return [c["count"] for c in _notebook_state(page, name, artifacts, shot)["cells"]]


def _control(sampler, label: str):
    """A control of the sampler by its label, wherever it sits among the others."""
    return sampler.locator(f".widget-inline-hbox:has(> label.widget-label:text-is('{label}'))")


def _set_readout(sampler, label: str, value: str) -> None:
    readout = _control(sampler, label).locator(".widget-readout")
    readout.click()
    readout.press("Control+a")
    readout.press_sequentially(value)
    readout.press("Enter")


def _generate(page, artifacts: Path, shot: str, button, output) -> str:
    """Click Generate; the output's text once the button has shown this click start and finish.

    The kernel sends the button's "Generating...", then the streamed text, then "Generate" again, and the
    page applies them in that order, so once the button is back the text is complete."""
    page.evaluate(WATCH_BUTTON_JS, button.element_handle())
    button.click()
    try:
        page.wait_for_function(CLICK_DONE_JS, arg=button.element_handle(), timeout=GENERATE_S * 1000, polling=200)
    except Exception:  # noqa: BLE001 - Playwright's TimeoutError; report what the button went through
        labels = page.evaluate("() => window.__e2eButtonLabels")
        _fail(page, artifacts, shot, f"Generate did not finish within {GENERATE_S} s; button labels: {labels}")
    return output.text_content() if output.count() else ""


def test_sampler_widget_generates_the_library_text(browser_context, lab, artifacts: Path) -> None:
    from playwright.sync_api import expect

    from nanogpt_lib.sample import generate_text, load_model

    page = _open(browser_context, lab, artifacts, SAMPLING, "06")
    page.screenshot(path=artifacts / "06-1-opened.png")
    counts = _run_all(page, artifacts, SAMPLING, "06")
    assert counts == sorted(set(counts)), f"Run All did not run each code cell once, in order: {counts}"

    # The widget's own elements: its view is built asynchronously after the cell's output arrives.
    button = page.locator("button.jupyter-button").filter(has_text=re.compile(r"^\s*Generate\s*$"))
    sampler = page.locator(".widget-vbox", has=button).last
    try:
        expect(button).to_have_count(1, timeout=WIDGET_S * 1000)
        for label in ("prompt", "temperature", "seed"):
            expect(_control(sampler, label)).to_have_count(1, timeout=WIDGET_S * 1000)
        expect(sampler.locator(".widget-output")).to_have_count(1, timeout=WIDGET_S * 1000)
    except AssertionError as e:
        _fail(page, artifacts, "06", f"the sampler widget did not render within {WIDGET_S} s: {e}")
    sampler.scroll_into_view_if_needed()
    page.screenshot(path=artifacts / "06-2-ran-all.png", full_page=True)

    for bad in ["Loading widget...", "Error displaying widget", "model not found", "No such file", "Traceback"]:
        n = page.get_by_text(bad).count()
        assert n == 0, f"the notebook shows {bad!r} ({n}x) after Run All"
    expect(button).to_be_visible(timeout=ACTION_MS)
    output = sampler.locator(".widget-output .jp-OutputArea-output pre").last

    prompt = "JULIET:"
    _control(sampler, "prompt").locator("input").fill(prompt)
    _control(sampler, "prompt").locator("input").press("Enter")
    temperature = _control(sampler, "temperature").locator(".widget-readout")
    _set_readout(sampler, "temperature", "0")
    expect(temperature).to_have_text(re.compile(r"^\s*0(\.0+)?\s*$"), timeout=ACTION_MS)
    seed = _control(sampler, "seed").locator("input")
    seed.fill("0")
    seed.press("Enter")
    max_tokens = int(_control(sampler, "max tokens").locator(".widget-readout").inner_text())
    top_k = int(_control(sampler, "top-k").locator(".widget-readout").inner_text())
    page.screenshot(path=artifacts / "06-3-greedy-settings.png", full_page=True)

    greedy_shown = _generate(page, artifacts, "06", button, output)
    page.screenshot(path=artifacts / "06-4-greedy-generated.png", full_page=True)
    expected = prompt + generate_text(
        load_model(), prompt, max_new_tokens=max_tokens, temperature=0.0, top_k=top_k, seed=0
    )
    assert greedy_shown.rstrip() == expected.rstrip(), (
        f"the widget's greedy text differs from generate_text:\n--- widget\n{greedy_shown}\n--- library\n{expected}"
    )

    _set_readout(sampler, "temperature", "1.0")
    expect(temperature).to_have_text(re.compile(r"^\s*1(\.0+)?\s*$"), timeout=ACTION_MS)
    sampled_shown = _generate(page, artifacts, "06", button, output)
    page.screenshot(path=artifacts / "06-5-sampled-generated.png", full_page=True)
    assert sampled_shown.startswith(prompt), f"the sampled output does not start with the prompt: {sampled_shown!r}"
    assert sampled_shown.rstrip() != greedy_shown.rstrip(), "temperature 1.0 gave the greedy text again"
    page.close()


def test_data_prep_plots_render(browser_context, lab, artifacts: Path) -> None:
    page = _open(browser_context, lab, artifacts, DATA_PREP, "01")
    selector = ".jp-OutputArea-output img[src^='data:image/png']"
    # the committed outputs are rendered as the cells are attached; on Playwright's TimeoutError the assertion
    # below says what was found
    with contextlib.suppress(Exception):
        page.wait_for_function(
            "sel => document.querySelectorAll(sel).length >= 2", arg=selector, timeout=NOTEBOOK_S * 1000, polling=250
        )
    page.screenshot(path=artifacts / "01-plots.png", full_page=True)
    n = page.locator(selector).count()
    assert n >= 2, f"expected >= 2 PNG plots in {DATA_PREP}'s outputs, found {n}"
    page.close()


# ---- the explorers and the slideshow ---------------------------------------------------------------
# The explorers give their controls and outputs stable CSS classes (nanogpt-<explorer>-<part>, set with
# ``add_class`` in nanogpt_lib/course/explorers/), so the test finds them whatever the layout around them.


def _run_notebook(context, lab, artifacts: Path, name: str, shot: str):
    page = _open(context, lab, artifacts, name, shot)
    counts = _run_all(page, artifacts, name, shot)
    assert counts == sorted(set(counts)), f"Run All did not run each code cell of {name} once, in order: {counts}"
    return page


def _part(page, artifacts: Path, shot: str, cls: str):
    """The explorer's element with class ``cls`` (the last one: the live widget, not a saved view)."""
    from playwright.sync_api import expect

    part = page.locator(f".{cls}").last
    try:
        expect(part).to_be_attached(timeout=WIDGET_S * 1000)
    except AssertionError as e:
        _fail(page, artifacts, shot, f"no .{cls} on the page within {WIDGET_S} s: {e}")
    part.scroll_into_view_if_needed()
    return part


def _set(part, value: str) -> None:
    """Set a control whatever its kind: a dropdown, a slider (through its editable readout), a text box."""
    if part.locator("select").count():
        part.locator("select").select_option(label=value)
    elif part.locator(".widget-readout").count():
        readout = part.locator(".widget-readout")
        readout.click()
        readout.press("Control+a")
        readout.press_sequentially(value)
        readout.press("Enter")
    else:
        box = part.locator("input, textarea").first
        box.fill(value)
        box.press("Tab" if box.evaluate("e => e.tagName") == "TEXTAREA" else "Enter")  # commit the value


def _options(part) -> list[str]:
    """The values a control offers: a dropdown's labels, or a slider's min..max."""
    if part.locator("select").count():
        return [o.strip() for o in part.locator("select option").all_inner_texts()]
    lo, hi = (
        part.evaluate(f"e => e.querySelector('[aria-value{m}]')?.getAttribute('aria-value{m}')") for m in ("min", "max")
    )
    if lo is not None and hi is not None:
        return [str(v) for v in range(int(float(lo)), int(float(hi)) + 1)]  # noUiSlider's handle says both
    raise AssertionError(f"cannot read the options of {part}")


def _redrawn(page, artifacts: Path, shot: str, plot, before: bytes, what: str) -> bytes:
    """Wait until the plot's pixels differ from ``before`` (it was redrawn for the new setting)."""
    state: dict[str, bytes] = {}

    def changed() -> tuple[bool, object]:
        try:
            state["now"] = plot.screenshot()
        except Exception as e:  # noqa: BLE001 - detached while the output is cleared and redrawn
            return False, str(e)
        return state["now"] != before, "the same pixels"

    _poll(page, artifacts, shot, what, WIDGET_S, changed)
    return state["now"]


def test_attention_explorer_redraws(browser_context, lab, artifacts: Path) -> None:
    page = _run_notebook(browser_context, lab, artifacts, ATTENTION, "03")
    plot = _part(page, artifacts, "03", "nanogpt-attention-plot")
    layer, head = (_part(page, artifacts, "03", f"nanogpt-attention-{p}") for p in ("layer", "head"))
    drawn_js = "e => (e.tagName === 'IMG' ? e : e.querySelector('img')) ?.naturalWidth > 0"  # an Image widget
    _poll(
        page,
        artifacts,
        "03",
        "the attention heatmap drawn",
        WIDGET_S,
        lambda: (plot.evaluate(drawn_js), "no image in the plot output"),
    )
    page.screenshot(path=artifacts / "03-1-explorer.png", full_page=True)
    first = plot.screenshot()
    _set(layer, _options(layer)[-1])  # the last layer
    second = _redrawn(page, artifacts, "03", plot, first, "heatmap redrawn for another layer")
    _set(head, _options(head)[-1])  # and its last head
    _redrawn(page, artifacts, "03", plot, second, "heatmap redrawn for another head")
    plot.screenshot(path=artifacts / "03-2-explorer-changed.png")
    for bad in ("Error displaying widget", "Traceback"):
        assert page.get_by_text(bad).count() == 0, f"the notebook shows {bad!r}"
    page.close()


def test_tokenizer_explorer_counts_like_the_library(browser_context, lab, artifacts: Path) -> None:
    from playwright.sync_api import expect

    from nanogpt_lib.tokenizer import encode

    page = _run_notebook(browser_context, lab, artifacts, TOKENIZER, "02")
    box = _part(page, artifacts, "02", "nanogpt-tokens-text")
    count = _part(page, artifacts, "02", "nanogpt-tokens-count")
    text = "Wherefore art thou Romeo? Deny thy father, 12345 times; refuse thy name!"
    n = len(encode(text))
    _set(box, text)
    expect(count).to_contain_text(re.compile(rf"\b{n} tokens?\b"), timeout=WIDGET_S * 1000)
    page.screenshot(path=artifacts / "02-tokenizer-explorer.png", full_page=True)
    page.close()


def test_schedule_explorer_redraws(browser_context, lab, artifacts: Path) -> None:
    page = _run_notebook(browser_context, lab, artifacts, SCHEDULE, "05")
    plot = _part(page, artifacts, "05", "nanogpt-schedule-plot")
    _poll(
        page,
        artifacts,
        "05",
        "the schedule drawn",
        WIDGET_S,
        lambda: (plot.evaluate("e => e.querySelector('img')?.naturalWidth > 0"), "no image in the plot output"),
    )
    before = plot.screenshot()
    _set(_part(page, artifacts, "05", "nanogpt-schedule-warmup"), "400")
    _redrawn(page, artifacts, "05", plot, before, "schedule redrawn for a longer warmup")
    page.screenshot(path=artifacts / "05-schedule-explorer.png", full_page=True)
    page.close()


def test_a_chapter_presents_as_a_slideshow(browser_context, lab, artifacts: Path) -> None:
    # jupyterlab-rise serves a chapter as a reveal.js slideshow at /rise/<path> (what its toolbar button
    # opens); its cells stay live. The first slide is the chapter's title; the next key press moves on.
    base, token, _ = lab
    page = browser_context.new_page()
    page.goto(f"{base}/rise/{DATA_PREP}?token={token}")
    heading_js = """() => {
      const shown = Array.from(document.querySelectorAll('.reveal .slides section.present'))
                         .filter(s => !s.querySelector('section.present'));  // the innermost one shown
      const h = shown.length ? shown[0].querySelector('h1, h2, h3') : null;
      return h ? h.textContent.trim() : null;
    }"""
    _poll(
        page,
        artifacts,
        "rise",
        "the slideshow's first slide",
        NOTEBOOK_S,
        lambda: (bool(page.evaluate(heading_js)), "no slide heading yet"),
    )
    first = page.evaluate(heading_js)
    page.screenshot(path=artifacts / "rise-1-title.png")
    assert first.startswith("01"), f"the first slide shows {first!r}, not the chapter's title"
    page.keyboard.press("ArrowRight")
    _poll(
        page,
        artifacts,
        "rise",
        "the next slide",
        WIDGET_S,
        lambda: ((h := page.evaluate(heading_js)) not in (None, first), h),
    )
    page.screenshot(path=artifacts / "rise-2-next.png")
    page.close()
