"""Issue #24 regressions: DNS rebinding, path escapes, poisoned history, 500s that must be 4xx,
validation gaps, smaller leaks. Each test failed on the code before its fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fewstep.app.server.security import host_allowed

TOKEN = "s3cret-token"


# -- 2: DNS rebinding ----------------------------------------------------------------------------
@pytest.mark.parametrize(("host", "ok"), [
    ("127.0.0.1:8188", True), ("localhost:8188", True), ("LOCALHOST", True), ("[::1]:8188", True),
    ("app.localhost:1", True), ("10.0.0.5:8188", True), ("evil.example:8188", False),
    ("evil.example", False), ("127.0.0.1.evil.example", False), ("", False), (None, False),
])
def test_host_allowed_without_token(host: str | None, ok: bool) -> None:
    assert host_allowed(host, "127.0.0.1") is ok


def test_configured_host_name_is_allowed() -> None:
    assert host_allowed("mybox.lan:8188", "mybox.lan")


async def test_rebound_host_is_refused_without_token(client: Any) -> None:
    port = client.port
    evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    for method, path, body in (("POST", "/api/prompt", "{}"), ("GET", "/api/history", None),
                               ("GET", "/api/userdata?dir=workflows", None),
                               ("POST", "/api/userdata/workflows%2Fx.json", "{}")):
        response = await client.request(method, path, data=body, headers=evil)
        assert response.status == 403, path
        assert "evil.example" in (await response.json())["error"]["message"]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws?clientId=a", headers=evil)
    assert refused.value.status == 403
    local = {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}
    assert (await client.get("/api/history", headers=local)).status == 200


async def test_any_host_with_token(aiohttp_client: Any, make_app: Any) -> None:
    authed = await aiohttp_client(make_app(auth_token=TOKEN))
    headers = {"Host": "box.example", "Authorization": f"Bearer {TOKEN}"}
    assert (await authed.get("/api/history", headers=headers)).status == 200
    assert (await authed.get("/api/history", headers={"Host": "box.example"})).status == 401


# -- 4: /view_metadata stays in the model folders and keeps server paths private -----------------
def _safetensors(metadata: dict[str, str]) -> bytes:
    import json
    import struct

    header = json.dumps({"__metadata__": metadata}).encode()
    return struct.pack("<Q", len(header)) + header


@pytest.mark.parametrize("folder", ["{abs}", "..%2F..%2Fsecret", "%2E%2E", "nope"])
async def test_view_metadata_refuses_other_folders(client: Any, config: Any, tmp_path: Any, folder: str) -> None:
    from urllib.parse import quote

    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "s.safetensors").write_bytes(_safetensors({"secret": "yes"}))
    folder = folder.replace("{abs}", quote(str(tmp_path / "secret"), safe=""))
    response = await client.get(f"/api/view_metadata/{folder}?filename=s.safetensors")
    assert response.status in (400, 404), folder
    assert "secret" not in await response.json()


async def test_view_metadata_messages_hide_server_paths(client: Any, config: Any) -> None:
    root = config.paths().model_roots[0] / "loras"
    root.mkdir(parents=True, exist_ok=True)
    (root / "ok.safetensors").write_bytes(_safetensors({"a": "b"}))
    assert await (await client.get("/api/view_metadata/loras?filename=ok.safetensors")).json() == {"a": "b"}
    for name, status in (("missing.safetensors", 404), ("../../x.safetensors", 400)):
        response = await client.get(f"/api/view_metadata/loras?filename={name}")
        assert response.status == status, name
        assert str(config.home) not in await response.text()


@pytest.mark.parametrize(("content", "needle"), [
    (b"", "shorter"), (b"\x05\x00\x00\x00\x00\x00\x00\x00[1,2", "not JSON"),
    (b"\x16\x00\x00\x00\x00\x00\x00\x00{\"__metadata__\": [1]}  ", "not an object"),
])
async def test_view_metadata_malformed_is_400_naming_the_file(client: Any, config: Any, content: bytes,
                                                              needle: str) -> None:
    root = config.paths().model_roots[0] / "loras"
    root.mkdir(parents=True, exist_ok=True)
    (root / "bad.safetensors").write_bytes(content)
    response = await client.get("/api/view_metadata/loras?filename=bad.safetensors")
    assert response.status == 400
    message = (await response.json())["error"]["message"]
    assert "bad.safetensors" in message and needle in message and str(config.home) not in message


# -- 3 (helper): every user-supplied name that becomes a path ------------------------------------
@pytest.mark.parametrize("name", ["/etc/x", "../x", "a/../../x", "", ".", "a\\b", "a\x00b", "C:x", "a//b"])
def test_safe_child_refuses_escapes(tmp_path: Any, name: str) -> None:
    from fewstep.app.api import safe_child

    with pytest.raises(ValueError, match="run_name"):
        safe_child(tmp_path, name, "run_name")


def test_safe_child_accepts_plain_names_and_refuses_symlinks_out(tmp_path: Any) -> None:
    import os

    from fewstep.app.api import safe_child

    assert safe_child(tmp_path, "run1") == (tmp_path / "run1").resolve()
    assert safe_child(tmp_path, "a/b.safetensors") == (tmp_path / "a" / "b.safetensors").resolve()
    with pytest.raises(ValueError):
        safe_child(tmp_path, "a/b", allow_subfolders=False)
    (tmp_path / "inside").mkdir()
    os.symlink(tmp_path.parent, tmp_path / "inside" / "out")
    with pytest.raises(ValueError, match="leaves"):
        safe_child(tmp_path, "inside/out/x")


# -- 5: one accepted prompt must not poison history ----------------------------------------------
COUNT = {"1": {"class_type": "SlowCount", "inputs": {"steps": 1, "delay": 0.0, "tag": ""}}}


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("extra", [
    {"extra_pnginfo": "a string"}, {"extra_pnginfo": {"workflow": [1, 2]}}, {"extra_pnginfo": {"workflow": 7}},
    {"deep": _deep(200)}, "not an object",
])
async def test_bad_extra_data_is_refused_and_listings_stay_200(client: Any, extra: Any) -> None:
    response = await client.post("/api/prompt", json={"prompt": COUNT, "extra_data": extra})
    assert response.status == 400
    assert (await response.json())["error"]["type"] == "invalid_prompt"
    assert (await client.get("/api/jobs")).status == 200
    assert (await client.get("/api/history")).status == 200


async def test_poisoned_rows_from_an_older_database_do_not_fail_listings(client: Any) -> None:
    import json

    from fewstep.app.server.state import STORE

    store = client.app[STORE]
    store.enqueue("string-pnginfo", COUNT, {"extra_pnginfo": "x"})
    store.enqueue("list-workflow", COUNT, {"extra_pnginfo": {"workflow": [1]}})
    deep = '{"a":' * 990 + "1" + "}" * 990
    store.enqueue("deep", COUNT, {})
    store.cancel_pending(["string-pnginfo", "list-workflow", "deep"])
    for pid in ("string-pnginfo", "list-workflow", "deep"):
        store.finish(pid, "success", {}, [], completed=True)
    store._write("UPDATE jobs SET extra_data=? WHERE prompt_id='deep'", [deep])
    jobs = await client.get("/api/jobs")
    assert jobs.status == 200 and {j["id"] for j in (await jobs.json())["jobs"]} >= {"deep", "list-workflow"}
    history = await client.get("/api/history")
    assert history.status == 200 and set(await history.json()) >= {"string-pnginfo", "deep"}
    assert (await client.get("/api/jobs/deep")).status == 200
    json.dumps(await (await client.get("/api/history/deep")).json())


async def test_duplicate_prompt_id_is_400_and_keeps_the_first(client: Any) -> None:
    first = await client.post("/api/prompt", json={"prompt": COUNT, "prompt_id": "same"})
    assert first.status == 200
    again = await client.post("/api/prompt", json={"prompt": COUNT, "prompt_id": "same"})
    assert again.status == 400 and "already exists" in (await again.json())["error"]["message"]


@pytest.mark.parametrize("body", [{"prompt_id": "x" * 300}, {"prompt_id": 5}, {"client_id": "c" * 300}])
async def test_ids_are_bounded(client: Any, body: dict[str, Any]) -> None:
    response = await client.post("/api/prompt", json={"prompt": COUNT, **body})
    assert response.status == 400


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/prompt"), ("POST", "/api/queue"), ("POST", "/api/history"), ("POST", "/api/settings"),
    ("POST", "/api/settings/x"), ("POST", "/api/interrupt"), ("POST", "/api/workflow/convert"),
    ("PATCH", "/internal/logs/subscribe"), ("POST", "/api/jobs/cancel"), ("POST", "/api/free"),
])
async def test_json_nested_past_any_limit_is_400(client: Any, method: str, path: str) -> None:
    for depth in (300, 5000):
        body = "[" * depth + "]" * depth
        response = await client.request(method, path, data=body, headers={"Content-Type": "application/json"})
        assert response.status in (400, 404), (path, depth, await response.text())


# -- 9: 500s that must be 4xx ---------------------------------------------------------------------
def _form(name: str, data: bytes, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for key, value in fields.items():
        form.add_field(key, value)
    form.add_field("image", data, filename=name, content_type="image/png")
    return form


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (0, 255, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def _ui(nodes: list[dict[str, Any]], links: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"nodes": nodes, "links": links or [], "version": 0.4, **extra}


SLOW_UI = {"id": 1, "type": "SlowCount", "inputs": [], "outputs": [], "widgets_values": [1, 0.0, ""], "mode": 0}


@pytest.mark.parametrize("workflow", [
    _ui([{**SLOW_UI, "inputs": [5]}]),
    _ui([SLOW_UI], definitions=7),
    _ui([SLOW_UI], extra=7),
    _ui([SLOW_UI], definitions={"subgraphs": [5]}),
    _ui([SLOW_UI, {"id": 2, "type": "SlowCount", "inputs": [{"name": "steps", "link": 1}], "widgets_values": []}],
        links=[[1, 1, float("inf"), 2, 0, "INT"]]),
])
async def test_malformed_ui_workflows_are_400(client: Any, workflow: dict[str, Any]) -> None:
    import json

    body = json.dumps({"prompt": workflow}).replace("Infinity", "Infinity")
    response = await client.post("/api/prompt", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400, await response.text()
    assert (await response.json())["error"]["message"]


async def test_huge_numbers_are_400(client: Any) -> None:
    import json

    graph = {"1": {"class_type": "SlowCount", "inputs": {"steps": 1, "delay": 10**400, "tag": ""}}}
    response = await client.post("/api/prompt", data=json.dumps({"prompt": graph}),
                                 headers={"Content-Type": "application/json"})
    assert response.status == 400 and "delay" in json.dumps(await response.json())
    digits = '{"prompt": {"1": {"class_type": "SlowCount", "inputs": {"steps": ' + "9" * 5000 + "}}}}"
    response = await client.post("/api/prompt", data=digits, headers={"Content-Type": "application/json"})
    assert response.status == 400
    for bad in ("NaN", "Infinity", "-Infinity"):
        body = '{"prompt": {"1": {"class_type": "SlowCount", "inputs": {"steps": 1, "delay": ' + bad + '}}}}'
        response = await client.post("/api/prompt", data=body, headers={"Content-Type": "application/json"})
        assert response.status == 400, bad


@pytest.mark.parametrize("query", ["/api/history?max_items=100000000000000000000000",
                                   "/api/history?offset=100000000000000000000000",
                                   "/api/jobs?limit=100000000000000000000000",
                                   "/api/jobs?offset=100000000000000000000000",
                                   "/api/history?max_items=" + "9" * 5000])
async def test_huge_query_numbers_are_400(client: Any, query: str) -> None:
    assert (await client.get(query)).status == 400


async def test_userdata_onto_folders_is_409(client: Any) -> None:
    assert (await client.post("/api/userdata/workflows", data="{}")).status == 409
    assert (await client.post("/api/userdata/a.json", data="{}")).status == 200
    assert (await client.post("/api/userdata/a.json%2Fb.json", data="{}")).status == 409
    moved = await client.post("/api/userdata/a.json/move/workflows")
    assert moved.status == 409
    assert (await client.get("/api/userdata/a.json")).status == 200     # nothing lost


@pytest.mark.parametrize("name", [".", ".."])
async def test_bad_upload_names_are_400(client: Any, name: str) -> None:
    response = await client.post("/api/upload/image", data=_form(name, _png(), overwrite="true"))
    assert response.status == 400, name


def _multipart_request(port: int, body: bytes, length: int, name: bytes = b"a.png") -> bytes:
    return (b"POST /api/upload/image HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n"
            b"Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: %d\r\n\r\n" % (port, length)
            + body)


def _part(name: bytes, data: bytes, close: bool = True) -> bytes:
    return (b'--XX\r\nContent-Disposition: form-data; name="image"; filename="' + name + b'"\r\n'
            b"Content-Type: image/png\r\n\r\n" + data + (b"\r\n--XX--\r\n" if close else b""))


async def test_nul_in_multipart_filename_is_400(client: Any) -> None:
    body = _part(b"a\x00b.png", _png())
    answer = await _raw(client, _multipart_request(client.port, body, len(body)))
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]


async def _raw(client: Any, request: bytes) -> bytes:
    import asyncio

    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(4096), 5)
    finally:
        writer.close()


async def test_broken_and_truncated_multipart_is_400(client: Any) -> None:
    body = _part(b"a.png", _png(), close=False)                   # no closing boundary
    for sent in (body, _part(b"a.png", _png())[:-30]):              # short, or cut by a lying Content-Length
        answer = await _raw(client, _multipart_request(client.port, sent, len(sent)))
        assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    garbage = await client.post("/api/upload/image", data=b"--XX\r\nnonsense\r\n\r\n",
                                headers={"Content-Type": "multipart/form-data; boundary=XX"})
    assert garbage.status == 400
    assert (await client.get("/api/prompt")).status == 200


async def test_content_length_longer_than_the_body_does_not_hurt_the_server(client: Any) -> None:
    import asyncio

    body = _part(b"a.png", _png())
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(_multipart_request(client.port, body, len(body) + 1000))
    writer.write_eof()                                               # the promised rest never comes
    answer = await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    assert not answer.startswith(b"HTTP/1.1 500"), answer[:300]
    assert (await client.get("/api/prompt")).status == 200


async def test_non_image_mask_is_400(client: Any) -> None:
    assert (await client.post("/api/upload/image", data=_form("base.png", _png()))).status == 200
    form = _form("mask.png", b"not an image", original_ref='{"filename": "base.png"}')
    response = await client.post("/api/upload/mask", data=form)
    assert response.status == 400 and "not a readable image" in (await response.json())["error"]["message"]


async def test_logs_subscribe_with_a_list_is_400(client: Any) -> None:
    assert (await client.patch("/internal/logs/subscribe", json=[1, 2])).status == 400


# -- 10: validation gaps become node_errors -------------------------------------------------------
IMAGE = {"class_type": "SolidImage", "inputs": {"width": 64, "height": 64, "red": 0.5, "green": 0.5, "blue": 0.5}}


@pytest.mark.parametrize(("node", "kind"), [
    ({"class_type": "SaveTestImage", "inputs": {"images": 5, "filename_prefix": "x"}}, "invalid_input_type"),
    ({"class_type": "SaveTestImage", "inputs": {"images": ["1", 1.5], "filename_prefix": "x"}}, "bad_linked_input"),
    ({"class_type": "SaveTestImage", "inputs": {"images": ["1", 0], "filename_prefix": "x",
                                                "extra": _deep(100)}}, "invalid_input_type"),
])
async def test_validation_gaps_are_node_errors(client: Any, node: dict[str, Any], kind: str) -> None:
    response = await client.post("/api/prompt", json={"prompt": {"1": IMAGE, "2": node}})
    assert response.status == 400
    errors = (await response.json())["node_errors"]["2"]["errors"]
    assert errors[0]["type"] == kind


async def test_empty_list_on_a_widget_is_a_node_error(client: Any) -> None:
    graph = {"1": {**IMAGE, "inputs": {**IMAGE["inputs"], "width": {"__value__": []}}},
             "2": {"class_type": "SaveTestImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    response = await client.post("/api/prompt", json={"prompt": graph})
    assert response.status == 400
    assert (await response.json())["node_errors"]["1"]["errors"][0]["type"] == "invalid_input_type"


# -- 11: smaller leaks ----------------------------------------------------------------------------
async def test_cors_star_never_sends_credentials(aiohttp_client: Any, make_app: Any) -> None:
    star = await aiohttp_client(make_app(cors_origin="*"))
    response = await star.get("/api/history", headers={"Origin": "http://any.example"})
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers
    named = await aiohttp_client(make_app(cors_origin="http://app.example"))
    response = await named.get("/api/history", headers={"Origin": "http://app.example"})
    assert response.headers["Access-Control-Allow-Credentials"] == "true"


async def test_system_stats_hides_the_token(client: Any, monkeypatch: Any) -> None:
    import sys

    monkeypatch.setattr(sys, "argv", ["fewstep", "serve", "--auth-token", TOKEN, f"--auth-token={TOKEN}x"])
    stats = await (await client.get("/api/system_stats")).json()
    assert TOKEN not in str(stats)
    assert stats["system"]["argv"][:3] == ["fewstep", "serve", "--auth-token"]


async def test_file_lists_skip_symlinks_out_of_input(client: Any, config: Any, tmp_path: Any) -> None:
    import os

    secret = tmp_path / "secret.png"
    secret.write_bytes(_png())
    input_dir = config.paths().input_dir
    (input_dir / "mine.png").write_bytes(_png())
    os.symlink(secret, input_dir / "link.png")
    assert await (await client.get("/internal/files/input")).json() == ["mine.png"]


def test_load_image_refuses_symlinks_out_of_input(tmp_path: Any) -> None:
    import os

    from fewstep.app.api import Paths, use_paths
    from fewstep.nodes.core.nodes import LoadImage, _input_images

    (tmp_path / "input").mkdir()
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png())
    (tmp_path / "input" / "mine.png").write_bytes(_png())
    os.symlink(secret, tmp_path / "input" / "link.png")
    with use_paths(Paths(input_dir=tmp_path / "input")):
        assert _input_images() == ["mine.png"]
        for name in ("link.png", "../secret.png", str(secret)):
            with pytest.raises(FileNotFoundError) as refused:
                LoadImage.execute(name)
            assert str(tmp_path / "input") not in str(refused.value)


@pytest.mark.parametrize(("header", "needle"), [
    (b"[1, 2]", "malformed"), (b'{"w": {"dtype": "F32"}}', "malformed"), (b'{"w": 5}', "malformed"),
    (b"[" * 5000 + b"]" * 5000, "corrupt"),
])
def test_malformed_safetensors_headers_name_the_file(tmp_path: Any, header: bytes, needle: str) -> None:
    import struct

    from fewstep.nodes.core.loaders.files import ModelFileError, read_state_dict

    path = tmp_path / "weights.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(ModelFileError, match=needle) as error:
        read_state_dict(path)
    assert "weights.safetensors" in str(error.value)


def test_terminal_logging_shows_warnings_beside_the_log_buffer(capsys: Any, monkeypatch: Any) -> None:
    import logging

    from fewstep.app.server import terminal_logging

    logger = logging.getLogger("fewstep.test_terminal")
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    buffer = logging.NullHandler()                   # stands for the /internal/logs handler
    logger.addHandler(buffer)
    try:
        terminal_logging(logger)
        logger.warning("route failed: boom")
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
    assert "route failed: boom" in capsys.readouterr().err


def test_cli_run_on_a_deeply_nested_file_exits_2(tmp_path: Any, capsys: Any) -> None:
    from fewstep.app.cli import main

    for depth in (300, 100_000):
        graph = tmp_path / f"deep{depth}.json"
        graph.write_text("[" * depth + "]" * depth)
        assert main(["run", str(graph), "--home", str(tmp_path), "--no-builtin-nodes"]) == 2
        assert "Traceback" not in capsys.readouterr().err


# -- 8 (part): decompression bombs and a byte-bounded cache ---------------------------------------
def _big_png(side: int) -> bytes:
    """A tiny PNG file that declares ``side`` x ``side`` pixels (a 1-bit image compresses to almost nothing)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_image_bombs_are_refused_before_decoding(client: Any, config: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("FEWSTEP_MAX_IMAGE_PIXELS", str(100 * 100))
    bomb = _big_png(400)                                 # 160,000 pixels: over this test's budget
    (config.paths().output_dir / "bomb.png").write_bytes(bomb)
    response = await client.get("/api/view?filename=bomb.png&preview=webp;50")
    assert response.status == 413 and "over the limit" in (await response.json())["error"]["message"]
    assert (await client.post("/api/upload/image", data=_form("base.png", _png()))).status == 200
    masked = await client.post("/api/upload/mask", data=_form("m.png", bomb, original_ref='{"filename": "base.png"}'))
    assert masked.status == 413


def test_load_image_refuses_bombs(tmp_path: Any, monkeypatch: Any) -> None:
    from fewstep.app.api import ImageTooLarge, Paths, use_paths
    from fewstep.nodes.core.nodes import LoadImage

    monkeypatch.setenv("FEWSTEP_MAX_IMAGE_PIXELS", str(100 * 100))
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "bomb.png").write_bytes(_big_png(400))
    with use_paths(Paths(input_dir=tmp_path / "input")), pytest.raises(ImageTooLarge, match="bomb.png"):
        LoadImage.execute("bomb.png")


def test_lru_cache_is_byte_bounded_and_reports_its_bytes() -> None:
    import numpy

    from fewstep.app.cache import DEFAULT_RAM_BUDGET_GB, GB, CacheSet, parse_policy

    assert parse_policy("lru:64").ram_bytes == DEFAULT_RAM_BUDGET_GB * GB
    caches = CacheSet("lru:64")
    caches.outputs.put("k", [[numpy.zeros(1000, dtype=numpy.float32)]], None)
    assert caches.stats()["ram_bytes"] == 4000


# -- 7 (part): sizes a job cannot get out of are refused up front ---------------------------------
def test_empty_latent_over_the_pixel_budget_is_a_node_error(monkeypatch: Any) -> None:
    from fewstep.app.registry import load_registry
    from fewstep.app.validation import validate_prompt

    registry = load_registry([], entry_points=False)
    graph = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 16384, "height": 16384, "batch_size": 1}},
             "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    if registry.get("PreviewAny") is None:
        graph["2"] = {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "x"}}
    checked = validate_prompt(graph, registry)
    assert not checked.ok and "over the limit" in checked.node_errors["1"]["errors"][0]["message"]
    for width, ok in ((512, True), (8, False), (20000, False)):
        graph["1"]["inputs"]["width"], graph["1"]["inputs"]["height"] = width, 512
        errors = validate_prompt(graph, registry).node_errors.get("1")
        assert (errors is None) is ok, (width, errors)


async def test_concurrent_previews_are_bounded(client: Any, config: Any, monkeypatch: Any) -> None:
    """Item 8: each preview decodes a whole image; at most PREVIEW_CONCURRENCY run at once."""
    import asyncio
    import threading
    import time

    from fewstep.app.server import files
    from fewstep.app.server.state import PREVIEW_CONCURRENCY

    (config.paths().output_dir / "a.png").write_bytes(_png())
    running, peak, lock = [0], [0], threading.Lock()
    real = files._preview

    def slow_preview(*args: Any) -> Any:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return real(*args)

    monkeypatch.setattr(files, "_preview", slow_preview)
    answers = await asyncio.gather(*(client.get("/api/view?filename=a.png&preview=webp;50") for _ in range(8)))
    assert [a.status for a in answers] == [200] * 8
    assert peak[0] == PREVIEW_CONCURRENCY


async def test_a_preview_is_decoded_once_per_file_version(client: Any, config: Any, monkeypatch: Any) -> None:
    """Item 8: repeated previews of one image are served from the on-disk preview cache, not decoded again;
    a changed file (new mtime/size) is decoded afresh."""
    import os

    from fewstep.app.server import files

    target = config.paths().output_dir / "a.png"
    target.write_bytes(_png())
    decodes: list[str] = []
    real = files._preview

    def counting_preview(path: Any, spec: str, channel: str) -> Any:
        decodes.append(spec)
        return real(path, spec, channel)

    monkeypatch.setattr(files, "_preview", counting_preview)
    bodies = []
    for _ in range(3):
        answer = await client.get("/api/view?filename=a.png&preview=webp;50")
        assert answer.status == 200 and answer.content_type == "image/webp"
        bodies.append(await answer.read())
    assert decodes == ["webp;50"] and bodies[0] == bodies[1] == bodies[2] and bodies[0][8:12] == b"WEBP"
    assert (await client.get("/api/view?filename=a.png&preview=jpeg;80")).content_type == "image/jpeg"
    assert decodes == ["webp;50", "jpeg;80"]
    from PIL import Image

    Image.new("RGB", (9, 7), (1, 2, 3)).save(target)
    os.utime(target, ns=(1, 1))
    answer = await client.get("/api/view?filename=a.png&preview=webp;50")
    assert decodes[-1] == "webp;50" and len(decodes) == 3
    import io

    assert Image.open(io.BytesIO(await answer.read())).size == (9, 7)


def test_preview_cache_is_pruned_to_its_byte_budget(tmp_path: Path) -> None:
    import os

    from fewstep.app.server.files import _prune

    for i in range(5):
        entry = tmp_path / f"{i}.webp"
        entry.write_bytes(b"x" * 100)
        os.utime(entry, (1000 + i, 1000 + i))
    _prune(tmp_path, 250)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3.webp", "4.webp"]
