"""Websocket protocol and the queue: every message type, routing, previews, interrupts, slow clients."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from pathlib import Path
from typing import Any

import aiohttp

from fewstep.app.server.state import HUB

GRAPHS = Path(__file__).parent / "graphs"
IMAGE_GRAPH = json.loads((GRAPHS / "image.json").read_text())


def slow_graph(steps: int = 6, delay: float = 0.01, tag: str = "") -> dict[str, Any]:
    return {"1": {"class_type": "SlowCount", "inputs": {"steps": steps, "delay": delay, "tag": tag}}}


async def connect(client: Any, sid: str, flags: dict[str, Any] | None = None) -> Any:
    ws = await client.ws_connect(f"/ws?clientId={sid}")
    status = await ws.receive_json(timeout=5)
    assert status["type"] == "status" and status["data"]["sid"] == sid
    if flags is not None:
        await ws.send_json({"type": "feature_flags", "data": flags})
        reply = await ws.receive_json(timeout=5)
        assert reply["type"] == "feature_flags" and reply["data"]["supports_preview_metadata"] is True
    return ws


async def collect(ws: Any, prompt_id: str, timeout: float = 20) -> tuple[list[dict], list[bytes]]:
    """Messages until ``executing`` with node None for ``prompt_id`` (the end of that prompt)."""
    texts, frames = [], []
    deadline = time.monotonic() + timeout
    while True:
        msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        if msg.type == aiohttp.WSMsgType.BINARY:
            frames.append(msg.data)
            continue
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        data = json.loads(msg.data)
        texts.append(data)
        if data["type"] == "executing" and data["data"].get("node") is None and \
                data["data"].get("prompt_id") == prompt_id:
            return texts, frames


async def queue(client: Any, prompt: dict, **body: Any) -> str:
    response = await client.post("/api/prompt", json={"prompt": prompt, **body})
    assert response.status == 200, await response.text()
    result = await response.json()
    assert set(result) == {"prompt_id", "number", "node_errors"}
    return result["prompt_id"]


async def test_run_image_graph_messages_go_to_submitter_only(client: Any) -> None:
    mine = await connect(client, "mine", {"supports_preview_metadata": True})
    other = await connect(client, "other")
    prompt_id = await queue(client, IMAGE_GRAPH, client_id="mine")
    texts, _ = await collect(mine, prompt_id)
    types = [m["type"] for m in texts]
    for expected in ("execution_start", "executing", "executed", "execution_success"):
        assert expected in types, (expected, types)
    assert types.index("execution_start") < types.index("executed") < types.index("execution_success")
    executed = [m["data"] for m in texts if m["type"] == "executed"]
    images = next(e["output"]["images"] for e in executed if e["node"] == "2")
    assert images[0]["type"] == "output" and images[0]["filename"].endswith(".png")
    metrics = next(e["output"]["metrics"] for e in executed if e["node"] == "3")
    assert metrics[0]["pixels"] == 64 * 48
    view = await client.get(f"/api/view?filename={images[0]['filename']}&type=output")
    assert view.status == 200 and view.content_type == "image/png"
    # The other client saw only queue status broadcasts, no execution messages.
    seen = []
    while True:
        try:
            seen.append((await other.receive_json(timeout=0.3))["type"])
        except asyncio.TimeoutError:
            break
    assert set(seen) <= {"status"}, seen
    history = await (await client.get(f"/api/history/{prompt_id}")).json()
    entry = history[prompt_id]
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert entry["outputs"]["2"]["images"] == images
    assert entry["prompt"][1] == prompt_id and entry["prompt"][2]["1"]["class_type"] == "SolidImage"
    # A second, identical run is served from the cache: execution_cached names the nodes.
    again = await queue(client, IMAGE_GRAPH, client_id="mine")
    texts, _ = await collect(mine, again)
    cached = next(m["data"]["nodes"] for m in texts if m["type"] == "execution_cached")
    assert "2" in cached and "3" in cached


async def test_no_client_id_broadcasts_progress_and_previews(client: Any) -> None:
    flagged = await connect(client, "a", {"supports_preview_metadata": True})
    plain = await connect(client, "b")
    prompt_id = await queue(client, slow_graph(steps=3))
    texts_a, frames_a = await collect(flagged, prompt_id)
    texts_b, frames_b = await collect(plain, prompt_id)
    for texts in (texts_a, texts_b):
        progress = [m["data"] for m in texts if m["type"] == "progress"]
        assert [p["value"] for p in progress] == [1, 2, 3] and progress[0]["max"] == 3
        assert progress[0]["node"] == "1" and progress[0]["prompt_id"] == prompt_id
        assert any(m["type"] == "progress_state" for m in texts)
    assert len(frames_a) == 3 and len(frames_b) == 3
    # Type 4 (with metadata) for the client that advertised it, type 1 (JPEG) for the other.
    kind, meta_len = struct.unpack(">II", frames_a[0][:8])
    meta = json.loads(frames_a[0][8:8 + meta_len])
    assert kind == 4 and meta["node_id"] == "1" and meta["prompt_id"] == prompt_id
    assert meta["image_type"] == "image/jpeg" and frames_a[0][8 + meta_len:][:2] == b"\xff\xd8"
    kind, image_type = struct.unpack(">II", frames_b[0][:8])
    assert (kind, image_type) == (1, 1) and frames_b[0][8:10] == b"\xff\xd8"


async def test_ui_workflow_is_accepted(client: Any) -> None:
    ws = await connect(client, "ui")
    workflow = json.loads((GRAPHS / "image.ui.json").read_text())
    prompt_id = await queue(client, workflow, client_id="ui")
    texts, _ = await collect(ws, prompt_id)
    assert any(m["type"] == "execution_success" for m in texts)


async def test_interrupt_stops_running_prompt(client: Any) -> None:
    ws = await connect(client, "int")
    prompt_id = await queue(client, slow_graph(steps=2000, delay=0.01), client_id="int")
    while (await ws.receive_json(timeout=10))["type"] != "progress":
        pass
    other = await client.post("/api/interrupt", json={"prompt_id": "not-running"})
    assert other.status == 200
    assert (await client.post("/api/interrupt", json={"prompt_id": prompt_id})).status == 200
    texts, _ = await collect(ws, prompt_id)
    interrupted = [m["data"] for m in texts if m["type"] == "execution_interrupted"]
    assert interrupted and interrupted[0]["prompt_id"] == prompt_id
    progress = [m for m in texts if m["type"] == "progress"]
    assert len(progress) < 1990                      # stopped early, not run to the end
    history = await (await client.get(f"/api/history/{prompt_id}")).json()
    assert history[prompt_id]["status"]["completed"] is False


async def test_bad_graphs_give_comfyui_error_shape(client: Any) -> None:
    unknown = await client.post("/api/prompt", json={"prompt": {"1": {"class_type": "Nope", "inputs": {}}}})
    assert unknown.status == 400
    body = await unknown.json()
    assert {"error", "node_errors"} <= set(body) and body["error"]["type"]
    assert "Nope" in json.dumps(body)
    out_of_range = {"1": {"class_type": "SlowCount", "inputs": {"steps": 0, "delay": 0.1}}}
    response = await client.post("/api/prompt", json={"prompt": out_of_range})
    body = await response.json()
    assert response.status == 400 and body["error"]["type"] == "prompt_outputs_failed_validation"
    error = body["node_errors"]["1"]["errors"][0]
    assert error["type"] == "value_smaller_than_min" and error["extra_info"]["input_name"] == "steps"
    assert body["node_errors"]["1"]["class_type"] == "SlowCount"
    missing = await client.post("/api/prompt", json={"client_id": "x"})
    assert (await missing.json())["error"]["type"] == "no_prompt"
    broken_ui = {"nodes": [{"id": 1, "type": "SolidImage"}], "links": [[1, 9, 0, 8, 0, "IMAGE"]]}
    response = await client.post("/api/prompt", json={"prompt": broken_ui})
    assert response.status == 400 and (await response.json())["error"]["message"]


async def test_queue_listing_delete_clear_and_jobs(client: Any) -> None:
    ws = await connect(client, "q")
    blocker = await queue(client, slow_graph(steps=2000, delay=0.01), client_id="q")
    while (await ws.receive_json(timeout=10))["type"] != "progress":
        pass
    pending = [await queue(client, slow_graph(steps=1, tag=str(i))) for i in range(3)]
    snapshot = await (await client.get("/api/queue")).json()
    assert [item[1] for item in snapshot["queue_running"]] == [blocker]
    assert [item[1] for item in snapshot["queue_pending"]] == pending
    assert len(snapshot["queue_pending"][0]) == 5 and snapshot["queue_pending"][0][4] == ["1"]
    remaining = (await (await client.get("/api/prompt")).json())["exec_info"]["queue_remaining"]
    assert remaining == 4
    jobs = await (await client.get("/api/jobs?status=in_progress,pending&limit=200&offset=0")).json()
    assert {j["id"] for j in jobs["jobs"]} == {blocker, *pending} and jobs["pagination"]["total"] == 4
    page = await (await client.get("/api/jobs?status=pending&limit=2&offset=0")).json()
    assert len(page["jobs"]) == 2 and page["pagination"]["has_more"] is True
    detail = await (await client.get(f"/api/jobs/{pending[0]}")).json()
    assert detail["id"] == pending[0] and detail["status"] == "pending" and "workflow" in detail
    await client.post("/api/queue", json={"delete": [pending[0]]})
    assert (await client.post(f"/api/jobs/{pending[1]}/cancel")).status == 200
    snapshot = await (await client.get("/api/queue")).json()
    assert [item[1] for item in snapshot["queue_pending"]] == [pending[2]]
    await client.post("/api/queue", json={"clear": True})
    assert (await (await client.get("/api/queue")).json())["queue_pending"] == []
    assert (await client.post("/api/jobs/cancel", json={"job_ids": [blocker]})).status == 200
    await collect(ws, blocker)
    done = await (await client.get("/api/jobs?status=completed,failed,cancelled&limit=64&offset=0")).json()
    assert blocker in {j["id"] for j in done["jobs"]}


async def test_history_paging_delete_clear(client: Any) -> None:
    ws = await connect(client, "h")
    ids = []
    for i in range(3):
        ids.append(await queue(client, slow_graph(steps=1, tag=f"h{i}"), client_id="h"))
        await collect(ws, ids[-1])
    assert set(await (await client.get("/api/history")).json()) == set(ids)
    assert len(await (await client.get("/api/history?max_items=2")).json()) == 2
    assert (await client.get("/api/history?max_items=x")).status == 400
    await client.post("/api/history", json={"delete": [ids[0]]})
    assert await (await client.get(f"/api/history/{ids[0]}")).json() == {}
    await client.post("/api/history", json={"clear": True})
    assert await (await client.get("/api/history")).json() == {}
    assert (await client.post("/api/free", json={"unload_models": True, "free_memory": True})).status == 200


async def test_reconnect_with_same_client_id_replaces_session(client: Any) -> None:
    first = await connect(client, "same")
    second = await connect(client, "same")
    msg = await first.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    prompt_id = await queue(client, slow_graph(steps=1, tag="re"), client_id="same")
    texts, _ = await collect(second, prompt_id)
    assert any(m["type"] == "execution_success" for m in texts)


async def test_client_reconnecting_mid_job_is_told_the_running_node(client: Any) -> None:
    """As ComfyUI: a socket that reconnects while its job runs gets `executing` for the current node."""
    first = await connect(client, "back")
    prompt_id = await queue(client, slow_graph(steps=2000, delay=0.01), client_id="back")
    while (await first.receive_json(timeout=10))["type"] != "progress":
        pass
    await first.close()
    again = await client.ws_connect("/ws?clientId=back")
    assert (await again.receive_json(timeout=5))["type"] == "status"
    executing = await again.receive_json(timeout=5)
    assert executing["type"] == "executing"
    assert executing["data"]["node"] == "1" and executing["data"]["prompt_id"] == prompt_id
    assert (await client.post("/api/interrupt", json={"prompt_id": prompt_id})).status == 200
    await collect(again, prompt_id)
    assert "back" not in client.app[HUB].executing    # the job ended: nothing to re-send any more


async def test_logs_subscription_pushes_new_lines_to_that_client_only(client: Any) -> None:
    import logging

    listener, other = await connect(client, "logs-on"), await connect(client, "logs-off")
    subscribe = {"clientId": "logs-on", "enabled": True}
    assert (await client.patch("/internal/logs/subscribe", json=subscribe)).status == 200
    assert (await client.patch("/internal/logs/subscribe", json={"clientId": 3})).status == 400
    logging.getLogger("fewstep.test").warning("hello subscriber")
    message = await listener.receive_json(timeout=5)
    while message["type"] != "logs":
        message = await listener.receive_json(timeout=5)
    assert "hello subscriber" in message["data"]["entries"][0]["m"]
    with_other = [m async for m in _drain(other)]
    assert all(m["type"] != "logs" for m in with_other)
    await client.patch("/internal/logs/subscribe", json={**subscribe, "enabled": False})
    logging.getLogger("fewstep.test").warning("after unsubscribe")
    assert all(m["type"] != "logs" for m in [m async for m in _drain(listener)])


async def _drain(ws: Any, wait: float = 0.3) -> Any:
    """Every JSON message that arrives within ``wait`` seconds."""
    while True:
        try:
            yield await ws.receive_json(timeout=wait)
        except asyncio.TimeoutError:
            return


async def test_client_that_never_reads_is_dropped_without_stalling_others(aiohttp_client: Any,
                                                                           make_app: Any) -> None:
    client = await aiohttp_client(make_app(ws_queue_size=32))
    hub = client.app[HUB]
    fast = await connect(client, "fast")
    # A raw socket that completes the handshake and then never reads a byte.
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /ws?clientId=stuck HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n" % (client.host.encode(), client.port))
    await writer.drain()
    await asyncio.sleep(0.2)
    assert "stuck" in hub.clients
    from fewstep.app.server.ws import WsMessage

    payload = "x" * 64 * 1024
    started = time.monotonic()
    received = 0

    async def read_fast() -> None:
        nonlocal received
        while received < 600:
            msg = json.loads((await fast.receive(timeout=10)).data)
            received += msg["type"] == "progress"
    reading = asyncio.create_task(read_fast())
    for i in range(600):                       # ~40 MB at a steady pace: more than socket buffers hold
        hub.send(WsMessage("progress", {"i": i, "pad": payload}))
        await asyncio.sleep(0.002)
    await reading
    assert time.monotonic() - started < 10
    assert "stuck" not in hub.clients          # dropped once its queue overflowed
    writer.close()


async def test_thousands_of_queued_jobs_do_not_block_the_loop(client: Any) -> None:
    ws = await connect(client, "big")
    blocker = await queue(client, slow_graph(steps=5000, delay=0.01), client_id="big")
    while (await ws.receive_json(timeout=10))["type"] != "progress":
        pass
    store = client.app[__import__("fewstep.app.server.state", fromlist=["STORE"]).STORE]
    prompt = slow_graph(steps=1)

    def fill() -> None:
        for i in range(2000):
            store.enqueue(f"bulk-{i}", prompt, {}, ["1"], None)
    await asyncio.to_thread(fill)
    lags: list[float] = []

    async def ticker() -> None:
        for _ in range(40):
            before = time.monotonic()
            await asyncio.sleep(0.005)
            lags.append(time.monotonic() - before - 0.005)
    tick = asyncio.create_task(ticker())
    started = time.monotonic()
    responses = await asyncio.gather(client.get("/api/prompt"), client.get("/api/jobs?status=pending&limit=50"),
                                     client.get("/api/queue"))
    assert [r.status for r in responses] == [200, 200, 200]
    assert (await responses[0].json())["exec_info"]["queue_remaining"] == 2001
    assert len((await responses[2].json())["queue_pending"]) == 2000
    await tick
    elapsed = time.monotonic() - started
    # The loop kept ticking: SQLite and list building ran in threads. 0.25 s is ~50x the tick period.
    print(f"2000 queued: max loop lag {max(lags) * 1000:.1f} ms over {elapsed:.2f} s")
    assert max(lags) < 0.25, (max(lags), elapsed)
    await client.post("/api/queue", json={"clear": True})
    await client.post("/api/interrupt")
    await collect(ws, blocker)


async def test_node_failure_sends_execution_error(client: Any) -> None:
    ws = await connect(client, "err")
    prompt_id = await queue(client, {"1": {"class_type": "Explode", "inputs": {"why": "on purpose"}}},
                            client_id="err")
    texts, _ = await collect(ws, prompt_id)
    error = next(m["data"] for m in texts if m["type"] == "execution_error")
    assert error["prompt_id"] == prompt_id and error["node_id"] == "1" and error["node_type"] == "Explode"
    assert "on purpose" in error["exception_message"] and error["traceback"]
    entry = (await (await client.get(f"/api/history/{prompt_id}")).json())[prompt_id]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    failed = await (await client.get("/api/jobs?status=failed")).json()
    assert failed["jobs"][0]["id"] == prompt_id and failed["jobs"][0]["execution_error"]["node_id"] == "1"


async def test_websocket_token_by_query(aiohttp_client: Any, make_app: Any) -> None:
    client = await aiohttp_client(make_app(auth_token="tok"))
    ws = await client.ws_connect("/ws?clientId=q&token=tok")
    assert (await ws.receive_json(timeout=5))["type"] == "status"
    await ws.close()


async def test_status_is_the_first_frame_even_when_a_job_sends_while_the_socket_registers(
        aiohttp_client: Any) -> None:
    """A job's message queued while the handler awaits the queue size must not overtake ``status``."""
    from aiohttp import web

    from fewstep.app.server.ws import ClientHub, WsMessage

    async def queue_remaining_while_a_job_sends() -> int:
        hub.send(WsMessage("progress", {"value": 1, "max": 2}), "racer")
        await asyncio.sleep(0)
        hub.send(WsMessage("progress", {"value": 2, "max": 2}), "racer")
        return 1

    hub = ClientHub({}, queue_remaining_while_a_job_sends)
    app = web.Application()
    app.router.add_get("/ws", hub.serve)
    ws = await (await aiohttp_client(app)).ws_connect("/ws?clientId=racer")
    first = await ws.receive_json(timeout=5)
    assert first["type"] == "status" and first["data"]["sid"] == "racer"
    await ws.close()
