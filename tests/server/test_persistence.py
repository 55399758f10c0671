"""Restart the server: history is still there, pending jobs run, a job killed mid-run is recorded."""

from __future__ import annotations

import asyncio
from typing import Any

from test_ws_and_queue import collect, connect, queue, slow_graph

from fewstep.app.storage import JobStore


async def test_restart_keeps_history_and_runs_pending_jobs(aiohttp_client: Any, make_app: Any,
                                                           config: Any) -> None:
    first = await aiohttp_client(make_app())
    ws = await connect(first, "p")
    finished = await queue(first, slow_graph(steps=1, tag="before"), client_id="p")
    await collect(ws, finished)
    blocker = await queue(first, slow_graph(steps=5000, delay=0.01), client_id="p")
    while (await ws.receive_json(timeout=10))["type"] != "progress":
        pass
    waiting = await queue(first, slow_graph(steps=1, tag="after"), client_id="p")
    await first.close()                      # server stops while a job runs and one waits

    # A crash, too: a job claimed by a process that died before finishing it.
    orphan_store = JobStore(config.db_path)
    orphan_store.enqueue("orphan", slow_graph(steps=1, tag="orphan"), {}, ["1"], None, front=True)
    assert orphan_store.claim_next().prompt_id == "orphan"
    orphan_store.close()

    second = await aiohttp_client(make_app())
    for _ in range(200):
        entry = (await (await second.get(f"/api/history/{waiting}")).json()).get(waiting)
        if entry:
            break
        await asyncio.sleep(0.05)
    assert entry["status"]["status_str"] == "success"          # the pending job ran after the restart
    history = await (await second.get("/api/history")).json()
    assert history[finished]["status"]["completed"] is True     # history from before is still there
    assert history[blocker]["status"]["completed"] is False     # stopped by the shutdown
    orphan = history["orphan"]["status"]
    assert orphan["completed"] is False and orphan["messages"][-1][0] == "execution_interrupted"
