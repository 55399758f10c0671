"""End to end: the pinned ComfyUI editor in headless Chromium against a fewstep server.

The editor must start with no uncaught page errors and no failed API request, show our nodes in its
search, open a graph through its own file-open path, queue it, and show the output image.
Chromium comes from Debian (``FEWSTEP_CHROMIUM``, default ``/usr/bin/chromium``); a screenshot is saved
under ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from fewstep.app.config import Config
from fewstep.app.registry import load_registry
from fewstep.app.server import create_app, default_options

REPO = Path(__file__).resolve().parents[2]
TEST_GRAPHS = REPO / "tests" / "server" / "graphs"
PACKS = REPO / "tests" / "server" / "packs"
# The graph the test opens and runs. Switching to the real default graph is this one line:
# GRAPH = REPO / "graphs" / "default.json"
GRAPH = TEST_GRAPHS / "image.json"
USES_TEST_PACK = GRAPH.is_relative_to(TEST_GRAPHS)      # the real graph needs the built-in packs
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("FEWSTEP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Skipped only where nobody asked for the browser: .ci/run sets FEWSTEP_CHROMIUM, and then a missing
# chromium is a failure, not a skip.
HAVE_CHROMIUM = Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is not None
if "FEWSTEP_CHROMIUM" in os.environ and not HAVE_CHROMIUM:
    raise RuntimeError(f"FEWSTEP_CHROMIUM={CHROMIUM} does not exist: install Debian's chromium")
pytestmark = pytest.mark.skipif(not HAVE_CHROMIUM, reason=f"chromium not found at {CHROMIUM} (set FEWSTEP_CHROMIUM)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real fewstep server (registry, executor, SQLite store, worker) in a thread on a free port."""
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.storage import JobStore

    config = Config(home=tmp_path_factory.mktemp("home"), port=_free_port(), auth_token=None)
    config.ensure_dirs()
    registry = load_registry([PACKS] if USES_TEST_PACK else [], entry_points=False, builtin=not USES_TEST_PACK)
    options = default_options(config)
    options = type(options)(**{**options.__dict__, "graphs_dir": GRAPH.parent,
                               "default_graph": GRAPH.name.removesuffix(".json")})
    app = create_app(config, registry, Executor(registry, CacheSet(config.cache), config.paths()),
                     JobStore(config.db_path), options=options)
    yield from serve_in_thread(app, config.port)


def serve_in_thread(app: web.Application, port: int) -> Iterator[str]:
    """Run ``app`` on its own event loop in a daemon thread; yields the base URL, then shuts down."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.run_until_complete(runner.cleanup())
    loop.close()


def run_in_chromium(profile: Path, screenshot: Path, log: PageLog, scenario: Any, timeout_ms: int) -> None:
    """Launch Debian's chromium headless with a fresh profile, run ``scenario(page)``, save a screenshot."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900})
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(timeout_ms)
        log.attach(page)
        try:
            scenario(page)
        finally:
            page.screenshot(path=str(screenshot))
            context.close()


class PageLog:
    """Uncaught page errors, console errors and failed requests to our server."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.failed: list[str] = []
        self.external: list[str] = []     # requests to other hosts (the editor tries a few; offline here)

    def attach(self, page: Any) -> None:
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on("console", lambda msg: msg.type == "error" and self.console_errors.append(msg.text))
        page.on("response", self._response)
        page.on("requestfailed", self._request_failed)

    def _request_failed(self, request: Any) -> None:
        entry = f"{request.method} {request.url} {request.failure}"
        (self.failed if request.url.startswith(self.base) else self.external).append(entry)

    def _response(self, response: Any) -> None:
        if response.url.startswith(self.base) and response.status >= 400:
            self.failed.append(f"{response.request.method} {response.url} -> {response.status}")


def test_editor_loads_runs_graph_and_shows_image(server: str, tmp_path: Path) -> None:
    log = PageLog(server)
    run_in_chromium(tmp_path / "chromium-profile", ARTIFACTS / "editor.png", log,
                    lambda page: _run_scenario(page, server, log), timeout_ms=30_000)


def _run_scenario(page: Any, server: str, log: PageLog) -> None:
    page.goto(server + "/")
    page.wait_for_function("() => window.app?.graph && window.LiteGraph?.registered_node_types?.SaveTestImage")
    # First visit: the editor opened the server's default graph (here the test graph's UI twin).
    page.wait_for_function("() => window.app.graph._nodes.some(n => n.type === 'SaveTestImage')")
    page.wait_for_timeout(1500)                  # let start-up requests settle
    assert log.page_errors == [], log.page_errors
    assert log.failed == [], log.failed
    _search_finds_node(page, "SolidImage")
    _open_graph_file(page, GRAPH)
    with page.expect_response(lambda r: "/api/view" in r.url and "fewstep_test" in r.url and r.status == 200,
                              timeout=40_000):
        page.click("[data-testid='queue-button']")
    page.wait_for_function("""() => {
        const node = window.app.graph._nodes.find(n => n.type === 'SaveTestImage');
        return node?.imgs?.length && node.imgs[0].complete && node.imgs[0].naturalWidth === 64;
    }""", timeout=40_000)
    metrics = page.locator("table.fewstep-metrics").first
    assert "3072" in metrics.inner_text()                      # ImageStats' METRICS table, pixels row
    _run_extension_graph(page)
    assert log.page_errors == [], log.page_errors
    assert log.failed == [], log.failed
    assert log.console_errors == [], log.console_errors
    assert log.external == [], log.external          # works offline: no outside host is contacted


def _run_extension_graph(page: Any) -> None:
    """Loss curve (TrainToy), VIDEO preview (SaveTestVideo) and MESH in the editor's 3D viewer (Preview3D)."""
    _open_graph_file(page, TEST_GRAPHS / "extensions.json", "TrainToy")
    page.click("[data-testid='queue-button']")
    page.wait_for_selector("canvas.fewstep-loss-curve[data-points='12']", state="attached", timeout=40_000)
    page.wait_for_function("""() => {
        const img = document.querySelector('img.fewstep-video');
        return img && img.complete && img.naturalWidth === 64;
    }""", timeout=40_000)
    page.wait_for_function("""() => {
        const node = window.app.graph._nodes.find(n => n.type === 'Preview3D');
        const file = node?.widgets?.find(w => w.name === 'model_file');
        return file?.value === '3d/fewstep_mesh.obj' && node.widgets.some(w => w.type === 'load3D');
    }""", timeout=40_000)


def _search_finds_node(page: Any, name: str) -> None:
    """Our node appears in the editor's node search (double-click on the canvas, type its name)."""
    page.mouse.dblclick(700, 700)
    search = page.locator("input[placeholder]:visible").first
    search.fill(name)
    page.wait_for_selector(f"text={name}", state="visible")
    page.keyboard.press("Escape")


def _open_graph_file(page: Any, graph: Path, expect_node: str = "SaveTestImage") -> None:
    """The editor's own open path: the hidden file input behind Workflow > Open."""
    page.evaluate("() => window.app.graph.clear()")
    page.set_input_files("#comfy-file-input", str(graph))
    page.wait_for_function(f"() => window.app.graph._nodes.some(n => n.type === '{expect_node}')")
