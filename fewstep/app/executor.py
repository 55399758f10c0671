"""The executor: runs a validated API-format prompt.

Only ancestors of the requested outputs run, each after its inputs. One run (:class:`Run`) wires five
collaborators and keeps only the orchestration:

- :class:`~app.scheduler.Scheduler`: ready queue, waiting nodes, lazy inputs, the run's output store and
  releasing it under cache policy ``none`` (iterative, linear in the graph size; the
  :class:`~app.graph.DynamicGraph` grows when a node expands);
- :class:`~app.keys.NodeKeys`: content keys of the output cache;
- :class:`~app.node_io.NodeInputs` and the merge helpers: a node's call arguments (lists mapped per item,
  shorter lists repeating their last item, hidden values) and its merged results;
- :class:`~app.calls.NodeCaller`: the node's callable and ExecutionContext, lazy-input checks, blocked calls;
- :class:`~app.events.RunEvents`: ComfyUI's websocket events (see ``docs/engine-contract.md``).

Per node the run resolves inputs, asks ``check_lazy_status`` which lazy inputs are needed, calls the node
(async nodes run as tasks that overlap with each other and with sync nodes), then records the outputs in
the run's store and the output cache.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fewstep.app.api import InterruptedError_, Paths, use_paths
from fewstep.app.cache import CacheSet
from fewstep.app.calls import NodeCaller
from fewstep.app.classic import CallResult
from fewstep.app.events import Emit, RunEvents, error_data, no_emit, now_ms, summarize
from fewstep.app.graph import DynamicGraph, GraphNode
from fewstep.app.keys import NodeKeys
from fewstep.app.node_io import NodeInputs, merge, merge_ui, splice_expansion
from fewstep.app.plan import Plan, PlanMemo, make_plan, signature, still_valid
from fewstep.app.registry import NodeDef, Registry
from fewstep.app.scheduler import DependencyCycleError, Interrupted, NodeFailed, Scheduler
from fewstep.app.validation import Validation, validate_prompt
from fewstep.app.writes import OutputWriteError, OutputWriter

if TYPE_CHECKING:
    from fewstep.app.config import Config

__all__ = ["Executor", "RunResult", "Run", "Emit", "now_ms", "summarize", "is_out_of_memory"]

_ASYNC_POLL_S = 0.05  # how often an interrupt is noticed while only async nodes are running


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


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM, recognised by name so this module never imports torch."""
    return type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(exc)


class Executor:
    """Runs prompts against a registry with shared caches.

    Args:
        registry: the node registry.
        caches: output/model caches (policy switchable at run time); a new ``lru:64`` set by default.
        paths: where nodes read models and write outputs (made current with ``use_paths`` while running).

    ``writer`` (an :class:`~app.writes.OutputWriter`) writes the files nodes give to ``api.write_output``
    in the background; a job ends (success event, ``on_written``) after its files are complete.
    """

    def __init__(self, registry: Registry, caches: CacheSet | None = None, paths: Paths | None = None) -> None:
        self.registry = registry
        self.caches = caches or CacheSet()
        self.paths = paths or Paths()
        self.plans = PlanMemo()  # validated graphs + stable keys of recent prompts, by content
        self.writer = OutputWriter()

    def execute(self, prompt: dict[str, Any], *, prompt_id: str, extra_data: dict[str, Any] | None = None,
                targets: list[str] | None = None, emit: Emit = no_emit,
                interrupted: threading.Event | None = None,
                on_written: Callable[[RunResult], None] | None = None) -> RunResult:
        """Validate and run ``prompt``; never raises for node failures (they are in the result).

        Args:
            prompt: API-format graph. prompt_id: reported in every event.
            extra_data: ComfyUI's ``extra_data`` (``extra_pnginfo`` ...).
            targets: node ids to produce; default every output node.
            emit: ``emit(event_type, data)`` receives the run's events.
            interrupted: set it (from any thread) to stop the run between nodes or at a node's next
                progress/interrupt check.
            on_written: None: return once the job's output files are written, with the final result.
                Given: return as soon as the nodes have run (the result may still turn into an error) and
                call ``on_written(final_result)`` once the files are written — on the writer thread, or
                at once when nothing is pending — so the next job overlaps with the encoding.
        """
        with use_paths(self.paths):  # validation lists model files (combo choices) under these paths too
            plan = self._plan(prompt, targets)
            if not isinstance(plan, Plan):
                if on_written is not None:
                    on_written(plan)
                return plan
            run = Run(self, prompt, plan, prompt_id, extra_data or {}, emit, interrupted or threading.Event())
            try:
                result = run.run()
            finally:
                self.caches.end_job()
        if on_written is None:
            return run.finish(self.writer.wait(prompt_id))
        self.writer.when_done(prompt_id, lambda errors: on_written(run.finish(errors)))
        return result

    def remember(self, prompt: dict[str, Any], targets: list[str] | None, validation: Validation,
                 registry: Registry) -> None:
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


class Run:
    """One execution of a plan: runs the nodes the scheduler makes ready and records what they return."""

    def __init__(self, executor: Executor, prompt: dict[str, Any], plan: Plan, prompt_id: str,
                 extra_data: dict[str, Any], emit: Emit, interrupted: threading.Event) -> None:
        self.registry = executor.registry
        self.caches = executor.caches
        self.graph = DynamicGraph(prompt, dict(plan.nodes))  # a copy: expansion adds nodes to it
        self.targets = plan.outputs
        self.prompt_id = prompt_id
        self.interrupted = interrupted
        self.result = RunResult("success")
        self.events = RunEvents(emit, prompt_id, self.graph, self.result.messages)
        self.inputs = NodeInputs(self.graph, extra_data)
        self.keys = NodeKeys(self.graph, self.registry, self.inputs, plan.keys)
        # policy "none": a node's outputs leave the run's store once every consumer has run
        self.store_outputs = self.caches.outputs.policy.store
        self.scheduler = Scheduler(self.graph, self.registry, release=not self.store_outputs,
                                   from_cache=self._from_cache)
        self.expansions: dict[str, tuple[list[CallResult], float]] = {}
        self.tasks: dict[asyncio.Task[Any], tuple[str, float, dict[str, list[Any]]]] = {}
        self.collecting_cached: list[str] | None = None
        self.caller = NodeCaller(prompt_id, self.graph, extra_data, self.caches, self.inputs, self.events,
                                 interrupted, self.result.executed, executor.writer)

    # -- run ------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Run the nodes; a successful run's ending event waits for :meth:`finish` (its files)."""
        self.events.start()
        try:
            self._schedule_targets()
            if self._run_sync():
                asyncio.run(self._loop())
            self.scheduler.check_finished()
        except Interrupted as stop:
            return self._interrupted(stop.node_id)
        except NodeFailed as failure:
            return self._failed(failure)
        return self.result

    def finish(self, errors: list[OutputWriteError]) -> RunResult:
        """End a run whose output files have been written: ``execution_success``, or the first failed
        write reported as its node's error (that node's outputs leave the result and the output cache)."""
        if self.result.status != "success":
            return self.result                  # interrupted or failed: its ending was sent
        if not errors:
            self.events.success()
            return self.result
        for error in errors:
            self.result.outputs.pop(error.node_id, None)
            if error.node_id in self.graph.nodes and self.store_outputs:
                self.caches.forget(self.keys.key(error.node_id))
        first = errors[0]
        data = error_data(self.prompt_id, first.node_id, first.node_type, first, str(first),
                          "fewstep.app.writes.OutputWriteError", {}, self.result.executed + self.result.cached,
                          [])
        self.events.failed(data, first.node_id in self.graph.nodes)
        self.result.status, self.result.error = "error", data
        return self.result

    def _schedule_targets(self) -> None:
        """Schedule the outputs; the nodes served from the cache meanwhile are announced together."""
        self.collecting_cached = []
        self.scheduler.schedule(self.targets)
        cached, self.collecting_cached = self.collecting_cached, None
        self.events.cached(self._all_cached(cached))
        for node_id in cached:
            self._announce_cached(node_id)
        self.events.finished(cached)

    def _run_sync(self) -> bool:
        """Run ready nodes without an event loop until an async node is next; True if work remains.

        Most graphs have no async node: this skips creating an event loop per job.
        """
        ready, nodes, registry = self.scheduler.ready, self.graph.nodes, self.registry
        while ready:
            if self.interrupted.is_set():
                raise Interrupted(None)
            node_id = ready[0]
            if node_id not in self.expansions and registry.get(nodes[node_id].class_type).is_async:
                return True
            self._step(ready.popleft())
        return False

    async def _loop(self) -> None:
        ready = self.scheduler.ready
        try:
            while ready or self.tasks:
                if self.interrupted.is_set():
                    raise Interrupted(None)
                if ready:
                    self._step(ready.popleft())
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

    # -- cache ----------------------------------------------------------------------------------
    def _from_cache(self, node_id: str) -> bool:
        """Complete ``node_id`` from the output cache if its key is there (the scheduler's hook)."""
        entry = self.caches.get(self.keys.key(node_id))
        if entry is None:
            return False
        self.scheduler.cached(node_id, entry.outputs)
        self.result.cached.append(node_id)
        if entry.ui is not None:
            self.result.outputs[node_id] = entry.ui
        if self.collecting_cached is not None:
            self.collecting_cached.append(node_id)  # announced together once scheduling is done
        else:
            self._announce_cached(node_id)
            self.events.finished([node_id])
        return True

    def _all_cached(self, served: list[str]) -> list[str]:
        """``execution_cached``'s list: every node of the prompt whose outputs are cached, in prompt
        order, as ComfyUI's ``execution.py::PromptExecutor.execute`` lists them (it checks each prompt node,
        not only those the run reads: ancestors of a cached node count too)."""
        if not self.store_outputs:
            return served
        state = self.scheduler.state
        unread = {}
        for node_id in self.graph.nodes:
            if node_id not in state:
                try:
                    unread[node_id] = self.keys.key(node_id)
                except NodeFailed:  # a cycle among nodes that never run: not cached, reported nowhere
                    continue
        listed = set(served) | (self.caches.held(unread) if unread else set())
        if not listed:
            return []
        return [node_id for node_id in self.graph.nodes if node_id in listed]

    def _announce_cached(self, node_id: str) -> None:
        ui = self.result.outputs.get(node_id)
        if ui is not None:
            self.events.executed(node_id, ui)

    # -- one node -------------------------------------------------------------------------------
    def _step(self, node_id: str) -> None:
        if node_id in self.expansions:
            self._finish_expansion(node_id)
            return
        if self.store_outputs and self._from_cache(node_id):
            self.scheduler.complete(node_id)  # an identical node finished earlier in this job
            return
        node = self.graph.nodes[node_id]
        node_def = self.registry.get(node.class_type)
        inputs: dict[str, list[Any]] | None = None
        try:
            inputs = self.inputs.gather(node, node_def, self.scheduler.values)
            if node_def.lazy_check_name is not None:
                inputs = self._lazy_ready(node, node_def, inputs)
                if inputs is None:
                    return
            self._call(node, node_def, inputs)
        except (Interrupted, NodeFailed):
            raise
        except InterruptedError_ as exc:
            raise Interrupted(node_id) from exc
        except Exception as exc:
            raise NodeFailed(node_id, exc, inputs) from exc

    def _lazy_ready(self, node: GraphNode, node_def: NodeDef,
                    inputs: dict[str, list[Any]]) -> dict[str, list[Any]] | None:
        """Ask check_lazy_status and schedule the lazy inputs it wants.

        Returns None if the node must wait for them, else the inputs to call it with: gathered again
        whenever a wanted source completed at once (served from the output cache), so the node never
        sees ``None`` for an input it asked for (ComfyUI ``execution.py::execute`` re-reads its inputs
        after ``check_lazy_status`` the same way, from ``get_input_data``).
        """
        while True:
            sources = self.scheduler.lazy_sources(node, self.caller.lazy_wanted(node, node_def, inputs))
            if not sources:
                return inputs
            if self.scheduler.wait_on(node.id, sources):
                return None
            inputs = self.inputs.gather(node, node_def, self.scheduler.values)

    def _call(self, node: GraphNode, node_def: NodeDef, inputs: dict[str, list[Any]]) -> None:
        if self.events.listening:  # per-node events are built only for a listener
            self.events.executing(node)
        function = self.caller.function(node, node_def)
        started = time.perf_counter()
        if node_def.is_async:
            self.tasks[self.caller.start(node, node_def, function, inputs)] = (node.id, started, inputs)
            return
        results = self.caller.call(node, node_def, function, inputs)
        self._record(node, node_def, results, time.perf_counter() - started)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        node_id, started, inputs = self.tasks.pop(task)
        node = self.graph.nodes[node_id]
        try:
            results = task.result()
        except InterruptedError_ as exc:
            raise Interrupted(node_id) from exc
        except Exception as exc:
            raise NodeFailed(node_id, exc, inputs) from exc
        try:
            self._record(node, self.registry.get(node.class_type), results, time.perf_counter() - started)
        except (Interrupted, NodeFailed):
            raise
        except Exception as exc:
            raise NodeFailed(node_id, exc, inputs) from exc

    # -- results --------------------------------------------------------------------------------
    def _record(self, node: GraphNode, node_def: NodeDef, results: list[CallResult], seconds: float) -> None:
        self.result.node_times[node.id] = self.result.node_times.get(node.id, 0.0) + seconds
        if any(r.expand for r in results):
            if not node_def.schema.enable_expand:
                raise TypeError(f"{node.class_type} returned an expansion but its schema does not set enable_expand")
            links, roots = splice_expansion(node, results, self.graph, self.registry)
            self.expansions[node.id] = (results, seconds)
            self.scheduler.expanded(node.id, links, roots)
            return
        self._store(node, merge(results, node_def.output_is_list, self.scheduler.values), merge_ui(results))

    def _finish_expansion(self, node_id: str) -> None:
        """The expansion's result links are done: the expanded node's outputs are theirs."""
        results, _ = self.expansions.pop(node_id)
        node = self.graph.nodes[node_id]
        output_is_list = self.registry.get(node.class_type).output_is_list
        self._store(node, merge(results, output_is_list, self.scheduler.values), merge_ui(results))

    def _store(self, node: GraphNode, outputs: list[list[Any]], ui: dict[str, Any] | None) -> None:
        node_id = node.id
        self.result.executed.append(node_id)
        if self.store_outputs:  # policy "none" stores nothing: skip the key
            self.caches.put(self.keys.key(node_id), outputs, ui)
        if ui is not None:
            self.result.outputs[node_id] = ui
            self.events.executed(node_id, ui)
        if self.events.listening:
            self.events.finished([node_id])
        self.scheduler.complete(node_id, outputs)

    # -- endings --------------------------------------------------------------------------------
    def _interrupted(self, node_id: str | None) -> RunResult:
        node = self.graph.nodes.get(node_id) if node_id else None
        self.events.interrupted(node_id, node.class_type if node else None,
                                self.result.executed + self.result.cached)
        self.result.status = "interrupted"
        return self.result

    def _failed(self, failure: NodeFailed) -> RunResult:
        """Report a failure against the submitted node: a node created by an expansion is reported as the
        node that expanded (ComfyUI reports ``DynamicPrompt.get_real_node_id``, ``execution.py::execute``)."""
        if failure.node_id in self.graph.nodes:
            real = self.graph.get_real_node_id(failure.node_id)
            if real != failure.node_id:
                failure = NodeFailed(real, failure.exc, failure.inputs)
        node = self.graph.nodes.get(failure.node_id)
        exc = failure.exc
        message = str(exc)
        if is_out_of_memory(exc):
            dropped = self.caches.free_outputs()
            message += (f"\nCUDA out of memory in node {failure.node_id}: the output cache was freed "
                        f"({dropped} entries). Try a smaller batch or resolution, or a lower cache budget.")
        exc_type = "graph.DependencyCycleError" if isinstance(exc, DependencyCycleError) else (
            f"{type(exc).__module__}.{type(exc).__name__}".removeprefix("builtins."))
        error = error_data(self.prompt_id, failure.node_id, node.class_type if node else None, exc, message,
                           exc_type, failure.inputs, self.result.executed + self.result.cached,
                           list(self.scheduler.values))
        self.events.failed(error, node is not None)
        self.result.status = "error"
        self.result.error = error
        return self.result


def build_executor(config: Config) -> Executor:
    """The server's executor for ``config``: every pack (built-ins when ``config.builtin_nodes``, then its
    custom_nodes folders and entry points), its cache policy, its paths. ``fewstep serve`` builds it once in
    the server and once in each worker process."""
    from fewstep.app.registry import load_registry

    with use_paths(config.paths()):   # packs may read folder_paths while they import
        registry = load_registry(list(config.custom_nodes_dirs), builtin=config.builtin_nodes)
    return Executor(registry, CacheSet(config.cache), config.paths())
