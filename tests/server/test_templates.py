"""The template library (`graphs/`): every graph listed by pack with its title, description and thumbnail;
generated files (UI twins, thumbnails) current with their graphs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fewstep.app.registry import Registry, load_registry
from fewstep.app.templates import LOCK, UI_SUFFIX, api_graph_names, api_to_ui, read_manifest, sha256_file
from fewstep.app.workflow import ui_to_api
from fewstep.bench.templates import stale_entries

REPO = Path(__file__).resolve().parents[2]
GRAPHS = REPO / "graphs"
NAMES = api_graph_names(GRAPHS)
REGENERATE = "regenerate with: python -m fewstep.bench.templates"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry([], entry_points=False, builtin=True)


def test_every_graph_has_a_manifest_entry_with_title_and_one_line_description() -> None:
    packs, infos = read_manifest(GRAPHS)
    assert len(NAMES) >= 11
    assert sorted(infos) == NAMES, "graphs/templates.json must name exactly the graphs in graphs/"
    pack_ids = [p for p, _ in packs]
    for name, info in infos.items():
        assert info.pack in pack_ids, name
        assert info.title and info.title != name and "\n" not in info.description, name
        assert 20 <= len(info.description) <= 140, (name, info.description)


@pytest.mark.parametrize("name", NAMES)
def test_ui_twin_is_generated_from_its_api_graph(name: str, registry: Registry) -> None:
    api = json.loads((GRAPHS / f"{name}.json").read_text())
    twin = json.loads((GRAPHS / f"{name}{UI_SUFFIX}").read_text())
    assert twin == api_to_ui(api, registry), f"{name}{UI_SUFFIX} is stale; {REGENERATE}"
    back = ui_to_api(twin, registry)   # the twin runs the same graph
    for node_id, node in api.items():
        assert back[node_id]["class_type"] == node["class_type"]
        for key, value in node["inputs"].items():
            assert back[node_id]["inputs"][key] == value, (name, node_id, key)


@pytest.mark.parametrize("name", NAMES)
def test_thumbnail_was_made_from_the_current_graph(name: str) -> None:
    lock = json.loads((GRAPHS / LOCK).read_text())
    assert name in lock, f"{name} has no thumbnail; {REGENERATE}"
    assert lock[name]["graph"] == sha256_file(GRAPHS / f"{name}.json"), \
        f"{name}.json changed since its thumbnail was made; {REGENERATE}"
    assert lock[name]["thumbnail"] == sha256_file(GRAPHS / f"{name}.png")


def test_staleness_check_notices_a_changed_graph(tmp_path: Path) -> None:
    for name in ("mlcm_default",):
        for suffix in (".json", UI_SUFFIX, ".png"):
            (tmp_path / f"{name}{suffix}").write_bytes((GRAPHS / f"{name}{suffix}").read_bytes())
    (tmp_path / LOCK).write_text((GRAPHS / LOCK).read_text())
    assert stale_entries(tmp_path, ["mlcm_default"]) == []
    graph = json.loads((tmp_path / "mlcm_default.json").read_text())
    graph["6"]["inputs"]["text"] = "a small blue square"
    (tmp_path / "mlcm_default.json").write_text(json.dumps(graph))
    problems = stale_entries(tmp_path, ["mlcm_default"])
    assert any("ui.json" in p for p in problems) and any("thumbnail" in p for p in problems)


async def test_template_browser_lists_every_graph_by_pack(aiohttp_client: Any, make_app: Any) -> None:
    client = await aiohttp_client(make_app(graphs_dir=GRAPHS))
    index = await (await client.get("/templates/index.json")).json()
    listed = {t["name"]: (category["title"], t) for category in index for t in category["templates"]}
    assert sorted(listed) == NAMES
    assert all(category["moduleName"] == "default" for category in index)
    packs, infos = read_manifest(GRAPHS)
    titles = dict(packs)
    for name, (category, entry) in listed.items():
        assert category == titles[infos[name].pack]
        assert (entry["title"], entry["description"]) == (infos[name].title, infos[name].description)
        thumb = await client.get(f"/templates/{name}-1.png")
        assert thumb.status == 200 and await thumb.read() == (GRAPHS / f"{name}.png").read_bytes()
    assert index[0]["title"] == titles["core"] and index[0]["templates"][0]["name"] == "default"
