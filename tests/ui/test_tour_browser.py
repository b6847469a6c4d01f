"""The workbench tour in a real browser: Chromium (driven by Playwright) against a JupyterLab server
started here on localhost. It runs the tour notebook, clicks the map, drags a box selection in the
embedding scatter, and checks what a person would see. Screenshots go to ``$EOSSL_ARTIFACTS``
(default tests/ui/artifacts/). Also checks that the page asked nothing of the network but the
local server (no CDN, no tiles).

Skips where /usr/bin/chromium is missing (a laptop); CI installs it (.ci/run).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from _tiny import REPO

CHROMIUM = Path("/usr/bin/chromium")
TOUR = REPO / "notebooks" / "11_workbench_tour.ipynb"
ARTIFACTS = Path(os.environ.get("EOSSL_ARTIFACTS", REPO / "tests" / "ui" / "artifacts"))
RUN_ALL_TIMEOUT_S = 420   # the tour takes ~1.5 min on 2 free cores; shared CI machines can be much slower

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="no /usr/bin/chromium (CI installs it; apt-get install chromium to run this)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed: pip install -e '.[dev]'")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(folder: Path) -> None:
    """User settings for the test server: every cell in the DOM (no virtual scrolling), no news
    or update checks (they would go to the network and pop up over the page)."""
    def write(plugin: str, values: dict) -> None:
        path = folder / plugin
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    write("@jupyterlab/notebook-extension/tracker.jupyterlab-settings",
          {"windowingMode": "none", "autoStartDefaultKernel": True})
    write("@jupyterlab/apputils-extension/notification.jupyterlab-settings",
          {"fetchNews": "false", "checkForUpdates": False})


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(TOUR, root / TOUR.name)
    _settings(root / ".settings")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "EOSSL_RUNS": str(root / "runs"), "EOSSL_PROGRESS": "0",
           "JUPYTERLAB_SETTINGS_DIR": str(root / ".settings"), "JUPYTERLAB_WORKSPACES_DIR": str(root / ".ws"),
           "JUPYTER_RUNTIME_DIR": str(root / ".runtime")}
    log = open(root / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True", "--LabApp.news_url=None",
         "--LabApp.extension_manager=readonly", "--LabApp.check_for_updates_class="
         "jupyterlab.NeverCheckForUpdate"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError("JupyterLab did not start:\n" + (root / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield {"base": base, "token": token, "root": root}
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _wait(page, predicate_js: str, timeout_s: float, what: str, arg=None):
    try:
        page.wait_for_function(predicate_js, arg=arg, timeout=timeout_s * 1000, polling=500)
    except sync_api.TimeoutError:
        _shot(page, f"timeout-{re.sub('[^a-z]+', '-', what.lower())}")
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}") from None


ALL_CELLS_DONE = """() => {
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')];
  return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
}"""


# Bokeh draws tooltips inside shadow roots: walk them for a visible tooltip holding a PNG data URL.
TOOLTIP_WITH_THUMBNAIL = """() => {
  const walk = (root) => {
    for (const e of root.querySelectorAll('*')) {
      if (String(e.className || '').includes('ooltip') && e.getBoundingClientRect().width > 0) {
        const scan = (r) => { for (const i of r.querySelectorAll('*')) {
          if (i.tagName === 'IMG' && (i.getAttribute('src') || '').startsWith('data:image/png')) return true;
          if (i.shadowRoot && scan(i.shadowRoot)) return true; } return false; };
        if (scan(e) || (e.shadowRoot && scan(e.shadowRoot))) return e.innerText || (e.shadowRoot && e.shadowRoot.textContent) || 'tooltip';
      }
      if (e.shadowRoot) { const t = walk(e.shadowRoot); if (t) return t; }
    }
    return null;
  };
  return walk(document);
}"""


def test_tour_in_chromium(lab):
    outside = []        # requests that left the machine: must stay empty (offline workbench)
    console_errors = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM),
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(
            (lab["base"], "data:", "blob:", "about:")) else None)
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        try:
            page.goto(f"{lab['base']}/lab/tree/{TOUR.name}?token={lab['token']}", timeout=120_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
            select = page.locator(".jp-Dialog button", has_text=re.compile("^Select$"))
            try:  # "Select Kernel" where the setting above is not honoured: take the notebook's kernel
                select.click(timeout=5_000)
            except sync_api.TimeoutError:
                pass
            _wait(page, "() => !!document.querySelector('.jp-Notebook-ExecutionIndicator[data-status=\"idle\"]')"
                        " || [...document.querySelectorAll('.jp-StatusBar-TextItem')].some(e => /Idle/.test(e.textContent))",
                  120, "the kernel to start")

            # Run > Run All Cells, as a person would
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Run All Cells$")).click()
            _wait(page, ALL_CELLS_DONE, RUN_ALL_TIMEOUT_S, "all cells to run")
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                                  has_text="Traceback")
            assert errors.count() == 0, errors.first.inner_text()

            # the map explorer drew its overlays and its status line
            explorer_map = page.locator(".eossl-map").first
            explorer_map.wait_for(timeout=60_000)
            _wait(page, "() => document.querySelectorAll('.eossl-map img.leaflet-image-layer').length >= 6",
                  60, "the map overlays")
            status = page.locator(".eossl-status").first
            _wait(page, "() => /patches selected/.test(document.querySelector('.eossl-status').textContent)",
                  60, "the notebook's selection to reach the map")
            explorer_map.scroll_into_view_if_needed()
            _shot(page, "1-after-run-all")

            # click the middle of the map: a similarity search from the patch there
            overlays_before = set(page.eval_on_selector_all(".eossl-map >> nth=0 >> img.leaflet-image-layer",
                                                            "els => els.map(e => e.src)"))
            gallery_before = page.eval_on_selector_all(".eossl-gallery img", "els => els.map(e => e.src)")
            box = explorer_map.bounding_box()
            page.mouse.click(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.55)
            _wait(page, "() => /most similar patches/.test(document.querySelector('.eossl-status').textContent)",
                  60, "the click's similarity search")
            text = status.inner_text()
            assert re.search(r"patch \(row \d+, col \d+\) at [\d.]+, [\d.]+: the 12 most similar", text), text
            _wait(page, "(before) => { const now = [...document.querySelectorAll('.eossl-gallery img')]"
                        ".map(e => e.src); return now.length === 12 && now.join() !== before.join(); }",
                  60, "the gallery to show the new hits", arg=gallery_before)
            overlays_after = set(page.eval_on_selector_all(".eossl-map >> nth=0 >> img.leaflet-image-layer",
                                                           "els => els.map(e => e.src)"))
            assert overlays_after - overlays_before, "the similarity heat map did not change on the map"
            n_hits = page.locator(".eossl-map").first.locator("path[stroke='#00e5ff']").count()
            assert n_hits == 12, f"{n_hits} top-k outlines on the map, expected 12"
            assert page.locator(".eossl-map").first.locator("path[stroke='#ffea00']").count() == 1
            _shot(page, "2-after-map-click")

            # the scatter rings the clicked patch; then a box selection outlines patches on the map
            scatter = page.locator(".eossl-scatter").first
            scatter.scroll_into_view_if_needed()
            _wait(page, "() => /ringed in the scatter|not among the points/.test("
                        "document.querySelector('.eossl-scatter-status').textContent)", 60,
                  "the map click to reach the scatter")
            selection_before = page.locator(".eossl-scatter-status").inner_text()
            canvas = scatter.locator("canvas").first
            canvas.wait_for(timeout=60_000)
            sbox = scatter.bounding_box()
            x0, y0 = sbox["x"] + sbox["width"] * 0.45, sbox["y"] + sbox["height"] * 0.12
            x1, y1 = sbox["x"] + sbox["width"] * 0.85, sbox["y"] + sbox["height"] * 0.92
            page.mouse.move(x0, y0)
            page.mouse.down()
            for k in range(1, 11):
                page.mouse.move(x0 + (x1 - x0) * k / 10, y0 + (y1 - y0) * k / 10)
            page.mouse.up()
            _wait(page, "(before) => { const t = document.querySelector('.eossl-scatter-status').textContent;"
                        " return /patches selected/.test(t) && t !== before; }", 60,
                  "the box selection to reach Python", arg=selection_before)
            selected = int(re.search(r"(\d+) patches selected", page.locator(".eossl-scatter-status").inner_text())[1])
            _wait(page, "(n) => [...document.querySelectorAll('.eossl-map')].some(m => "
                        "m.querySelectorAll(\"path[stroke='#ff3d00']\").length === n)", 60,
                  "the selected patches to be outlined on the map", arg=selected)
            _shot(page, "3-after-scatter-selection")

            # hovering a point shows that patch's thumbnail (a data URL) and its label
            found = None
            for fy in (0.5, 0.6, 0.7, 0.8, 0.4, 0.3, 0.9, 0.2):
                for fx in (0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.85):
                    page.mouse.move(sbox["x"] + sbox["width"] * fx, sbox["y"] + sbox["height"] * fy)
                    page.wait_for_timeout(60)
                    found = page.evaluate(TOOLTIP_WITH_THUMBNAIL)
                    if found:
                        break
                if found:
                    break
            assert found, "no thumbnail tooltip appeared while hovering the scatter"
            assert re.search(r"cluster \d+", found), found
            _shot(page, "4-hover-thumbnail")
        finally:
            browser.close()
    assert not outside, f"the page asked the network for {sorted(set(outside))[:5]}"
