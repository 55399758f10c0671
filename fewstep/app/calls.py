"""Calling a node: its callable, its ExecutionContext, one call per keyword set, blocked calls.

:class:`NodeCaller` owns everything between "the node's inputs are ready" and "these are its results":
the object whose ``function`` is called (classic nodes keep one instance per node id across runs, in
``CacheSet.objects``), the ExecutionContext its calls see (progress reports, interrupt checks, the model
cache), ``check_lazy_status``, and the ExecutionBlocker rule (a blocked call returns the blocker on every
output). It never schedules or records anything: the run does.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from fewstep.app.api import ExecutionContext, reset_context, set_context
from fewstep.app.cache import CacheSet
from fewstep.app.classic import CallResult, is_blocker, normalize_result
from fewstep.app.events import RunEvents
from fewstep.app.graph import DynamicGraph, GraphNode
from fewstep.app.node_io import NodeInputs
from fewstep.app.registry import NodeDef
from fewstep.app.writes import OutputWriter

_PLAIN = (int, float, str, bool, type(None), list, dict, tuple)  # never blockers: skip the check


class NodeCaller:
    """Calls nodes of one run.

    Args:
        prompt_id: the run's id (in every context).
        graph: the run's graph (``prompt`` / ``dynprompt`` of the context).
        extra_data: the prompt's ``extra_data`` (``extra_pnginfo`` of the context).
        caches: classic instances (``objects``) and the model cache the context offers.
        inputs: turns a node's input lists into keyword sets.
        events: progress reports and blocked-call errors go there.
        interrupted: what the context's ``is_interrupted`` reads.
        executed: the ids executed so far (reported with a blocked call's error).
        writer: where ``api.write_output`` sends the run's files (None: nodes write them at once).
    """

    def __init__(self, prompt_id: str, graph: DynamicGraph, extra_data: dict[str, Any], caches: CacheSet,
                 inputs: NodeInputs, events: RunEvents, interrupted: threading.Event, executed: list[str],
                 writer: OutputWriter | None = None) -> None:
        self.prompt_id = prompt_id
        self.writer = writer
        self.graph = graph
        self.extra_data = extra_data
        self.caches = caches
        self.inputs = inputs
        self.events = events
        self.interrupted = interrupted
        self.executed = executed
        self.sync_context = self._new_context(None)  # reused by sync nodes: fields updated per node

    def function(self, node: GraphNode, node_def: NodeDef) -> Callable[..., Any]:
        return getattr(self.instance(node, node_def), node_def.function)

    def instance(self, node: GraphNode, node_def: NodeDef) -> Any:
        """What ``function`` is called on: the class, or the node's classic instance (kept across runs)."""
        if not node_def.classic:
            return node_def.cls
        key = (node.id, node.class_type)
        instance = self.caches.objects.get(key)
        if instance is None:
            instance = self.caches.objects[key] = node_def.new_instance()
        return instance

    def lazy_wanted(self, node: GraphNode, node_def: NodeDef, inputs: dict[str, list[Any]]) -> set[str]:
        """The lazy inputs ``check_lazy_status`` asks for, over all of the node's calls."""
        hook = node_def.lazy_hook(self.instance(node, node_def))
        wanted: set[str] = set()
        with self.context(node):
            for kwargs in self.inputs.calls(node, node_def, inputs):
                wanted.update(hook.call(kwargs) or ())
        return wanted

    def call(self, node: GraphNode, node_def: NodeDef, function: Callable[..., Any],
             inputs: dict[str, list[Any]]) -> list[CallResult]:
        """Run a sync node's calls in order."""
        n_out = len(node_def.output_types)
        results = []
        with self.context(node):
            for kwargs in self.inputs.calls(node, node_def, inputs):
                blocked = self.blocked(node, kwargs, n_out)
                results.append(blocked or normalize_result(function(**kwargs), n_out, node.class_type))
        return results

    def start(self, node: GraphNode, node_def: NodeDef, function: Callable[..., Any],
              inputs: dict[str, list[Any]]) -> asyncio.Task[list[CallResult]]:
        """Start an async node's calls (gathered) as a task on the running loop."""
        n_out = len(node_def.output_types)

        async def run_calls() -> list[CallResult]:
            pending = []
            for kwargs in self.inputs.calls(node, node_def, inputs):
                blocked = self.blocked(node, kwargs, n_out)
                pending.append(_done(blocked) if blocked else function(**kwargs))
            raw = await asyncio.gather(*pending)
            return [r if isinstance(r, CallResult) else normalize_result(r, n_out, node.class_type) for r in raw]

        with self.context(node, shared=False):  # the task copies the context: progress works inside it
            return asyncio.get_running_loop().create_task(run_calls())

    def blocked(self, node: GraphNode, kwargs: dict[str, Any], n_out: int) -> CallResult | None:
        """An ExecutionBlocker input blocks this call; a blocker with a message is reported."""
        for value in kwargs.values():  # inline, not a helper call: this runs for every call of every node
            if type(value) in _PLAIN or not is_blocker(value):
                continue
            if value.message is not None:
                self.events.blocked(node, value.message, self.executed)
            return CallResult(tuple(value for _ in range(n_out)))
        return None

    def context(self, node: GraphNode, shared: bool = True) -> _ContextScope:
        """The ExecutionContext for ``node``'s calls: the run's shared one (sync) or a new one (async)."""
        context = self.sync_context if shared else self._new_context(node)
        context.node_id = node.id
        context.class_type = node.class_type
        return _ContextScope(context)

    def _new_context(self, node: GraphNode | None) -> ExecutionContext:
        context = ExecutionContext(
            prompt_id=self.prompt_id, node_id=node.id if node else "", class_type=node.class_type if node else "",
            prompt=self.graph.original, extra_pnginfo=self.extra_data.get("extra_pnginfo") or {},
            report=lambda value, total, preview=None, info=None: None, is_interrupted=self.interrupted.is_set,
            extra={"model_cache": self.caches.models, "dynprompt": self.graph,
                   "client_id": self.extra_data.get("client_id"), "output_writer": self.writer},
        )
        context.report = lambda value, total, preview=None, info=None: self.events.progress_report(
            context.node_id, value, total, preview, info)
        return context


class _ContextScope:
    """Sets the ExecutionContext for the node's calls (a small class: cheaper than contextmanager)."""

    __slots__ = ("context", "token")

    def __init__(self, context: ExecutionContext) -> None:
        self.context = context

    def __enter__(self) -> ExecutionContext:
        self.token = set_context(self.context)
        return self.context

    def __exit__(self, *exc: Any) -> None:
        reset_context(self.token)


async def _done(value: Any) -> Any:
    return value
