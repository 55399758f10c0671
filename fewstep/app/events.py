"""The events of one run, in ComfyUI's websocket message types and data (``docs/engine-contract.md``).

:class:`RunEvents` is the only part of a run that calls ``emit``: ``execution_start`` / ``execution_cached``
/ ``executing`` / ``executed`` / ``progress`` / ``progress_state`` / ``execution_error`` /
``execution_interrupted`` / ``execution_success``, and ``preview`` frames. The start, cached and ending
messages are also recorded for the history entry. Per-node messages are built only when someone listens
(``listening``): the CLI and the benchmarks run without a listener and skip that work.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any

from fewstep.app.graph import DynamicGraph, GraphNode

Emit = Callable[[str, dict[str, Any]], None]


def no_emit(event: str, data: dict[str, Any]) -> None:
    """The default listener: nobody listens, so per-node events are not even built."""
    return None


def now_ms() -> int:
    return int(time.time() * 1000)


def summarize(value: Any, limit: int = 200) -> str:
    """A short human description of an input item (tensors by shape/dtype/device)."""
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"{type(value).__name__}(shape={list(shape)}, dtype={value.dtype}, device={getattr(value, 'device', 'cpu')})"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def error_data(prompt_id: str, node_id: str, node_type: str | None, exc: BaseException, message: str,
               exc_type: str, inputs: dict[str, list[Any]], executed: list[str],
               outputs: list[str]) -> dict[str, Any]:
    """The ``execution_error`` data of a failed node (inputs summarised, at most 8 items each)."""
    return {
        "prompt_id": prompt_id, "node_id": node_id, "node_type": node_type, "executed": executed,
        "exception_message": message, "exception_type": exc_type,
        "traceback": traceback.format_exception(exc),
        "current_inputs": {k: [summarize(v) for v in items[:8]] for k, items in inputs.items()},
        "current_outputs": outputs, "timestamp": now_ms(),
    }


class RunEvents:
    """Sends (and records) the events of one run.

    Args:
        emit: ``emit(event_type, data)``; :func:`no_emit` means nobody listens.
        prompt_id: reported in every event.
        graph: the run's graph (display / parent ids of expanded nodes).
        messages: where recorded messages go (the run result's ``messages``).
    """

    def __init__(self, emit: Emit, prompt_id: str, graph: DynamicGraph, messages: list[list[Any]]) -> None:
        self.emit = emit
        self.prompt_id = prompt_id
        self.graph = graph
        self.messages = messages
        self.listening = emit is not no_emit
        self.progress: dict[str, dict[str, Any]] = {}  # progress_state entries of non-pending nodes

    def send(self, event: str, data: dict[str, Any], record: bool = False) -> None:
        if record:
            self.messages.append([event, data])
        self.emit(event, data)

    def start(self) -> None:
        self.send("execution_start", {"prompt_id": self.prompt_id, "timestamp": now_ms()}, record=True)

    def success(self) -> None:
        self.send("execution_success", {"prompt_id": self.prompt_id, "timestamp": now_ms()}, record=True)

    def cached(self, node_ids: list[str]) -> None:
        """``execution_cached`` with every node served from the cache while scheduling the targets."""
        self.send("execution_cached", {"nodes": node_ids, "prompt_id": self.prompt_id, "timestamp": now_ms()},
                  record=True)

    def executing(self, node: GraphNode) -> None:
        if not self.listening:
            return
        display = node.id if node.parent is None else self.graph.get_display_node_id(node.id)
        self.send("executing", {"node": node.id, "display_node": display, "prompt_id": self.prompt_id})
        self.set_progress([node.id], "running")

    def executed(self, node_id: str, ui: dict[str, Any]) -> None:
        self.send("executed", {"node": node_id, "display_node": self.graph.get_display_node_id(node_id),
                               "output": ui, "prompt_id": self.prompt_id})

    def finished(self, node_ids: list[str]) -> None:
        if self.listening:
            self.set_progress(node_ids, "finished")

    def progress_report(self, node_id: str, value: float, total: float, preview: Any,
                        info: dict[str, Any] | None = None) -> None:
        """A node's progress hook: ``progress`` (with ``info``'s named numbers), its state, a preview frame."""
        data = {"value": value, "max": total, "prompt_id": self.prompt_id, "node": node_id}
        if info:  # named numbers (loss, lr ...) ride on the progress message; ComfyUI's keys win
            data = {**{k: v for k, v in info.items() if k not in data}, **data}
        self.send("progress", data)
        self.set_progress([node_id], "running", value, total)
        if preview is not None:
            self.send("preview", {"node_id": node_id, "prompt_id": self.prompt_id, "image": preview})

    def blocked(self, node: GraphNode, message: str, executed: list[str]) -> None:
        """An ExecutionBlocker with a message reached ``node``: reported, not recorded (the run goes on)."""
        self.send("execution_error", {
            "prompt_id": self.prompt_id, "node_id": node.id, "node_type": node.class_type,
            "executed": list(executed), "exception_message": message, "exception_type": "ExecutionBlocked",
            "traceback": [], "current_inputs": {}, "current_outputs": [], "timestamp": now_ms()})

    def interrupted(self, node_id: str | None, node_type: str | None, executed: list[str]) -> None:
        self.send("execution_interrupted", {
            "prompt_id": self.prompt_id, "node_id": node_id, "node_type": node_type, "executed": executed,
            "timestamp": now_ms()}, record=True)

    def failed(self, error: dict[str, Any], node_known: bool) -> None:
        if self.listening and node_known:
            self.set_progress([error["node_id"]], "error")
        self.send("execution_error", error, record=True)

    def set_progress(self, node_ids: list[str], state: str, value: float = 0.0, total: float = 1.0) -> None:
        """Update the nodes' progress entries and send ``progress_state`` with every non-pending node.

        ComfyUI's ProgressRegistry: an entry appears when a node starts (running, 0 of 1), changes on
        each progress report, and ends as finished (value = max) or error; cached nodes are finished at
        once. Each message is a snapshot (a new outer dict; entries are replaced, never mutated) because
        the server serialises it later, on its event loop.
        """
        graph, prompt_id = self.graph, self.prompt_id
        for node_id in node_ids:
            old = self.progress.get(node_id)
            if state != "running" and old is not None:  # finished / error keep the last max (and value)
                value, total = old["value"], old["max"]
            if state == "finished":
                value = total
            parent = graph.nodes[node_id].parent
            display, real = (node_id, node_id) if parent is None else (
                graph.get_display_node_id(node_id), graph.get_real_node_id(node_id))
            self.progress[node_id] = {
                "value": value, "max": total, "state": state, "node_id": node_id, "prompt_id": prompt_id,
                "display_node_id": display, "parent_node_id": parent, "real_node_id": real}
        if self.listening and node_ids:
            self.emit("progress_state", {"prompt_id": prompt_id, "nodes": dict(self.progress)})
