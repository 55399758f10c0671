"""The graph model: API-format prompts as typed nodes and links, plus the live graph that grows when
nodes expand.

API format: ``{node_id: {"class_type": str, "inputs": {name: value | [src_id, slot]}, "_meta": {...}}}``.
A link is a two-item list ``[source_id: str, output_index: int]``; list constants are wrapped as
``{"__value__": [...]}`` so they cannot be mistaken for links.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_SCALARS = frozenset({int, str, float, bool, type(None)})


@dataclass(frozen=True, slots=True)
class Link:
    """A connection from output ``slot`` of node ``src``."""

    src: str
    slot: int

    def as_json(self) -> list[Any]:
        """The API-format spelling ``[src, slot]``."""
        return [self.src, self.slot]


def is_link(value: Any) -> bool:
    """True for ``[str, int]`` (the index may be an integral float, as ComfyUI allows)."""
    if type(value) is not list or len(value) != 2:
        return False
    if type(value[0]) is str and type(value[1]) is int:
        return True
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], (int, float)) and not isinstance(value[1], bool)
            and float(value[1]).is_integer())


def parse_value(value: Any) -> Any:
    """A raw API input value as a :class:`Link` or a constant (``__value__`` lists unwrapped)."""
    kind = type(value)
    if kind is int or kind is str or kind is float or kind is bool:
        return value
    if kind is Link:
        return value
    if is_link(value):
        return Link(value[0], int(value[1]))
    if isinstance(value, dict) and len(value) == 1 and "__value__" in value:
        return value["__value__"]
    return value


@dataclass(slots=True)
class GraphNode:
    """One node of a graph.

    Args:
        id: node id (opaque string; expanded nodes get ``"{parent}.{call}.{local}"``).
        class_type: registered class name.
        inputs: constants and :class:`Link` values by input name.
        parent: the node whose expansion created this one (None for nodes of the submitted prompt).
        display_id: the id the editor knows (the outermost original ancestor for expanded nodes).
    """

    id: str
    class_type: str
    inputs: dict[str, Any]
    parent: str | None = None
    display_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    link_list: list[tuple[str, Link]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.relink()

    def relink(self) -> None:
        """Recompute the cached link list after ``inputs`` changed."""
        self.link_list = [(name, value) for name, value in self.inputs.items() if type(value) is Link]

    def links(self) -> list[tuple[str, Link]]:
        """``(input_name, link)`` for each linked input."""
        return self.link_list


class GraphError(ValueError):
    """A prompt that is not an API-format graph at all (not a dict of nodes)."""


def parse_node(node_id: str, raw: Any) -> GraphNode:
    """One API-format node. Raises GraphError naming the node when its shape is wrong."""
    if type(raw) is not dict and not isinstance(raw, Mapping):
        raise GraphError(f"node {node_id!r}: expected an object with class_type and inputs, got {type(raw).__name__}")
    inputs = raw.get("inputs", {})
    if type(inputs) is not dict and not isinstance(inputs, Mapping):
        raise GraphError(f"node {node_id!r}: 'inputs' must be an object")
    class_type = raw.get("class_type")
    return GraphNode(str(node_id), class_type if isinstance(class_type, str) else "",
                     {k if type(k) is str else str(k): (v if type(v) in _SCALARS else parse_value(v))
                      for k, v in inputs.items()}, raw=dict(raw))


def parse_prompt(prompt: Any) -> dict[str, GraphNode]:
    """Every node of an API-format prompt."""
    if not isinstance(prompt, Mapping):
        raise GraphError(f"a prompt must be an object of nodes, got {type(prompt).__name__}")
    return {str(node_id): parse_node(str(node_id), raw) for node_id, raw in prompt.items()}


class DynamicGraph:
    """The live graph of one run: the submitted prompt plus nodes added by expansion.

    Method names follow ComfyUI's ``DynamicPrompt`` (``get_node``, ``get_real_node_id`` ...) because packs
    receive this object through the hidden ``DYNPROMPT`` input and walk it.
    """

    def __init__(self, prompt: Mapping[str, Any], nodes: dict[str, GraphNode] | None = None) -> None:
        self.original = dict(prompt)
        self.nodes: dict[str, GraphNode] = nodes if nodes is not None else parse_prompt(prompt)
        self.ephemeral: dict[str, dict[str, Any]] = {}

    # graph model ------------------------------------------------------------------------------
    def node(self, node_id: str) -> GraphNode:
        """The node ``node_id`` (KeyError if absent)."""
        return self.nodes[node_id]

    def add_ephemeral(self, node: GraphNode, raw: dict[str, Any]) -> None:
        """Add a node created by expansion."""
        if node.id in self.nodes:
            raise ValueError(f"expansion created node id {node.id!r}, which already exists")
        self.nodes[node.id] = node
        self.ephemeral[node.id] = raw

    # ComfyUI DynamicPrompt names ---------------------------------------------------------------
    def get_node(self, node_id: str) -> dict[str, Any]:
        """The node as an API-format dict (links as ``[src, slot]``)."""
        node = self.nodes.get(node_id)
        if node is None:
            raise KeyError(f"node {node_id!r} is not in the graph")
        inputs = {k: (v.as_json() if type(v) is Link else v) for k, v in node.inputs.items()}
        return {**node.raw, "class_type": node.class_type, "inputs": inputs}

    def has_node(self, node_id: str) -> bool:
        return node_id in self.nodes

    def all_node_ids(self) -> set[str]:
        return set(self.nodes)

    def get_original_prompt(self) -> dict[str, Any]:
        return self.original

    def get_parent_node_id(self, node_id: str) -> str | None:
        return self.nodes[node_id].parent

    def get_real_node_id(self, node_id: str) -> str:
        """The id of the submitted node this one descends from (itself for submitted nodes)."""
        node = self.nodes[node_id]
        while node.parent is not None:
            node = self.nodes[node.parent]
        return node.id

    def get_display_node_id(self, node_id: str) -> str:
        node = self.nodes[node_id]
        return node.display_id or self.get_real_node_id(node_id)


def rewrite_expansion(parent_id: str, call_index: int, subgraph: Mapping[str, Any],
                      existing: Mapping[str, GraphNode]) -> tuple[dict[str, GraphNode], dict[str, str]]:
    """Give an expansion's nodes deterministic ids ``"{parent}.{call}.{local}"`` and rewrite its links.

    Links to ids of the subgraph are rewritten; links to any other id must name a node already in the
    graph. Returns the new nodes and the ``local -> new id`` map (used to rewrite the result links).
    """
    if not isinstance(subgraph, Mapping):
        raise GraphError(f"node {parent_id!r} returned an expansion that is not an object of nodes")
    renames = {str(local): f"{parent_id}.{call_index}.{local}" for local in subgraph}
    nodes: dict[str, GraphNode] = {}
    for local, raw in subgraph.items():
        node = parse_node(renames[str(local)], raw)
        for name, value in list(node.inputs.items()):
            if type(value) is Link:
                src = renames.get(value.src, value.src)
                if src not in renames.values() and src not in existing:
                    raise GraphError(f"expansion of node {parent_id!r}: node {local!r} input {name!r} links "
                                     f"to unknown node {value.src!r}")
                node.inputs[name] = Link(src, value.slot)
        node.relink()
        node.parent = parent_id
        nodes[node.id] = node
    return nodes, renames
