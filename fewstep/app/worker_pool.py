"""Several worker processes serving one queue: ``fewstep serve --workers N`` or ``--gpus 0,1``.

Each :class:`~app.process_worker.ProcessWorker` runs its own child (pinned to its GPU, with its own model
cache) that claims jobs from the shared store; claims are atomic in the store, so a job runs on exactly
one worker. The pool is what the server sees (the same interface as one worker):

- events: every child's events reach the server's one ``emit`` (serialised here), which routes each to the
  client whose job it is by ``client_id``; their coalescing keys carry the prompt id, so two jobs running
  at once never supersede each other's progress;
- ``/interrupt`` with a prompt id reaches the worker running that job; without one, every running job
  (each client's editor sends its own prompt id; a bare ``/interrupt`` means "stop everything");
- ``/free``: every worker; ``/system_stats``: each worker (:meth:`WorkerPool.describe`).
"""

from __future__ import annotations

import threading
from typing import Any

from fewstep.app.config import Config
from fewstep.app.process_worker import DEFAULT_GRACE_S, STOP_GRACE_S, ProcessWorker
from fewstep.app.worker import WorkerEmit, _no_emit


def worker_devices(config: Config) -> list[str | None]:
    """One entry per worker: its CUDA device (``--gpus``), or None (``--workers N``: every device).

    Raises ValueError for a worker count below 1 or a device list with empty or repeated entries.
    """
    if config.gpus:
        devices = [str(d).strip() for d in config.gpus]
        if any(not d for d in devices) or len(set(devices)) != len(devices):
            raise ValueError(f"--gpus {','.join(devices)}: give distinct device numbers, e.g. --gpus 0,1")
        if config.workers not in (1, len(devices)):
            raise ValueError(f"--workers {config.workers} and --gpus {','.join(devices)} disagree: "
                             "--gpus already runs one worker per device")
        return list(devices)
    if config.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {config.workers}")
    return [None] * config.workers


class WorkerPool:
    """N process workers over one queue, seen by the server as one worker.

    Args:
        workers: the process workers (the first recovers jobs a dead server left in an exclusive store).
        emit: ``emit(event_type, data, client_id)``; rebound by the server (set :attr:`emit`).
    """

    def __init__(self, workers: list[ProcessWorker], emit: WorkerEmit = _no_emit) -> None:
        if not workers:
            raise ValueError("a worker pool needs at least one worker")
        self.workers = workers
        self._emit_lock = threading.Lock()
        self._emit: WorkerEmit = emit
        for index, worker in enumerate(workers):
            worker.recover_on_start = index == 0
            worker.emit = self._serialised_emit

    @classmethod
    def from_config(cls, config: Config, *, grace_s: float = DEFAULT_GRACE_S, preview_size: int = 512) -> WorkerPool:
        return cls([ProcessWorker(config, grace_s=grace_s, preview_size=preview_size, index=i, device=device)
                    for i, device in enumerate(worker_devices(config))])

    # -- the server's emit, called from every worker's pipe thread ----------------------------------------
    @property
    def emit(self) -> WorkerEmit:
        return self._emit

    @emit.setter
    def emit(self, emit: WorkerEmit) -> None:
        self._emit = emit

    def _serialised_emit(self, event: str, data: dict[str, Any], client_id: str | None) -> None:
        with self._emit_lock:   # the server's bridge expects one producer at a time
            self._emit(event, data, client_id)

    # -- the Worker interface -----------------------------------------------------------------------------
    @property
    def running_prompt_id(self) -> str | None:
        """One running job (the first worker's that has one); :meth:`running_prompt_ids` lists them all."""
        running = self.running_prompt_ids()
        return running[0] if running else None

    def running_prompt_ids(self) -> list[str]:
        return [w.running_prompt_id for w in self.workers if w.running_prompt_id is not None]

    @property
    def restarts(self) -> int:
        return sum(w.restarts for w in self.workers)

    def start(self) -> None:
        for worker in self.workers:   # the first recovers before any child claims
            worker.start()

    def stop(self, timeout: float = STOP_GRACE_S) -> None:
        """Stop every worker at once (each waits ``timeout`` for its child), not one after another."""
        threads = [threading.Thread(target=w.stop, args=(timeout,), daemon=True) for w in self.workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout + 10)

    def wake(self) -> None:
        for worker in self.workers:
            worker.wake()

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt ``prompt_id`` on the worker running it, or (None) every running job."""
        hit = False
        for worker in self.workers:
            hit = worker.interrupt(prompt_id) or hit
        return hit

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        for worker in self.workers:
            worker.request_free(unload_models, free_memory)

    def cache_stats(self) -> dict[str, Any]:
        """The workers' cache statistics added up (numbers summed; the policy is the same for all)."""
        return _sum_stats([w.cache_stats() for w in self.workers])

    def describe(self) -> list[dict[str, Any]]:
        return [w.describe() for w in self.workers]


def _sum_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict):
                total[key] = _sum_stats([total.get(key, {}), value])
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
            else:
                total.setdefault(key, value)
    return total
