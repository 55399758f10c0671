"""The queue worker: one thread that takes jobs from the :class:`~app.storage.JobStore` and runs them.

GPU work never runs on the server's event loop. Events go out through ``emit(event, data, client_id)``;
the server routes them to that client's socket (to all sockets when ``client_id`` is None). After each
job the worker writes history, then sends ``executing {node: None}`` (ComfyUI's "prompt finished") and a
``status`` broadcast with the queue size.

A job's output files are written in the background (``app.writes``): the worker starts the next job as soon
as the nodes have run, and the job's ending (success or error, history, ``executing {node: None}``) is sent
once its files are complete. Clients see each job's events in order, as from ComfyUI: the next job's
events are held back until the previous job has ended (the editor reads ``executing {node: None}`` as
"the active prompt ended", whatever prompt it names).
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from fewstep.app.executor import Executor, RunResult
from fewstep.app.registry import start_warm_up
from fewstep.app.storage import Job, QueueStore

log = logging.getLogger("fewstep.worker")
WorkerEmit = Callable[[str, dict[str, Any], "str | None"], None]


def _no_emit(event: str, data: dict[str, Any], client_id: str | None) -> None:
    return None


class Worker(Protocol):
    """What the server needs of a queue worker: :class:`QueueWorker` (a thread) or
    ``app.process_worker.ProcessWorker`` (a child process that /interrupt can kill)."""

    emit: WorkerEmit
    running_prompt_id: str | None

    def start(self) -> None: ...
    def stop(self, timeout: float = ...) -> None: ...
    def wake(self) -> None: ...
    def interrupt(self, prompt_id: str | None = None) -> bool: ...
    def request_free(self, unload_models: bool, free_memory: bool) -> None: ...
    def cache_stats(self) -> dict[str, Any]: ...


class QueueWorker:
    """Runs queued jobs one at a time on its own thread.

    Args:
        store: the persistent queue.
        executor: runs each job.
        emit: ``emit(event_type, data, client_id)`` for every event.
        idle_poll_s: how often an idle worker looks at the store without being woken (:meth:`wake`);
            only jobs enqueued by another process wait for it.
        on_running: called with a job's prompt_id when it starts and with None when it has been recorded
            (the process worker reports these to its parent).
        worker_id: this worker's name in the store. Given, its jobs are claimed under a lease that a
            heartbeat thread renews every ``heartbeat_s`` (``lease_s / 10``, at most 2 s), the same
            thread reaps jobs of workers whose lease ran out and obeys interrupts requested through the
            store (another host's ``/interrupt``), and start-up recovers only expired leases (other
            workers share the queue). None: no lease, and start-up recovers every running job (this
            worker is the store's only one).
        lease_s: how long a claim lasts without a heartbeat.
        on_store_interrupt: called with a prompt id whose interrupt was requested through the store;
            default :meth:`interrupt` (the process worker's child hands it to its parent instead, which
            can restart the child when the job ignores it).
    """

    def __init__(self, store: QueueStore, executor: Executor, emit: WorkerEmit = _no_emit, *,
                 idle_poll_s: float = 0.5, on_running: Callable[[str | None], None] | None = None,
                 worker_id: str | None = None, lease_s: float = 30.0,
                 on_store_interrupt: Callable[[str], object] | None = None) -> None:
        self.store = store
        self.executor = executor
        self.emit = emit
        self.idle_poll_s = idle_poll_s
        self.on_running = on_running
        self.worker_id = worker_id
        self.lease_s = lease_s
        self.heartbeat_s = min(2.0, lease_s / 10)
        self.on_store_interrupt = on_store_interrupt or self.interrupt
        self.running_prompt_id: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._interrupt = threading.Event()
        self._free_request: tuple[bool, bool] | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._order = threading.Lock()               # the event order across a job and the next
        self._open: deque[str] = deque()             # jobs started and not yet ended, oldest first
        self._held: dict[str, list[tuple[str, dict[str, Any], str | None]]] = {}   # events of later jobs
        self._warm_up: threading.Thread | None = None

    # -- control ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Recover jobs a dead process left running (see ``worker_id``), then start the thread(s) and the
        packs' background imports (``app.registry.start_warm_up``)."""
        self._warm_up = start_warm_up(self.executor.registry)
        if self.worker_id is None:
            self.store.recover()
        else:
            self._reap()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fewstep-queue-worker", daemon=True)
        self._thread.start()
        if self.worker_id is not None:
            threading.Thread(target=self._heartbeats, name="fewstep-worker-heartbeat", daemon=True).start()

    def stop(self, timeout: float = 10.0) -> None:
        """Interrupt the running job, stop the thread and wait for it."""
        self._stop.set()
        self._interrupt.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.executor.writer.flush(timeout)   # the last jobs' files, then their endings

    def wake(self) -> None:
        """Call after enqueueing (from any thread): the idle worker claims the job at once."""
        self._wake.set()

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Stop the running job (only if it is ``prompt_id`` when one is given); True if one was signalled."""
        with self._lock:
            running = self.running_prompt_id
            if running is None or (prompt_id is not None and prompt_id != running):
                return False
            self._interrupt.set()
            return True

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        """Free caches between jobs (ComfyUI's ``/free``)."""
        with self._lock:
            old = self._free_request or (False, False)
            self._free_request = (old[0] or unload_models, old[1] or free_memory)
        self._wake.set()

    # -- loop -------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._apply_free()
            job = self._claim()
            if job is None:
                self._wake.wait(self.idle_poll_s)
                self._wake.clear()
                continue
            self._run_job(job)

    def _claim(self) -> Job | None:
        if self.worker_id is None:
            return self.store.claim_next()
        try:   # a shared store is a network away: a failed claim is retried, the worker lives on
            return self.store.claim_next(self.worker_id, self.lease_s)
        except Exception:
            log.exception("worker %s could not claim a job", self.worker_id)
            return None

    # -- leases ---------------------------------------------------------------------------------------
    def _heartbeats(self) -> None:
        """Renew this worker's lease, obey interrupts requested through the store, reap expired leases."""
        while not self._stop.wait(self.heartbeat_s):
            try:   # every beat, busy or not: a finished job may still be writing its files, unrecorded
                for prompt_id in self.store.heartbeat(self.worker_id, self.lease_s):
                    self.on_store_interrupt(prompt_id)
                self._reap()
            except Exception:   # the store is unreachable for now: the next beat tries again
                log.exception("worker %s: heartbeat failed", self.worker_id)

    def _reap(self) -> None:
        """Record jobs whose worker's lease ran out (killed, or its host lost) as failed; tell their clients."""
        for job in self.store.reap_expired():
            log.warning("job %s: its worker's lease ran out; recorded as failed", job.prompt_id)
            message = self.store.history_entry(job.prompt_id)
            if message is not None:
                event, data = message["status"]["messages"][-1]
                self.emit(event, data, job.client_id)
            self.emit("executing", {"node": None, "prompt_id": job.prompt_id}, job.client_id)
            self._broadcast_status()

    def _apply_free(self) -> None:
        with self._lock:
            request, self._free_request = self._free_request, None
        if request is not None:
            self.executor.caches.free(unload_models=request[0], free_memory=request[1])

    def _run_job(self, job: Job) -> None:
        with self._lock:
            self.running_prompt_id = job.prompt_id
            self._interrupt.clear()
        if self.on_running is not None:
            self.on_running(job.prompt_id)
        self._broadcast_status()
        client = job.client_id
        if self._warm_up is not None:   # the first job waits for the packs' imports: importing diffusers from
            self._warm_up.join()        # two threads at once failed ("cannot import name 'AutoencoderKL'")
            self._warm_up = None
        with self._order:
            self._open.append(job.prompt_id)
        try:
            self.executor.execute(
                job.prompt, prompt_id=job.prompt_id, extra_data=job.extra_data, targets=job.targets,
                emit=lambda event, data: self._send(job.prompt_id, event, data, client),
                interrupted=self._interrupt, on_written=lambda result: self._end(job, result))
        except Exception as exc:  # the engine itself failed: record it, keep serving
            log.exception("job %s crashed the executor", job.prompt_id)
            result = RunResult("error", error={"exception_message": str(exc),
                                               "traceback": traceback.format_exception(exc)})
            result.messages.append(["execution_error", {"prompt_id": job.prompt_id, **result.error}])
            self.executor.writer.when_done(job.prompt_id, lambda errors: self._end(job, result))
        with self._lock:
            self.running_prompt_id = None
        if self.on_running is not None:
            self.on_running(None)

    def _end(self, job: Job, result: RunResult) -> None:
        """A job's files are written: record it, tell its client, let the next job's events through."""
        try:
            self._record(job, result)
        except Exception:
            log.exception("job %s: could not record its history", job.prompt_id)
        self._send(job.prompt_id, "executing", {"node": None, "prompt_id": job.prompt_id}, job.client_id)
        self._broadcast_status()
        with self._order:
            self._open.remove(job.prompt_id)
            for event, data, client in self._held.pop(self._open[0], []) if self._open else ():
                self.emit(event, data, client)

    def _send(self, prompt_id: str, event: str, data: dict[str, Any], client: str | None) -> None:
        """Emit an event of ``prompt_id`` now, or hold it while an earlier job has not ended."""
        with self._order:
            if self._open and self._open[0] != prompt_id:
                self._held.setdefault(prompt_id, []).append((event, data, client))
                return
            self.emit(event, data, client)

    def _record(self, job: Job, result: RunResult) -> None:
        messages = result.messages
        if result.status == "error" and not messages and result.error is not None:  # invalid graph
            messages = [["execution_error", {"prompt_id": job.prompt_id, **result.error}]]
        recorded = self.store.finish(job.prompt_id, result.status, result.outputs, messages,
                                     completed=result.status == "success", worker_id=self.worker_id)
        if recorded is False and self.worker_id is not None:
            log.warning("job %s finished after worker %s lost its lease: it was recorded as failed already",
                        job.prompt_id, self.worker_id)

    def cache_stats(self) -> dict[str, Any]:
        """The executor's cache statistics (``/system_stats``)."""
        caches = getattr(self.executor, "caches", None)
        return caches.stats() if caches is not None else {}

    def _broadcast_status(self) -> None:
        self.emit("status", {"status": {"exec_info": {"queue_remaining": self.store.queue_remaining()}}}, None)
