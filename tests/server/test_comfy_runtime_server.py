"""Issue #14 item 10, server side: what classic custom packs do through ``server.PromptServer.instance``
and ``comfy.utils.ProgressBar`` reaches our websocket clients and HTTP routes; a pack that needs a module
we do not provide is listed in ``/api/system_stats`` while everything else works."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from test_ws_and_queue import collect, connect, queue

from fewstep.app.cache import CacheSet
from fewstep.app.executor import Executor
from fewstep.app.registry import load_registry
from fewstep.app.server import create_app, default_options
from fewstep.app.storage import JobStore

RUNTIME_PACKS = Path(__file__).parents[1] / "engine" / "runtime_packs"


@pytest.fixture(scope="module")
def runtime_registry() -> Any:
    return load_registry([RUNTIME_PACKS], entry_points=False, builtin=False)


@pytest.fixture
async def runtime_client(aiohttp_client: Any, config: Any, runtime_registry: Any) -> Any:
    executor = Executor(runtime_registry, CacheSet(config.cache), config.paths())
    store = JobStore(config.db_path)
    return await aiohttp_client(create_app(config, runtime_registry, executor, store,
                                           options=default_options(config)))


async def test_send_sync_reaches_the_prompts_client(runtime_client: Any) -> None:
    """ComfyUI ``server.py::PromptServer.send_sync``: ``{"type": event, "data": data}`` to ``sid``."""
    mine = await connect(runtime_client, "mine")
    prompt_id = await queue(runtime_client, {"1": {"class_type": "Notify", "inputs": {"text": "hello"}}},
                            client_id="mine")
    texts, _ = await collect(mine, prompt_id)
    custom = [m for m in texts if m["type"] == "runtime_pack.notify"]
    assert custom == [{"type": "runtime_pack.notify", "data": {"text": "hello", "client": "mine"}}]


async def test_progress_bar_previews_reach_the_websocket(runtime_client: Any) -> None:
    """ComfyUI's websocket image-streaming example reads binary frames: type 1 (JPEG) or 4 (metadata)."""
    flagged = await connect(runtime_client, "flagged", {"supports_preview_metadata": True})
    prompt_id = await queue(runtime_client, {"1": {"class_type": "RuntimeSteps", "inputs": {"steps": 2}}},
                            client_id="flagged")
    texts, frames = await collect(flagged, prompt_id)
    # the server may coalesce progress of one node that a client has not read yet: the last one always arrives
    values = [m["data"]["value"] for m in texts if m["type"] == "progress"]
    assert values and values[-1] == 2 and set(values) <= {1, 2}
    assert 1 <= len(frames) <= 2
    kind, meta_len = struct.unpack(">II", frames[0][:8])
    meta = json.loads(frames[0][8:8 + meta_len])
    assert kind == 4 and meta["node_id"] == "1" and frames[0][8 + meta_len:][:2] == b"\xff\xd8"


async def test_pack_routes_are_served_and_cannot_replace_ours(runtime_client: Any) -> None:
    for path in ("/runtime_pack/hello", "/api/runtime_pack/hello"):
        response = await runtime_client.get(path)
        assert response.status == 200
        assert await response.json() == {"hello": "from runtime_pack", "max_resolution": 16384}
    ours = await (await runtime_client.get("/api/prompt")).json()
    assert "exec_info" in ours and "hijacked" not in ours


async def test_failed_pack_is_listed_in_system_stats(runtime_client: Any) -> None:
    stats = await (await runtime_client.get("/api/system_stats")).json()
    failures = stats["fewstep"]["pack_failures"]
    assert [f["pack"] for f in failures] == ["needs_comfy_sd"] and "comfy.sd" in failures[0]["reason"]
    info = await (await runtime_client.get("/api/object_info")).json()
    assert "Notify" in info and info["Notify"]["python_module"] == "custom_nodes.runtime_pack"


COMFY_PACKS = Path(__file__).parents[1] / "engine" / "comfy_packs"


@pytest.fixture
async def packs_client(aiohttp_client: Any, config: Any) -> Any:
    registry = load_registry([COMFY_PACKS], entry_points=False, builtin=False)
    assert registry.failures == []
    executor = Executor(registry, CacheSet(config.cache), config.paths())
    return await aiohttp_client(create_app(config, registry, executor, JobStore(config.db_path),
                                           options=default_options(config)))


async def test_websocket_image_example_gets_its_images(packs_client: Any) -> None:
    """The flow of ComfyUI's ``script_examples/websockets_api_example_ws_images.py``: binary frames that
    arrive while the websocket-image node executes are the images (``out[8:]``, decoded with PIL)."""
    import io

    from PIL import Image

    ws = await connect(packs_client, "example")  # the example sends no feature flags: type-1 frames
    prompt = {"1": {"class_type": "FlatImage", "inputs": {"width": 600, "height": 10, "batch": 3, "value": 0.5}},
              "save_image_websocket_node": {"class_type": "WebsocketImageSend", "inputs": {"images": ["1", 0]}}}
    prompt_id = await queue(packs_client, prompt, client_id="example")
    current, images = None, []
    while True:
        msg = await ws.receive(timeout=20)
        if msg.type.name == "TEXT":
            data = json.loads(msg.data)
            if data["type"] == "executing":
                current = data["data"]["node"]
                if current is None and data["data"]["prompt_id"] == prompt_id:
                    break
        elif current == "save_image_websocket_node":
            images.append(Image.open(io.BytesIO(msg.data[8:])))
    # ("PNG", image, None): full size (above --preview-size) and PNG, as ComfyUI's server sends it
    assert [(image.format, image.size) for image in images] == [("PNG", (600, 10))] * 3


async def test_pack_route_and_node_feedback(packs_client: Any) -> None:
    listing = await (await packs_client.get("/api/textlike/text-file/output")).json()
    assert listing == ["[none]"]
    watcher = await connect(packs_client, "watcher")
    prompt_id = await queue(packs_client, {"7": {"class_type": "CountDownFeedback", "inputs": {"count": 2}}})
    texts, _ = await collect(watcher, prompt_id)  # no client_id: send_sync(..., None) goes to every client
    feedback = [m["data"] for m in texts if m["type"] == "impact-node-feedback"]
    assert feedback == [{"node_id": "7", "widget_name": "count", "type": "int", "value": 0}]
