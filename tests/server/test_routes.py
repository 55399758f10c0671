"""Every HTTP route the pinned editor calls, with ComfyUI's shapes, in-process (aiohttp test client)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fewstep.app.server.editor import editor_root


@pytest.mark.parametrize("prefix", ["", "/api"])
async def test_every_json_route_answers_under_both_prefixes(client: Any, prefix: str) -> None:
    for path in ("/object_info", "/embeddings", "/extensions", "/system_stats", "/features", "/settings",
                 "/users", "/i18n", "/prompt", "/queue", "/history", "/jobs", "/models", "/experiment/models",
                 "/workflow_templates", "/global_subgraphs", "/node_replacements", "/internal/folder_paths",
                 "/internal/logs/raw", "/userdata?dir=workflows&recurse=true&split=false&full_info=true"):
        response = await client.get(prefix + path)
        assert response.status == 200, (prefix + path, await response.text())
        assert response.content_type in ("application/json", "text/plain"), path


async def test_object_info_has_comfyui_node_definition_format(client: Any) -> None:
    info = await (await client.get("/api/object_info")).json()
    assert set(info) >= {"SolidImage", "SaveTestImage", "SlowCount"}
    node = info["SlowCount"]
    for key in ("input", "input_order", "output", "output_is_list", "output_name", "name", "display_name",
                "description", "python_module", "category", "output_node"):
        assert key in node, key
    assert node["input_order"] == {"required": ["steps", "delay"], "optional": ["tag"]}
    assert node["input"]["required"]["steps"][0] == "INT"
    one = await (await client.get("/api/object_info/SolidImage")).json()
    assert list(one) == ["SolidImage"]
    assert await (await client.get("/api/object_info/NoSuchNode")).json() == {}


async def test_system_stats_and_features(client: Any) -> None:
    stats = await (await client.get("/api/system_stats")).json()
    assert {"os", "ram_total", "python_version", "comfyui_version"} <= set(stats["system"])
    assert stats["devices"] and {"name", "type", "vram_total", "vram_free"} <= set(stats["devices"][0])
    assert "caches" in stats["fewstep"]
    features = await (await client.get("/api/features")).json()
    assert features["supports_preview_metadata"] is True
    assert features["max_upload_size"] == 100 * 1024 * 1024


async def test_users_settings_roundtrip(client: Any) -> None:
    assert await (await client.get("/api/users")).json() == {"storage": "server", "migrated": True}
    settings = await (await client.get("/api/settings")).json()
    assert settings["Comfy.TutorialCompleted"] is True       # a new user gets our default graph
    assert (await client.post("/api/settings/Comfy.Foo", json={"a": 1})).status == 200
    assert (await client.post("/api/settings", json={"Comfy.Bar": 2})).status == 200
    assert await (await client.get("/api/settings/Comfy.Foo")).json() == {"a": 1}
    settings = await (await client.get("/api/settings")).json()
    assert settings["Comfy.Bar"] == 2 and settings["Comfy.Foo"] == {"a": 1}
    assert (await client.post("/api/users", json={"username": "x"})).status == 400


async def test_userdata_list_get_post_overwrite_move_delete(client: Any) -> None:
    body = json.dumps({"nodes": []})
    response = await client.post("/api/userdata/workflows%2Fa.json?overwrite=false&full_info=true", data=body)
    assert response.status == 200, await response.text()
    info = await response.json()
    assert info["path"] == "workflows/a.json" and info["size"] == len(body)
    assert (await client.post("/api/userdata/workflows%2Fa.json?overwrite=false", data="x")).status == 409
    assert await (await client.get("/api/userdata/workflows%2Fa.json")).text() == body
    listing = await (await client.get("/api/userdata?dir=workflows&recurse=true&split=false&full_info=true")).json()
    assert [item["path"] for item in listing] == ["a.json"] and {"size", "modified", "created"} <= set(listing[0])
    plain = await (await client.get("/api/userdata?dir=workflows&recurse=true")).json()
    assert plain == ["a.json"]
    v2 = await (await client.get("/api/v2/userdata?path=workflows")).json()
    assert v2 == [{"name": "a.json", "path": "workflows/a.json", "type": "file", "size": len(body),
                   "modified": v2[0]["modified"]}]
    moved = await client.post("/api/userdata/workflows%2Fa.json/move/workflows%2Fb.json?overwrite=false")
    assert moved.status == 200
    assert (await client.get("/api/userdata/workflows%2Fa.json")).status == 404
    assert (await client.delete("/api/userdata/workflows%2Fb.json")).status == 204
    assert (await client.get("/api/userdata/workflows%2Fb.json")).status == 404
    assert (await client.get("/api/userdata?dir=nothing_here")).status == 404


async def test_userdata_file_bigger_than_one_network_read_is_saved_whole(client: Any) -> None:
    body = json.dumps({"nodes": [{"id": i, "widgets_values": ["x" * 100]} for i in range(4000)]})  # ~500 kB
    response = await client.post("/api/userdata/workflows%2Fbig.json?overwrite=true", data=body)
    assert response.status == 200, await response.text()
    assert await (await client.get("/api/userdata/workflows%2Fbig.json")).text() == body


async def test_startup_probe_files_are_seeded(client: Any) -> None:
    # The editor fetches these on every start; a new user must not see 404s for them.
    assert (await client.get("/api/userdata/comfy.templates.json")).status == 200
    assert (await client.get("/api/userdata/user.css")).status == 200
    assert (await client.get("/user.css")).status == 200


async def test_models_and_embeddings(client: Any, config: Any) -> None:
    folder = config.paths().model_roots[0] / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "tiny.safetensors").write_bytes(b"x")
    assert "checkpoints" in await (await client.get("/api/models")).json()
    assert await (await client.get("/api/models/checkpoints")).json() == ["tiny.safetensors"]
    assert (await client.get("/api/models/not_a_folder")).status == 404
    entries = await (await client.get("/api/experiment/models/checkpoints")).json()
    assert entries[0]["name"] == "tiny.safetensors" and entries[0]["pathIndex"] == 0
    assert await (await client.get("/api/embeddings")).json() == []


async def test_view_metadata_reads_safetensors_header(client: Any, config: Any) -> None:
    header = json.dumps({"__metadata__": {"modelspec.title": "tiny"}}).encode()
    folder = config.paths().model_roots[0] / "loras"
    folder.mkdir(parents=True)
    (folder / "l.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    response = await client.get("/api/view_metadata/loras?filename=l.safetensors")
    assert await response.json() == {"modelspec.title": "tiny"}
    assert (await client.get("/api/view_metadata/loras?filename=missing.safetensors")).status == 404
    assert (await client.get("/api/view_metadata/loras?filename=../x.safetensors")).status == 400


async def test_jobs_listing_validates_parameters(client: Any) -> None:
    body = await (await client.get("/api/jobs?status=in_progress,pending&limit=200&offset=0")).json()
    assert body == {"jobs": [], "pagination": {"offset": 0, "limit": 200, "total": 0, "has_more": False}}
    ok = await client.get("/api/jobs?status=completed,failed,cancelled&limit=64&offset=0")
    assert ok.status == 200
    for bad in ("status=sleeping", "limit=abc", "offset=-1", "sort_by=name", "sort_order=up"):
        response = await client.get(f"/api/jobs?{bad}")
        assert response.status == 400, bad
        assert (await response.json())["error"]["message"]
    assert (await client.get("/api/jobs/unknown-id")).status == 404


async def test_templates_library_serves_graphs_folder(client: Any) -> None:
    index = await (await client.get("/templates/index.json")).json()
    assert index[0]["moduleName"] == "default"
    names = [t["name"] for t in index[0]["templates"]]
    assert "image" in names
    graph = await (await client.get("/templates/image.json")).json()
    assert isinstance(graph["nodes"], list)                      # the UI twin, not the API file
    thumb = await client.get("/templates/image-1.png")
    assert thumb.status == 200 and thumb.content_type == "image/png"
    assert (await client.get("/templates/nothing.json")).status == 404
    assert await (await client.get("/templates/index_logo.json")).json() == {}
    assert await (await client.get("/api/workflow_templates")).json() == {}


async def test_default_graph_route_serves_configured_graph(aiohttp_client: Any, make_app: Any) -> None:
    with_default = await aiohttp_client(make_app(default_graph="image"))
    graph = await (await with_default.get("/api/fewstep/default_graph")).json()
    assert graph["nodes"][0]["type"] == "SolidImage"
    without = await aiohttp_client(make_app(default_graph="missing"))
    assert (await without.get("/api/fewstep/default_graph")).status == 204


async def test_editor_static_and_extensions(client: Any) -> None:
    index = await client.get("/")
    assert index.status == 200 and "<html" in (await index.text()).lower()
    asset = next((editor_root() / "assets").glob("api-*.js")).name
    assert (await client.get(f"/assets/{asset}")).status == 200
    extensions = await (await client.get("/api/extensions")).json()
    assert {"/extensions/fewstep/fewstep.js", "/extensions/fewstep/metrics.js", "/extensions/fewstep/loss_curve.js", "/extensions/fewstep/video.js"} <= set(extensions)
    served = await client.get("/extensions/fewstep/fewstep.js")
    assert served.status == 200 and "registerExtension" in await served.text()
    assert (await client.get("/extensions/fewstep/..%2F..%2Fpyproject.toml")).status in (400, 404)


async def test_unknown_api_route_is_json_404(client: Any) -> None:
    for method in ("GET", "POST", "DELETE"):
        response = await client.request(method, "/api/definitely/not/a/route")
        assert response.status == 404 and (await response.json())["error"]["message"]


async def test_logs_and_misc(client: Any) -> None:
    assert isinstance(await (await client.get("/internal/logs")).text(), str)
    raw = await (await client.get("/internal/logs/raw")).json()
    assert "entries" in raw
    assert (await client.patch("/internal/logs/subscribe", json={"clientId": "x", "enabled": True})).status == 200
    assert (await client.get("/api/global_subgraphs/abc")).status == 404
    folders = await (await client.get("/internal/folder_paths")).json()
    assert "checkpoints" in folders and "output" in folders


async def test_object_info_lists_files_of_this_apps_models_folder(aiohttp_client: Any, config: Any) -> None:
    """File-list combos in /object_info read the served app's models folder, not the process default."""
    from fewstep.app.api import Combo, Node, Output, Schema, current_paths
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.registry import Registry
    from fewstep.app.server import create_app
    from fewstep.app.storage import JobStore

    class PickLora(Node):
        @classmethod
        def define_schema(cls) -> Schema:
            return Schema(node_id="PickLora", outputs=[Output("name", "STRING")],
                          inputs=[Combo("lora_name", lambda: current_paths().list_models("loras"))])

    registry = Registry()
    registry.register_pack("files", [PickLora])
    loras = config.paths().model_roots[0] / "loras"
    loras.mkdir(parents=True)
    (loras / "style.safetensors").write_bytes(b"x")
    app = create_app(config, registry, Executor(registry, CacheSet("none"), config.paths()), JobStore(config.db_path))
    client = await aiohttp_client(app)
    info = await (await client.get("/api/object_info/PickLora")).json()
    assert info["PickLora"]["input"]["required"]["lora_name"][0] == ["style.safetensors"]


async def test_bookmark_index_reads_empty_until_the_editor_writes_it(client: Any) -> None:
    # Editor 1.58.1 reads workflows/.index.json (its bookmarks) whenever the workflow sidebar opens: a new
    # user got a 404 in the console. It answers empty, is not listed as a workflow, and stores what is saved.
    first = await client.get("/api/userdata/workflows%2F.index.json")
    assert first.status == 200 and await first.json() == {"favorites": []}
    assert await (await client.get("/api/userdata?dir=workflows&recurse=true")).json() == []
    saved = json.dumps({"favorites": ["workflows/a.json"]})
    assert (await client.post("/api/userdata/workflows%2F.index.json", data=saved)).status == 200
    assert await (await client.get("/api/userdata/workflows%2F.index.json")).text() == saved
    assert (await client.get("/api/userdata/workflows%2Fother.json")).status == 404
