"""The process worker (``fewstep serve``'s default): /interrupt ends even a job that never checks for
interrupts, by restarting the worker process, and the queue goes on; a worker that dies is replaced.

The app is the production one (``build_app``) over the test pack only, with real child processes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from fewstep.app.config import Config
from fewstep.app.server import build_app
from fewstep.app.server.state import RUNTIME
from fewstep.app.storage import store_for_url

PACKS = Path(__file__).parent / "packs"
GRACE_S = 1.0


@pytest.fixture
async def served(aiohttp_client: Any, tmp_path: Path) -> tuple[Any, Any]:
    config = Config(home=tmp_path / "home", auth_token=None, custom_nodes_dirs=[PACKS], builtin_nodes=False,
                    worker="process", interrupt_grace_s=GRACE_S)
    app = build_app(config)
    client = await aiohttp_client(app)
    return client, app[RUNTIME].worker


async def _post(client: Any, graph: dict[str, Any]) -> str:
    answer = await client.post("/api/prompt", json={"prompt": graph, "client_id": "tab"})
    assert answer.status == 200, await answer.text()
    return (await answer.json())["prompt_id"]


async def _history(client: Any, prompt_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        entry = (await (await client.get(f"/api/history/{prompt_id}")).json()).get(prompt_id)
        if entry is not None:
            return entry
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {prompt_id} did not finish within {timeout_s} s")


async def _until_running(worker: Any, prompt_id: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while worker.running_prompt_id != prompt_id:
        assert time.monotonic() < deadline, "the job never started"
        await asyncio.sleep(0.02)


DEAF = {"1": {"class_type": "Deaf", "inputs": {"seconds": 600.0}}}
COUNT = {"1": {"class_type": "SlowCount", "inputs": {"steps": 3, "delay": 0.01}}}


async def test_interrupt_ends_a_job_that_never_checks_and_the_queue_goes_on(served: tuple[Any, Any]) -> None:
    client, worker = served
    stuck = await _post(client, DEAF)
    queued = await _post(client, COUNT)
    await _until_running(worker, stuck)
    asked = time.monotonic()
    assert (await client.post("/api/interrupt", json={})).status == 200
    entry = await _history(client, stuck)
    kind, data = entry["status"]["messages"][-1]        # ComfyUI: status_str "error", told apart by messages
    assert kind == "execution_interrupted" and entry["status"]["status_str"] == "error"
    assert time.monotonic() - asked < GRACE_S + 10      # not the 600 s the node would take
    reason = data["reason"]
    assert "ignored /interrupt" in reason
    after = await _history(client, queued)
    assert after["status"]["status_str"] == "success"
    assert after["outputs"]["1"]["text"] == ["counted to 3"]
    assert worker.restarts == 1


async def test_a_job_that_honours_interrupt_does_not_cost_a_restart(served: tuple[Any, Any]) -> None:
    client, worker = served
    slow = await _post(client, {"1": {"class_type": "SlowCount", "inputs": {"steps": 100000, "delay": 0.01}}})
    await _until_running(worker, slow)
    await client.post("/api/interrupt", json={"prompt_id": slow})
    assert (await _history(client, slow))["status"]["messages"][-1][0] == "execution_interrupted"
    await asyncio.sleep(GRACE_S + 0.5)                   # past the grace: nothing was killed
    assert worker.restarts == 0
    assert (await _history(client, await _post(client, COUNT)))["status"]["status_str"] == "success"


async def test_a_dead_worker_is_replaced_and_its_job_recorded_as_an_error(served: tuple[Any, Any]) -> None:
    client, worker = served
    crash = await _post(client, {"1": {"class_type": "Crash", "inputs": {"code": 3}}})
    queued = await _post(client, COUNT)
    entry = await _history(client, crash)
    assert entry["status"]["messages"][-1][0] == "execution_error"
    assert "exit code 3" in entry["status"]["messages"][-1][1]["exception_message"]
    assert (await _history(client, queued))["status"]["status_str"] == "success"
    assert worker.restarts == 1


async def test_system_stats_report_the_childs_caches(served: tuple[Any, Any]) -> None:
    client, _ = served
    await _history(client, await _post(client, COUNT))
    stats = await (await client.get("/api/system_stats")).json()
    caches = stats["fewstep"]["caches"]
    assert caches["entries"] >= 1 and caches["misses"] >= 1   # the parent's own executor never ran a job


def test_requeue_puts_a_claimed_job_back_at_the_front(queue_url: str) -> None:
    store = store_for_url(queue_url)
    store.enqueue("a", {}, {})
    store.enqueue("b", {}, {})
    assert store.claim_next().prompt_id == "a"
    assert store.requeue("a") and not store.requeue("a")
    assert [job.prompt_id for job in store.pending()] == ["a", "b"]
    assert store.claim_next().prompt_id == "a"


async def test_the_childs_events_and_previews_reach_the_client(served: tuple[Any, Any]) -> None:
    import aiohttp

    client, _ = served
    ws = await client.ws_connect("/ws?clientId=tab")
    assert (await ws.receive_json(timeout=10))["type"] == "status"
    prompt_id = await _post(client, COUNT)
    kinds, previews = [], 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        message = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        if message.type == aiohttp.WSMsgType.BINARY:
            previews += 1          # SlowCount sends a 32 px image per step, encoded in the child
            continue
        data = message.json()
        kinds.append(data["type"])
        if data["type"] == "executing" and data["data"]["node"] is None:
            assert data["data"]["prompt_id"] == prompt_id
            break
    assert "execution_start" in kinds and "executed" in kinds and previews >= 1
    await ws.close()
