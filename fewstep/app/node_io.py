"""What goes into one node's calls and what comes out of them.

Inputs: each input is a list of items (a constant is one item, a link the source's output list); a node
runs once per item of its longest input, shorter lists repeating their last item, unless its schema takes
whole lists. Hidden values (``UNIQUE_ID``, ``PROMPT`` ...) are added by keyword. Outputs: the calls'
results merged per slot, UI dicts merged key by key, and node expansion spliced into the run's graph.
"""

from __future__ import annotations

from typing import Any

from fewstep.app.classic import CallResult
from fewstep.app.graph import (
    DynamicGraph,
    GraphError,
    GraphNode,
    Link,
    is_link,
    parse_value,
    rewrite_expansion,
)
from fewstep.app.registry import NodeDef, Registry

Values = dict[str, list[list[Any]]]
# hidden kinds whose value the engine supplies; any other hidden input takes the prompt's value
SPECIAL_HIDDEN = frozenset({"UNIQUE_ID", "PROMPT", "EXTRA_PNGINFO", "DYNPROMPT", "AUTH_TOKEN_COMFY_ORG",
                            "API_KEY_COMFY_ORG"})  # node id -> per output slot, the list of items


class NodeInputs:
    """Builds the keyword arguments of a node's calls from the run's graph, store and extra data.

    Args:
        graph: the run's graph (``PROMPT`` / ``DYNPROMPT`` hidden values).
        extra_data: the prompt's ``extra_data`` (``EXTRA_PNGINFO`` and API-key hidden values).
    """

    def __init__(self, graph: DynamicGraph, extra_data: dict[str, Any]) -> None:
        self.graph = graph
        self.extra_data = extra_data

    def gather(self, node: GraphNode, node_def: NodeDef, values: Values) -> dict[str, list[Any]]:
        """Each input as a list of items: constants are one item, links the source's output list.

        Classic nodes also get, as ComfyUI's ``execution.py::get_input_data`` gives them, every *linked*
        input the prompt has even if ``INPUT_TYPES`` does not declare it (``**kwargs`` / dynamic-input
        nodes) and the prompt's value of a hidden input of a non-special kind (e.g. ``("*",)``);
        undeclared constants are dropped.
        """
        inputs: dict[str, list[Any]] = {}
        classic = node_def.classic
        for name, value in node.inputs.items():
            port = node_def.ports.get(name)
            if type(value) is Link:
                if port is None and not classic:
                    continue
                if port is not None and port.raw_link:
                    inputs[name] = [value.as_json()]
                elif value.src in values:
                    inputs[name] = values[value.src][value.slot]
                else:
                    inputs[name] = [None]  # a lazy input not evaluated (yet)
            elif port is not None or (classic and name in node_def.hidden_names):
                inputs[name] = [value]
        return inputs

    def hidden(self, node: GraphNode, node_def: NodeDef) -> dict[str, Any]:
        """The values the engine supplies for hidden inputs of the special kinds (others come from the
        prompt, see :meth:`gather`)."""
        hidden = {}
        for keyword, kind in node_def.hidden_names.items():
            if kind not in SPECIAL_HIDDEN:
                continue
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

    def calls(self, node: GraphNode, node_def: NodeDef, inputs: dict[str, list[Any]]) -> list[dict[str, Any]]:
        """Keyword sets, one per call: item i of every input, shorter lists repeating their last item."""
        hidden = self.hidden(node, node_def) if node_def.hidden_names else {}
        if node_def.schema.is_input_list:
            if node_def.classic:  # ComfyUI passes hidden values as one-item lists too (get_input_data)
                hidden = {k: [v] for k, v in hidden.items()}
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


def merge(results: list[CallResult], output_is_list: tuple[bool, ...], values: Values) -> list[list[Any]]:
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


def merge_ui(results: list[CallResult]) -> dict[str, Any] | None:
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


def splice_expansion(node: GraphNode, results: list[CallResult], graph: DynamicGraph,
                     registry: Registry) -> tuple[set[str], list[str]]:
    """Add each call's subgraph to ``graph`` with ids ``"{node}.{call}.{local}"``.

    The results' values are rewritten to Links into the added nodes. Returns the sources the node's
    results link to (it waits on them) and the added output nodes (they run too).
    """
    display = graph.get_display_node_id(node.id)
    roots: list[str] = []
    for index, result in enumerate(results):
        if not result.expand:
            continue
        new_nodes, renames = rewrite_expansion(node.id, index, result.expand, graph.nodes)
        local_of = {new_id: local for local, new_id in renames.items()}
        for new in new_nodes.values():
            new_def = registry.get(new.class_type)
            if new_def is None:
                raise GraphError(f"expansion of node {node.id!r} uses unknown class {new.class_type!r}")
            new.display_id = display
            graph.add_ephemeral(new, dict(result.expand[local_of[new.id]]))
            if new_def.schema.is_output_node:
                roots.append(new.id)
        result.values = tuple(_rewrite_result(v, renames) for v in result.values)
    links = {v.src for r in results for v in r.values if type(v) is Link}
    return links, roots


def _rewrite_result(value: Any, renames: dict[str, str]) -> Any:
    """A result value ``[local_id, slot]`` pointing into the expansion becomes a Link to the renamed node."""
    if is_link(value) and value[0] in renames:
        return Link(renames[value[0]], int(value[1]))
    if is_link(value):
        return Link(value[0], int(value[1]))
    return parse_value(value) if isinstance(value, dict) else value
