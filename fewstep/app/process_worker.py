"""The queue worker in a child process, so that ``/interrupt`` can end any job.

A job stops at the next interrupt check (between nodes, sampler steps, decode tiles). Inside one call that
never returns to Python — a huge matrix multiply, a custom node's endless loop — no check runs, and a thread
cannot be stopped from outside. So ``fewstep serve`` runs the worker in a child process
(:class:`ProcessWorker`): ``/interrupt`` first asks politely (the same event as the thread worker), and when
the job is still running ``grace_s`` later, the child is killed and a fresh one started. The queue lives in
the store both processes open (SQLite, or PostgreSQL shared by several hosts), so nothing queued is lost;
the killed job is recorded as interrupted, and a job the child had claimed but not yet reported goes back
to the front of the queue. Each child claims under its own worker id (host, server pid, index,
generation) and a lease it renews, so the parent touches only its own child's jobs, and a child killed
with its whole server is reaped by the lease (``app.storage``).

Several GPUs: ``fewstep serve --workers N`` / ``--gpus 0,1`` runs one ProcessWorker per device
(``app.worker_pool.WorkerPool``); each child sets ``CUDA_VISIBLE_DEVICES`` to its device before anything
touches CUDA, so its ``cuda`` is that GPU, and it keeps its own model cache.

Protocol over one duplex pipe (pickled tuples):

- parent → child: ``("wake",)``, ``("interrupt", prompt_id)``, ``("free", unload, free_memory)``, ``("stop",)``;
- child → parent: ``("event", event, data, client_id)`` (previews arrive encoded), ``("running", prompt_id |
  None)`` when a job starts / ends, ``("stats", cache_stats)`` after each job, ``("ready", info)`` once
  started (its pid and ``CUDA_VISIBLE_DEVICES``), ``("store_interrupt", prompt_id)`` when another host
  asked through the shared store to interrupt its job (the parent then interrupts it as for a local
  ``/interrupt``, grace and restart included).

What the child costs: its start-up imports the packs' node lists (no torch: they import it when they run,
~0.2 s), and model caches live in the child, so a restart after a kill reloads the models of the next job.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from fewstep.app.config import Config
from fewstep.app.storage import QueueStore, interrupted_message, open_store
from fewstep.app.worker import WorkerEmit, _no_emit

log = logging.getLogger("fewstep.worker")

DEFAULT_GRACE_S = 5.0     # from /interrupt to killing a job that ignores it
STOP_GRACE_S = 2.0        # from shutdown to killing a child that does not exit (Ctrl-C stops in <= 3 s)


class ProcessWorker:
    """Runs queued jobs one at a time in a child process (same interface as ``app.worker.QueueWorker``).

    Args:
        config: the server's configuration; the child loads the same packs and opens the same store.
        emit: ``emit(event_type, data, client_id)`` for every event (rebound by the server).
        grace_s: how long an interrupted job may keep running before its process is killed.
        preview_size: longest side of live previews (encoded in the child).
        index: this worker's number among the server's workers (in its worker id and ``/system_stats``).
        device: the CUDA device the child is pinned to (``CUDA_VISIBLE_DEVICES``); None: every device.
        recover_on_start: at :meth:`start`, record jobs a dead server left running in an exclusive
            (SQLite) store; a pool sets it on its first worker only.
    """

    def __init__(self, config: Config, emit: WorkerEmit = _no_emit, *, grace_s: float = DEFAULT_GRACE_S,
                 preview_size: int = 512, index: int = 0, device: str | None = None,
                 recover_on_start: bool = True) -> None:
        self.config = config
        self.emit = emit
        self.grace_s = grace_s
        self.preview_size = preview_size
        self.index = index
        self.device = device
        self.recover_on_start = recover_on_start
        self.running_prompt_id: str | None = None
        self.restarts = 0
        self.worker_id = ""                      # the current child's name in the store
        self.child_info: dict[str, Any] = {}     # what the current child reported when ready
        self._generation = 0
        self._started: set[str] = set()          # jobs the current child reported started
        self._stats: dict[str, Any] = {}
        self._killed: str | None = None          # the job whose process we killed, until it is recorded
        self._lock = threading.Lock()            # running_prompt_id, the child's handles, kill decisions
        self._send_lock = threading.Lock()
        self._stopping = threading.Event()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._store: QueueStore | None = None

    # -- control (QueueWorker's interface) ---------------------------------------------------------------
    def start(self) -> None:
        """Start the child (it recovers jobs a dead process left running, then runs pending ones)."""
        self._stopping.clear()
        self._store = open_store(self.config)
        if self.recover_on_start and self._store.exclusive:
            self._store.recover()   # this server owns the store: whatever ran before it is over
        self._spawn()

    def stop(self, timeout: float = STOP_GRACE_S) -> None:
        """Ask the child to interrupt its job and exit; kill it after ``timeout`` seconds."""
        self._stopping.set()
        self._send(("stop",))
        with self._lock:
            process = self._process
        if process is not None:
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join(5)
        if self._store is not None:
            self._store.close()
            self._store = None

    def wake(self) -> None:
        self._send(("wake",))

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt the running job (only ``prompt_id`` when given); kill its process if it ignores that."""
        with self._lock:
            running = self.running_prompt_id
            if running is None or (prompt_id is not None and prompt_id != running):
                return False
        self._send(("interrupt", running))
        timer = threading.Timer(self.grace_s, self._kill_if_still_running, args=(running,))
        timer.daemon = True
        timer.start()
        return True

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        self._send(("free", unload_models, free_memory))

    def cache_stats(self) -> dict[str, Any]:
        """The child's cache statistics as of its last finished job."""
        with self._lock:
            return dict(self._stats)

    def describe(self) -> dict[str, Any]:
        """This worker for ``/system_stats``: index, device, child pid, worker id, running job, restarts, caches."""
        with self._lock:
            return {"index": self.index, "device": self.device, "worker_id": self.worker_id,
                    "pid": self.child_info.get("pid"), "cuda_visible_devices": self.child_info.get("cuda_visible_devices"),
                    "running": self.running_prompt_id, "restarts": self.restarts, "caches": dict(self._stats)}

    # -- the child's life --------------------------------------------------------------------------------
    def _spawn(self) -> None:
        context = multiprocessing.get_context("spawn")   # no fork: the parent holds threads, sockets, CUDA
        parent_end, child_end = context.Pipe()
        self._generation += 1
        worker_id = f"{socket.gethostname()}/{os.getpid()}/{self.index}.{self._generation}"
        process = context.Process(target=child_main, args=(self.config, child_end, self.preview_size, worker_id,
                                                           self.device),
                                  name=f"fewstep-queue-worker-{self.index}", daemon=True)
        process.start()
        child_end.close()
        with self._lock:
            self._process, self._conn, self.worker_id, self.child_info = process, parent_end, worker_id, {}
            self._started = set()
        threading.Thread(target=self._read, args=(process, parent_end), name="fewstep-worker-pipe",
                         daemon=True).start()

    def _send(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            conn = self._conn
        if conn is None:
            return
        try:
            with self._send_lock:
                conn.send(message)
        except (OSError, ValueError):   # the child is gone; its replacement reads the store itself
            pass

    def _read(self, process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            self._dispatch(message)
        process.join(5)
        if not self._stopping.is_set():
            self._replace_dead_child(process)

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "event":
            self.emit(message[1], message[2], message[3])
        elif kind == "running":
            with self._lock:
                self.running_prompt_id = message[1]
                if message[1] is not None:
                    self._started.add(message[1])
        elif kind == "stats":
            with self._lock:
                self._stats = message[1]
        elif kind == "ready":
            with self._lock:
                self.child_info = dict(message[1])
        elif kind == "store_interrupt":
            self.interrupt(message[1])

    def _kill_if_still_running(self, prompt_id: str) -> None:
        with self._lock:
            if self.running_prompt_id != prompt_id or self._stopping.is_set() or self._process is None:
                return
            process, self._killed = self._process, prompt_id
        log.warning("job %s ignored /interrupt for %.1f s: restarting the worker process", prompt_id,
                    self.grace_s)
        process.kill()   # the pipe reader sees the end and replaces the child

    def _replace_dead_child(self, process: multiprocessing.process.BaseProcess) -> None:
        """Record the job the dead child was running, put back one it had only claimed, start a new child."""
        with self._lock:
            if process is not self._process:
                return
            lost, self.running_prompt_id = self.running_prompt_id, None
            killed, self._killed = self._killed is not None and self._killed == lost, None
            self._conn = None
            dead_id, started = self.worker_id, set(self._started)
        died = f"its worker process died (exit code {process.exitcode})"
        store = self._store
        if store is not None:
            # only this child's jobs (other workers share the store). A job it reported started is over,
            # ran or running (still writing its files, say); one it never reported was claimed in the
            # instant before it could: that one never ran and goes back to the front of the queue
            for job in store.running(worker_id=dead_id):
                if job.prompt_id in started:
                    was_killed = killed and job.prompt_id == lost
                    reason = "it ignored /interrupt, so its worker process was restarted" if was_killed else died
                    self._record_lost(store, job.prompt_id, job.client_id, was_killed, reason, dead_id)
                else:
                    store.requeue(job.prompt_id, worker_id=dead_id)
        self.restarts += 1
        if not self._stopping.is_set():
            self._spawn()

    def _record_lost(self, store: QueueStore, prompt_id: str, client_id: str | None, killed: bool,
                     reason: str, worker_id: str) -> None:
        if killed:
            event = interrupted_message(prompt_id, reason)
        else:
            event = ["execution_error", {"prompt_id": prompt_id, "node_id": None, "node_type": None,
                                         "executed": [], "exception_message": reason, "exception_type": "WorkerDied",
                                         "traceback": [], "timestamp": int(time.time() * 1000)}]
        if not store.finish(prompt_id, "interrupted" if killed else "error", {}, [event], completed=False,
                            worker_id=worker_id):
            return   # its lease ran out first: another worker recorded it and told the client
        self.emit(event[0], event[1], client_id)
        self.emit("executing", {"node": None, "prompt_id": prompt_id}, client_id)
        self.emit("status", {"status": {"exec_info": {"queue_remaining": store.queue_remaining()}}}, None)


# -- the child process ---------------------------------------------------------------------------------
def child_main(config: Config, conn: Connection, preview_size: int, worker_id: str = "",
               device: str | None = None) -> None:
    """Entry point of the worker process: pin its CUDA device, build the executor as the server does, run
    a QueueWorker under ``worker_id``, and obey the parent's messages until it says stop (or goes away)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C reaches the whole group: the parent decides
    if device is not None:   # before any CUDA call (CUDA reads it when it initialises): "cuda" is this GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    from fewstep.app.executor import build_executor
    from fewstep.app.worker import QueueWorker

    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock:
            try:
                conn.send(message)
            except (OSError, ValueError):
                pass

    executor = build_executor(config)
    worker = QueueWorker(open_store(config), executor, _child_emit(send, preview_size),
                         on_running=lambda prompt_id: _report_running(send, executor, prompt_id),
                         worker_id=worker_id or None, lease_s=config.lease_s,
                         on_store_interrupt=lambda prompt_id: send(("store_interrupt", prompt_id)))
    _bind_classic_runtime(worker.emit)
    # before the first claim: the parent knows the child (pid, device) before any job of it reports running
    send(("ready", {"pid": os.getpid(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}))
    worker.start()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        if message[0] == "stop":
            break
        _obey(worker, message)
    worker.stop(STOP_GRACE_S)


def _child_emit(send: Any, preview_size: int) -> WorkerEmit:
    def emit(event: str, data: dict[str, Any], client_id: str | None) -> None:
        if event == "preview" and "frame" not in data:   # images do not cross the pipe: their JPEG does
            from fewstep.app.server.ws import PreviewFrame, encode_preview

            image, mime = encode_preview(data["image"], preview_size)
            data = {"frame": PreviewFrame(image, mime, str(data.get("node_id")), str(data.get("prompt_id"))),
                    "node_id": data.get("node_id"), "prompt_id": data.get("prompt_id")}
        send(("event", event, data, client_id))
    return emit


def _report_running(send: Any, executor: Any, prompt_id: str | None) -> None:
    send(("running", prompt_id))
    if prompt_id is None:
        caches = getattr(executor, "caches", None)
        send(("stats", caches.stats() if caches is not None else {}))


def _bind_classic_runtime(emit: WorkerEmit) -> None:
    from fewstep.app import comfy_runtime

    if comfy_runtime.installed():   # PromptServer.instance.send_sync of classic packs reaches the clients
        comfy_runtime.bind_server(emit)


def _obey(worker: Any, message: tuple[Any, ...]) -> None:
    kind = message[0]
    if kind == "wake":
        worker.wake()
    elif kind == "interrupt":
        worker.interrupt(message[1])
    elif kind == "free":
        worker.request_free(bool(message[1]), bool(message[2]))
