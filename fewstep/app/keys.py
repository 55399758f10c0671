"""Content keys of a run's nodes: the addresses of their outputs in the output cache.

A key hashes the class, its schema version, the fingerprint hook's value (if any), the node id for
not-idempotent nodes (and those that read their ``UNIQUE_ID``), every constant input (tensors by content,
``app.cache.encode_value``) and the keys of its linked sources, with the slot. Changing a seed therefore
changes the keys of the sampler and what follows, nothing upstream; identical subgraphs share keys.
"""

from __future__ import annotations

from typing import Any

from fewstep.app.cache import encode_value, fingerprint_part, node_key
from fewstep.app.graph import DynamicGraph, GraphNode, Link
from fewstep.app.node_io import NodeInputs
from fewstep.app.registry import NodeDef, Registry
from fewstep.app.scheduler import DependencyCycleError, NodeFailed


class NodeKeys:
    """Computes and memoises the keys of one run's nodes.

    Args:
        graph: the run's graph.
        registry: node definitions (schema version, fingerprint hook, idempotence).
        inputs: hidden values for fingerprint hooks.
        plan_keys: stable keys of earlier runs of the same prompt; keys this run finds stable are added
            to it (the plan is shared by later runs).
    """

    def __init__(self, graph: DynamicGraph, registry: Registry, inputs: NodeInputs,
                 plan_keys: dict[str, str]) -> None:
        self.graph = graph
        self.registry = registry
        self.inputs = inputs
        self.keys: dict[str, str] = dict(plan_keys)  # a copy: unstable keys stay in this run
        self.plan_keys = plan_keys
        self.unstable: set[str] = set()              # nodes whose key may change between identical runs

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
                raise NodeFailed(current, DependencyCycleError(f"node {current!r} depends on itself"), None)
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

    def _fingerprint(self, node: GraphNode, node_def: NodeDef) -> Any:
        kwargs = {name: (None if type(v) is Link else v) for name, v in node.inputs.items()}
        kwargs.update(self.inputs.hidden(node, node_def))
        try:
            return node_def.fingerprint.call(kwargs)
        except Exception:  # ComfyUI's rule: a failing fingerprint means "always re-run"
            return float("nan")
