"""A new user's first minutes, in a real browser: the editor opens on `graphs/default.json` (its UI twin),
the built-in nodes are searchable, Run makes an image with the built-in model, and it shows in the page.

Same server and browser setup as ``test_editor.py``, but with the built-in node packs and the real
``graphs/`` folder (what ``fewstep serve`` serves).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from test_editor import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    HAVE_CHROMIUM,
    REPO,
    PageLog,
    _free_port,
    _search_finds_node,
)

from app.config import Config
from app.registry import load_registry
from app.server import create_app

pytestmark = pytest.mark.skipif(not HAVE_CHROMIUM, reason=f"chromium not found at {CHROMIUM}")


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app as `fewstep serve` builds it: built-in packs, graphs/ as templates, default graph."""
    from app.cache import CacheSet
    from app.executor import Executor
    from app.storage import JobStore

    config = Config(home=tmp_path_factory.mktemp("home"), port=_free_port(), auth_token=None)
    config.ensure_dirs()
    registry = load_registry([], entry_points=False, builtin=True)
    app = create_app(config, registry, Executor(registry, CacheSet(config.cache), config.paths()),
                     JobStore(config.db_path))
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", config.port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{config.port}"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.run_until_complete(runner.cleanup())
    loop.close()


def test_new_user_runs_the_default_graph_and_sees_the_image(real_server: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    assert (REPO / "graphs" / "default.ui.json").is_file()
    ARTIFACTS.mkdir(exist_ok=True)
    log = PageLog(real_server)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900})
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(60_000)
        log.attach(page)
        try:
            _first_visit(page, real_server, log)
        finally:
            page.screenshot(path=str(ARTIFACTS / "default-graph.png"))
            context.close()


def _first_visit(page: Any, server: str, log: PageLog) -> None:
    page.goto(server + "/")
    # The editor opens the default graph by itself: the built-in checkpoint loader and the sampler.
    page.wait_for_function("""() => window.app?.graph?._nodes?.some(n => n.type === 'CheckpointLoaderSimple'
        && n.widgets?.some(w => w.value === 'fewstep-tiny-teacher.safetensors'))
        && window.app.graph._nodes.some(n => n.type === 'KSampler')""")
    page.wait_for_timeout(1500)                      # let start-up requests settle
    assert log.page_errors == [], log.page_errors
    assert log.failed == [], log.failed
    _search_finds_node(page, "KSampler")
    with page.expect_response(lambda r: "/api/view" in r.url and "filename=fewstep_" in r.url and r.status == 200,
                              timeout=90_000) as view:
        page.click("[data-testid='queue-button']")
    assert view.value.headers["content-type"] == "image/png"
    # The editor shows the output on the SaveImage node: an <img> of the saved 64x64 PNG.
    page.wait_for_function("""() => [...document.querySelectorAll('img')].some(
        img => img.src.includes('filename=fewstep_') && img.complete && img.naturalWidth === 64)""",
                           timeout=30_000)
    assert log.page_errors == [], log.page_errors
    assert log.failed == [], log.failed
    assert log.console_errors == [], log.console_errors
    assert log.external == [], log.external
