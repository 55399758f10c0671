"""Issue #24 regressions: DNS rebinding, path escapes, poisoned history, 500s that must be 4xx,
validation gaps, smaller leaks. Each test failed on the code before its fix."""

from __future__ import annotations

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
