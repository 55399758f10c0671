"""Several worker processes serving one queue (``fewstep serve --workers 2`` / ``--gpus 0,1``): jobs run at
once on different workers, each client hears only its own job, ``/interrupt`` reaches the worker running the
job, ``/system_stats`` lists the workers. The app is the production one over the test pack, real children."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fewstep.app.config import Config
from fewstep.app.server import build_app
from fewstep.app.server.state import RUNTIME
from fewstep.app.worker_pool import WorkerPool, worker_devices

PACKS = Path(__file__).parent / "packs"


def _config(home: Path, **fields: Any) -> Config:
    # a long grace: on a loaded machine a child may take over a second to see an interrupt it honours
    return Config(home=home, auth_token=None, custom_nodes_dirs=[PACKS], builtin_nodes=False, worker="process",
                  interrupt_grace_s=30.0, lease_s=10.0, **fields)


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


async def _messages_until_end(ws: Any, prompt_id: str, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """Text messages up to ``executing {node: None}`` of ``prompt_id``."""
    texts = []
    deadline = time.monotonic() + timeout_s
    while True:
        message = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        if message.type == aiohttp.WSMsgType.BINARY:
            continue
        data = message.json()
        texts.append(data)
        if data["type"] == "executing" and data["data"].get("node") is None and data["data"]["prompt_id"] == prompt_id:
            return texts


def _count(steps: int, tag: str) -> dict[str, Any]:
    return {"1": {"class_type": "SlowCount", "inputs": {"steps": steps, "delay": 0.01, "tag": tag}}}


async def test_two_workers_run_two_jobs_at_once_each_client_hears_its_own_and_interrupt_finds_its_job(
        aiohttp_client: Any, tmp_path: Path) -> None:
    app = build_app(_config(tmp_path / "home", workers=2))
    client = await aiohttp_client(app)
    pool = app[RUNTIME].worker
    assert isinstance(pool, WorkerPool) and len(pool.workers) == 2
    ws_a = await client.ws_connect("/ws?clientId=tab-a")
    ws_b = await client.ws_connect("/ws?clientId=tab-b")
    long_job = await _post(client, _count(100000, "a"), "tab-a")
    short_job = await _post(client, _count(150, "b"), "tab-b")
    await _until(lambda: sorted(pool.running_prompt_ids()) == sorted([long_job, short_job]))
    assert all(w.child_info for w in pool.workers)              # "ready" comes before a child's first claim
    holders = {w.running_prompt_id: w.index for w in pool.workers}
    assert holders[long_job] != holders[short_job]            # on different workers, at the same time
    stats = await (await client.get("/api/system_stats")).json()
    workers = stats["fewstep"]["workers"]
    assert [w["index"] for w in workers] == [0, 1] and len({w["pid"] for w in workers}) == 2
    assert {w["running"] for w in workers} == {long_job, short_job}
    assert (await client.post("/api/interrupt", json={"prompt_id": long_job})).status == 200
    heard_a = await _messages_until_end(ws_a, long_job)
    heard_b = await _messages_until_end(ws_b, short_job)
    for heard, own in ((heard_a, long_job), (heard_b, short_job)):
        ids = {m["data"].get("prompt_id") for m in heard if m["type"] != "status"}
        assert ids == {own}, ids                              # nothing of the other client's job
    assert (await _history(client, long_job))["status"]["messages"][-1][0] == "execution_interrupted"
    short = await _history(client, short_job)
    assert short["status"]["status_str"] == "success" and short["outputs"]["1"]["text"] == ["counted to 150"]
    assert pool.restarts == 0                                   # SlowCount honours interrupts: nothing killed
    await ws_a.close()
    await ws_b.close()


async def test_gpus_pin_one_worker_to_each_device(aiohttp_client: Any, tmp_path: Path) -> None:
    app = build_app(_config(tmp_path / "home", gpus=("0", "1")))
    client = await aiohttp_client(app)
    pool = app[RUNTIME].worker
    await _until(lambda: all(w.child_info for w in pool.workers))
    workers = (await (await client.get("/api/system_stats")).json())["fewstep"]["workers"]
    assert [(w["device"], w["cuda_visible_devices"]) for w in workers] == [("0", "0"), ("1", "1")]
    # each child's caches are its own: a job ran on one worker shows in that worker's stats only
    await _history(client, await _post(client, _count(2, "c"), "tab"))
    await asyncio.sleep(0.3)   # the stats message follows the history record
    workers = (await (await client.get("/api/system_stats")).json())["fewstep"]["workers"]
    idle, used = sorted(w["caches"].get("misses", 0) for w in workers)
    assert idle == 0 and used > 0


def test_worker_counts_and_device_lists_are_checked(tmp_path: Path) -> None:
    assert worker_devices(_config(tmp_path, workers=3)) == [None, None, None]
    assert worker_devices(_config(tmp_path, gpus=("1", "0"))) == ["1", "0"]
    with pytest.raises(ValueError, match="at least 1"):
        worker_devices(_config(tmp_path, workers=0))
    with pytest.raises(ValueError, match="disagree"):
        worker_devices(_config(tmp_path, workers=3, gpus=("0", "1")))
    with pytest.raises(ValueError, match="distinct"):
        worker_devices(_config(tmp_path, gpus=("0", "0")))
    with pytest.raises(ValueError, match="process worker"):
        build_app(Config(home=tmp_path, custom_nodes_dirs=[PACKS], builtin_nodes=False, worker="thread", workers=2))


def test_serve_options_reach_the_config(capsys: Any) -> None:
    from fewstep.app.cli import build_parser, make_config
    from fewstep.app.storage import store_for_url

    config = make_config(build_parser().parse_args(["serve", "--gpus", "0,1", "--queue", "postgresql://u@db/q"]))
    assert config.gpus == ("0", "1") and config.queue_url == "postgresql://u@db/q"
    assert make_config(build_parser().parse_args(["serve", "--workers", "3"])).workers == 3
    assert make_config(build_parser().parse_args(["serve", "--lease", "90"])).lease_s == 90.0
    for bad in ("0,0", "a,1", "0,"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", "--gpus", bad])
        assert "distinct CUDA device numbers" in capsys.readouterr().err
    with pytest.raises(ValueError, match="postgresql://"):
        store_for_url("mysql://u@db/q")
