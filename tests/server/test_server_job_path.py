"""The per-job path through the server: one validation per prompt, the worker woken by the POST, and the
worker's events reaching the client complete and in order through the batching thread bridge."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping
from typing import Any

from test_ws_and_queue import IMAGE_GRAPH, collect, connect, queue, slow_graph

import fewstep.app.executor
from fewstep.app.cache import CacheSet
from fewstep.app.executor import Executor
from fewstep.app.server import create_app, default_options
from fewstep.app.server.state import RUNTIME
from fewstep.app.server.ws import PreviewFrame, ThreadBridge, WsMessage
from fewstep.app.storage import JobStore
from fewstep.app.worker import QueueWorker


async def test_worker_runs_the_posted_prompt_without_validating_it_again(client: Any, monkeypatch: Any) -> None:
    calls = []
    real = fewstep.app.executor.validate_prompt
    monkeypatch.setattr(fewstep.app.executor, "validate_prompt", lambda *a, **k: calls.append(1) or real(*a, **k))
    ws = await connect(client, "once")
    prompt_id = await queue(client, IMAGE_GRAPH, client_id="once")
    await collect(ws, prompt_id)
    entry = (await (await client.get(f"/api/history/{prompt_id}")).json())[prompt_id]
    assert entry["status"]["status_str"] == "success" and entry["outputs"]["3"]["metrics"][0]["pixels"] == 64 * 48
    assert calls == []          # POST /prompt validated it; the worker reused that plan


async def test_large_graphs_are_admitted_in_a_thread_small_ones_on_the_loop(client: Any, monkeypatch: Any) -> None:
    """Both admission paths validate, enqueue and run; only graphs above the bound leave the event loop."""
    import fewstep.app.server.jobs as jobs

    loop_thread = threading.get_ident()
    admitted_on: list[bool] = []
    real_admit = jobs._admit
    monkeypatch.setattr(jobs, "_admit", lambda *a: admitted_on.append(threading.get_ident() == loop_thread)
                        or real_admit(*a))
    ws = await connect(client, "admit")
    for bound in (len(IMAGE_GRAPH), len(IMAGE_GRAPH) - 1):
        monkeypatch.setattr(jobs, "INLINE_ADMIT_MAX_NODES", bound)
        prompt_id = await queue(client, IMAGE_GRAPH, client_id="admit")
        await collect(ws, prompt_id)
        entry = (await (await client.get(f"/api/history/{prompt_id}")).json())[prompt_id]
        assert entry["status"]["status_str"] == "success"
    bad = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
    response = await client.post("/api/prompt", json={"prompt": bad})
    assert response.status == 400 and (await response.json())["error"]["type"] == "missing_node_type"
    assert admitted_on == [True, False, True]      # the one-node bad graph is small: on the loop


async def test_graph_bigger_than_one_network_read_is_accepted(client: Any) -> None:
    ws = await connect(client, "big-body")
    pad = "x" * 400_000        # e.g. a UI workflow embedded in extra_pnginfo
    prompt_id = await queue(client, IMAGE_GRAPH, client_id="big-body", extra_data={"extra_pnginfo": {"pad": pad}})
    await collect(ws, prompt_id)
    entry = (await (await client.get(f"/api/history/{prompt_id}")).json())[prompt_id]
    assert entry["status"]["status_str"] == "success" and entry["prompt"][3]["extra_pnginfo"]["pad"] == pad


async def test_post_wakes_an_idle_worker_that_would_otherwise_sleep_an_hour(aiohttp_client: Any, config: Any,
                                                                            registry: Any) -> None:
    store = JobStore(config.db_path)
    executor = Executor(registry, CacheSet(config.cache), config.paths())
    idle_claims = []
    claim = store.claim_next

    def counting_claim() -> Any:
        job = claim()
        if job is None:
            idle_claims.append(1)
        return job

    store.claim_next = counting_claim
    worker = QueueWorker(store, executor, idle_poll_s=3600.0)
    client = await aiohttp_client(create_app(config, registry, executor, store, worker=worker,
                                             options=default_options(config)))
    for _ in range(200):        # two empty looks: before and after the start-up wake-up; then it sleeps
        if len(idle_claims) >= 2:
            break
        await asyncio.sleep(0.02)
    assert len(idle_claims) >= 2
    ws = await connect(client, "woken")
    prompt_id = await queue(client, slow_graph(steps=1, delay=0.0), client_id="woken")
    texts, _ = await collect(ws, prompt_id, timeout=20)   # only the POST's wake-up can start it in time
    assert [m["type"] for m in texts if m["type"] == "execution_success"] == ["execution_success"]


async def test_client_receives_every_worker_event_in_emit_order(client: Any) -> None:
    """Every event that carries its own news arrives, in emit order; of the ones that only update a
    state (progress, progress_state, executing a node) the latest always arrives, before the
    job's end: earlier ones may be coalesced away when the worker runs ahead (issue #24)."""
    from fewstep.app.server.ws import coalesce_key

    worker = client.app[RUNTIME].worker
    emitted: list[tuple[str, Any, Any]] = []
    bridge_emit = worker.emit

    def recording(event: str, data: dict[str, Any], client_id: str | None) -> None:
        if client_id == "order" and event != "status":
            plain = None if event == "preview" else json.loads(json.dumps(
                data, default=lambda v: dict(v) if isinstance(v, Mapping) else str(v)))
            emitted.append((event, plain, coalesce_key(event, data, client_id)))
        bridge_emit(event, data, client_id)

    worker.emit = recording
    ws = await connect(client, "order")
    prompt_id = await queue(client, slow_graph(steps=4, delay=0.0), client_id="order")
    texts, frames = await collect(ws, prompt_id)
    received = [(m["type"], m["data"]) for m in texts if m["type"] != "status"]
    news = [(e, d) for e, d, key in emitted if key is None and e != "preview"]
    assert [r for r in received if r in news] == news
    latest = {key: (e, d) for e, d, key in emitted if key is not None}
    end = received.index(news[-2])                        # execution_success
    assert all(state in received[:end] for state in latest.values())
    assert len(frames) == sum(e[0] == "preview" for e in emitted) == 4    # frames are never coalesced
    assert [e[0] for e in emitted][-2:] == ["execution_success", "executing"]


class _RecordingHub:
    """What ThreadBridge needs of a ClientHub, recording what it is asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None]] = []
        self.executing: dict[str, WsMessage] = {}
        self.status_requests = 0

    def send(self, message: WsMessage, sid: str | None = None) -> None:
        self.sent.append((message.type, sid))

    def send_preview(self, frame: PreviewFrame, sid: str | None = None) -> None:
        self.sent.append(("preview", sid))

    def schedule_status(self) -> None:
        self.status_requests += 1

    def has_room(self, sid: str | None) -> bool:
        return True

    def listeners(self, sid: str | None) -> bool:
        return True


async def test_bridge_wakes_the_loop_once_per_burst_and_keeps_the_order(monkeypatch: Any) -> None:
    from PIL import Image

    loop = asyncio.get_running_loop()
    wakeups = []
    real = loop.call_soon_threadsafe
    monkeypatch.setattr(loop, "call_soon_threadsafe", lambda *args: (wakeups.append(args[0]), real(*args))[1])
    hub = _RecordingHub()
    bridge = ThreadBridge(loop, hub, preview_size=16)

    def burst() -> None:
        bridge.emit("executing", {"node": "1", "prompt_id": "p"}, "me")
        bridge.emit("progress", {"value": 1, "max": 2, "node": "1", "prompt_id": "p"}, "me")
        bridge.emit("preview", {"image": Image.new("RGB", (32, 32)), "node_id": "1", "prompt_id": "p"}, "me")
        bridge.emit("execution_success", {"prompt_id": "p"}, "me")
        bridge.emit("executing", {"node": None, "prompt_id": "p"}, "me")

    thread = threading.Thread(target=burst)
    thread.start()
    thread.join()               # the loop is blocked here: the whole burst waits in the bridge's FIFO
    assert len(wakeups) == 1 and hub.sent == []
    await asyncio.sleep(0)
    assert hub.sent == [("executing", "me"), ("progress", "me"), ("preview", "me"), ("execution_success", "me"),
                        ("executing", "me")]
    assert hub.executing == {} and hub.status_requests == 2   # the job's end: success, then executing None
    bridge.emit("status", {"status": {}}, None)                 # a later event wakes the loop again
    assert len(wakeups) == 2
    await asyncio.sleep(0.02)        # right after a drain, the next one waits WAKE_GAP_S (batches a busy worker)
    assert hub.sent[-1] == ("status", None)
