"""The editor's UI workflow format converted to the API format, on the server.

ComfyUI leaves this to the browser (``graphToPrompt`` in the frontend); fewstep does it here from the
node schemas, so ``fewstep run`` and ``POST /prompt`` accept a workflow saved from the editor.

What the conversion does (each rule follows what the editor does when it queues a prompt):

- **Formats.** Schema version 0.4 (``links`` as ``[id, origin_id, origin_slot, target_id, target_slot,
  type]``) and version 1 (``links`` as objects); both may appear in one file (subgraph definitions always
  use objects).
- **Subgraphs** (``definitions.subgraphs``; an instance's ``type`` is the definition's uuid) are flattened;
  an inner node gets the execution id ``"<instance id>:<inner id>"`` (nested: ``"a:b:c"``). An inner
  input wired to the subgraph's input node (id -10) takes what feeds the instance's input of the same
  name, else the instance's promoted widget value, else keeps the inner node's own widget value. An
  instance output follows the link into the subgraph's output node (id -20).
- **Muted** nodes (mode 2) are dropped, and an input fed by one is removed from its consumer (the widget
  value too), as the editor does. A muted or bypassed subgraph instance drops its whole contents.
- **Bypassed** nodes (mode 4) are dropped; each output passes through one of the node's inputs: the
  input at the same index when its type fits both the output and the consumer, else the first input
  of exactly the consumer's type, else the first compatible one. No fit: the consumer's input is left
  unconnected (it keeps its widget value if it has one).
- **Reroutes**: ``Reroute`` nodes are followed to the real source; native reroutes (``extra.reroutes``,
  ``links[].parentId``) are drawing only, the link already names the real ends.
- **PrimitiveNode**: its value replaces the widget value of every input it feeds (through reroutes too).
- **Widget values**: ``widgets_values`` is positional over the schema's widget inputs, in schema order,
  with frontend-only entries skipped: ``control_after_generate`` after a seed-like widget (INT with
  ``control_after_generate`` or named ``seed``/``noise_seed``; FLOAT with the flag), two entries
  (mode + filter list) after a COMBO with the flag, the ``upload`` button after an image/video upload
  combo and two entries (player + upload) after an audio upload combo. A dict-form ``widgets_values``
  is read by name. The newer editors' ``widgets_values_named`` is used where the positional list does
  not fit the schema's layout (the editor itself restores positionally by default). Missing values fall
  back to the schema default. A widget turned into a linked input takes the link; its saved value is ignored.
  List values are wrapped as ``{"__value__": [...]}``.
- ``Note``, ``MarkdownNote``, ``PrimitiveNode`` and ``Reroute`` never appear in the output.

Unknown class types are **passed through** (their linked inputs only; the raw ``widgets_values`` are
kept under ``_meta``) so that validation reports them as ``missing_node_type`` together with every
other error of the graph, exactly as for an API-format prompt. Structural damage (a link id that does
not exist, a link to a missing node, a subgraph that contains itself, a legacy group node) raises
:class:`WorkflowConversionError` naming the node.

Not handled: legacy group nodes (``extra.groupNodes``; re-save them as subgraphs), the primitive's
"Run widget replace on values" text substitutions, and dynamic inputs of v3 nodes (autogrow / dynamic
combo names such as ``model.seed``) beyond passing their links and named values through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fewstep.app.api import Input, Schema

if TYPE_CHECKING:
    from fewstep.app.registry import Registry

SUBGRAPH_INPUT_NODE = "-10"   # id of a subgraph's input node inside its definition
SUBGRAPH_OUTPUT_NODE = "-20"  # id of a subgraph's output node
MODE_NEVER = 2                # litegraph LGraphEventMode.NEVER: "muted"
MODE_BYPASS = 4               # LGraphEventMode.BYPASS
FRONTEND_ONLY_TYPES = frozenset({"Note", "MarkdownNote", "PrimitiveNode", "Reroute"})
SEED_WIDGET_NAMES = ("seed", "noise_seed")  # the editor adds a seed control to these INTs by name


class WorkflowConversionError(ValueError):
    """A UI workflow that cannot be converted; the message names the node (id and type) and the fault."""


def is_ui_workflow(graph: Any) -> bool:
    """True for the editor's workflow format (``nodes`` list + ``links``); False for an API prompt."""
    return isinstance(graph, dict) and isinstance(graph.get("nodes"), list) and "links" in graph


def ui_to_api(workflow: dict, registry: Registry) -> dict[str, dict[str, Any]]:
    """Convert a UI workflow (schema 0.4 or 1) into an API-format prompt.

    Args:
        workflow: the JSON the editor saves (``nodes``, ``links``, optional ``definitions.subgraphs``).
        registry: anything with ``get(class_type) -> obj | None`` where ``obj.schema`` is a
            :class:`app.api.Schema`.

    Returns:
        ``{execution_id: {"class_type", "inputs", "_meta": {"title"}}}``; links are ``[id, slot]``.

    Raises:
        WorkflowConversionError: the workflow is structurally broken (see the module docstring).
    """
    if not is_ui_workflow(workflow):
        raise WorkflowConversionError("not a UI workflow: expected a 'nodes' list and 'links'")
    try:
        return _Converter(workflow, registry).convert()
    except WorkflowConversionError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError, RecursionError) as exc:
        # The editor's JSON is loosely shaped and arrives from anyone: a field of an unexpected type deep
        # inside (``inputs[0] = 5``, ``definitions = 7``, ``origin_slot: Infinity``) must be the caller's
        # error with a reason, never a crash of whoever converts (the server answered 500).
        raise WorkflowConversionError(f"malformed workflow ({type(exc).__name__}: {exc})") from exc


# ---------------------------------------------------------------------------------------------
# Parsed graphs and scopes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Link:
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: str


@dataclass(frozen=True)
class _Graph:
    """One level of nodes: the root workflow or a subgraph definition."""

    label: str                        # for messages: "workflow" or "subgraph 'name' (uuid)"
    nodes: dict[str, dict[str, Any]]  # node id (str) -> node JSON
    links: dict[str, _Link]           # link id (str) -> link
    inputs: tuple[dict[str, Any], ...] = ()   # subgraph inputs (definition order)
    outputs: tuple[dict[str, Any], ...] = ()  # subgraph outputs


@dataclass(frozen=True)
class _Scope:
    """A graph as instantiated: the root, or one subgraph instance (nested instances chain up)."""

    graph: _Graph
    prefix: tuple[str, ...] = ()         # instance ids from the root down to this scope
    instance: dict[str, Any] | None = None
    parent: _Scope | None = None

    def exec_id(self, node_id: str) -> str:
        return ":".join((*self.prefix, node_id))


# What following a link ends at.
@dataclass(frozen=True)
class _Source:          # a real node's output: becomes the link [node_id, slot]
    node_id: str
    slot: int


@dataclass(frozen=True)
class _Value:           # a constant pushed in by a PrimitiveNode or a subgraph's promoted widget
    value: Any


@dataclass(frozen=True)
class _Muted:           # a muted node: the consumer loses this input entirely
    node_id: str


_Resolved = _Source | _Value | _Muted | None  # None: nothing connected, keep the widget value


def _node_name(node: dict[str, Any]) -> str:
    return f"node {node.get('id')} ({node.get('type')})"


def _parse_link(raw: Any, where: str) -> tuple[str, _Link]:
    if isinstance(raw, list | tuple) and len(raw) >= 5:
        link_id, origin, origin_slot, target, target_slot = raw[:5]
        link_type = raw[5] if len(raw) > 5 else "*"
    elif isinstance(raw, dict) and "id" in raw:
        link_id, origin, origin_slot = raw["id"], raw.get("origin_id"), raw.get("origin_slot")
        target, target_slot, link_type = raw.get("target_id"), raw.get("target_slot"), raw.get("type", "*")
    else:
        raise WorkflowConversionError(f"{where}: malformed link {raw!r}")
    try:
        return str(link_id), _Link(str(origin), int(origin_slot), str(target), int(target_slot),
                                   str(link_type))
    except (TypeError, ValueError, OverflowError) as exc:   # OverflowError: int(Infinity)
        raise WorkflowConversionError(f"{where}: malformed link {raw!r}") from exc


def _parse_graph(data: dict[str, Any], label: str) -> _Graph:
    nodes: dict[str, dict[str, Any]] = {}
    for node in data.get("nodes") or []:
        if not isinstance(node, dict) or "id" not in node:
            raise WorkflowConversionError(f"{label}: malformed node {node!r}")
        nodes[str(node["id"])] = node
    links = dict(_parse_link(raw, label) for raw in data.get("links") or [] if raw is not None)
    return _Graph(label, nodes, links, tuple(data.get("inputs") or ()), tuple(data.get("outputs") or ()))


def _collect_definitions(data: dict[str, Any], found: dict[str, _Graph]) -> None:
    """Every subgraph definition by uuid, including definitions nested inside definitions."""
    for sub in (data.get("definitions") or {}).get("subgraphs") or []:
        sub_id = str(sub.get("id"))
        if sub_id not in found:
            found[sub_id] = _parse_graph(sub, f"subgraph {sub.get('name')!r} ({sub_id})")
            _collect_definitions(sub, found)


# ---------------------------------------------------------------------------------------------
# Type matching for bypass (litegraph's isValidConnection)
# ---------------------------------------------------------------------------------------------


def _types_compatible(a: Any, b: Any) -> bool:
    """Editor rule: '*' or '' matches anything; otherwise case-insensitive, 'A,B' lists intersect."""
    a = "" if a in (None, "*") else str(a)
    b = "" if b in (None, "*") else str(b)
    if not a or not b or a == b:
        return True
    a, b = a.lower(), b.lower()
    if "," not in a and "," not in b:
        return a == b
    return any(_types_compatible(x, y) for x in a.split(",") for y in b.split(","))


def _bypass_input_index(node: dict[str, Any], slot: int, target_type: str) -> int | None:
    """Which input a bypassed node's output ``slot`` passes through (None: none fits)."""
    inputs = node.get("inputs") or []
    outputs = node.get("outputs") or []
    if not inputs or slot >= len(outputs):
        return None
    if target_type in ("*", ""):
        return slot if slot < len(inputs) else 0
    output_type = outputs[slot].get("type", "*")
    same = inputs[slot] if slot < len(inputs) else None
    if same and _types_compatible(same.get("type"), output_type) and _types_compatible(same.get("type"),
                                                                                        target_type):
        return slot
    for index, port in enumerate(inputs):
        if port.get("type") == target_type:
            return index
    for index, port in enumerate(inputs):
        if _types_compatible(port.get("type"), output_type) and _types_compatible(port.get("type"),
                                                                                  target_type):
            return index
    return None


# ---------------------------------------------------------------------------------------------
# widgets_values -> named widget inputs
# ---------------------------------------------------------------------------------------------


def _has_seed_control(port: Input) -> bool:
    """The editor adds a ``control_after_generate`` widget after this widget."""
    if port.type == "INT":
        return bool(port.control_after_generate) or port.name in SEED_WIDGET_NAMES
    return port.type in ("FLOAT", "COMBO") and bool(port.control_after_generate)


def _frontend_widget_count(port: Input) -> int:
    """How many frontend-only entries follow this widget's value in ``widgets_values``."""
    count = 0
    if _has_seed_control(port):
        count += 2 if port.type == "COMBO" else 1  # a COMBO also gets a "control_filter_list" text
    extra = port.extra or {}
    if extra.get("image_upload") or extra.get("animated_image_upload") or extra.get("video_upload"):
        count += 1                                  # the "upload" button
    elif extra.get("audio_upload"):
        count += 2                                  # the "audioUI" player and the "upload" button
    return count


def editor_input_order(schema: Schema) -> list[Input]:
    """Inputs in the order the editor makes their slots and widgets: ``/object_info`` lists required
    inputs, then optional ones, so an optional widget declared between required ones (R0Train's
    ``weight_2``) comes after all of them in ``widgets_values``."""
    return sorted(schema.inputs, key=lambda port: port.optional)   # stable: declared order within each


def _widget_layout(schema: Schema, legacy_forced: bool) -> list[str | None]:
    """Position in ``widgets_values`` -> widget input name (None: a frontend-only entry).

    ``legacy_forced``: editors before 1.16 also kept a position for ``forceInput`` widgets (and their
    seed control), which the current editor migrates away; we skip those positions the same way.
    """
    layout: list[str | None] = []
    for port in editor_input_order(schema):
        if port.is_widget:
            layout.append(port.name)
            layout.extend([None] * _frontend_widget_count(port))
        elif legacy_forced and port.force_input and port.type in ("INT", "FLOAT", "STRING", "BOOLEAN",
                                                                  "COMBO"):
            layout.extend([None] * (1 + _has_seed_control(port)))
    return layout


def _default_value(port: Input) -> Any:
    if port.default is not None:
        return port.default
    if port.type == "COMBO":
        choices = port.resolved_choices()
        return choices[0] if choices else None
    return None


def _saved_widget_values(node: dict[str, Any], schema: Schema) -> dict[str, Any]:
    """The saved value of each widget input, by name (only those the node actually saved)."""
    names = {port.name for port in schema.inputs if port.is_widget}
    values = node.get("widgets_values")
    if isinstance(values, dict):
        return {k: v for k, v in values.items() if k in names}
    saved: dict[str, Any] = {}
    layout_fits = False
    if isinstance(values, list):
        layout = _widget_layout(schema, legacy_forced=False)
        forced = _widget_layout(schema, legacy_forced=True)
        if len(values) != len(layout) and len(values) == len(forced):
            layout = forced
        layout_fits = len(values) == len(layout)
        saved = {name: value for name, value in zip(layout, values, strict=False) if name is not None}
    # Editor 1.58 restores the positional list unless the "NamedValuesRestore" setting is on, so the
    # positional value wins when the list fits our layout; when it does not (a frontend-only widget we
    # do not model) the names are the safer reading.
    named = node.get("widgets_values_named")
    if isinstance(named, dict):
        saved.update({k: v for k, v in named.items() if k in names and (not layout_fits or k not in saved)})
    return saved


def _wrap(value: Any) -> Any:
    """API format: a list constant must be boxed, a bare 2-list would read as a link."""
    return {"__value__": list(value)} if isinstance(value, list | tuple) else value


def _widget_inputs(node: dict[str, Any], schema: Schema) -> dict[str, Any]:
    saved = _saved_widget_values(node, schema)
    inputs: dict[str, Any] = {}
    for port in schema.inputs:
        if not port.is_widget:
            continue
        value = saved[port.name] if port.name in saved else _default_value(port)
        if value is not None or port.name in saved:
            inputs[port.name] = _wrap(value)
    return inputs


def _primitive_value(node: dict[str, Any]) -> _Value | None:
    """A PrimitiveNode's value: its first widget ("value"; a seed control may follow it)."""
    named = node.get("widgets_values_named")
    if isinstance(named, dict) and "value" in named:
        return _Value(named["value"])
    values = node.get("widgets_values")
    if isinstance(values, list) and values:
        return _Value(values[0])
    return None


# ---------------------------------------------------------------------------------------------
# The converter
# ---------------------------------------------------------------------------------------------


class _Converter:
    def __init__(self, workflow: dict[str, Any], registry: Registry) -> None:
        self.registry = registry
        self.root = _parse_graph(workflow, "workflow")
        self.definitions: dict[str, _Graph] = {}
        _collect_definitions(workflow, self.definitions)
        group_nodes = (workflow.get("extra") or {}).get("groupNodes") or {}
        self.group_node_types = {f"workflow{sep}{name}" for name in group_nodes for sep in (">", "/")}

    def convert(self) -> dict[str, dict[str, Any]]:
        prompt: dict[str, dict[str, Any]] = {}
        self._walk(_Scope(self.root), (), prompt)
        return prompt

    def _walk(self, scope: _Scope, stack: tuple[str, ...], prompt: dict[str, dict[str, Any]]) -> None:
        """Emit every executable node of ``scope``; descend into active subgraph instances."""
        for node_id, node in scope.graph.nodes.items():
            node_type = str(node.get("type"))
            if node_type in FRONTEND_ONLY_TYPES or node.get("mode") in (MODE_NEVER, MODE_BYPASS):
                continue
            if node_type in self.group_node_types:
                raise WorkflowConversionError(
                    f"{scope.graph.label}: {_node_name(node)} is a legacy group node; these are not "
                    "supported — open the workflow in the editor and convert it to a subgraph")
            if node_type in self.definitions:
                if node_type in stack:
                    raise WorkflowConversionError(
                        f"{scope.graph.label}: {_node_name(node)} instantiates a subgraph that contains itself")
                self._walk(self._inner_scope(scope, node), (*stack, node_type), prompt)
                continue
            prompt[scope.exec_id(node_id)] = self._convert_node(scope, node)

    def _inner_scope(self, scope: _Scope, instance: dict[str, Any]) -> _Scope:
        graph = self.definitions[str(instance.get("type"))]
        return _Scope(graph, (*scope.prefix, str(instance["id"])), instance, scope)

    def _convert_node(self, scope: _Scope, node: dict[str, Any]) -> dict[str, Any]:
        node_type = str(node.get("type"))
        node_def = self.registry.get(node_type)
        schema: Schema | None = node_def.schema if node_def is not None else None
        inputs = _widget_inputs(node, schema) if schema is not None else {}
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            name = self._slot_name(slot, schema)
            where = f"{scope.graph.label}: {_node_name(node)} input {name!r}"
            resolved = self._follow_link(scope, slot["link"], slot.get("type", "*"), set(), where)
            if isinstance(resolved, _Source):
                inputs[name] = [resolved.node_id, resolved.slot]
            elif isinstance(resolved, _Value):
                inputs[name] = _wrap(resolved.value)
            elif isinstance(resolved, _Muted):
                inputs.pop(name, None)
        meta: dict[str, Any] = {"title": node.get("title") or (schema.display_name if schema else None)
                                or node_type}
        if schema is None and node.get("widgets_values"):
            meta["widgets_values"] = node["widgets_values"]  # unmappable without a schema; for diagnosis
        return {"class_type": node_type, "inputs": inputs, "_meta": meta}

    @staticmethod
    def _slot_name(slot: dict[str, Any], schema: Schema | None) -> str:
        """The input's name; a converted widget whose slot name is unknown falls back to the widget's."""
        name = str(slot.get("name"))
        widget_name = (slot.get("widget") or {}).get("name")
        if schema is not None and schema.input(name) is None and widget_name and schema.input(widget_name):
            return str(widget_name)
        return name

    # -- following links -----------------------------------------------------------------------

    def _follow_link(self, scope: _Scope, link_id: Any, target_type: str, visited: set, where: str
                     ) -> _Resolved:
        """Follow the link ``link_id`` of ``scope`` back to what really feeds it."""
        link = scope.graph.links.get(str(link_id))
        if link is None:
            raise WorkflowConversionError(f"{where}: link {link_id} does not exist in {scope.graph.label}")
        if link.origin_id == SUBGRAPH_INPUT_NODE:
            return self._from_subgraph_input(scope, link.origin_slot, target_type, visited, where)
        origin = scope.graph.nodes.get(link.origin_id)
        if origin is None:
            raise WorkflowConversionError(
                f"{where}: link {link_id} comes from node {link.origin_id}, which is not in {scope.graph.label}")
        return self._from_output(scope, origin, link.origin_slot, target_type, visited, where)

    def _from_output(self, scope: _Scope, node: dict[str, Any], slot: int, target_type: str,
                     visited: set, where: str) -> _Resolved:
        """Resolve output ``slot`` of ``node``: a real source, or through a virtual/bypassed node."""
        key = (scope.prefix, str(node["id"]), slot)
        if key in visited:
            raise WorkflowConversionError(
                f"{where}: the links through {_node_name(node)} in {scope.graph.label} form a loop")
        visited.add(key)
        node_type = str(node.get("type"))
        if node_type == "PrimitiveNode":
            return _primitive_value(node)
        if node_type == "Reroute":
            return self._through_input(scope, node, 0, target_type, visited, where)
        if node_type in FRONTEND_ONLY_TYPES:
            return None
        if node.get("mode") == MODE_BYPASS:
            index = _bypass_input_index(node, slot, target_type)
            return None if index is None else self._through_input(scope, node, index, target_type,
                                                                  visited, where)
        if node.get("mode") == MODE_NEVER:
            return _Muted(scope.exec_id(str(node["id"])))
        if node_type in self.definitions:
            return self._from_subgraph_output(scope, node, slot, target_type, visited, where)
        return _Source(scope.exec_id(str(node["id"])), slot)

    def _through_input(self, scope: _Scope, node: dict[str, Any], index: int, target_type: str,
                       visited: set, where: str) -> _Resolved:
        inputs = node.get("inputs") or []
        if index >= len(inputs) or inputs[index].get("link") is None:
            return None
        return self._follow_link(scope, inputs[index]["link"], target_type, visited, where)

    def _from_subgraph_output(self, scope: _Scope, instance: dict[str, Any], slot: int,
                              target_type: str, visited: set, where: str) -> _Resolved:
        inner = self._inner_scope(scope, instance)
        outputs = inner.graph.outputs
        if slot >= len(outputs):
            raise WorkflowConversionError(
                f"{where}: {_node_name(instance)} has no output {slot} ({inner.graph.label} has "
                f"{len(outputs)})")
        # the link into the output node's slot (outputs[].linkIds says the same, when saved)
        link_ids = [lid for lid, link in inner.graph.links.items()
                    if link.target_id == SUBGRAPH_OUTPUT_NODE and link.target_slot == slot]
        if not link_ids:
            return None  # nothing wired to that output inside the subgraph
        return self._follow_link(inner, link_ids[0], target_type, visited, where)

    def _from_subgraph_input(self, scope: _Scope, index: int, target_type: str, visited: set,
                             where: str) -> _Resolved:
        """An inner link from the subgraph's input node: go out to the instance's input."""
        if scope.instance is None or scope.parent is None or index >= len(scope.graph.inputs):
            raise WorkflowConversionError(f"{where}: link from subgraph input {index}, which does not exist "
                                          f"in {scope.graph.label}")
        name = scope.graph.inputs[index].get("name")
        for slot in scope.instance.get("inputs") or []:
            if slot.get("name") == name and slot.get("link") is not None:
                return self._follow_link(scope.parent, slot["link"], target_type, visited, where)
        return self._promoted_value(scope, index)

    def _promoted_value(self, scope: _Scope, index: int) -> _Value | None:
        """The instance's own widget value for subgraph input ``index`` (None: keep the inner value).

        An instance saves one value per subgraph input that feeds a widget, in input order; as for
        plain nodes the editor restores that list by default, and ``widgets_values_named`` otherwise.
        """
        instance = scope.instance or {}
        name = scope.graph.inputs[index].get("name")
        values = instance.get("widgets_values")
        if isinstance(values, dict) and name in values:
            return _Value(values[name])
        if isinstance(values, list):
            widget_inputs = [i for i, sub_input in enumerate(scope.graph.inputs)
                             if self._feeds_widget(scope.graph, sub_input)]
            position = widget_inputs.index(index) if index in widget_inputs else len(values)
            if position < len(values) and values[position] is not None:
                return _Value(values[position])
        named = instance.get("widgets_values_named")
        if isinstance(named, dict) and name in named:
            return _Value(named[name])
        return None

    @staticmethod
    def _feeds_widget(graph: _Graph, sub_input: dict[str, Any]) -> bool:
        """True when a subgraph input is wired to a widget input of an inner node."""
        link_ids = {str(lid) for lid in sub_input.get("linkIds") or []}
        for link_id in link_ids:
            link = graph.links.get(link_id)
            target = graph.nodes.get(link.target_id) if link else None
            for slot in (target or {}).get("inputs") or []:
                if str(slot.get("link")) == link_id and slot.get("widget"):
                    return True
        return False
