"""The queue worker: one thread that takes jobs from the :class:`~app.storage.JobStore` and runs them.

GPU work never runs on the server's event loop. Events go out through ``emit(event, data, client_id)``;
the server routes them to that client's socket (to all sockets when ``client_id`` is None). After each
job the worker writes history, then sends ``executing {node: None}`` (ComfyUI's "prompt finished") and a
``status`` broadcast with the queue size.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from typing import Any, Protocol

from fewstep.app.executor import Executor, RunResult
from fewstep.app.storage import Job, JobStore

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
    """

    def __init__(self, store: JobStore, executor: Executor, emit: WorkerEmit = _no_emit, *,
                 idle_poll_s: float = 0.5, on_running: Callable[[str | None], None] | None = None) -> None:
        self.store = store
        self.executor = executor
        self.emit = emit
        self.idle_poll_s = idle_poll_s
        self.on_running = on_running
        self.running_prompt_id: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._interrupt = threading.Event()
        self._free_request: tuple[bool, bool] | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- control ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Recover jobs a dead process left running, then start the thread."""
        self.store.recover()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fewstep-queue-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Interrupt the running job, stop the thread and wait for it."""
        self._stop.set()
        self._interrupt.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

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
            job = self.store.claim_next()
            if job is None:
                self._wake.wait(self.idle_poll_s)
                self._wake.clear()
                continue
            self._run_job(job)

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
        try:
            result = self.executor.execute(
                job.prompt, prompt_id=job.prompt_id, extra_data=job.extra_data, targets=job.targets,
                emit=lambda event, data: self.emit(event, data, client), interrupted=self._interrupt)
        except Exception as exc:  # the engine itself failed: record it, keep serving
            log.exception("job %s crashed the executor", job.prompt_id)
            result = RunResult("error", error={"exception_message": str(exc),
                                               "traceback": traceback.format_exception(exc)})
            result.messages.append(["execution_error", {"prompt_id": job.prompt_id, **result.error}])
        self._record(job, result)
        with self._lock:
            self.running_prompt_id = None
        if self.on_running is not None:
            self.on_running(None)
        self.emit("executing", {"node": None, "prompt_id": job.prompt_id}, client)
        self._broadcast_status()

    def _record(self, job: Job, result: RunResult) -> None:
        messages = result.messages
        if result.status == "error" and not messages and result.error is not None:  # invalid graph
            messages = [["execution_error", {"prompt_id": job.prompt_id, **result.error}]]
        self.store.finish(job.prompt_id, result.status, result.outputs, messages,
                          completed=result.status == "success")

    def cache_stats(self) -> dict[str, Any]:
        """The executor's cache statistics (``/system_stats``)."""
        caches = getattr(self.executor, "caches", None)
        return caches.stats() if caches is not None else {}

    def _broadcast_status(self) -> None:
        self.emit("status", {"status": {"exec_info": {"queue_remaining": self.store.queue_remaining()}}}, None)
