"""Several workers on one queue, on both backends: atomic claims, leases, kill -9 of a worker mid-job
(the job is recorded as failed by another worker, never lost and never run twice), store interrupts."""

from __future__ import annotations

import threading
import time

from engine_helpers import n
from test_engine_storage import _kill, _start_worker_process, chain, slow, wait_for

from fewstep.app.cache import CacheSet
from fewstep.app.executor import Executor
from fewstep.app.storage import store_for_url
from fewstep.app.worker import QueueWorker


def test_concurrent_claimers_each_get_every_job_exactly_once(queue_url):
    """Four claimers, each with its own connection (as four worker processes have), drain 60 jobs."""
    setup = store_for_url(queue_url)
    for i in range(60):
        setup.enqueue(f"j{i}", chain(i), {}, None, None)
    stores = [store_for_url(queue_url) for _ in range(4)]
    claimed: list[list[str]] = [[] for _ in stores]
    start = threading.Barrier(len(stores))

    def drain(index: int) -> None:
        start.wait()
        while (job := stores[index].claim_next(f"w{index}", 30.0)) is not None:
            claimed[index].append(job.prompt_id)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    every = [pid for part in claimed for pid in part]
    assert sorted(every) == sorted(f"j{i}" for i in range(60))      # none twice, none missed
    assert setup.workers() == {pid: f"w{i}" for i, part in enumerate(claimed) for pid in part}
    assert setup.pending() == []


def test_concurrent_enqueues_get_distinct_numbers(queue_url):
    stores = [store_for_url(queue_url) for _ in range(3)]
    numbers: list[int] = []
    lock = threading.Lock()

    def add(index: int) -> None:
        for i in range(15):
            number = stores[index].enqueue(f"{index}-{i}", {}, {}, None, None, front=i % 3 == 0)
            with lock:
                numbers.append(number)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(numbers) == 45 and len(set(numbers)) == 45
    assert [j.number for j in stores[0].pending()] == sorted(numbers)


def test_an_expired_lease_is_reaped_as_failed_and_the_late_finish_is_refused(queue_url):
    store = store_for_url(queue_url)
    store.enqueue("held", chain(), {}, None, "tab")
    store.enqueue("next", chain(), {}, None, None)
    assert store.claim_next("w-a", lease_s=1.0).prompt_id == "held"
    assert store.reap_expired() == []                     # still within the lease
    time.sleep(1.1)
    [reaped] = store.reap_expired()
    assert reaped.prompt_id == "held" and reaped.client_id == "tab"
    status = store.history_entry("held")["status"]
    assert status["completed"] is False and status["messages"][-1][1]["exception_type"] == "WorkerLost"
    # the worker comes back (it was paused, not dead): its result is not recorded over the failure
    assert not store.finish("held", "success", {"3": {"values": [2]}}, [], completed=True, worker_id="w-a")
    assert store.history_entry("held")["outputs"] == {}
    assert [j.prompt_id for j in store.pending()] == ["next"]   # the queue itself is untouched


def test_heartbeats_keep_a_lease_and_carry_store_interrupts(queue_url):
    store = store_for_url(queue_url)
    store.enqueue("a", chain(), {}, None, None)
    store.enqueue("b", chain(), {}, None, None)
    store.claim_next("w-a", lease_s=1.0)
    store.claim_next("w-b", lease_s=1.0)
    for _ in range(4):                                    # 1.6 s in all: past the lease, renewed each time
        time.sleep(0.4)
        assert store.heartbeat("w-a", 1.0) == []
    assert [j.prompt_id for j in store.reap_expired()] == ["b"]
    assert store.request_interrupt("a") and not store.request_interrupt("b")   # b is no longer running
    assert store.heartbeat("w-a", 1.0) == ["a"]
    assert [j.prompt_id for j in store.running(worker_id="w-a")] == ["a"] and store.running(worker_id="w-b") == []
    assert not store.requeue("a", worker_id="w-b") and store.requeue("a", worker_id="w-a")


def test_a_worker_starting_beside_others_leaves_their_jobs_alone(registry, queue_url):
    """A worker starting (or restarted) beside others must not end their jobs; only an exclusive
    (SQLite) store's server start may record every running job, because nothing else can be running it."""
    store = store_for_url(queue_url)
    store.enqueue("live", chain(), {}, None, None)
    store.claim_next("w-live", lease_s=30.0)
    newcomer = QueueWorker(store, Executor(registry, CacheSet("none")), worker_id="w-new", lease_s=1.0)
    newcomer.start()
    time.sleep(0.3)                                        # a few heartbeats and reaps
    newcomer.stop()
    assert [j.prompt_id for j in store.running()] == ["live"]
    recovered = store.recover()
    assert recovered == (1 if store.exclusive else 0)


def test_kill_9_of_a_worker_mid_job_another_worker_records_it_and_drains_the_queue(registry, queue_url):
    lease_s = 3.0   # heartbeats every 0.3 s: a loaded machine may starve the victim for a while
    store = store_for_url(queue_url)
    store.enqueue("doomed", slow(steps=3000), {}, None, "tab")
    store.enqueue("after", chain(7), {}, None, "tab")
    proc = _start_worker_process(queue_url, "victim", str(lease_s))
    try:
        assert wait_for(lambda: store.workers() == {"doomed": "victim"})
        time.sleep(lease_s + 0.5)          # the victim renews its lease meanwhile: nobody may reap it
        assert store.reap_expired() == [] and store.workers() == {"doomed": "victim"}
    finally:
        _kill(proc)                        # SIGKILL mid-job: no chance to record anything
    events: list[tuple[str, dict, str | None]] = []
    survivor = QueueWorker(store, Executor(registry, CacheSet("none")), lambda e, d, c: events.append((e, d, c)),
                           worker_id="survivor", lease_s=lease_s)
    survivor.start()
    try:
        assert wait_for(lambda: store.history_entry("after") is not None, timeout=30)
        told = ("executing", {"node": None, "prompt_id": "doomed"}, "tab")   # the killed job's client is told
        assert wait_for(lambda: told in events, timeout=30)
    finally:
        survivor.stop()
    doomed = store.history_entry("doomed")["status"]
    assert doomed["completed"] is False and doomed["messages"][-1][1]["exception_type"] == "WorkerLost"
    assert store.history_entry("after")["outputs"] == {"3": {"values": [8]}}
    started = [d["prompt_id"] for e, d, _ in events if e == "execution_start"]
    assert started == ["after"]                         # the survivor never ran the killed job again
    assert store.queue_remaining() == 0


def test_a_worker_obeys_an_interrupt_requested_through_the_store(registry, queue_url):
    """Another host's /interrupt reaches the job through the store; the worker sees it at its heartbeat."""
    store = store_for_url(queue_url)
    worker = QueueWorker(store, Executor(registry, CacheSet("none")), worker_id="w", lease_s=3.0)
    worker.start()
    try:
        store.enqueue("long", {"1": n("StubInt", value=1), "2": n("StubSlow", value=["1", 0], steps=3000, delay=0.01),
                               "3": n("StubSink", value=["2", 0])}, {}, None, None)
        worker.wake()
        assert wait_for(lambda: worker.running_prompt_id == "long")
        other_host = store_for_url(queue_url)
        asked = time.monotonic()
        assert other_host.request_interrupt("long")
        assert wait_for(lambda: store.history_entry("long") is not None)
        assert time.monotonic() - asked < 5                # not the 30 s the job would take
    finally:
        worker.stop()
    assert store.history_entry("long")["status"]["messages"][-1][0] == "execution_interrupted"
