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
