"""Safety beyond ComfyUI: token auth, Origin check, path traversal, size limits, malformed input."""

from __future__ import annotations

import json
import os
from typing import Any

import aiohttp
import pytest

from fewstep.app.server.security import UnsafePath, safe_path

TOKEN = "s3cret-token"


@pytest.fixture
async def authed(aiohttp_client: Any, make_app: Any) -> Any:
    return await aiohttp_client(make_app(auth_token=TOKEN))


async def test_missing_or_wrong_token_is_refused_everywhere(authed: Any) -> None:
    for path in ("/api/object_info", "/api/prompt", "/api/view?filename=x.png", "/object_info", "/ws"):
        response = await authed.get(path)
        assert response.status == 401, path
    wrong = await authed.get("/api/object_info", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401 and "token" in (await wrong.json())["error"]["message"]
    page = await authed.get("/", headers={"Accept": "text/html"})
    assert page.status == 401 and "?token=" in await page.text()
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await authed.ws_connect("/ws?clientId=a")


async def test_token_by_header_query_and_cookie(authed: Any) -> None:
    assert (await authed.get("/api/object_info", headers={"Authorization": f"Bearer {TOKEN}"})).status == 200
    assert (await authed.get(f"/api/object_info?token={TOKEN}")).status == 200
    # First page load with ?token= sets an HttpOnly cookie and redirects to the clean URL ...
    first = await authed.get(f"/?token={TOKEN}", headers={"Accept": "text/html"}, allow_redirects=False)
    assert first.status == 302 and first.headers["Location"] == "/"
    cookie = first.cookies["fewstep_token"]
    assert cookie["httponly"] and cookie.value == TOKEN
    # ... which the browser then sends on every fetch and on the websocket (the test client keeps cookies).
    assert (await authed.get("/api/object_info")).status == 200
    ws = await authed.ws_connect("/ws?clientId=a")
    assert (await ws.receive_json())["type"] == "status"
    await ws.close()


async def test_foreign_origin_is_refused_unless_allowed(client: Any, aiohttp_client: Any, make_app: Any) -> None:
    evil = {"Origin": "http://evil.example"}
    response = await client.post("/api/prompt", data="{}", headers=evil)
    assert response.status == 403 and "evil.example" in (await response.json())["error"]["message"]
    assert (await client.get("/api/object_info", headers=evil)).status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws", headers=evil)
    assert refused.value.status == 403
    same = {"Origin": f"http://{client.host}:{client.port}"}
    assert (await client.get("/api/object_info", headers=same)).status == 200
    allowed = await aiohttp_client(make_app(cors_origin="http://evil.example"))
    ok = await allowed.get("/api/object_info", headers=evil)
    assert ok.status == 200 and ok.headers["Access-Control-Allow-Origin"] == "http://evil.example"
    assert (await allowed.get("/api/object_info", headers={"Origin": "http://other.example"})).status == 403


@pytest.mark.parametrize("query", [
    "filename=../../etc/passwd", "filename=%2e%2e%2f%2e%2e%2fetc%2fpasswd", "filename=/etc/passwd",
    "filename=passwd&subfolder=../../../etc", "filename=passwd&subfolder=%2Fetc", "filename=x.png&type=secret",
])
async def test_view_refuses_traversal(client: Any, query: str) -> None:
    response = await client.get(f"/api/view?{query}")
    assert response.status == 400, query
    assert (await response.json())["error"]["message"]


async def test_view_refuses_symlink_out_of_root(client: Any, config: Any, tmp_path: Any) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    os.symlink(secret, config.paths().output_dir / "link.txt")
    os.symlink(tmp_path, config.paths().output_dir / "linkdir")
    assert (await client.get("/api/view?filename=link.txt")).status == 400
    assert (await client.get("/api/view?filename=secret.txt&subfolder=linkdir")).status == 400


async def test_view_serves_files_and_previews(client: Any, config: Any) -> None:
    from PIL import Image

    Image.new("RGBA", (20, 10), (255, 0, 0, 128)).save(config.paths().output_dir / "a.png")
    (config.paths().output_dir / "page.html").write_text("<script>alert(1)</script>")
    plain = await client.get("/api/view?filename=a.png&type=output")
    assert plain.status == 200 and plain.content_type == "image/png"
    webp = await client.get("/api/view?filename=a.png&preview=webp;50")
    assert webp.content_type == "image/webp"
    alpha = await client.get("/api/view?filename=a.png&channel=a")
    import io
    pixel = Image.open(io.BytesIO(await alpha.read())).getpixel((0, 0))
    assert pixel[:3] == (128, 128, 128)            # alpha shown as grey
    html = await client.get("/api/view?filename=page.html")
    assert html.headers["Content-Disposition"].startswith("attachment")
    assert (await client.get("/api/view?filename=missing.png")).status == 404
    assert (await client.get("/api/view?filename=a.png&channel=x")).status == 400


async def test_userdata_refuses_traversal(client: Any) -> None:
    for path in ("..%2F..%2Fsecret", "%2Fetc%2Fpasswd", "workflows%2F..%2F..%2F..%2Fx"):
        assert (await client.get(f"/api/userdata/{path}")).status in (400, 404), path
        assert (await client.post(f"/api/userdata/{path}", data="x")).status == 400, path
    assert (await client.get("/api/userdata?dir=../..")).status == 400
    assert (await client.get("/api/v2/userdata?path=%2Fetc")).status == 400
    moved = await client.post("/api/userdata/comfy.templates.json/move/..%2F..%2Fescaped.json")
    assert moved.status == 400


def _upload(name: str, data: bytes, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for key, value in fields.items():
        form.add_field(key, value)
    form.add_field("image", data, filename=name, content_type="image/png")
    return form


def _png(color: tuple[int, ...] = (0, 255, 0)) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_upload_image_dedups_renames_and_overwrites(client: Any, config: Any) -> None:
    first = await (await client.post("/api/upload/image", data=_upload("a.png", _png()))).json()
    assert first == {"name": "a.png", "subfolder": "", "type": "input"}
    same = await (await client.post("/api/upload/image", data=_upload("a.png", _png()))).json()
    assert same["name"] == "a.png"                               # identical bytes: reused
    other = await (await client.post("/api/upload/image", data=_upload("a.png", _png((1, 2, 3))))).json()
    assert other["name"] == "a (1).png"
    over = await client.post("/api/upload/image", data=_upload("a.png", _png((9, 9, 9)), overwrite="true"))
    assert (await over.json())["name"] == "a.png"
    sub = await (await client.post("/api/upload/image", data=_upload("b.png", _png(), subfolder="masks"))).json()
    assert sub == {"name": "b.png", "subfolder": "masks", "type": "input"}
    assert (config.paths().input_dir / "masks" / "b.png").is_file()


async def test_upload_mask_applies_alpha_to_original(client: Any, config: Any) -> None:
    import io

    from PIL import Image

    await client.post("/api/upload/image", data=_upload("base.png", _png((10, 20, 30))))
    buffer = io.BytesIO()
    Image.new("RGBA", (4, 4), (0, 0, 0, 77)).save(buffer, format="PNG")
    ref = json.dumps({"filename": "base.png", "subfolder": "", "type": "input"})
    response = await client.post("/api/upload/mask", data=_upload("clipspace-mask.png", buffer.getvalue(),
                                                                     original_ref=ref))
    assert response.status == 200, await response.text()
    saved = Image.open(config.paths().input_dir / (await response.json())["name"])
    assert saved.getpixel((0, 0)) == (10, 20, 30, 77)


@pytest.mark.parametrize("fields", [{"subfolder": "../../x"}, {"subfolder": "/abs"}, {"type": "elsewhere"}])
async def test_upload_refuses_traversal(client: Any, fields: dict[str, str]) -> None:
    response = await client.post("/api/upload/image", data=_upload("a.png", _png(), **fields))
    assert response.status == 400, fields


async def test_upload_never_writes_outside_input(client: Any, config: Any) -> None:
    response = await client.post("/api/upload/image", data=_upload("../../evil.png", _png()))
    # aiohttp reduces a multipart file name to its base name; either way nothing lands outside input/.
    if response.status == 200:
        name = (await response.json())["name"]
        assert "/" not in name and (config.paths().input_dir / name).is_file()
    else:
        assert response.status == 400
    assert not (config.home / "evil.png").exists() and not (config.home.parent / "evil.png").exists()


async def test_upload_and_graph_size_limits(aiohttp_client: Any, make_app: Any, config: Any) -> None:
    small = await aiohttp_client(make_app(max_upload_bytes=1000, max_graph_bytes=500))
    big = await small.post("/api/upload/image", data=_upload("big.png", b"x" * 5000))
    assert big.status == 413 and "limit" in (await big.json())["error"]["message"]
    assert not (config.paths().input_dir / "big.png").exists()
    graph = {"prompt": {"1": {"class_type": "SolidImage", "inputs": {"pad": "y" * 1000}}}}
    too_big = await small.post("/api/prompt", json=graph)
    assert too_big.status == 413
    defaults = await (await aiohttp_client(make_app())).get("/api/features")
    assert (await defaults.json())["max_upload_size"] == 100 * 1024 * 1024


@pytest.mark.parametrize("body", ["{not json", "[1, 2", "\xff\xfe"])
async def test_malformed_json_is_400_with_message(client: Any, body: str) -> None:
    for path in ("/api/prompt", "/api/queue", "/api/history", "/api/settings", "/api/settings/x",
                 "/api/jobs/cancel"):
        response = await client.post(path, data=body.encode("latin-1"),
                                     headers={"Content-Type": "application/json"})
        assert response.status == 400, path
        assert "JSON" in (await response.json())["error"]["message"], path


async def test_wrong_types_are_400(client: Any) -> None:
    cases = [("/api/prompt", {"prompt": [1, 2]}), ("/api/prompt", {"prompt": {}, "extra_data": "x"}),
             ("/api/queue", {"delete": "abc"}), ("/api/history", {"delete": [1]}), ("/api/settings", [1]),
             ("/api/free", {"unload_models": "yes"}), ("/api/interrupt", {"prompt_id": 5}),
             ("/api/jobs/cancel", {"job_ids": "x"}), ("/api/prompt", [])]
    for path, body in cases:
        response = await client.post(path, json=body)
        assert response.status == 400, (path, body, await response.text())


def test_safe_path_unit(tmp_path: Any) -> None:
    (tmp_path / "root" / "sub").mkdir(parents=True)
    root = tmp_path / "root"
    assert safe_path(root, "sub", "a.png") == (root / "sub" / "a.png").resolve()
    for parts in (("..", "x"), ("/etc/passwd",), ("sub/../../x",), ("a\x00b",), ("..\\x",)):
        with pytest.raises(UnsafePath):
            safe_path(root, *parts)
