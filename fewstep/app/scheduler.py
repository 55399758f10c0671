"""The scheduler of one run: which nodes are needed, which wait on which, which are ready.

Iterative (no recursion) and linear in the graph size. Scheduling a node queues its *strong* sources
(links that are not lazy, plus the lazy inputs the node asked for); a node becomes ready when its last
pending source completes. Nodes found in the output cache complete at once (``from_cache``). The
scheduler also holds the run's store of outputs (``values``): under cache policy ``none`` (``release``)
a source's outputs leave it as soon as every node that holds them has run, and come back (the source is
scheduled again) if an expansion or a lazy input needs them later.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from fewstep.app.graph import DynamicGraph, GraphNode, Link
from fewstep.app.registry import Registry

QUEUED, EXPANDED, DONE = 1, 2, 3


class Interrupted(Exception):
    """The run was interrupted (between nodes: ``node_id`` None)."""

    def __init__(self, node_id: str | None) -> None:
        self.node_id = node_id


class NodeFailed(Exception):
    """A node raised: the run ends with ``execution_error``."""

    def __init__(self, node_id: str, exc: BaseException, inputs: dict[str, list[Any]] | None) -> None:
        self.node_id = node_id
        self.exc = exc
        self.inputs = inputs or {}


class DependencyCycleError(Exception):
    """Nodes created by expansion wait on each other."""


class Scheduler:
    """Ready queue, waiting lists and the run's output store.

    Args:
        graph: the run's graph (grows when a node expands).
        registry: node definitions (which inputs are lazy or raw links).
        release: drop a source's outputs once no scheduled node needs them (cache policy ``none``).
        from_cache: ``from_cache(node_id)`` completes the node from the output cache and returns True,
            or returns False (the node must run).
    """

    def __init__(self, graph: DynamicGraph, registry: Registry, *, release: bool,
                 from_cache: Callable[[str], bool]) -> None:
        self.graph = graph
        self.registry = registry
        self.release = release
        self.from_cache = from_cache
        self.values: dict[str, list[list[Any]]] = {}  # node -> per output slot, its items
        self.state: dict[str, int] = {}
        self.pending: dict[str, int] = {}             # node -> sources not done yet
        self.waiting: dict[str, list[str]] = {}       # source -> nodes waiting on it
        self.strong_lazy: dict[str, set[str]] = {}    # node -> lazy inputs it asked for
        self.ready: deque[str] = deque()
        self.consumers: dict[str, int] = {}       # node -> consumers scheduled and not finished
        self.consumes: dict[str, list[str]] = {}  # node -> the sources it holds (one entry per link)
        self.released: set[str] = set()

    def schedule(self, roots: Iterable[str]) -> None:
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
            if self.from_cache(node_id):
                continue
            state[node_id] = QUEUED
            node = nodes[node_id]
            sources = self._strong_sources(node)
            if self.release:
                self._hold_sources(node_id, node)
            new.append((node_id, sources))
            stack.extend(sources)
        for node_id, sources in reversed(new):  # sources were appended last: count them first
            self._wait_for(node_id, sources)

    def cached(self, node_id: str, outputs: list[list[Any]]) -> None:
        """``node_id`` is served from the cache: done, its dependents not yet told (see :meth:`complete`)."""
        self.values[node_id] = outputs
        self.state[node_id] = DONE

    def complete(self, node_id: str, outputs: list[list[Any]] | None = None) -> None:
        """``node_id`` finished (with ``outputs`` when it ran): its waiting dependents may become ready."""
        if outputs is not None:
            self.values[node_id] = outputs
        if self.release:
            self._let_go(node_id)
        self.state[node_id] = DONE
        pending, ready = self.pending, self.ready
        for dependent in self.waiting.pop(node_id, ()):
            pending[dependent] -= 1
            if pending[dependent] == 0:
                ready.append(dependent)

    def lazy_sources(self, node: GraphNode, wanted: Iterable[str]) -> list[str]:
        """Sources of the lazy inputs in ``wanted`` that the node did not ask for before and that are absent."""
        strong = self.strong_lazy.setdefault(node.id, set())
        sources = []
        for name in wanted:
            value = node.inputs.get(name)
            if type(value) is Link and name not in strong and value.src not in self.values:
                strong.add(name)
                sources.append(value.src)
        return sources

    def wait_on(self, node_id: str, sources: list[str]) -> bool:
        """Schedule ``sources`` for a node that was about to run; False if they are all done already."""
        self.schedule(sources)
        self.pending[node_id] = 0
        self._wait_for(node_id, set(sources))
        if self.pending[node_id] == 0:
            self.ready.pop()  # _wait_for queued it again; the caller runs it now instead
            return False
        return True

    def expanded(self, node_id: str, links: set[str], roots: list[str]) -> None:
        """The node expanded: it completes once its results' ``links`` are done; ``roots`` run too."""
        if self.release:  # the node reads its result links when the expansion finishes
            self.consumes.setdefault(node_id, []).extend(links)
            for src in links:
                self.consumers[src] = self.consumers.get(src, 0) + 1
        self.state[node_id] = EXPANDED
        self.schedule(sorted(links) + roots)
        self.pending[node_id] = 0
        self._wait_for(node_id, links)

    def check_finished(self) -> None:
        """Raise if nodes are still waiting when nothing is left to run (expansions waiting on each other)."""
        stuck = [n for n, s in self.state.items() if s != DONE]
        if stuck:
            message = f"dependency cycle: nodes {stuck[:10]} wait on each other"
            raise NodeFailed(stuck[0], DependencyCycleError(message), None)

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

    def _wait_for(self, node_id: str, sources: set[str]) -> None:
        count = self.pending.get(node_id, 0)
        for src in sources:
            if self.state.get(src) != DONE:
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
