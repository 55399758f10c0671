"""The executor: runs a validated API-format prompt.

Only ancestors of the requested outputs run, each after its inputs. The scheduler is iterative (no
recursion, linear in the graph size) and works on a :class:`~app.graph.DynamicGraph` that grows when a
node expands. Per node it: resolves inputs (lists mapped per item, shorter lists repeating their last
item), asks ``check_lazy_status`` which lazy inputs are needed, calls the node (async nodes run as tasks
that overlap with each other and with sync nodes), then records outputs in the run's store and the output
cache. Events use ComfyUI's websocket message types (see ``docs/engine-contract.md``).
"""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fewstep.app.api import (
    ExecutionContext,
    InterruptedError_,
    Paths,
    reset_context,
    set_context,
    use_paths,
)
from fewstep.app.cache import CacheSet, encode_value, fingerprint_part, node_key
from fewstep.app.classic import CallResult, is_blocker, normalize_result
from fewstep.app.graph import (
    DynamicGraph,
    GraphError,
    GraphNode,
    Link,
    is_link,
    parse_value,
    rewrite_expansion,
)
from fewstep.app.plan import Plan, PlanMemo, make_plan, signature, still_valid
from fewstep.app.validation import Validation, validate_prompt

Emit = Callable[[str, dict[str, Any]], None]
_QUEUED, _EXPANDED, _DONE = 1, 2, 3
_PLAIN = (int, float, str, bool, type(None), list, dict, tuple)  # never blockers: skip the check
_ASYNC_POLL_S = 0.05  # how often an interrupt is noticed while only async nodes are running


def _no_emit(event: str, data: dict[str, Any]) -> None:
    return None


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class RunResult:
    """What one execution produced.

    Args:
        status: "success" | "error" | "interrupted".
        outputs: ``{node_id: ui_dict}`` of nodes that produced UI output (executed or cached).
        messages: ``[[event_type, data], ...]`` for history (start, cached, success / error / interrupted).
        node_times: wall seconds per executed node.
        error: the ``execution_error`` data, or ``{"type", "message", "node_errors"}`` for invalid graphs.
        executed / cached: node ids that ran / were served from the cache, in order.
    """

    status: str
    outputs: dict[str, Any] = field(default_factory=dict)
    messages: list[list[Any]] = field(default_factory=list)
    node_times: dict[str, float] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)


class _Interrupted(Exception):
    def __init__(self, node_id: str | None) -> None:
        self.node_id = node_id


class _NodeFailed(Exception):
    def __init__(self, node_id: str, exc: BaseException, inputs: dict[str, list[Any]] | None) -> None:
        self.node_id = node_id
        self.exc = exc
        self.inputs = inputs or {}


def summarize(value: Any, limit: int = 200) -> str:
    """A short human description of an input item (tensors by shape/dtype/device)."""
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"{type(value).__name__}(shape={list(shape)}, dtype={value.dtype}, device={getattr(value, 'device', 'cpu')})"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM, recognised by name so this module never imports torch."""
    return type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(exc)


class Executor:
    """Runs prompts against a registry with shared caches.

    Args:
        registry: the node registry.
        caches: output/model caches (policy switchable at run time); a new ``lru:64`` set by default.
        paths: where nodes read models and write outputs (made current with ``use_paths`` while running).
    """

    def __init__(self, registry: Any, caches: CacheSet | None = None, paths: Paths | None = None) -> None:
        self.registry = registry
        self.caches = caches or CacheSet()
        self.paths = paths or Paths()
        self.plans = PlanMemo()  # validated graphs + stable keys of recent prompts, by content

    def execute(self, prompt: dict[str, Any], *, prompt_id: str, extra_data: dict[str, Any] | None = None,
                targets: list[str] | None = None, emit: Emit = _no_emit,
                interrupted: threading.Event | None = None) -> RunResult:
        """Validate and run ``prompt``; never raises for node failures (they are in the result).

        Args:
            prompt: API-format graph. prompt_id: reported in every event.
            extra_data: ComfyUI's ``extra_data`` (``extra_pnginfo`` ...).
            targets: node ids to produce; default every output node.
            emit: ``emit(event_type, data)`` receives the run's events.
            interrupted: set it (from any thread) to stop the run between nodes or at a node's next
                progress/interrupt check.
        """
        with use_paths(self.paths):  # validation lists model files (combo choices) under these paths too
            plan = self._plan(prompt, targets)
            if not isinstance(plan, Plan):
                return plan
            job = _Job(self, prompt, plan, prompt_id, extra_data or {}, emit, interrupted or threading.Event())
            try:
                return job.run()
            finally:
                self.caches.end_job()


    def remember(self, prompt: dict[str, Any], targets: list[str] | None, validation: Validation,
                 registry: Any) -> None:
        """Keep a validation of ``prompt`` made elsewhere so that running it skips validation.

        The server validates every ``POST /prompt``; the job's prompt comes back from the queue with
        the same content, so :meth:`execute` finds this plan by signature instead of validating again
        (0.5 ms of the default graph's 2 ms in-worker overhead on the dev VM, 2026-11-30). Ignored unless
        ``validation`` succeeded against this executor's registry; a plan already memoised for the prompt
        is kept (it holds the node keys earlier runs learned). Volatile nodes are re-checked at run time
        as for any memoised plan (:func:`app.plan.still_valid`).
        """
        if not validation.ok or registry is not self.registry:
            return
        sig = signature(prompt, targets)
        if self.plans.get(sig, registry) is None:
            self.plans.put(sig, make_plan(validation, registry))

    def _plan(self, prompt: dict[str, Any], targets: list[str] | None) -> Plan | RunResult:
        """The prompt's plan: memoised by content (volatile nodes re-validated), else from validation."""
        sig = signature(prompt, targets)
        plan = self.plans.get(sig, self.registry)
        if plan is not None and still_valid(plan):
            return plan
        validation = validate_prompt(prompt, self.registry, targets)
        if not validation.ok:
            error = {**(validation.error or {}), "node_errors": validation.node_errors}
            return RunResult("error", error=error)
        plan = make_plan(validation, self.registry)
        self.plans.put(sig, plan)
        return plan


class _Job:
    """The state of one execution (the scheduler)."""

    def __init__(self, executor: Executor, prompt: dict[str, Any], plan: Plan, prompt_id: str,
                 extra_data: dict[str, Any], emit: Emit, interrupted: threading.Event) -> None:
        self.registry = executor.registry
        self.caches = executor.caches
        self.graph = DynamicGraph(prompt, dict(plan.nodes))  # a copy: expansion adds nodes to it
        self.targets = plan.outputs
        self.prompt_id = prompt_id
        self.extra_data = extra_data
        self.emit = emit
        self.interrupted = interrupted
        self.keys: dict[str, str] = dict(plan.keys)  # stable keys known from earlier runs of this prompt
        self.plan_keys = plan.keys                   # where this job records the stable keys it computes
        self.unstable: set[str] = set()              # nodes whose key may change between identical runs
        self.values: dict[str, list[list[Any]]] = {}
        self.state: dict[str, int] = {}
        self.pending: dict[str, int] = {}
        self.waiting: dict[str, list[str]] = {}
        self.strong_lazy: dict[str, set[str]] = {}
        self.expansions: dict[str, tuple[list[CallResult], float]] = {}
        self.ready: deque[str] = deque()
        self.tasks: dict[asyncio.Task[Any], tuple[str, float, dict[str, list[Any]]]] = {}
        self.result = RunResult("success")
        self.collecting_cached: list[str] | None = None
        self.sync_context = self._new_context(None)  # reused by sync nodes: fields updated per node
        self.listening = emit is not _no_emit        # per-node events are built only for a listener
        self.progress: dict[str, dict[str, Any]] = {}  # progress_state entries of non-pending nodes
        # policy "none": a node's outputs leave the run's store once every consumer has run
        self.release = not self.caches.outputs.policy.store
        self.consumers: dict[str, int] = {}       # node -> consumers scheduled and not finished
        self.consumes: dict[str, list[str]] = {}  # node -> the sources it holds (one entry per link)
        self.released: set[str] = set()

    # -- events ---------------------------------------------------------------------------------
    def _send(self, event: str, data: dict[str, Any], record: bool = False) -> None:
        if record:
            self.result.messages.append([event, data])
        self.emit(event, data)

    def _set_progress(self, node_ids: list[str], state: str, value: float = 0.0, total: float = 1.0) -> None:
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

    # -- run ------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        self._send("execution_start", {"prompt_id": self.prompt_id, "timestamp": now_ms()}, record=True)
        try:
            self.collecting_cached = []
            self._schedule(self.targets)
            cached, self.collecting_cached = self.collecting_cached, None
            self._send("execution_cached", {"nodes": cached, "prompt_id": self.prompt_id,
                                            "timestamp": now_ms()}, record=True)
            for node_id in cached:
                self._announce_cached(node_id)
            if self.listening:
                self._set_progress(cached, "finished")
            if self._run_sync():
                asyncio.run(self._loop())
            self._check_finished()
        except _Interrupted as stop:
            return self._interrupted(stop.node_id)
        except _NodeFailed as failure:
            return self._failed(failure)
        self._send("execution_success", {"prompt_id": self.prompt_id, "timestamp": now_ms()}, record=True)
        return self.result

    def _run_sync(self) -> bool:
        """Run ready nodes without an event loop until an async node is next; True if work remains.

        Most graphs have no async node: this skips creating an event loop per job.
        """
        ready, nodes, registry = self.ready, self.graph.nodes, self.registry
        while ready:
            if self.interrupted.is_set():
                raise _Interrupted(None)
            node_id = ready[0]
            if node_id not in self.expansions and registry.get(nodes[node_id].class_type).is_async:
                return True
            self._step(ready.popleft())
        return False

    async def _loop(self) -> None:
        try:
            while self.ready or self.tasks:
                if self.interrupted.is_set():
                    raise _Interrupted(None)
                if self.ready:
                    self._step(self.ready.popleft())
                    if self.tasks:
                        await asyncio.sleep(0)  # let running async nodes make progress
                    continue
                done, _ = await asyncio.wait(self.tasks, timeout=_ASYNC_POLL_S,
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    self._task_done(task)
        finally:
            for task in self.tasks:
                task.cancel()

    def _check_finished(self) -> None:
        stuck = [n for n, s in self.state.items() if s != _DONE]
        if stuck:
            message = f"dependency cycle: nodes {stuck[:10]} wait on each other"
            raise _NodeFailed(stuck[0], _DependencyCycleError(message), None)

    # -- scheduling -----------------------------------------------------------------------------
    def _strong_sources(self, node: GraphNode) -> set[str]:
        node_def = self.registry.get(node.class_type)
        lazy = node_def.lazy_inputs
        wanted = self.strong_lazy.get(node.id, ())
        sources = set()
        for name, link in node.links():
            port = node_def.ports.get(name)
            if port is not None and port.raw_link:
                continue
            if name in lazy and name not in wanted:
                continue
            sources.add(link.src)
        return sources

    def _schedule(self, roots: list[str]) -> None:
        """Queue ``roots`` and their needed ancestors; cached nodes complete at once."""
        new: list[tuple[str, set[str]]] = []
        stack = list(roots)
        nodes, state = self.graph.nodes, self.state
        while stack:
            node_id = stack.pop()
            if node_id in state:
                if node_id not in self.released:
                    continue
                self._revive(node_id)  # its outputs were released; a new consumer needs them again
            if self._from_cache(node_id):
                continue
            state[node_id] = _QUEUED
            node = nodes[node_id]
            sources = self._strong_sources(node)
            if self.release:
                self._hold_sources(node_id, node)
            new.append((node_id, sources))
            stack.extend(sources)
        for node_id, sources in reversed(new):  # sources were appended last: count them first
            self._wait_for(node_id, sources)

    def _wait_for(self, node_id: str, sources: set[str]) -> None:
        count = self.pending.get(node_id, 0)
        for src in sources:
            if self.state.get(src) != _DONE:
                self.waiting.setdefault(src, []).append(node_id)
                count += 1
        self.pending[node_id] = count
        if count == 0:
            self.ready.append(node_id)

    def _hold_sources(self, node_id: str, node: GraphNode) -> None:
        """Count ``node`` as a consumer of each linked source (lazy ones too: it may still ask)."""
        ports = self.registry.get(node.class_type).ports
        held = self.consumes.setdefault(node_id, [])
        for name, link in node.links():
            port = ports.get(name)
            if port is not None and not port.raw_link:
                held.append(link.src)
                self.consumers[link.src] = self.consumers.get(link.src, 0) + 1

    def _let_go(self, node_id: str) -> None:
        """``node_id`` finished: drop the outputs of sources that no scheduled node needs any more."""
        consumers, values = self.consumers, self.values
        for src in self.consumes.pop(node_id, ()):
            left = consumers[src] - 1
            consumers[src] = left
            if left == 0 and src in values:
                del values[src]
                self.released.add(src)

    def _revive(self, node_id: str) -> None:
        """Make a node whose outputs were released runnable again (an expansion or lazy input needs it)."""
        self.released.discard(node_id)
        del self.state[node_id]
        self.pending.pop(node_id, None)

    def _complete(self, node_id: str) -> None:
        if self.release:
            self._let_go(node_id)
        self.state[node_id] = _DONE
        for dependent in self.waiting.pop(node_id, ()):
            self.pending[dependent] -= 1
            if self.pending[dependent] == 0:
                self.ready.append(dependent)

    # -- cache keys -----------------------------------------------------------------------------
    def key(self, node_id: str) -> str:
        """The content address of a node (computed iteratively over its ancestors, memoised)."""
        keys = self.keys
        if node_id in keys:
            return keys[node_id]
        nodes = self.graph.nodes
        stack, visiting = [node_id], set()
        while stack:
            current = stack[-1]
            if current in keys:
                stack.pop()
                continue
            missing = [link.src for _, link in nodes[current].links() if link.src not in keys]
            if missing and current not in visiting:
                visiting.add(current)
                stack.extend(missing)
                continue
            if missing:
                raise _NodeFailed(current, _DependencyCycleError(f"node {current!r} depends on itself"), None)
            keys[current] = self._immediate_key(nodes[current])
            stack.pop()
        return keys[node_id]

    def _immediate_key(self, node: GraphNode) -> str:
        """Hash of class, schema version, fingerprint, constants and the sources' keys.

        A key is *stable* (recorded in the plan for later runs of the same prompt) unless the node has a
        fingerprint hook, was created by expansion, or has a source whose key is not stable.
        """
        node_def = self.registry.get(node.class_type)
        parts = [node.class_type, str(node_def.schema.version)]
        stable = node.parent is None
        if node_def.fingerprint is not None:
            parts.append(fingerprint_part(self._fingerprint(node, node_def)))
            stable = False
        if node_def.schema.not_idempotent or node_def.uses_unique_id:
            parts.append("#" + node.id)
        keys, unstable = self.keys, self.unstable
        for name in sorted(node.inputs):
            value = node.inputs[name]
            if type(value) is Link:
                parts.append(f"{name}@{keys[value.src]}:{value.slot}")
                if value.src in unstable:
                    stable = False
            else:
                parts.append(f"{name}={encode_value(value)}")
        key = node_key(parts)
        if stable:
            self.plan_keys[node.id] = key
        else:
            unstable.add(node.id)
        return key

    def _fingerprint(self, node: GraphNode, node_def: Any) -> Any:
        kwargs = {name: (None if type(v) is Link else v) for name, v in node.inputs.items()}
        kwargs.update(self._hidden(node, node_def))
        try:
            return node_def.fingerprint.call(kwargs)
        except Exception:  # ComfyUI's rule: a failing fingerprint means "always re-run"
            return float("nan")

    def _from_cache(self, node_id: str) -> bool:
        entry = self.caches.get(self.key(node_id))
        if entry is None:
            return False
        self.values[node_id] = entry.outputs
        self.state[node_id] = _DONE
        self.result.cached.append(node_id)
        if entry.ui is not None:
            self.result.outputs[node_id] = entry.ui
        if self.collecting_cached is not None:
            self.collecting_cached.append(node_id)  # announced together once scheduling is done
        else:
            self._announce_cached(node_id)
            if self.listening:
                self._set_progress([node_id], "finished")
        return True

    def _announce_cached(self, node_id: str) -> None:
        ui = self.result.outputs.get(node_id)
        if ui is not None:
            self._send("executed", {"node": node_id, "display_node": self.graph.get_display_node_id(node_id),
                                    "output": ui, "prompt_id": self.prompt_id})

    # -- one node -------------------------------------------------------------------------------
    def _step(self, node_id: str) -> None:
        if node_id in self.expansions:
            self._finish_expansion(node_id)
            return
        if self.caches.outputs.policy.store and self._from_cache(node_id):
            self._complete(node_id)  # an identical node finished earlier in this job
            return
        node = self.graph.nodes[node_id]
        node_def = self.registry.get(node.class_type)
        inputs: dict[str, list[Any]] | None = None
        try:
            inputs = self._gather(node, node_def)
            if node_def.lazy_check_name is not None and self._needs_more(node, node_def, inputs):
                return
            self._call(node, node_def, inputs)
        except (_Interrupted, _NodeFailed):
            raise
        except InterruptedError_ as exc:
            raise _Interrupted(node_id) from exc
        except Exception as exc:
            raise _NodeFailed(node_id, exc, inputs) from exc

    def _gather(self, node: GraphNode, node_def: Any) -> dict[str, list[Any]]:
        """Each input as a list of items: constants are one item, links the source's output list."""
        inputs: dict[str, list[Any]] = {}
        values = self.values
        for name, value in node.inputs.items():
            port = node_def.ports.get(name)
            if port is None:
                continue
            if type(value) is Link:
                if port.raw_link:
                    inputs[name] = [value.as_json()]
                elif value.src in values:
                    inputs[name] = values[value.src][value.slot]
                else:
                    inputs[name] = [None]  # a lazy input not evaluated (yet)
            else:
                inputs[name] = [value]
        return inputs

    def _hidden(self, node: GraphNode, node_def: Any) -> dict[str, Any]:
        hidden = {}
        for keyword, kind in node_def.hidden_names.items():
            if kind == "UNIQUE_ID":
                hidden[keyword] = node.id
            elif kind == "PROMPT":
                hidden[keyword] = self.graph.original
            elif kind == "EXTRA_PNGINFO":
                hidden[keyword] = self.extra_data.get("extra_pnginfo")
            elif kind == "DYNPROMPT":
                hidden[keyword] = self.graph
            else:  # AUTH_TOKEN_COMFY_ORG, API_KEY_COMFY_ORG
                hidden[keyword] = self.extra_data.get(kind.lower())
        return hidden

    def _calls(self, node: GraphNode, node_def: Any, inputs: dict[str, list[Any]]) -> list[dict[str, Any]]:
        """Keyword sets, one per call: item i of every input, shorter lists repeating their last item."""
        hidden = self._hidden(node, node_def) if node_def.hidden_names else {}
        if node_def.schema.is_input_list:
            return [{**inputs, **hidden}]
        if not inputs:
            return [dict(hidden)]
        lengths = [len(v) for v in inputs.values()]
        if min(lengths) == 0:
            return []
        count = max(lengths)
        if count == 1:
            return [{**{k: v[0] for k, v in inputs.items()}, **hidden}]
        return [{**{k: v[min(i, len(v) - 1)] for k, v in inputs.items()}, **hidden} for i in range(count)]

    def _needs_more(self, node: GraphNode, node_def: Any, inputs: dict[str, list[Any]]) -> bool:
        """Ask check_lazy_status; schedule the lazy inputs it wants; True if the node must wait."""
        hook = node_def.lazy_hook(self._instance(node, node_def))
        wanted: set[str] = set()
        with self._context(node):
            for kwargs in self._calls(node, node_def, inputs):
                wanted.update(hook.call(kwargs) or ())
        strong = self.strong_lazy.setdefault(node.id, set())
        sources = []
        for name in wanted:
            value = node.inputs.get(name)
            if type(value) is Link and name not in strong and value.src not in self.values:
                strong.add(name)
                sources.append(value.src)
        if not sources:
            return False
        self._schedule(sources)
        self.pending[node.id] = 0
        self._wait_for(node.id, set(sources))
        if self.pending[node.id] == 0:
            self.ready.pop()  # _wait_for queued it again; run it now instead
            return self._needs_more(node, node_def, self._gather(node, node_def))
        return True

    def _instance(self, node: GraphNode, node_def: Any) -> Any:
        if not node_def.classic:
            return node_def.cls
        key = (node.id, node.class_type)
        instance = self.caches.objects.get(key)
        if instance is None:
            instance = self.caches.objects[key] = node_def.new_instance()
        return instance

    def _new_context(self, node: GraphNode | None) -> ExecutionContext:
        context = ExecutionContext(
            prompt_id=self.prompt_id, node_id=node.id if node else "", class_type=node.class_type if node else "",
            prompt=self.graph.original, extra_pnginfo=self.extra_data.get("extra_pnginfo") or {},
            report=lambda value, total, preview=None, info=None: None, is_interrupted=self.interrupted.is_set,
            extra={"model_cache": self.caches.models, "dynprompt": self.graph},
        )
        context.report = lambda value, total, preview=None, info=None: self._progress(
            context.node_id, value, total, preview, info)
        return context

    def _context(self, node: GraphNode, shared: bool = True) -> _ContextScope:
        """The ExecutionContext for ``node``'s calls: the job's shared one (sync) or a new one (async)."""
        context = self.sync_context if shared else self._new_context(node)
        context.node_id = node.id
        context.class_type = node.class_type
        return _ContextScope(context)

    def _progress(self, node_id: str, value: float, total: float, preview: Any,
                  info: dict[str, Any] | None = None) -> None:
        data = {"value": value, "max": total, "prompt_id": self.prompt_id, "node": node_id}
        if info:  # named numbers (loss, lr ...) ride on the progress message; ComfyUI's keys win
            data = {**{k: v for k, v in info.items() if k not in data}, **data}
        self._send("progress", data)
        self._set_progress([node_id], "running", value, total)
        if preview is not None:
            self._send("preview", {"node_id": node_id, "prompt_id": self.prompt_id, "image": preview})

    def _call(self, node: GraphNode, node_def: Any, inputs: dict[str, list[Any]]) -> None:
        if self.listening:
            display = node.id if node.parent is None else self.graph.get_display_node_id(node.id)
            self._send("executing", {"node": node.id, "display_node": display, "prompt_id": self.prompt_id})
            self._set_progress([node.id], "running")
        function = getattr(self._instance(node, node_def), node_def.function)
        started = time.perf_counter()
        n_out = len(node_def.output_types)
        if node_def.is_async:
            self._start_async(node, node_def, function, inputs, started)
            return
        results = []
        with self._context(node):
            for kwargs in self._calls(node, node_def, inputs):
                blocked = self._blocked(node, kwargs, n_out)
                results.append(blocked or normalize_result(function(**kwargs), n_out, node.class_type))
        self._record(node, node_def, results, time.perf_counter() - started)

    def _blocked(self, node: GraphNode, kwargs: dict[str, Any], n_out: int) -> CallResult | None:
        """An ExecutionBlocker input blocks this call; a blocker with a message is reported."""
        for value in kwargs.values():
            if type(value) in _PLAIN:
                continue
            if is_blocker(value):
                if value.message is not None:
                    self._send("execution_error", {
                        "prompt_id": self.prompt_id, "node_id": node.id, "node_type": node.class_type,
                        "executed": list(self.result.executed), "exception_message": value.message,
                        "exception_type": "ExecutionBlocked", "traceback": [], "current_inputs": {},
                        "current_outputs": [], "timestamp": now_ms()})
                return CallResult(tuple(value for _ in range(n_out)))
        return None

    def _start_async(self, node: GraphNode, node_def: Any, function: Callable[..., Any],
                     inputs: dict[str, list[Any]], started: float) -> None:
        n_out = len(node_def.output_types)

        async def run_calls() -> list[CallResult]:
            pending = []
            for kwargs in self._calls(node, node_def, inputs):
                blocked = self._blocked(node, kwargs, n_out)
                pending.append(_done(blocked) if blocked else function(**kwargs))
            raw = await asyncio.gather(*pending)
            return [r if isinstance(r, CallResult) else normalize_result(r, n_out, node.class_type) for r in raw]

        with self._context(node, shared=False):  # the task copies the context: progress works inside it
            task = asyncio.get_running_loop().create_task(run_calls())
        self.tasks[task] = (node.id, started, inputs)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        node_id, started, inputs = self.tasks.pop(task)
        node = self.graph.nodes[node_id]
        try:
            results = task.result()
        except InterruptedError_ as exc:
            raise _Interrupted(node_id) from exc
        except Exception as exc:
            raise _NodeFailed(node_id, exc, inputs) from exc
        try:
            self._record(node, self.registry.get(node.class_type), results, time.perf_counter() - started)
        except (_Interrupted, _NodeFailed):
            raise
        except Exception as exc:
            raise _NodeFailed(node_id, exc, inputs) from exc

    # -- results --------------------------------------------------------------------------------
    def _record(self, node: GraphNode, node_def: Any, results: list[CallResult], seconds: float) -> None:
        self.result.node_times[node.id] = self.result.node_times.get(node.id, 0.0) + seconds
        if any(r.expand for r in results):
            if not node_def.schema.enable_expand:
                raise TypeError(f"{node.class_type} returned an expansion but its schema does not set enable_expand")
            self._expand(node, results, seconds)
            return
        outputs = _merge(results, node_def.output_is_list, self.values)
        self._store(node, outputs, _merge_ui(results))

    def _store(self, node: GraphNode, outputs: list[list[Any]], ui: dict[str, Any] | None) -> None:
        node_id = node.id
        self.values[node_id] = outputs
        self.result.executed.append(node_id)
        if not self.release:  # policy "none" stores nothing: skip the key
            self.caches.put(self.key(node_id), outputs, ui)
        if ui is not None:
            self.result.outputs[node_id] = ui
            self._send("executed", {"node": node_id, "display_node": self.graph.get_display_node_id(node_id),
                                    "output": ui, "prompt_id": self.prompt_id})
        if self.listening:
            self._set_progress([node_id], "finished")
        self._complete(node_id)

    def _expand(self, node: GraphNode, results: list[CallResult], seconds: float) -> None:
        """Add each call's subgraph with ids ``"{node}.{call}.{local}"``; the node waits on its result links."""
        display = self.graph.get_display_node_id(node.id)
        roots: list[str] = []
        for index, result in enumerate(results):
            if not result.expand:
                continue
            new_nodes, renames = rewrite_expansion(node.id, index, result.expand, self.graph.nodes)
            local_of = {new_id: local for local, new_id in renames.items()}
            for new in new_nodes.values():
                if self.registry.get(new.class_type) is None:
                    raise GraphError(f"expansion of node {node.id!r} uses unknown class {new.class_type!r}")
                new.display_id = display
                self.graph.add_ephemeral(new, dict(result.expand[local_of[new.id]]))
                if self.registry.get(new.class_type).schema.is_output_node:
                    roots.append(new.id)
            result.values = tuple(_rewrite_result(v, renames) for v in result.values)
        links = {v.src for r in results for v in r.values if type(v) is Link}
        if self.release:  # the node reads its result links when the expansion finishes
            self.consumes.setdefault(node.id, []).extend(links)
            for src in links:
                self.consumers[src] = self.consumers.get(src, 0) + 1
        self.expansions[node.id] = (results, seconds)
        self.state[node.id] = _EXPANDED
        self._schedule(sorted(links) + roots)
        self.pending[node.id] = 0
        self._wait_for(node.id, links)

    def _finish_expansion(self, node_id: str) -> None:
        results, _ = self.expansions.pop(node_id)
        node = self.graph.nodes[node_id]
        node_def = self.registry.get(node.class_type)
        outputs = _merge(results, node_def.output_is_list, self.values)
        self._store(node, outputs, _merge_ui(results))

    # -- endings --------------------------------------------------------------------------------
    def _interrupted(self, node_id: str | None) -> RunResult:
        node = self.graph.nodes.get(node_id) if node_id else None
        self._send("execution_interrupted", {
            "prompt_id": self.prompt_id, "node_id": node_id, "node_type": node.class_type if node else None,
            "executed": self.result.executed + self.result.cached, "timestamp": now_ms()}, record=True)
        self.result.status = "interrupted"
        return self.result

    def _failed(self, failure: _NodeFailed) -> RunResult:
        node = self.graph.nodes.get(failure.node_id)
        exc = failure.exc
        message = str(exc)
        if is_out_of_memory(exc):
            dropped = self.caches.free_outputs()
            message += (f"\nCUDA out of memory in node {failure.node_id}: the output cache was freed "
                        f"({dropped} entries). Try a smaller batch or resolution, or a lower cache budget.")
        exc_type = "graph.DependencyCycleError" if isinstance(exc, _DependencyCycleError) else (
            f"{type(exc).__module__}.{type(exc).__name__}".removeprefix("builtins."))
        error = {
            "prompt_id": self.prompt_id, "node_id": failure.node_id,
            "node_type": node.class_type if node else None,
            "executed": self.result.executed + self.result.cached, "exception_message": message,
            "exception_type": exc_type, "traceback": traceback.format_exception(exc),
            "current_inputs": {k: [summarize(v) for v in items[:8]] for k, items in failure.inputs.items()},
            "current_outputs": list(self.values), "timestamp": now_ms(),
        }
        if self.listening and node is not None:
            self._set_progress([failure.node_id], "error")
        self._send("execution_error", error, record=True)
        self.result.status = "error"
        self.result.error = error
        return self.result


class _DependencyCycleError(Exception):
    """Nodes created by expansion wait on each other."""


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


def _rewrite_result(value: Any, renames: dict[str, str]) -> Any:
    """A result value ``[local_id, slot]`` pointing into the expansion becomes a Link to the renamed node."""
    if is_link(value) and value[0] in renames:
        return Link(renames[value[0]], int(value[1]))
    if is_link(value):
        return Link(value[0], int(value[1]))
    return parse_value(value) if isinstance(value, dict) else value


def _merge(results: list[CallResult], output_is_list: tuple[bool, ...],
           values: dict[str, list[list[Any]]]) -> list[list[Any]]:
    """Per output slot, one item per call (or the call's list items for list outputs); links resolved."""
    outputs: list[list[Any]] = [[] for _ in output_is_list]
    for result in results:
        for slot, value in enumerate(result.values[:len(outputs)]):
            if type(value) is Link:
                outputs[slot].extend(values[value.src][value.slot])
            elif output_is_list[slot] and isinstance(value, (list, tuple)):
                outputs[slot].extend(value)
            else:
                outputs[slot].append(value)
    return outputs


def _merge_ui(results: list[CallResult]) -> dict[str, Any] | None:
    """UI dicts of all calls merged key by key (lists concatenated)."""
    merged: dict[str, Any] | None = None
    for result in results:
        if not result.ui:
            continue
        merged = merged or {}
        for key, value in result.ui.items():
            if isinstance(value, list):
                merged.setdefault(key, []).extend(value)
            else:
                merged[key] = value
    return merged
