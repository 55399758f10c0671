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
from collections.abc import Callable, Iterator, Mapping
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
        self.progress_log: list[tuple[str, dict[str, Any]]] = []  # every entry ever set, in order

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
        once. Each message's ``nodes`` is a :class:`ProgressSnapshot`: the state as of that event, made in
        O(1) (a copy per event made a 10,000-node graph O(n^2) and froze the server) and read later, on
        the server's event loop, for only the snapshots it actually sends (entries are replaced, never
        mutated).
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
            entry = {"value": value, "max": total, "state": state, "node_id": node_id, "prompt_id": prompt_id,
                     "display_node_id": display, "parent_node_id": parent, "real_node_id": real}
            self.progress[node_id] = entry
            self.progress_log.append((node_id, entry))
        if self.listening and node_ids:
            self.emit("progress_state", {"prompt_id": prompt_id,
                                         "nodes": ProgressSnapshot(self.progress_log, len(self.progress_log))})


class ProgressSnapshot(Mapping[str, dict[str, Any]]):
    """``progress_state``'s ``nodes`` as of one event: the first ``length`` entries of the run's append-only
    log, replayed into a dict on first read (later entries of a node replace earlier ones and keep its
    first position, as the run's own dict does).

    Making one is O(1); reading one is O(length), once. The log is only appended to (by the run's
    thread), so a snapshot can be read from another thread while the run goes on.
    """

    __slots__ = ("_log", "_length", "_nodes")

    def __init__(self, log: list[tuple[str, dict[str, Any]]], length: int) -> None:
        self._log, self._length = log, length
        self._nodes: dict[str, dict[str, Any]] | None = None

    @property
    def length(self) -> int:
        """How many log entries this snapshot covers."""
        return self._length

    def entries(self, start: int = 0) -> list[tuple[str, dict[str, Any]]]:
        """``(node_id, entry)`` set between log position ``start`` and this snapshot, in order: what a
        reader that has seen an earlier snapshot of ``start`` entries needs to catch up."""
        return self._log[start:self._length]

    def as_dict(self) -> dict[str, dict[str, Any]]:
        if self._nodes is None:
            self._nodes = dict(self._log[:self._length])
        return self._nodes

    def __getitem__(self, node_id: str) -> dict[str, Any]:
        return self.as_dict()[node_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.as_dict())
