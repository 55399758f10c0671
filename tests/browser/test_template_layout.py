"""Every template in a real editor: it loads from the template library, nodes render at the size the UI
file saves, no two overlap as the editor renders them (its own node rectangles, title bar included), the
first view shows the whole graph,
trainer and quantizer seeds show "fixed", and each template's screenshot lands in ``test-artifacts/``.
"""

from __future__ import annotations

import json
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
from fewstep.app.templates import api_graph_names

pytestmark = pytest.mark.skipif(not HAVE_CHROMIUM, reason=f"chromium not found at {CHROMIUM}")
REPO = Path(__file__).resolve().parents[2]
NAMES = api_graph_names(REPO / "graphs")

# Loads template `name` the way the template browser does (fetch /templates/<name>.json, then
# loadGraphData as a template), waits for the canvas to settle, and reports each node's rectangle as
# the editor computes it (getBounding: title bar included), the visible area, and seed control values.
MEASURE = """async (name) => {
  const data = await (await fetch(`/templates/${name}.json`)).json();
  await window.app.loadGraphData(data, true, true, name, {openSource: 'template'});
  await new Promise(r => setTimeout(r, 600));
  window.app.canvas.draw(true, true);
  const nodes = window.app.graph._nodes.map(n => {
    const b = n.getBounding ? Array.from(n.getBounding()) : [n.pos[0], n.pos[1] - 30, n.size[0], n.size[1] + 30];
    const seed = (n.widgets || []).find(w => w.name === 'seed');
    const control = seed?.linkedWidgets?.[0]?.value ?? null;
    return {id: n.id, type: n.type, rect: b, size: Array.from(n.size), seed_control: control};
  });
  const ds = window.app.canvas.ds;
  const el = window.app.canvas.canvas;
  const view = [-ds.offset[0], -ds.offset[1], el.width / ds.scale, el.height / ds.scale];
  return {nodes, view, dpr: window.devicePixelRatio};
}"""


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.storage import JobStore

    config = Config(home=tmp_path_factory.mktemp("home"), port=_free_port(), auth_token=None)
    config.ensure_dirs()
    registry = load_registry([], entry_points=False, builtin=True)
    app = create_app(config, registry, Executor(registry, CacheSet(config.cache), config.paths()),
                     JobStore(config.db_path))
    yield from serve_in_thread(app, config.port)


def _overlaps(a: list[float], b: list[float]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _inside(rect: list[float], view: list[float]) -> bool:
    return (rect[0] >= view[0] and rect[1] >= view[1] and rect[0] + rect[2] <= view[0] + view[2]
            and rect[1] + rect[3] <= view[1] + view[3])


def test_every_template_loads_without_overlap_and_fits_the_first_view(real_server: str, tmp_path: Path) -> None:
    log = PageLog(real_server)
    problems: list[str] = []
    run_in_chromium(tmp_path / "profile", ARTIFACTS / "templates-last.png", log,
                    lambda page: _measure_all(page, real_server, problems), timeout_ms=60_000)
    assert not problems, "\n".join(problems)
    assert not log.page_errors and not log.failed, (log.page_errors, log.failed)


def _measure_all(page: Any, server: str, problems: list[str]) -> None:
    page.goto(server + "/")
    page.wait_for_function("() => window.app?.graph?._nodes?.length > 0")
    (ARTIFACTS / "templates").mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        result = page.evaluate(MEASURE, name)
        page.screenshot(path=str(ARTIFACTS / "templates" / f"{name}.png"))
        problems += _check(name, result)


def _check(name: str, result: dict[str, Any]) -> list[str]:
    nodes, view = result["nodes"], [v / result["dpr"] if i >= 2 else v for i, v in enumerate(result["view"])]
    saved = {str(n["id"]): n["size"] for n in json.loads((REPO / "graphs" / f"{name}.ui.json").read_text())["nodes"]}
    found = []
    for i, a in enumerate(nodes):
        if [round(v) for v in a["size"]] != saved[str(a["id"])]:   # the editor grew it: our estimate was short
            found.append(f"{name}: {a['type']} #{a['id']} renders {a['size']}, saved {saved[str(a['id'])]}")
        for b in nodes[i + 1:]:
            if _overlaps(a["rect"], b["rect"]):
                found.append(f"{name}: {a['type']} #{a['id']} {a['rect']} overlaps {b['type']} #{b['id']} {b['rect']}")
        if not _inside(a["rect"], view):
            found.append(f"{name}: {a['type']} #{a['id']} {a['rect']} is outside the first view {view}")
        if a["seed_control"] is not None and a["seed_control"] != "fixed":
            found.append(f"{name}: {a['type']} #{a['id']} seed control is {a['seed_control']!r}")
    return found
