"""Validated graphs of recently run prompts, reused by content so a re-run skips parsing and validation.

A :class:`Plan` is what the executor needs from validation (the parsed, coerced nodes and the outputs to
produce) plus the content keys of the nodes whose key depends on nothing but the prompt and the registry
(filled in while jobs run). :class:`PlanMemo` finds the plan of a prompt by its *content*: the signature
is the prompt in ``marshal`` format 0, which spells out every builtin value with its exact type, so any
changed constant, link or class gives a different signature and a fresh validation. ``marshal`` refuses
every non-builtin object (tensors, arrays, subclasses of str or int...): such prompts are validated on every
run. The builtin values it accepts are all keyed by content (``app.cache.encode_value``), so a memoised key
is the key a fresh computation would give (code objects, which marshal also accepts and a prompt has no
reason to hold, are the one exception).

What is *not* reused, because it can change between identical prompts:

- nodes with a custom validator (``VALIDATE_INPUTS``) or a COMBO whose options come from a callable (file
  lists) are validated again on every run; any error sends the prompt through full validation;
- keys of nodes with a fingerprint hook (``IS_CHANGED``), of nodes created by expansion, and of all their
  descendants are computed again by each job (see ``app.executor``);
- a plan belongs to one registry object at one ``Registry.version``; registering a pack (or swapping the
  executor's registry) makes every memoised plan of it miss.
"""

from __future__ import annotations

import marshal
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from fewstep.app.graph import GraphNode
from fewstep.app.registry import NodeDef, Registry
from fewstep.app.validation import Validation, node_errors_of, reachable_order


@dataclass
class Plan:
    """The reusable part of one prompt's validation.

    Args:
        registry / version: the registry it was validated against, and its version then.
        nodes: parsed nodes, widget constants coerced (never mutated by jobs: each job copies the dict).
        outputs: the output node ids to produce.
        recheck: ids of reachable nodes validated again on every run (custom validator, callable COMBO).
        keys: ``{node_id: content key}`` of nodes whose key depends only on the prompt (jobs add to it).
    """

    registry: Registry
    version: int
    nodes: dict[str, GraphNode]
    outputs: list[str]
    recheck: list[str] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)


def registry_version(registry: Registry) -> int:
    """The registry's change counter (registries without one never change)."""
    return getattr(registry, "version", 0)


def _volatile(node_def: NodeDef) -> bool:
    """True when the node's validation can change without the prompt changing."""
    if node_def.validator is not None:
        return True
    return any(port.type == "COMBO" and callable(port.choices) for port in node_def.schema.inputs)


def make_plan(validation: Validation, registry: Registry) -> Plan:
    """A plan from a successful validation."""
    nodes = validation.nodes
    order, _ = reachable_order(validation.outputs, nodes)
    recheck = [i for i in order if _volatile(registry.get(nodes[i].class_type))]
    return Plan(registry, registry_version(registry), nodes, list(validation.outputs), recheck)


def still_valid(plan: Plan) -> bool:
    """Validate the plan's volatile nodes again; False if any of them now has an error."""
    registry = plan.registry
    for node_id in plan.recheck:
        node = plan.nodes[node_id]
        if node_errors_of(node, registry.get(node.class_type), plan.nodes, registry):
            return False
    return True


def signature(prompt: Any, targets: list[str] | None) -> tuple[bytes, tuple[str, ...] | None] | None:
    """The content signature of a prompt and its targets, or None when it cannot be taken.

    ``marshal`` format 0 spells out builtin values with their exact types (``1``, ``1.0``, ``True``,
    lists and tuples differ; no object-sharing or interning flags, so equal content gives equal bytes)
    and refuses every other type: a prompt holding a tensor or a str subclass has no signature.
    """
    try:
        data = marshal.dumps(prompt, 0)
    except (ValueError, TypeError):  # an object marshal cannot spell: no memo for this prompt
        return None
    return data, (tuple(str(t) for t in targets) if targets is not None else None)


class PlanMemo:
    """The plans of the last ``size`` distinct prompts, least recently used dropped first; thread-safe."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._plans: OrderedDict[tuple[Any, ...], Plan] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, sig: tuple[Any, ...] | None, registry: Registry) -> Plan | None:
        """The plan stored for ``sig`` if it belongs to ``registry`` at its current version."""
        if sig is None:
            return None
        with self._lock:
            plan = self._plans.get(sig)
            if plan is None or plan.registry is not registry or plan.version != registry_version(registry):
                self.misses += 1
                return None
            self._plans.move_to_end(sig)
            self.hits += 1
            return plan

    def put(self, sig: tuple[Any, ...] | None, plan: Plan) -> None:
        """Remember ``plan`` for ``sig`` (None: the prompt has no signature, nothing is stored)."""
        if sig is None:
            return
        with self._lock:
            self._plans[sig] = plan
            self._plans.move_to_end(sig)
            while len(self._plans) > self.size:
                self._plans.popitem(last=False)

    def clear(self) -> None:
        """Forget every plan."""
        with self._lock:
            self._plans.clear()
