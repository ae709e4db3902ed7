"""JupyterLab in a real browser: notebook ``07_explorer``'s widgets render and react (issue 6, part 1).

What a learner does after ``make lab``, done by headless Chromium (Debian's ``chromium``, driven by
Playwright's Python package with ``executable_path``; no browser download): JupyterLab serves a
smoke-profile copy of ``07_explorer`` (parameters injected by papermill ``prepare_only``; smoke
MiniCity, a source run and a ``maxsquare`` run made first in a temporary folder), the test clicks
Run → Run All Cells, waits for every cell, and checks that

* no cell shows an error (a traceback on stderr, "Error displaying widget", an error in the
  explorer's status line),
* the explorer's controls rendered (sliders, the run dropdown, the status line, the figure), not
  "Loading widget...",
* choosing another run in the dropdown, and moving the δ slider with the keyboard, redraw the
  figure (other PNG bytes) and update the status line,
* the kernel is this project's interpreter (the ``python3`` kernelspec of the venv).

A screenshot is written to ``runs/browser/07_explorer.png`` (also when the test fails, for the
diagnosis). The server is stopped in every case.

The same browser, with every request but ``file:`` and ``data:`` refused, also reads the rendered
course (:mod:`maxsq_lib.course.html_export`, issue 20): a display equation is a MathML element laid
out as a fraction, inline ones have a size, a solution's ``<details>`` is closed (its code hidden)
until its summary is clicked, the next and contents links lead where they say, the student edition
has no solution, and no page asked the network for anything.

Deselect with ``-m "not browser"``; without Chromium the tests are skipped, unless
``MAXSQ_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import contextlib
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

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "07_explorer.ipynb"
SCREENSHOT = REPO / "runs" / "browser" / "07_explorer.png"
CHROMIUM = Path(os.environ.get("MAXSQ_CHROMIUM", "/usr/bin/chromium"))
# What Chromium needs as root on a closed network: no sandbox (root), no GPU, and none of the
# background connections to Google's services (refused here, many at a time, on every start).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-quic")
ADAPTED_RUN = "maxsquare"           # the run the notebook shows first (its `method` parameter)
THRESHOLD_LABEL = "pseudo-label threshold δ"
ARROW_PRESSES = 5                   # δ slider steps (0.01 each) moved with the keyboard

SERVER_START_S = 90
KERNEL_READY_S = 90
RUN_ALL_S = 150
REDRAW_S = 45

pytestmark = pytest.mark.browser


def _require_browser() -> Any:
    """The Playwright sync API, or skip (fail under ``MAXSQ_REQUIRE_BROWSER=1``) naming what is missing."""
    missing = []
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"{CHROMIUM} (Debian: apt-get install chromium; .ci/run installs it)")
    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None
        missing.append("the Python package playwright (the dev extra: pip install -e '.[dev]')")
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if os.environ.get("MAXSQ_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return sync_api


# ----------------------------------------------------------------------------------------------
# the notebook's inputs: smoke data, two finished runs, a parameterised copy of 07_explorer
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def explorer_notebook(tmp_path_factory) -> Path:
    """A folder holding ``07_explorer.ipynb`` with smoke parameters pointing at fresh runs."""
    _require_browser()
    import papermill as pm

    from maxsq_prep.minicity import generate_minicity
    from maxsq_lib import config, engine

    base = tmp_path_factory.mktemp("browser")
    data, runs, notebooks = base / "minicity-smoke", base / "runs", base / "notebooks"
    generate_minicity(data, profile="smoke", progress=False, workers=1)
    for method, stage in ((None, "source"), (ADAPTED_RUN, "adapt")):
        cfg = config.resolve("smoke", "minicity", method,
                             {"runs_root": str(runs), "data": {"root": str(data)}, "threads": 1})
        engine.train(cfg, stage, progress=False)
    notebooks.mkdir()
    pm.execute_notebook(str(NOTEBOOK), str(notebooks / NOTEBOOK.name), prepare_only=True,
                        parameters={"profile": "smoke", "runs_root": str(runs), "data_root": str(data),
                                    "seed": 0, "seeds": [0], "method": ADAPTED_RUN},
                        kernel_name="python3", progress_bar=False)
    return notebooks


# ----------------------------------------------------------------------------------------------
# the JupyterLab server
# ----------------------------------------------------------------------------------------------


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_lab_settings(settings_dir: Path) -> None:
    """User settings of the test's JupyterLab: every cell in the DOM, no news or update checks.

    JupyterLab's default windowing skips rendering of cells outside the viewport, which would
    hide outputs from the checks below; the news and update checks would reach for the network.
    """
    files = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
            {"fetchNews": "false", "checkForUpdates": False},
    }
    for relative, values in files.items():
        path = settings_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (kernels start in sessions of their own, out of its group)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (it shuts its kernels down), then SIGKILL what is left."""
    below = _descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    for pid in below:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


@contextlib.contextmanager
def jupyter_lab(root: Path, work: Path) -> Iterator[dict[str, Any]]:
    """Run ``python -m jupyter lab`` on ``root`` (a free loopback port, a random token).

    Every Jupyter folder (config, data, runtime, settings, workspaces) lives under ``work``, so
    the user's own configuration and kernelspecs play no part; ``JUPYTER_PATH`` puts this venv's
    kernelspecs first. Yields ``url``, ``token``, ``proc`` and ``log``; stops the server in every case.
    """
    port, token = _free_loopback_port(), secrets.token_hex(24)
    settings = work / "lab-settings"
    _write_lab_settings(settings)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1",
               JUPYTER_CONFIG_DIR=str(work / "config"), JUPYTER_DATA_DIR=str(work / "data"),
               JUPYTER_RUNTIME_DIR=str(work / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(work / "workspaces"), IPYTHONDIR=str(work / "ipython"),
               JUPYTER_PATH=str(Path(sys.prefix) / "share" / "jupyter"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("MPLBACKEND", None)  # the kernel must keep its inline backend
    env.pop("JUPYTER_TOKEN", None)
    log = work / "jupyter-lab.log"
    argv = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
            "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={root}",
            f"--IdentityProvider.token={token}", "--LabApp.extension_manager=readonly"]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=root,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"jupyter lab exited with code {proc.returncode} before serving "
                                     f"{url}; its log ({log}):\n{_log_tail(log)}")
            request = urllib.request.Request(f"{url}/api/status",
                                             headers={"Authorization": f"token {token}"})
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(request, timeout=2) as response:
                    if response.status == 200:
                        break
            if time.monotonic() > deadline:
                raise AssertionError(f"jupyter lab did not answer {url}/api/status within "
                                     f"{SERVER_START_S} s; its log ({log}):\n{_log_tail(log)}")
            time.sleep(0.3)
        yield {"url": url, "token": token, "proc": proc, "log": log}
    finally:
        _stop_server(proc)


# ----------------------------------------------------------------------------------------------
# reading the page
# ----------------------------------------------------------------------------------------------

_NOTEBOOK_STATE_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  // a cell whose input is hidden (the exercises' solutions) shows a placeholder with an empty prompt
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt:not(.jp-Placeholder-prompt)')]
      .map(e => e.textContent.trim());
  const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  const status = document.querySelector('#jp-main-statusbar');
  const stderr = [...panel.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]')]
      .map(e => e.textContent);
  return {prompts, indicator: indicator ? indicator.dataset.status : null,
          statusbar: status ? status.textContent : '', stderr};
}"""

_FIGURE_BYTES_JS = """async (img) => {
  const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return {length: bytes.length, png: bytes[1] === 0x50 && bytes[2] === 0x4E && bytes[3] === 0x47,
          sha256: [...digest].map(b => b.toString(16).padStart(2, '0')).join(''),
          src: img.src, width: img.naturalWidth};
}"""

ERROR_PATTERN = re.compile(r"Traceback|\b\w*Error\b|\bException\b")


def _poll(what: str, probe: Callable[[], Any], timeout_s: float, detail: Callable[[], str],
          interval_s: float = 0.5) -> Any:
    """Call ``probe`` until it returns something truthy; fail naming ``what`` and ``detail()``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; {detail()}")
        time.sleep(interval_s)


def _errors_shown(page) -> list[str]:
    """Error texts visible in the notebook: tracebacks on stderr and failed widget views."""
    state = page.evaluate(_NOTEBOOK_STATE_JS) or {"stderr": []}
    errors = [text.strip()[-1500:] for text in state["stderr"] if ERROR_PATTERN.search(text)]
    for text in page.locator(".jp-OutputArea-output").all_inner_texts():
        if "Error displaying widget" in text or "Error rendering" in text:
            errors.append(text.strip()[:500])
    return errors


def _run_all_cells(page) -> dict[str, Any]:
    """Run → Run All Cells, then wait until the kernel is idle and no cell is queued."""
    page.locator(".lm-MenuBar-itemLabel:text-is('Run')").click()
    page.locator(".lm-Menu-item:has(.lm-Menu-itemLabel:text-is('Run All Cells'))").click()

    def finished() -> dict[str, Any] | None:
        state = page.evaluate(_NOTEBOOK_STATE_JS)
        if not state or state["indicator"] != "idle" or not state["prompts"]:
            return None
        if any("*" in p for p in state["prompts"]):
            return None
        executed = all(re.fullmatch(r"\[\d+\]:", p) for p in state["prompts"])
        return state if executed or _errors_shown(page) else None

    return _poll("every cell of 07_explorer to run (Run → Run All Cells)", finished, RUN_ALL_S,
                 lambda: f"cell prompts, kernel state: {page.evaluate(_NOTEBOOK_STATE_JS)}")


def _status_text(explorer) -> str:
    return explorer.locator(".widget-html-content").inner_text()


def _figure(page, explorer) -> dict[str, Any]:
    return page.evaluate(_FIGURE_BYTES_JS, explorer.locator("img.widget-image").element_handle())


def _wait_for_redraw(page, explorer, before: dict[str, Any], before_status: str, what: str,
                     expect_in_status: str) -> tuple[dict[str, Any], str]:
    """Wait until the status line shows ``expect_in_status`` and the figure's image changed."""
    img = explorer.locator("img.widget-image")

    def redrawn() -> bool:
        status = _status_text(explorer)
        return expect_in_status in status and img.get_attribute("src") != before["src"]

    _poll(f"the explorer to redraw after {what} (status line containing {expect_in_status!r} and a "
          "new figure)", redrawn, REDRAW_S,
          lambda: f"status line now: {_status_text(explorer)!r} (before: {before_status!r})")
    after, status = _figure(page, explorer), _status_text(explorer)
    assert not status.startswith("error"), f"the explorer reported after {what}: {status}"
    assert after["png"] and after["length"] > 1000, f"the figure after {what} is not a PNG: {after}"
    assert after["sha256"] != before["sha256"], f"{what} did not change the figure's PNG bytes"
    assert status != before_status, f"{what} did not change the status line ({status!r})"
    return after, status


# ----------------------------------------------------------------------------------------------
# the test
# ----------------------------------------------------------------------------------------------


@pytest.mark.timeout(420)
def test_explorer_widgets_render_and_react_in_jupyterlab(explorer_notebook, tmp_path):
    sync_api = _require_browser()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    console_errors: list[str] = []

    with jupyter_lab(explorer_notebook, tmp_path) as lab, sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=list(CHROMIUM_FLAGS), viewport={"width": 1400, "height": 1000})
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(30_000)
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: console_errors.append(f"page error: {e}"))
        try:
            page.goto(f"{lab['url']}/lab/tree/{NOTEBOOK.name}?token={lab['token']}")
            _poll("JupyterLab to open 07_explorer with an idle kernel (status bar '... | Idle')",
                  lambda: "| Idle" in (page.evaluate(_NOTEBOOK_STATE_JS) or {}).get("statusbar", ""),
                  KERNEL_READY_S,
                  lambda: f"page state: {page.evaluate(_NOTEBOOK_STATE_JS)}; server log:\n"
                          f"{_log_tail(lab['log'], 15)}")

            state = _run_all_cells(page)
            errors = _errors_shown(page)
            assert not errors, "cells of 07_explorer show errors:\n\n" + "\n\n".join(errors)
            assert all(re.fullmatch(r"\[\d+\]:", p) for p in state["prompts"]), \
                f"cells not executed: {state['prompts']}"

            # the widget view, not its placeholder
            explorer = page.locator(".jp-OutputArea-output .widget-vbox").filter(
                has=page.locator(".widget-dropdown select"))
            _poll("the explorer widget (a VBox with the run dropdown) in an output area",
                  lambda: explorer.count() == 1 and explorer.is_visible(), 30,
                  lambda: "outputs: " + " | ".join(
                      t[:120] for t in page.locator(".jp-OutputArea-output").all_inner_texts()))
            explorer.scroll_into_view_if_needed()
            outputs = " ".join(page.locator(".jp-OutputArea-output").all_inner_texts())
            assert "Loading widget" not in outputs, "a widget never left 'Loading widget...'"
            sliders = explorer.locator(".widget-slider")
            assert sliders.count() == 3, f"expected 3 sliders (image, δ, α), found {sliders.count()}"
            assert all(sliders.nth(k).is_visible() for k in range(3)), "a slider is not visible"
            dropdown = explorer.locator(".widget-dropdown select")
            options = dropdown.locator("option").all_inner_texts()
            assert options == ["source", ADAPTED_RUN], f"run dropdown offers {options}"
            assert dropdown.input_value() == ADAPTED_RUN

            img = explorer.locator("img.widget-image")
            _poll("the explorer's figure to load", lambda: img.evaluate(
                "e => e.complete && e.naturalWidth > 0 && e.src.length > 0"), 30,
                lambda: f"img src: {img.get_attribute('src')!r}")
            figure, status = _figure(page, explorer), _status_text(explorer)
            assert figure["png"] and figure["width"] > 500, f"the figure is not a drawn PNG: {figure}"
            assert f"· {ADAPTED_RUN}:" in status, f"status line does not name {ADAPTED_RUN}: {status!r}"

            # another run in the dropdown: another model's prediction, another figure
            dropdown.select_option("source")
            figure, status = _wait_for_redraw(page, explorer, figure, status,
                                              "choosing 'source' in the run dropdown", "· source:")

            # the δ slider, moved with the keyboard like a learner would
            threshold = explorer.locator(".widget-slider").filter(
                has=page.locator(f"label:text-is('{THRESHOLD_LABEL}')"))
            readout = threshold.locator(".widget-readout")
            start = float(readout.inner_text())
            key, sign = ("ArrowLeft", -1) if start >= 0.5 else ("ArrowRight", 1)
            handle = threshold.locator(".noUi-handle")
            handle.focus()
            for _ in range(ARROW_PRESSES):
                handle.press(key)
            target = f"{start + sign * 0.01 * ARROW_PRESSES:.2f}"
            figure, status = _wait_for_redraw(page, explorer, figure, status,
                                              f"pressing {key} {ARROW_PRESSES}× on the δ slider",
                                              f"δ = {target}:")
            assert readout.inner_text() == target

            errors = _errors_shown(page)
            assert not errors, "errors after using the widgets:\n\n" + "\n\n".join(errors)
            _assert_kernel_is_this_venv(lab["proc"])
            explorer.scroll_into_view_if_needed()
        finally:
            with contextlib.suppress(Exception):
                _hide_left_sidebar(page)
            with contextlib.suppress(Exception):
                page.screenshot(path=str(SCREENSHOT))
            context.close()
    assert SCREENSHOT.is_file() and SCREENSHOT.stat().st_size > 10_000, f"no screenshot at {SCREENSHOT}"


def _hide_left_sidebar(page) -> None:
    """More room for the figure in the screenshot (clicking the open side tab closes it)."""
    tab = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if tab.count():
        tab.first.click(timeout=5_000)


def _assert_kernel_is_this_venv(server: subprocess.Popen) -> None:
    """The notebook's ``python3`` kernel runs this project's interpreter, not another Python."""
    kernels = []
    for pid in _descendants(server.pid):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if any(b"ipykernel_launcher" in arg for arg in argv):
                kernels.append(argv[0].decode())
    assert kernels, "found no ipykernel process under the JupyterLab server"
    expected = Path(sys.executable)
    assert all(Path(k) == expected or shutil.which(k) == str(expected) for k in kernels), \
        f"kernel interpreter(s) {kernels}, expected this venv's {expected}"


# ----------------------------------------------------------------------------------------------
# the rendered course (maxsq_lib.course.html_export) in the same browser, offline
# ----------------------------------------------------------------------------------------------

_MATH_LAYOUT_JS = """() => {
  const m = document.querySelector('math[display="block"]');
  const frac = m && m.querySelector('mfrac');
  if (!frac) return null;
  const [num, den] = [...frac.children].map(e => e.getBoundingClientRect());
  const box = m.getBoundingClientRect();
  return {element: m.constructor.name, display: getComputedStyle(m).display, width: box.width,
          height: box.height, stacked: num.bottom <= den.top + 1,
          inline: [...document.querySelectorAll('math:not([display="block"])')]
                    .map(e => e.getBoundingClientRect().width)};
}"""


def _html_course(folder: Path) -> list[Path]:
    """Two notebooks shaped like the course's: an equation, an exercise and its solution."""
    import nbformat

    v4 = nbformat.v4
    paths = []
    for stem in ("00_setup", "04_adaptation-maxsquare"):
        nb = v4.new_notebook(cells=[
            v4.new_markdown_cell(f"# {stem}: a page\n\nWith $\\lambda_T$ the weight,\n\n"
                                 "$$L = -\\frac{1}{2N}\\sum_{n} p_n^2$$"),
            v4.new_markdown_cell("## Exercises\n\n1. Compute it."),
            v4.new_code_cell("# Solution 1: it\nprint('SOLUTION-MARK')", execution_count=1,
                             metadata={"tags": ["solution"]},
                             outputs=[v4.new_output("stream", name="stdout", text="SOLUTION-MARK\n")]),
        ])
        paths.append(folder / f"{stem}.ipynb")
        nbformat.write(nb, paths[-1])
    return paths


@pytest.mark.timeout(120)
def test_html_course_shows_mathml_and_closed_solutions_offline(tmp_path):
    sync_api = _require_browser()
    from maxsq_lib.course.html_export import INDEX_NAME, STUDENT_DIR, export_html

    out = tmp_path / "html"
    export_html(_html_course(tmp_path), out)
    requests: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=list(CHROMIUM_FLAGS))
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.set_default_timeout(15_000)
            # offline: anything but the pages themselves and their data: URLs is refused and noted
            page.route("**/*", lambda route: route.continue_()
                       if route.request.url.startswith(("file:", "data:"))
                       else (requests.append(route.request.url), route.abort()))
            page.goto((out / "00_setup.html").as_uri())

            math = page.evaluate(_MATH_LAYOUT_JS)
            assert math, "no display equation with a fraction on the page"
            assert math["element"] == "MathMLElement" and math["display"] == "block math", math
            assert math["width"] > 50 and math["height"] > 20 and math["stacked"], \
                f"the display equation is not laid out as a fraction: {math}"
            assert math["inline"] and all(w > 0 for w in math["inline"]), math

            details = page.locator("details.maxsq-solution")
            assert details.count() == 1 and details.evaluate("d => d.open") is False
            solution_code = details.locator(".jp-Cell-inputWrapper")
            assert not solution_code.is_visible(), "the solution shows before it is opened"
            assert not page.get_by_text("SOLUTION-MARK").first.is_visible()
            details.locator("summary").click()
            assert details.evaluate("d => d.open") is True and solution_code.is_visible()

            page.locator('nav.maxsq-top a[rel="next"]').click()
            page.wait_for_url("**/04_adaptation-maxsquare.html")
            page.locator('nav.maxsq-top a[rel="index"]').click()
            page.wait_for_url(f"**/{INDEX_NAME}")
            assert page.locator("p.maxsq-start a").get_attribute("href") == "00_setup.html"

            page.goto((out / STUDENT_DIR / "00_setup.html").as_uri())
            assert page.locator("details").count() == 0
            assert page.locator("p.maxsq-solution-omitted").is_visible()
            assert "SOLUTION-MARK" not in page.content()
        finally:
            browser.close()
    assert not requests, f"the pages asked the network for {requests}"
