"""TEMPORARY stand-ins for app.executor / app.storage / app.worker until those modules land.
Delete this file once the real engine exists (conftest.make_engine switches automatically)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from app.api import ExecutionContext, InterruptedError_, NodeOutput, reset_context, set_context, use_paths


@dataclass
class Job:
    number: int
    prompt_id: str
    prompt: dict
    extra_data: dict
    targets: list
    client_id: str | None
    status: str = "pending"
    outputs: dict | None = None
    messages: list | None = None
    create_time: float = 0.0


class FakeStore:
    def __init__(self, path: Any) -> None:
        self.jobs_: dict[str, Job] = {}
        self.counter = 0
        self.lock = threading.Lock()

    def enqueue(self, prompt_id, prompt, extra_data, targets, client_id, *, front=False):
        with self.lock:
            if prompt_id in self.jobs_:
                raise ValueError("duplicate prompt_id")
            self.counter += 1
            number = -self.counter if front else self.counter
            self.jobs_[prompt_id] = Job(number, prompt_id, prompt, extra_data, targets, client_id,
                                        create_time=time.time())
            return number

    def claim_next(self):
        with self.lock:
            pending = sorted((j for j in self.jobs_.values() if j.status == "pending"), key=lambda j: j.number)
            if not pending:
                return None
            pending[0].status = "running"
            return pending[0]

    def finish(self, prompt_id, status_str, outputs, messages, *, completed):
        with self.lock:
            job = self.jobs_[prompt_id]
            job.status, job.outputs, job.messages = ("completed" if completed else "failed"), outputs, messages

    def pending(self):
        return sorted((j for j in self.jobs_.values() if j.status == "pending"), key=lambda j: j.number)

    def running(self):
        return [j for j in self.jobs_.values() if j.status == "running"]

    def _entry(self, j):
        return {"prompt": [j.number, j.prompt_id, j.prompt, j.extra_data, j.targets], "outputs": j.outputs,
                "status": {"status_str": "success" if j.status == "completed" else "error",
                           "completed": j.status == "completed", "messages": j.messages}, "meta": {}}

    def history(self, max_items=None, offset=0):
        done = [j for j in self.jobs_.values() if j.status in ("completed", "failed")]
        done = done[offset:offset + max_items] if max_items is not None else done[offset:]
        return {j.prompt_id: self._entry(j) for j in done}

    def history_entry(self, prompt_id):
        j = self.jobs_.get(prompt_id)
        return self._entry(j) if j and j.status in ("completed", "failed") else None

    def _job(self, j):
        status = {"pending": "pending", "running": "in_progress"}.get(j.status, j.status)
        return {"id": j.prompt_id, "status": status, "create_time": int(j.create_time * 1000),
                "outputs_count": len(j.outputs or {}), "priority": j.number}

    def job(self, prompt_id):
        j = self.jobs_.get(prompt_id)
        return self._job(j) if j else None

    def jobs(self, statuses, sort_by, sort_order, limit, offset):
        found = [self._job(j) for j in self.jobs_.values()]
        found = [j for j in found if j["status"] in statuses]
        found.sort(key=lambda j: j["create_time"], reverse=sort_order == "desc")
        return found[offset:offset + limit] if limit else found[offset:], len(found)

    def delete_pending(self, ids):
        for i in ids:
            if i in self.jobs_ and self.jobs_[i].status == "pending":
                del self.jobs_[i]

    def clear_pending(self):
        self.delete_pending([j.prompt_id for j in self.pending()])

    def delete_history(self, ids):
        for i in ids:
            if i in self.jobs_ and self.jobs_[i].status in ("completed", "failed"):
                del self.jobs_[i]

    def clear_history(self):
        self.delete_history(list(self.jobs_))

    def recover(self):
        for j in self.running():
            j.status = "failed"


class FakeExecutor:
    def __init__(self, registry, caches, paths):
        self.registry, self.paths, self.caches = registry, paths, None

    def execute(self, prompt, *, prompt_id, extra_data=None, targets=None, emit=None, interrupted=None):
        emit("execution_start", {"prompt_id": prompt_id})
        results: dict[str, Any] = {}
        outputs = {}
        try:
            for target in targets:
                self._run(prompt, target, prompt_id, results, outputs, emit, interrupted)
        except InterruptedError_:
            emit("execution_interrupted", {"prompt_id": prompt_id, "node_id": "", "node_type": "", "executed": []})
            return "interrupted", outputs
        emit("execution_success", {"prompt_id": prompt_id})
        return "success", outputs

    def _run(self, prompt, node_id, prompt_id, results, outputs, emit, interrupted):
        if node_id in results:
            return results[node_id]
        node = prompt[node_id]
        kwargs = {}
        for k, v in node["inputs"].items():
            kwargs[k] = self._run(prompt, v[0], prompt_id, results, outputs, emit, interrupted)[v[1]] if isinstance(v, list) else v
        node_def = self.registry.get(node["class_type"])
        emit("executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id})

        def report(value, total, preview):
            emit("progress", {"value": value, "max": total, "prompt_id": prompt_id, "node": node_id})
            if preview is not None:
                emit("preview", {"node_id": node_id, "prompt_id": prompt_id, "image": preview})
        ctx = ExecutionContext(prompt_id, node_id, node["class_type"], prompt, {}, report,
                               lambda: interrupted is not None and interrupted.is_set())
        token = set_context(ctx)
        try:
            with use_paths(self.paths):
                out = node_def.cls.execute(**kwargs)
        finally:
            reset_context(token)
        if isinstance(out, NodeOutput) and out.ui:
            outputs[node_id] = out.ui
            emit("executed", {"node": node_id, "display_node": node_id, "output": out.ui, "prompt_id": prompt_id})
        results[node_id] = out.values if isinstance(out, NodeOutput) else out
        return results[node_id]


class FakeWorker:
    def __init__(self, store, executor, emit):
        self.store, self.executor, self.emit = store, executor, emit
        self.event, self.stop_ = threading.Event(), threading.Event()
        self.interrupted = threading.Event()
        self.running_prompt_id = None
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stop_.set()
        self.interrupted.set()
        self.event.set()
        self.thread.join(5)

    def wake(self):
        self.event.set()

    def interrupt(self, prompt_id=None):
        if prompt_id is None or prompt_id == self.running_prompt_id:
            self.interrupted.set()

    def request_free(self, unload_models, free_memory):
        pass

    def _loop(self):
        while not self.stop_.is_set():
            job = self.store.claim_next()
            if job is None:
                self.event.wait(0.5)
                self.event.clear()
                continue
            self.interrupted.clear()
            self.running_prompt_id = job.prompt_id
            emit = lambda t, d, c=job.client_id: self.emit(t, d, c)  # noqa: E731
            status, outputs = self.executor.execute(job.prompt, prompt_id=job.prompt_id, targets=job.targets,
                                                    emit=emit, interrupted=self.interrupted)
            self.store.finish(job.prompt_id, status, outputs, [], completed=status == "success")
            self.running_prompt_id = None
            emit("executing", {"node": None, "prompt_id": job.prompt_id})
