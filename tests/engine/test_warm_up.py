"""Packs' ``warm_up()``: collected when the pack registers, run once in the background when a queue worker
starts, never by listing nodes."""

from __future__ import annotations

import threading
import types
from pathlib import Path

from engine_helpers import n

from fewstep.app.api import Int, Node, NodeOutput, Output, Schema
from fewstep.app.cache import CacheSet
from fewstep.app.executor import Executor
from fewstep.app.registry import Registry, register_module
from fewstep.app.storage import JobStore
from fewstep.app.worker import QueueWorker


class One(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="WarmOne", is_output_node=True, inputs=[Int("x", 1)], outputs=[Output("x", "INT")])

    @classmethod
    def execute(cls, x: int) -> NodeOutput:
        return NodeOutput(x, ui={"x": [x]})


def test_warm_up_runs_once_in_the_background_when_the_worker_starts(tmp_path: Path) -> None:
    calls: list[str] = []
    done = threading.Event()

    def warm_up() -> None:
        calls.append(threading.current_thread().name)
        done.set()

    def broken_warm_up() -> None:
        raise ImportError("no such library")

    registry = Registry()
    for name, hook in (("warm", warm_up), ("broken", broken_warm_up)):
        module = types.ModuleType(name)
        module.entrypoint = (lambda: [One]) if name == "warm" else (lambda: [])
        module.warm_up = hook
        register_module(registry, module, name=name, source="test", python_module=name)
    assert [pack for pack, _ in registry.warm_ups] == ["warm", "broken"]
    assert calls == []                                           # registering (listing) runs nothing
    store = JobStore(tmp_path / "q.db")
    worker = QueueWorker(store, Executor(registry, CacheSet("none")), idle_poll_s=0.05)
    worker.start()
    try:
        assert done.wait(5)
        store.enqueue("p", {"1": n("WarmOne", x=3)}, {}, None, None)   # a failed warm-up harms nothing
        worker.wake()
        for _ in range(500):
            entry = store.history_entry("p")
            if entry is not None:
                break
            threading.Event().wait(0.01)
        assert entry is not None and entry["status"]["status_str"] == "success"
    finally:
        worker.stop()
    assert calls == ["fewstep-warm-up"]                           # once, off the worker's thread
