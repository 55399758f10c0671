"""Output files written in the background, in order, so that encoding overlaps with the next job.

A save node reserves its file name at once and hands the encoding to an :class:`OutputWriter`: the job's
``executed`` event and history can name the file while the worker already runs the next job. Measured on
an H100 (2026-12-07): PNG encoding of one 512^2 image took 42.8 ms of an 85 ms SD1.5 job, on the GPU's
critical path; the next job's sampling needs no CPU but the launch thread, and zlib releases the GIL.

What keeps the promise that a named file exists complete before anyone reads it:

- the name is reserved synchronously by an empty ``<name>.part`` placeholder (so the next job's file
  counter, which scans the folder, skips it, and another process serving ``/view`` can see that a write is
  pending); the writer fills the placeholder and renames it over ``<name>`` (``os.replace``: atomic on
  POSIX and Windows), so ``<name>`` never exists half-written;
- the job's ending (``execution_success`` / ``execution_error``, history, ``executing {node: None}``) comes
  after its last write: :meth:`OutputWriter.when_done` queues it behind the job's writes on the same thread;
- a failed write fails the job (the error names the node and the file), and its placeholder is removed.

One thread, started when there is work and ended when the queue is empty (no idle thread, nothing to shut
down; it is not a daemon, so the process waits for pending files before it exits).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("fewstep.writes")

PENDING_SUFFIX = ".part"
WriteFn = Callable[[BinaryIO], None]


class OutputWriteError(OSError):
    """Writing an output file failed: names the node that asked for it and the file."""

    def __init__(self, node_id: str, node_type: str, path: Path, cause: BaseException) -> None:
        super().__init__(f"node {node_id} ({node_type}) could not write {path.name}: "
                         f"{type(cause).__name__}: {cause}")
        self.node_id, self.node_type, self.path, self.cause = node_id, node_type, path, cause


def pending_path(path: Path) -> Path:
    """The placeholder that reserves ``path`` while its content is being written."""
    return path.with_name(path.name + PENDING_SUFFIX)


@dataclass
class _Write:
    prompt_id: str
    node_id: str
    node_type: str
    path: Path
    write: WriteFn
    done: Future[Path] = field(default_factory=Future)


@dataclass
class _Callback:
    prompt_id: str
    call: Callable[[list[OutputWriteError]], None]


class OutputWriter:
    """Writes output files on one background thread, in submission order."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Write | _Callback] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._busy = False                                   # a thread is draining the queue
        self._jobs: dict[str, list[_Write]] = {}             # prompt id -> its writes not yet collected
        self._by_path: dict[Path, _Write] = {}               # pending writes by final path

    # -- submitting -----------------------------------------------------------------------------------
    def submit(self, prompt_id: str, node_id: str, node_type: str, path: Path, write: WriteFn) -> Future[Path]:
        """Reserve ``path`` now (its ``.part`` placeholder) and write it in the background with
        ``write(file)``. The future gives the path, or raises :class:`OutputWriteError`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        pending_path(path).open("wb").close()
        item = _Write(prompt_id, node_id, node_type, path, write)
        with self._lock:
            self._jobs.setdefault(prompt_id, []).append(item)
            self._by_path[path.resolve()] = item
        self._put(item)
        return item.done

    def when_done(self, prompt_id: str, call: Callable[[list[OutputWriteError]], None]) -> None:
        """Call ``call(errors)`` once every write of ``prompt_id`` submitted so far has ended: at once (in
        this thread) when none is pending, else on the writer thread right after the last one."""
        with self._lock:
            pending = any(not w.done.done() for w in self._jobs.get(prompt_id, ()))
        if pending:
            self._put(_Callback(prompt_id, call))
        else:
            call(self._collect(prompt_id))

    def wait(self, prompt_id: str, timeout: float | None = None) -> list[OutputWriteError]:
        """Block until the writes of ``prompt_id`` have ended; their errors (empty when all succeeded)."""
        with self._lock:
            writes = list(self._jobs.get(prompt_id, ()))
        for item in writes:
            item.done.exception(timeout)
        return self._collect(prompt_id)

    def pending(self, path: Path) -> Future[Path] | None:
        """The future of a write to ``path`` still in progress, or None."""
        with self._lock:
            item = self._by_path.get(path.resolve())
        return item.done if item is not None and not item.done.done() else None

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything submitted so far has been written (shutdown)."""
        marker = threading.Event()
        self._put(_Callback("", lambda errors: marker.set()))
        marker.wait(timeout)

    # -- the thread -----------------------------------------------------------------------------------
    def _put(self, item: _Write | _Callback) -> None:
        with self._lock:
            self._queue.put(item)
            if self._busy:
                return
            self._busy = True
        threading.Thread(target=self._drain, name="fewstep-output-writer").start()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if self._queue.empty():
                    self._busy = False
                    return
                item = self._queue.get()
            if isinstance(item, _Write):
                self._write(item)
            else:
                try:
                    item.call(self._collect(item.prompt_id) if item.prompt_id else [])
                except Exception:   # a job's ending must not stop later writes
                    log.exception("job %s: finishing after its writes failed", item.prompt_id)

    def _write(self, item: _Write) -> None:
        part = pending_path(item.path)
        try:
            with part.open("wb") as file:
                item.write(file)
            os.replace(part, item.path)
        except Exception as exc:   # the job reports it (see module doc)
            part.unlink(missing_ok=True)
            item.done.set_exception(OutputWriteError(item.node_id, item.node_type, item.path, exc))
        else:
            item.done.set_result(item.path)
        finally:
            with self._lock:
                if self._by_path.get(item.path.resolve()) is item:
                    del self._by_path[item.path.resolve()]

    def _collect(self, prompt_id: str) -> list[OutputWriteError]:
        """Forget the job's ended writes; their errors, in submission order."""
        with self._lock:
            writes = self._jobs.pop(prompt_id, [])
        errors = [w.done.exception() for w in writes]
        return [e for e in errors if isinstance(e, OutputWriteError)]
