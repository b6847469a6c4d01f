"""The workbench tour in a real browser: Chromium (driven by Playwright) against a JupyterLab server
started here on localhost. It runs the tour notebook and drives every widget as a person would: presses
a training monitor's Stop while its run goes on, clicks the map explorer, checks that every map shows its
whole scene and that the band panel follows the click, drags a box selection in the embedding scatter
and hovers it, labels a patch in the label painter, drags the change explorer's swipe bar and moves its
threshold with the keyboard. Screenshots go to ``$EOSSL_ARTIFACTS``
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


def _open_and_run_all(page, url: str) -> None:
    """Open a notebook, wait for its kernel, and Run > Run All Cells, as a person would."""
    page.goto(url, timeout=120_000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
    select = page.locator(".jp-Dialog button", has_text=re.compile("^Select$"))
    try:  # "Select Kernel" where the setting above is not honoured: take the notebook's kernel
        select.click(timeout=5_000)
    except sync_api.TimeoutError:
        pass
    _wait(page, "() => !!document.querySelector('.jp-Notebook-ExecutionIndicator[data-status=\"idle\"]')"
                " || [...document.querySelectorAll('.jp-StatusBar-TextItem')].some(e => /Idle/.test(e.textContent))",
          120, "the kernel to start")
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Run All Cells$")).click()


ALL_CELLS_DONE = """() => {
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
    .filter(p => p.offsetParent !== null);      // the notebook in view, not one in a hidden tab
  return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
}"""


# The second TrainingMonitor (the live run at the end of the tour) has an enabled Stop button.
LIVE_STOP_ENABLED = """() => {
  const buttons = document.querySelectorAll('.eossl-stop');
  return buttons.length >= 2 && !buttons[1].disabled && /Stop/.test(buttons[1].textContent);
}"""


# Each map's first image layer (the scene) lies inside its map: nothing cut off at the edges.
SCENES_CUT_OFF = """() => {
  const out = [];
  for (const m of document.querySelectorAll('.eossl-map, .eossl-painter, .eossl-change-map')) {
    const box = m.getBoundingClientRect();
    const img = m.querySelector('img.leaflet-image-layer');
    if (!img || box.width === 0) continue;
    const r = img.getBoundingClientRect();
    if (r.left < box.left - 2 || r.right > box.right + 2 || r.top < box.top - 2 || r.bottom > box.bottom + 2)
      out.push(`${m.className.match(/eossl-[a-z-]+/)[0]} in ${m.parentElement.className.slice(0, 60)}: map ${Math.round(box.width)}x${Math.round(box.height)}, `
               + `scene ${Math.round(r.left - box.left)},${Math.round(r.top - box.top)} ${Math.round(r.width)}x${Math.round(r.height)}`);
  }
  return out;
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
            _open_and_run_all(page, f"{lab['base']}/lab/tree/{TOUR.name}?token={lab['token']}")

            # the last cells train for 10 s under a second monitor: press its Stop while the cell runs
            _wait(page, LIVE_STOP_ENABLED, RUN_ALL_TIMEOUT_S, "the live run's Stop button")
            stop = page.locator(".eossl-stop").nth(1)
            stop.scroll_into_view_if_needed()
            stop.click()
            _wait(page, ALL_CELLS_DONE, RUN_ALL_TIMEOUT_S, "all cells to run")
            live_status = page.locator(".eossl-monitor-status").nth(1).inner_text()
            assert "stopped" in live_status.lower(), live_status
            outputs = page.locator(".jp-Notebook .jp-CodeCell").last.locator(".jp-OutputArea-output").inner_text()
            assert "stopped by the button: True" in outputs, outputs
            _shot(page, "0-live-run-stopped")
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

            # every map opens with its whole scene in view (framed again once the browser laid it out)
            cut = page.evaluate(SCENES_CUT_OFF)
            assert not cut, f"maps that cut their scene off: {cut}"

            # the band panel follows the click on the explorer's map
            row_col = re.search(r"patch \(row (\d+), col (\d+)\)", text).groups()
            _wait(page, "(rc) => (document.querySelector('.eossl-bands-header') || {}).textContent"
                        "?.includes(`patch row ${rc[0]}, col ${rc[1]}`)", 30,
                  "the band panel to show the clicked patch", arg=list(row_col))

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

            # the label painter: pick a class, click the map; the classifier refits with one label more
            painter_map = page.locator(".eossl-painter").first
            painter_map.scroll_into_view_if_needed()
            painter_status = page.locator(".eossl-painter-status").first
            n_before = int(re.search(r"(\d+) labels", painter_status.inner_text())[1])
            page.locator(".widget-toggle-button", has_text=re.compile("^water$")).first.click()
            pbox = painter_map.bounding_box()
            page.mouse.click(pbox["x"] + pbox["width"] * 0.5, pbox["y"] + pbox["height"] * 0.5)
            _wait(page, "(n) => { const m = /(\\d+) labels/.exec(document.querySelector('.eossl-painter-status')"
                        ".textContent); return m && Number(m[1]) === n + 1; }", 60,
                  "the painter to take the click as a label", arg=n_before)
            assert "class map" in painter_status.inner_text()
            _shot(page, "5-painter-click")

            # the change explorer: drag the swipe bar, then move the threshold with the keyboard
            change_map = page.locator(".eossl-change-map").first
            change_map.scroll_into_view_if_needed()
            divider = change_map.locator(".leaflet-sbs-divider")
            left_before = divider.evaluate("e => e.getBoundingClientRect().left")
            cbox = change_map.bounding_box()
            y = cbox["y"] + cbox["height"] * 0.5
            page.mouse.move(left_before + 1, y)
            page.mouse.down()
            for k in range(1, 11):
                page.mouse.move(left_before + 1 - cbox["width"] * 0.12 * k / 10, y)
            page.mouse.up()
            left_after = divider.evaluate("e => e.getBoundingClientRect().left")
            assert left_after < left_before - cbox["width"] * 0.08, (left_before, left_after)
            # each date is clipped to its side of the bar (the swipe clips the dates' own panes)
            clips = [change_map.locator(f".leaflet-eossl-date-{i}-pane").evaluate("e => e.style.clip")
                     for i in (1, 2)]
            assert all(clips) and clips[0] != clips[1], f"the swipe bar does not split the dates: {clips}"
            report = page.locator(".eossl-change-report").first
            report_before = report.inner_text()
            handle = page.locator(".eossl-threshold .noUi-handle").first
            handle.click()
            for _ in range(15):
                handle.press("ArrowRight")
            _wait(page, "(before) => document.querySelector('.eossl-change-report').textContent !== before", 60,
                  "the report to follow the threshold", arg=report_before)
            before_n = int(re.search(r"([\d,]+) of", report_before)[1].replace(",", ""))
            after_n = int(re.search(r"([\d,]+) of", report.inner_text())[1].replace(",", ""))
            assert after_n < before_n, (report_before, report.inner_text())  # a higher threshold: fewer patches
            _shot(page, "6-change-swipe-threshold")
        finally:
            browser.close()
    assert not outside, f"the page asked the network for {sorted(set(outside))[:5]}"


# A map explorer over a 1000 x 1000 patch grid (10^6 embeddings): what a click costs on screen.
MILLION_CELLS = [
    """import numpy as np
import xarray as xr
from eossl_widgets import MapExplorer

n, dim = 1000, 64                                        # 10^6 patches, one 30 m pixel each
rng = np.random.default_rng(0)
grid = {"y": 4_000_000 - 30 * (np.arange(n) + 0.5), "x": 500_000 + 30 * (np.arange(n) + 0.5)}
scene = xr.DataArray(rng.integers(500, 3000, (3, n, n)).astype("uint16"), dims=("band", "y", "x"),
                     coords={"band": ["red", "green", "blue"], **grid}).rio.write_crs("EPSG:32633")
emb = xr.DataArray(rng.standard_normal((n, n, dim), dtype="float32"), dims=("y", "x", "dim"),
                   coords=grid).rio.write_crs("EPSG:32633")
explorer = MapExplorer(scene, emb, k=12, clusters=0)
explorer.click_patch(10, 10)                             # the first click builds the search index
explorer""",
]

# Times from the mouse press on the map to the similarity overlay's new image being decoded.
WATCH_OVERLAY = """() => {
  const map = document.querySelector('.eossl-map');
  window.__clicks = [];
  map.addEventListener('mousedown', () => { window.__t0 = performance.now(); }, true);
  new MutationObserver((changes) => {
    for (const c of changes) {
      if (c.attributeName === 'src' && c.target.classList.contains('leaflet-image-layer') && window.__t0) {
        const t0 = window.__t0; window.__t0 = null;
        c.target.decode().then(() => window.__clicks.push(performance.now() - t0));
      }
    }
  }).observe(map, {attributes: true, subtree: true, attributeFilter: ['src']});
}"""


def test_click_to_heat_map_at_a_million_patches(lab):
    """Click -> heat map on screen with 10^6 patches (issue 15's target: 300 ms). The times are
    written to $EOSSL_ARTIFACTS/click_latency.json and printed; the test checks the overlay changes
    on every click, not how fast (timings depend on the machine)."""
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in MILLION_CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, lab["root"] / "million.ipynb")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM),
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        try:
            # a workspace of its own: the tour's tab is not restored beside it (nor its kernel started)
            _open_and_run_all(page, f"{lab['base']}/lab/workspaces/million/tree/million.ipynb?token={lab['token']}")
            _wait(page, ALL_CELLS_DONE, RUN_ALL_TIMEOUT_S, "the million-patch explorer")
            _wait(page, "() => /most similar patches/.test((document.querySelector('.eossl-status') || {}).textContent)",
                  60, "the first search")
            page.evaluate(WATCH_OVERLAY)
            box = page.locator(".eossl-map").first.bounding_box()
            places = [(0.40, 0.40), (0.55, 0.50), (0.45, 0.62), (0.60, 0.35), (0.50, 0.55)]
            for i, (fx, fy) in enumerate(places, start=1):
                page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
                _wait(page, "(n) => window.__clicks.length >= n", 60, f"heat map {i} on screen", arg=i)
                page.wait_for_timeout(300)      # let the rest of the click (gallery) land before the next
            times = page.evaluate("() => window.__clicks")
            _shot(page, "7-million-patches")
        finally:
            browser.close()
    assert len(times) == len(places)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "click_latency.json").write_text(json.dumps({"patches": 1_000_000, "ms": times}))
    print(f"click -> heat map on screen at 10^6 patches: median {sorted(times)[len(times) // 2]:.0f} ms "
          f"(all: {', '.join(f'{t:.0f}' for t in times)})")
