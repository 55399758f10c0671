"""Persistent queue and history, the queue worker, and surviving kills.

Tests taking ``queue_url`` run against both backends (tests/conftest.py): an SQLite file and a database
on a throwaway PostgreSQL server. The rest check SQLite's own statements, plans and journal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from engine_helpers import n

from fewstep.app.cache import CacheSet
from fewstep.app.executor import Executor
from fewstep.app.storage import JobStore, store_for_url
from fewstep.app.worker import QueueWorker

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def chain(value=1):
    return {"1": n("StubInt", value=value), "2": n("StubAdd", a=["1", 0], b=1), "3": n("StubSink", value=["2", 0])}


def slow(steps=500):
    return {"1": n("StubInt", value=1), "2": n("StubSlow", value=["1", 0], steps=steps, delay=0.01),
            "3": n("StubSink", value=["2", 0])}


def wait_for(condition, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_queue_order_front_and_history_pagination(queue_url):
    store = store_for_url(queue_url)
    for i in range(3):
        store.enqueue(f"p{i}", chain(i), {}, None, "c")
    store.enqueue("urgent", chain(9), {}, None, None, front=True)
    assert [j.prompt_id for j in store.pending()] == ["urgent", "p0", "p1", "p2"]
    for expected in ["urgent", "p0", "p1", "p2"]:
        job = store.claim_next()
        assert job.prompt_id == expected and store.running()[0].prompt_id == expected
        store.finish(job.prompt_id, "success", {"3": {"values": [1]}}, [["execution_start", {}]], completed=True)
    assert store.claim_next() is None
    assert list(store.history()) == ["urgent", "p0", "p1", "p2"]
    assert list(store.history(max_items=2)) == ["p1", "p2"]            # newest two
    assert list(store.history(max_items=2, offset=1)) == ["p0", "p1"]  # skip the oldest
    entry = store.history_entry("p0")
    assert entry["prompt"][1] == "p0" and entry["outputs"] == {"3": {"values": [1]}}
    assert entry["status"] == {"status_str": "success", "completed": True, "messages": [["execution_start", {}]]}
    store.delete_history(["p0"])
    assert store.history_entry("p0") is None and len(store.history()) == 3


def test_jobs_listing_contract(queue_url):
    store = store_for_url(queue_url)
    extra = {"extra_pnginfo": {"workflow": {"id": "wf-1"}}}
    store.enqueue("a", chain(), extra, None, None)
    store.enqueue("b", chain(), {}, None, None)
    store.enqueue("c", chain(), {}, None, None)
    store.claim_next()
    store.finish("a", "success", {"9": {"images": [{"filename": "x.png", "subfolder": "", "type": "output"}]}},
                 [], completed=True)
    store.claim_next()
    store.finish("b", "error", {}, [["execution_error", {"node_id": "2", "exception_message": "boom"}]],
                 completed=False)
    store.cancel_pending(["c"])
    jobs, total = store.jobs(["completed", "failed", "cancelled"], "created_at", "asc", 10, 0)
    assert total == 3 and [j["status"] for j in jobs] == ["completed", "failed", "cancelled"]
    assert jobs[0]["workflow_id"] == "wf-1" and jobs[0]["outputs_count"] == 1
    assert jobs[0]["preview_output"] == {"filename": "x.png", "subfolder": "", "type": "output", "nodeId": "9",
                                         "mediaType": "image"}
    assert jobs[1]["execution_error"]["exception_message"] == "boom"
    assert {"id", "priority", "create_time", "execution_start_time", "execution_end_time"} <= set(jobs[0])
    page, total = store.jobs(None, "created_at", "desc", 1, 1)
    assert total == 3 and page[0]["id"] == "b"
    with pytest.raises(ValueError, match="unknown job status"):
        store.jobs(["done"])
    assert store.job_detail("a")["workflow"]["prompt"] == chain()


def test_jobs_workflow_filter_pages_only_matching_jobs(queue_url):
    """The workflow filter runs before LIMIT/OFFSET: page 1 of wf-2 holds wf-2 jobs and total counts them."""
    store = store_for_url(queue_url)
    for i in range(6):
        store.enqueue(f"j{i}", chain(), {"extra_pnginfo": {"workflow": {"id": f"wf-{i % 2 + 1}"}}}, None, None)
    page, total = store.jobs(None, "created_at", "asc", 2, 0, workflow_id="wf-2")
    assert total == 3 and [j["id"] for j in page] == ["j1", "j3"]
    page, total = store.jobs(None, "created_at", "asc", 2, 2, workflow_id="wf-2")
    assert total == 3 and [j["id"] for j in page] == ["j5"]
    assert store.jobs(None, workflow_id="nope") == ([], 0)


def test_worker_runs_jobs_and_emits_to_the_client(registry, queue_url):
    store = store_for_url(queue_url)
    events: list = []
    worker = QueueWorker(store, Executor(registry, CacheSet("lru:10")), lambda e, d, c: events.append((e, d, c)))
    worker.start()
    try:
        store.enqueue("ok", chain(), {}, None, "client-1")
        store.enqueue("bad", {"1": n("StubSink", value=["7", 0])}, {}, None, "client-1")
        worker.wake()
        assert wait_for(lambda: len(store.history()) == 2)
    finally:
        worker.stop()
    assert store.history_entry("ok")["status"]["status_str"] == "success"
    assert store.history_entry("bad")["status"]["status_str"] == "error"
    assert ("executing", {"node": None, "prompt_id": "ok"}, "client-1") in events
    assert any(e == "status" and c is None for e, _, c in events)


def test_worker_interrupt_by_prompt_id_and_free(registry, queue_url):
    store = store_for_url(queue_url)
    executor = Executor(registry, CacheSet("lru:10"))
    events: list[str] = []
    worker = QueueWorker(store, executor, emit=lambda event, data, client: events.append(event))
    worker.start()
    try:
        store.enqueue("long", slow(), {}, None, None)
        worker.wake()
        # in StubSlow's loop, so StubInt has run and is cached (an interrupt right after the claim, before
        # any node ran, left the cache empty: a flake seen once in a full run)
        assert wait_for(lambda: "progress" in events)
        assert worker.running_prompt_id == "long"
        assert not worker.interrupt("someone-else")
        assert worker.interrupt("long")
        assert wait_for(lambda: store.history_entry("long") is not None)
        messages = store.history_entry("long")["status"]["messages"]
        assert messages[-1][0] == "execution_interrupted"
        assert executor.caches.stats()["entries"] == 1
        worker.request_free(unload_models=True, free_memory=True)
        assert wait_for(lambda: executor.caches.stats()["entries"] == 0)
    finally:
        worker.stop()


def _start_worker_process(db: Path | str, *lease: str) -> subprocess.Popen:
    """worker_proc.py over ``db`` (a file or a queue URL); ``lease``: its worker id and lease seconds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(HERE / "worker_proc.py"), str(db), str(HERE / "packs"), *lease],
                            stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()


def test_kill_during_a_job_loses_nothing(queue_url):
    db = queue_url
    store = store_for_url(db)
    store.enqueue("done", chain(), {}, None, None)
    store.enqueue("long", slow(), {}, None, None)
    store.enqueue("later", chain(5), {}, None, None)
    proc = _start_worker_process(db)
    try:
        assert wait_for(lambda: [j.prompt_id for j in store.running()] == ["long"])
    finally:
        _kill(proc)
    restarted = store_for_url(db)
    assert restarted.recover() == 1
    assert restarted.history_entry("done")["status"]["status_str"] == "success"
    assert restarted.history_entry("long")["status"]["messages"][-1][0] == "execution_interrupted"
    assert [j.prompt_id for j in restarted.pending()] == ["later"]
    assert restarted.jobs(["cancelled"])[1] == 1


def test_kill_between_jobs_loses_nothing(registry, queue_url):
    db = queue_url
    store = store_for_url(db)
    proc = _start_worker_process(db)
    try:
        store.enqueue("first", chain(), {}, None, None)
        assert wait_for(lambda: store.history_entry("first") is not None)
    finally:
        _kill(proc)
    store.enqueue("queued-while-down", chain(2), {}, None, None)
    restarted = store_for_url(db)
    assert restarted.recover() == 0
    assert restarted.history_entry("first")["status"]["completed"] is True
    worker = QueueWorker(restarted, Executor(registry, CacheSet("none")))
    worker.start()
    try:
        assert wait_for(lambda: restarted.history_entry("queued-while-down") is not None)
    finally:
        worker.stop()
    assert restarted.history_entry("queued-while-down")["outputs"] == {"3": {"values": [3]}}


def test_store_is_thread_safe(queue_url):
    store = store_for_url(queue_url)

    def add(k):
        for i in range(20):
            store.enqueue(f"{k}-{i}", {}, {}, None, None)

    threads = [threading.Thread(target=add, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.pending()) == 80


def test_a_long_read_never_blocks_enqueue(queue_url):
    """The server enqueues on its event loop: a history query running in a thread must not hold it up."""
    store = store_for_url(queue_url)
    store.enqueue("first", chain(), {}, None, None)
    done = threading.Event()
    with store._read_lock:                       # a reader mid-query (its connection busy in another thread)
        writer = threading.Thread(target=lambda: (store.enqueue("second", chain(), {}, None, None), done.set()))
        writer.start()
        assert done.wait(5.0), "enqueue waited for the reader"
    writer.join()
    assert [j.prompt_id for j in store.pending()] == ["first", "second"]   # reads see the commit at once
    store.claim_next()
    store.finish("first", "success", {}, [], completed=True)
    assert list(store.history()) == ["first"] and store.queue_remaining() == 1


def test_in_memory_store_reads_its_own_writes(tmp_path):
    store = JobStore(":memory:")
    store.enqueue("a", chain(), {}, None, None)
    assert [j.prompt_id for j in store.pending()] == ["a"]
    store.close()


# -- the per-job path: statements, indexes, durability, wake-up ------------------------------------

def _statements(store: JobStore, action) -> list[str]:
    """The SQL statements ``action()`` runs on the store's connection."""
    seen: list[str] = []
    store._db.set_trace_callback(seen.append)
    try:
        action()
    finally:
        store._db.set_trace_callback(None)
    return seen


def test_finish_writes_the_whole_history_row_in_one_statement(tmp_path):
    store = JobStore(tmp_path / "q.sqlite3")
    for name in ("a", "b"):
        store.enqueue(name, chain(), {"client_id": "c"}, ["3"], "c")
    store.claim_next()
    statements = _statements(store, lambda: store.finish("a", "success", {"3": {"values": [2]}},
                                                        [["execution_start", {}]], completed=True))
    assert len(statements) == 1 and statements[0].startswith("UPDATE")   # one autocommit transaction
    store.claim_next()
    store.finish("b", "error", {}, [["execution_error", {"node_id": "2"}]], completed=False)
    entry = store.history_entry("a")
    assert entry["outputs"] == {"3": {"values": [2]}} and entry["prompt"][1] == "a"
    assert entry["status"] == {"status_str": "success", "completed": True, "messages": [["execution_start", {}]]}
    assert list(store.history()) == ["a", "b"]                           # completion order (done_seq)
    assert store.jobs(["completed"])[0][0]["execution_end_time"] >= store.jobs(["completed"])[0][0]["create_time"]


def test_enqueue_looks_up_queue_numbers_by_index_not_by_scanning_history(tmp_path):
    store = JobStore(tmp_path / "q.sqlite3")
    store.enqueue("old", chain(), {}, None, None)
    for front in (False, True):
        statements = _statements(store, lambda front=front: store.enqueue(f"new-{front}", chain(), {}, None,
                                                                          None, front=front))
        for sql in statements:
            if sql.lstrip().upper().startswith("SELECT"):
                plan = " ".join(row[3] for row in store._db.execute("EXPLAIN QUERY PLAN " + sql).fetchall())
                assert "SCAN" not in plan, (sql, plan)
    assert [j.prompt_id for j in store.pending()] == ["new-True", "old", "new-False"]


def test_commits_survive_a_killed_process(tmp_path):
    """WAL + synchronous=NORMAL: a transaction committed before SIGKILL is kept (no close, no checkpoint)."""
    db = tmp_path / "q.sqlite3"
    script = ("import sys, time\nfrom fewstep.app.storage import JobStore\nstore = JobStore(sys.argv[1])\n"
              "for name in ('a', 'b', 'c'):\n    store.enqueue(name, {'1': {}}, {}, None, None)\n"
              "store.claim_next()\nstore.finish('a', 'success', {'1': {'v': [1]}}, [], completed=True)\n"
              "store.claim_next()\nprint('committed', flush=True)\ntime.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script, str(db)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "committed"
    finally:
        _kill(proc)
    store = JobStore(db)
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.history_entry("a")["outputs"] == {"1": {"v": [1]}}
    assert [j.prompt_id for j in store.running()] == ["b"] and [j.prompt_id for j in store.pending()] == ["c"]
    assert store.recover() == 1


def test_woken_worker_claims_at_once_without_polling(registry, queue_url):
    store = store_for_url(queue_url)
    worker = QueueWorker(store, Executor(registry, CacheSet("lru:10")), idle_poll_s=3600.0)
    idle, claimed = threading.Event(), threading.Event()
    claim = store.claim_next

    def claim_and_tell():
        job = claim()
        (idle if job is None else claimed).set()
        return job

    store.claim_next = claim_and_tell
    worker.start()
    try:
        assert idle.wait(10)                 # found nothing: from now on it polls once an hour
        store.enqueue("now", chain(), {}, None, None)
        worker.wake()
        assert claimed.wait(10)              # so only the wake-up can have made it claim the job
        assert wait_for(lambda: store.history_entry("now") is not None)
    finally:
        worker.stop()
    assert store.history_entry("now")["outputs"] == {"3": {"values": [2]}}
