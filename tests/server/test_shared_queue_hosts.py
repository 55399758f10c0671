"""Two ``fewstep serve`` hosts on one PostgreSQL queue (``--queue postgresql://...``): a job posted to host A
runs on host B's worker when A's is busy, its client on A still hears it (LISTEN/NOTIFY relay), ``/interrupt``
sent to B ends a job running on A (through the store, to A's worker process, which A restarts when the job
ignores it), and both hosts show one history. Real apps, real worker processes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from fewstep.app.config import Config
from fewstep.app.server import build_app
from fewstep.app.server.state import RUNTIME

PACKS = Path(__file__).parent / "packs"


def _count(steps: int, tag: str) -> dict[str, Any]:
    return {"1": {"class_type": "SlowCount", "inputs": {"steps": steps, "delay": 0.01, "tag": tag}}}


async def _post(client: Any, graph: dict[str, Any], client_id: str) -> str:
    answer = await client.post("/api/prompt", json={"prompt": graph, "client_id": client_id})
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


async def _until(condition: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_two_hosts_share_one_queue_events_and_interrupts(aiohttp_client: Any, tmp_path: Path,
                                                               pg_cluster: Any) -> None:
    database = pg_cluster.create_database()
    url = pg_cluster.url(database)
    try:
        hosts = []
        for name in ("a", "b"):
            config = Config(home=tmp_path / name, auth_token=None, custom_nodes_dirs=[PACKS], builtin_nodes=False,
                            worker="process", interrupt_grace_s=1.0, lease_s=10.0, queue_url=url)
            app = build_app(config)
            hosts.append((await aiohttp_client(app), app[RUNTIME].worker))
        (host_a, worker_a), (host_b, worker_b) = hosts
        await _until(lambda: bool(worker_a.child_info and worker_b.child_info))
        # the busy job never checks for interrupts: only its own host can end it, by restarting its worker
        busy = await _post(host_a, {"1": {"class_type": "Deaf", "inputs": {"seconds": 600.0}}}, "tab-busy")
        await _until(lambda: busy in (worker_a.running_prompt_id, worker_b.running_prompt_id))
        busy_host, free_host = (host_a, host_b) if worker_a.running_prompt_id == busy else (host_b, host_a)
        busy_worker = worker_a if busy_host is host_a else worker_b
        # the client sits on the busy host: its job can only run on the other host's worker, and only the
        # relay can bring its events back
        ws = await busy_host.ws_connect("/ws?clientId=tab")
        assert (await ws.receive_json(timeout=10))["type"] == "status"
        mine = await _post(busy_host, _count(20, "mine"), "tab")
        heard = []
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, f"the job's end never reached its client; heard {heard}"
            message = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
            if message.type == aiohttp.WSMsgType.BINARY:
                continue
            data = message.json()
            heard.append(data["type"])
            if data["type"] == "executing" and data["data"]["node"] is None:
                assert data["data"]["prompt_id"] == mine
                break
        assert "execution_start" in heard and "executed" in heard and "execution_success" in heard
        assert busy_worker.running_prompt_id == busy                 # it never left the busy job
        # /interrupt sent to the host NOT running the busy job reaches it through the store
        assert (await free_host.post("/api/interrupt", json={"prompt_id": busy})).status == 200
        entry = await _history(host_a, busy, timeout_s=20)
        kind, data = entry["status"]["messages"][-1]
        assert kind == "execution_interrupted" and "ignored /interrupt" in data["reason"]
        await _until(lambda: busy_worker.restarts == 1)              # counted just after the record
        history_a = await (await host_a.get("/api/history")).json()
        history_b = await (await host_b.get("/api/history")).json()
        assert set(history_a) == set(history_b) == {busy, mine}       # one history, seen from both hosts
        stats = await (await host_b.get("/api/system_stats")).json()
        assert len(stats["fewstep"]["workers"]) == 1
        await ws.close()
    finally:
        for client, _ in hosts:
            await client.close()
        pg_cluster.drop_database(database)


def test_the_relay_reconnects_after_its_database_connections_drop(pg_cluster: Any) -> None:
    import psycopg

    from fewstep.app.server.relay import EventRelay

    database = pg_cluster.create_database()
    url = pg_cluster.url(database)
    received: list[tuple[str, dict[str, Any], str | None]] = []
    sender = EventRelay(url, lambda *event: None, lambda client: False)
    receiver = EventRelay(url, lambda e, d, c: received.append((e, d, c)), lambda client: client == "tab")
    try:
        with psycopg.connect(url, autocommit=True) as admin:   # as a database restart would
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        deadline = time.monotonic() + 20
        while not received:
            assert time.monotonic() < deadline, "the relay never came back"
            sender.emit("executed", {"node": "1", "prompt_id": "p", "output": {}}, "tab")
            time.sleep(0.3)
        assert received[0] == ("executed", {"node": "1", "prompt_id": "p", "output": {}}, "tab")
    finally:
        sender.close()
        receiver.close()
        pg_cluster.drop_database(database)
