"""A new user's first minutes, in a real browser: the editor opens on `graphs/default.json` (its UI twin),
the built-in nodes are searchable (KSampler among them), Run makes an image with the shipped MLCM student of
the built-in model (4 steps), and it shows in the page.

Same server and browser setup as ``test_editor.py``, but with the built-in node packs and the real
``graphs/`` folder (what ``fewstep serve`` serves).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_editor import (
    ARTIFACTS,
    CHROMIUM,
    HAVE_CHROMIUM,
    REPO,
    PageLog,
    _free_port,
    _search_finds_node,
    run_in_chromium,
    serve_in_thread,
)

from fewstep.app.config import Config
from fewstep.app.registry import load_registry
from fewstep.app.server import create_app

pytestmark = pytest.mark.skipif(not HAVE_CHROMIUM, reason=f"chromium not found at {CHROMIUM}")


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app as `fewstep serve` builds it: built-in packs, graphs/ as templates, default graph."""
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.storage import JobStore

    config = Config(home=tmp_path_factory.mktemp("home"), port=_free_port(), auth_token=None)
    config.ensure_dirs()
    registry = load_registry([], entry_points=False, builtin=True)
    app = create_app(config, registry, Executor(registry, CacheSet(config.cache), config.paths()),
                     JobStore(config.db_path))
    yield from serve_in_thread(app, config.port)


def test_new_user_runs_the_default_graph_and_sees_the_image(real_server: str, tmp_path: Path) -> None:
    assert (REPO / "graphs" / "default.ui.json").is_file()
    log = PageLog(real_server)
    run_in_chromium(tmp_path / "chromium-profile", ARTIFACTS / "default-graph.png", log,
                    lambda page: _first_visit(page, real_server, log), timeout_ms=60_000)


def _first_visit(page: Any, server: str, log: PageLog) -> None:
    page.goto(server + "/")
    # The editor opens the default graph by itself: the MLCM student of the built-in teacher at 4 steps.
    page.wait_for_function("""() => window.app?.graph?._nodes?.some(n => n.type === 'FewstepStudentLoader'
        && n.widgets?.some(w => w.value === 'fewstep-mlcm-student.safetensors'))
        && window.app.graph._nodes.some(n => n.type === 'MLCMScheduler' && n.widgets?.some(w => w.value === 4))
        && window.app.graph._nodes.some(n => n.type === 'SamplerCustomAdvanced')""")
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
