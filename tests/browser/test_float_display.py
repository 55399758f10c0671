"""FLOAT widgets show their whole value in the editor (frontend/float_display.js): a trainer's
learning_rate of 0.0001 in the node-search preview card (editor 1.58.1 wrote 0 there) and on the node,
and ComfyUI's KarrasScheduler sigma_min of 0.0291675 (the step of 0.01 showed 0.03)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_editor import (
    ARTIFACTS,
    CHROMIUM,
    HAVE_CHROMIUM,
    PageLog,
    _free_port,
    run_in_chromium,
    serve_in_thread,
)

from fewstep.app.config import Config
from fewstep.app.registry import load_registry
from fewstep.app.server import create_app

pytestmark = pytest.mark.skipif(not HAVE_CHROMIUM, reason=f"chromium not found at {CHROMIUM}")

# The text each FLOAT widget of a new node shows: precision as the canvas draws it (toFixed).
WIDGET_TEXT = """(type) => {
  const node = window.LiteGraph.createNode(type);
  return Object.fromEntries(node.widgets.filter(w => w.type === 'number')
    .map(w => [w.name, Number(w.value).toFixed(w.options.precision ?? 3)]));
}"""

# The text of every number input of the preview card, by widget name.
PREVIEW_TEXT = """() => Object.fromEntries([...document.querySelectorAll("[data-node-id^='preview-'] [data-widget-name]")]
  .map(row => [row.getAttribute('data-widget-name'), row.querySelector("input[role='spinbutton']")?.value])
  .filter(([, value]) => value !== undefined))"""


@pytest.fixture(scope="module")
def builtin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.storage import JobStore

    config = Config(home=tmp_path_factory.mktemp("home"), port=_free_port(), auth_token=None)
    config.ensure_dirs()
    registry = load_registry([], entry_points=False, builtin=True)
    app = create_app(config, registry, Executor(registry, CacheSet(config.cache), config.paths()),
                     JobStore(config.db_path))
    yield from serve_in_thread(app, config.port)


def _preview_of(page: Any, query: str) -> dict[str, str]:
    page.mouse.dblclick(700, 700)
    page.locator("input[placeholder]:visible").first.fill(query)
    page.wait_for_selector("[data-node-id^='preview-'] [data-widget-name='learning_rate'] input", state="attached")
    return page.evaluate(PREVIEW_TEXT)


def test_float_values_read_in_full_on_nodes_and_in_the_search_preview(builtin_server: str, tmp_path: Path) -> None:
    log = PageLog(builtin_server)
    seen: dict[str, Any] = {}

    def scenario(page: Any) -> None:
        page.goto(builtin_server + "/")
        page.wait_for_function("() => window.app?.graph && window.LiteGraph?.registered_node_types?.MLCMDistill")
        seen["mlcm"] = page.evaluate(WIDGET_TEXT, "MLCMDistill")
        seen["karras"] = page.evaluate(WIDGET_TEXT, "KarrasScheduler")
        seen["preview"] = _preview_of(page, "MLCM Distill")

    run_in_chromium(tmp_path / "profile", ARTIFACTS / "float-display.png", log, scenario, timeout_ms=60_000)
    assert float(seen["mlcm"]["learning_rate"]) == 0.0001, seen["mlcm"]
    assert seen["karras"]["sigma_min"] == "0.0291675" and seen["karras"]["sigma_max"] == "14.614642", seen["karras"]
    assert seen["preview"]["learning_rate"] == "0.0001", seen["preview"]
    assert seen["preview"]["huber_c"] == "0.001" and seen["preview"]["cfg"] == "5", seen["preview"]
    assert log.page_errors == [], log.page_errors
