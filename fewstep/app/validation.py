"""Validation of API-format prompts before anything runs, in ComfyUI's ``node_errors`` shape.

Each error is ``{"type", "message", "details", "extra_info": {"input_name", ...}}``; errors are grouped per
node as ``{node_id: {"errors": [...], "dependent_outputs": [...], "class_type": str}}``. Error types:
``invalid_prompt``, ``missing_node_type``, ``prompt_no_outputs``, ``required_input_missing``,
``bad_linked_input`` (malformed link, link to a missing node or output index), ``return_type_mismatch``,
``invalid_input_type``, ``value_smaller_than_min``, ``value_bigger_than_max``, ``value_not_in_list``,
``custom_validation_failed``, ``exception_during_validation``, ``dependency_cycle`` and the summary
``prompt_outputs_failed_validation``.

The graph is valid when at least one requested output validates (ComfyUI's rule); the outputs that fail
are dropped and their errors still reported. Every pass is iterative and linear in the graph size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fewstep.app.api import WIDGET_TYPES, Input
from fewstep.app.graph import GraphError, GraphNode, Link, parse_prompt
from fewstep.app.jsonlimits import too_deep

if TYPE_CHECKING:
    from fewstep.app.registry import NodeDef, Registry

COMBO_LIST_LIMIT = 20  # longer option lists are elided in messages, as ComfyUI does


@dataclass
class Validation:
    """The outcome of :func:`validate_prompt`.

    Args:
        ok: at least one output validated; the graph may run (only ``outputs``).
        error: the prompt-level error (ComfyUI shape) or None.
        node_errors: per-node errors (also filled when ``ok`` but some outputs failed).
        outputs: the output node ids that validated, in prompt order.
        nodes: the parsed graph with widget constants coerced (reused by the executor).
    """

    ok: bool
    error: dict[str, Any] | None
    node_errors: dict[str, Any]
    outputs: list[str]
    nodes: dict[str, GraphNode] = field(default_factory=dict)


def make_error(kind: str, message: str, details: str = "", **extra: Any) -> dict[str, Any]:
    """One error in ComfyUI's shape."""
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


# ---------------------------------------------------------------------------------------------
# Values and types
# ---------------------------------------------------------------------------------------------


def types_compatible(received: Any, expected: Any) -> bool:
    """Link type check, ComfyUI's ``comfy_execution/validation.py::validate_node_input`` (non-strict):
    ``not received != expected`` first (a wildcard ``str`` subclass whose ``__ne__`` says "equal" accepts
    anything), ``*`` on either side, a declared type that is not a string accepts only an equal one, else
    overlap of ``"A,B"`` unions; and ours: COMBO takes STRING."""
    if not received != expected:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    if received == "*" or expected == "*":
        return True
    if expected == "COMBO":
        return received in ("COMBO", "STRING")
    received_set = {t.strip() for t in received.split(",")}
    expected_set = {t.strip() for t in expected.split(",")}
    return "*" in received_set or "*" in expected_set or not received_set.isdisjoint(expected_set)


def coerce_constant(port: Input, value: Any) -> Any:
    """The constant converted to the port's widget type; ValueError says why it cannot be."""
    kind = port.type
    if kind == "INT":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        number = float(value) if isinstance(value, (float, str)) else math.nan
        if not number.is_integer():
            raise ValueError(f"{value!r} is not an integer")
        return int(number)
    if kind == "FLOAT":
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:   # an int of hundreds of digits: too large for a float
                raise ValueError(f"{str(value)[:40]}... is too large for a FLOAT") from None
            if not math.isfinite(number):   # NaN/Infinity pass every min/max comparison
                raise ValueError(f"{value!r} is not a finite number")
            return number
        raise ValueError(f"{value!r} is not a number")
    if kind == "BOOLEAN":
        if isinstance(value, bool):
            return value
        if value in (0, 1) or (isinstance(value, str) and value.lower() in ("true", "false", "0", "1")):
            return str(value).lower() in ("true", "1")
        raise ValueError(f"{value!r} is not a boolean")
    if kind == "STRING":
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{value!r} is not a string")
    return value


def _range_errors(port: Input, value: Any) -> list[dict[str, Any]]:
    """min / max / choices checks of one coerced constant."""
    info = {"input_name": port.name, "received_value": value}
    if port.type in ("INT", "FLOAT"):
        if port.min is not None and value < port.min:
            return [make_error("value_smaller_than_min", f"Value {value} smaller than min of {port.min}",
                               f"{port.name}", **info)]
        if port.max is not None and value > port.max:
            return [make_error("value_bigger_than_max", f"Value {value} bigger than max of {port.max}",
                               f"{port.name}", **info)]
    if port.type == "COMBO":
        choices = port.resolved_choices()
        if value not in choices:
            shown = choices if len(choices) <= COMBO_LIST_LIMIT else [*choices[:COMBO_LIST_LIMIT], "..."]
            return [make_error("value_not_in_list", "Value not in list",
                               f"{port.name}: {value!r} not in {shown}", **info)]
    return []


# ---------------------------------------------------------------------------------------------
# One node
# ---------------------------------------------------------------------------------------------


def _link_errors(port: Input, link: Link, nodes: Mapping[str, GraphNode], registry: Registry,
                 check_type: bool, declared: Any = None) -> tuple[list[dict[str, Any]], str | None]:
    """Errors of one linked input, and the received type."""
    info = {"input_name": port.name, "linked_node": link.as_json()}
    source = nodes.get(link.src)
    if source is None:
        return [make_error("bad_linked_input", "Link to a node that is not in the graph",
                           f"{port.name} links to missing node {link.src!r}", **info)], None
    source_def = registry.get(source.class_type)
    if source_def is None:
        return [], None  # reported on the source node itself
    n_out = len(source_def.output_types)
    if not 0 <= link.slot < n_out:
        return [make_error("bad_linked_input", "Link to an output index that does not exist",
                           f"{port.name} links to output {link.slot} of node {link.src!r} "
                           f"({source.class_type} has {n_out} outputs)", **info)], None
    received = source_def.output_types[link.slot]
    if check_type and not types_compatible(received, port.type if declared is None else declared):
        return [make_error("return_type_mismatch", "Return type mismatch between linked nodes",
                           f"{port.name}, received_type({received}) mismatch input_type({port.type})",
                           received_type=received, **info)], received
    return [], received


def _constant_errors(node: GraphNode, port: Input, skip_ranges: bool) -> list[dict[str, Any]]:
    """Coerce a widget constant in place and check its range."""
    value = node.inputs[port.name]
    kind, vtype = port.type, type(value)
    if (vtype is int and kind == "INT") or (vtype is float and kind == "FLOAT" and math.isfinite(value)):
        if skip_ranges or ((port.min is None or value >= port.min) and (port.max is None or value <= port.max)):
            return []
        return _range_errors(port, value)
    if (vtype is str and kind == "STRING") or (vtype is bool and kind == "BOOLEAN"):
        return []
    if not port.is_widget and port.type != "COMBO":
        return []
    items = value if isinstance(value, list) else [value]
    if not items:   # an empty list maps the node over nothing: every check was skipped, then it failed raw
        return [make_error("invalid_input_type", f"Input {port.name!r} got an empty list",
                           f"{port.name}, []", input_name=port.name, received_value=value)]
    coerced = []
    for item in items:
        try:
            coerced.append(coerce_constant(port, item))
        except (ValueError, TypeError) as exc:
            return [make_error("invalid_input_type", f"Failed to convert an input value to a {port.type} value",
                               f"{port.name}, {item!r}, {exc}", input_name=port.name, received_value=item)]
    node.inputs[port.name] = coerced if isinstance(value, list) else coerced[0]
    if skip_ranges:
        return []
    return [err for item in coerced for err in _range_errors(port, item)][:1]


def _custom_errors(node: GraphNode, node_def: NodeDef, received: dict[str, str]) -> list[dict[str, Any]]:
    """The node's own validator (constants by name, linked inputs as None)."""
    hook = node_def.validator
    kwargs = {name: (None if type(v) is Link else v) for name, v in node.inputs.items()
              if name in node_def.ports}
    for name in node_def.ports:
        kwargs.setdefault(name, None)
    if hook.params is not None and "input_types" in hook.params:
        kwargs["input_types"] = received
    try:
        result = hook.call(kwargs)
    except Exception as exc:
        return [make_error("exception_during_validation", "Exception when validating node",
                           f"{type(exc).__name__}: {exc}")]
    if result is True:
        return []
    message = result if isinstance(result, str) else "Custom validation failed for node"
    return [make_error("custom_validation_failed", message, message)]


def node_errors_of(node: GraphNode, node_def: NodeDef, nodes: Mapping[str, GraphNode],
                   registry: Registry) -> list[dict[str, Any]]:
    """Every error of one node's own inputs (not of its ancestors)."""
    hook = node_def.validator
    custom_params: frozenset[str] | None = frozenset() if hook is None else hook.params
    wants_types = custom_params is not None and "input_types" in custom_params
    errors: list[dict[str, Any]] = []
    received: dict[str, str] = {}
    for port in node_def.schema.inputs:
        if port.name not in node.inputs:
            if not port.optional:
                errors.append(make_error("required_input_missing", "Required input is missing",
                                         port.name, input_name=port.name))
            continue
        value = node.inputs[port.name]
        shape = _shape_error(node, port, value, custom_params, strict=not node_def.classic)
        if shape is not None:
            errors.append(shape)
        elif type(value) is Link:
            link_errors, rtype = _link_errors(port, value, nodes, registry, check_type=not wants_types,
                                              declared=node_def.declared_types.get(port.name))
            errors += link_errors
            if rtype is not None:
                received[port.name] = rtype
        else:
            skip = custom_params is None or port.name in custom_params
            errors += _constant_errors(node, port, skip_ranges=skip)
    errors += _extra_input_errors(node, node_def)
    errors += _undeclared_link_errors(node, node_def, nodes, registry)
    if hook is not None and not errors:
        errors += _custom_errors(node, node_def, received)
    return errors


def _undeclared_link_errors(node: GraphNode, node_def: NodeDef, nodes: Mapping[str, GraphNode],
                            registry: Registry) -> list[dict[str, Any]]:
    """Links to inputs ``INPUT_TYPES`` does not declare (``**kwargs`` nodes) run too: their source and
    output index must exist; their type is not checked (ComfyUI checks declared inputs only)."""
    errors: list[dict[str, Any]] = []
    for name, link in node.links():
        if name not in node_def.ports:
            errors += _link_errors(Input(name, "*"), link, nodes, registry, check_type=False)[0]
    return errors


MAX_CONSTANT_DEPTH = 32   # nesting of one constant input; deeper values broke hashing and encoding at run time


def _looks_like_link(raw: Any) -> bool:
    """``[node_id, something]`` that is not a valid link (e.g. slot ``1.5``): meant as one, malformed."""
    return type(raw) is list and len(raw) == 2 and isinstance(raw[0], str) and isinstance(raw[1], (int, float)) \
        and not isinstance(raw[1], bool)


def _shape_error(node: GraphNode, port: Input, value: Any, custom_params: frozenset[str] | None, *,
                 strict: bool) -> dict[str, Any] | None:
    """A malformed link, a constant nested too deep, or (``strict``) a constant where only a link works.

    These passed validation and then failed raw inside the node (``"samples": 5`` on a LATENT input).
    ``strict`` is for our declarative nodes: classic ComfyUI nodes keep ComfyUI's rule (a constant of a
    non-widget type passes to the node). A wildcard (``*``, a non-string declared type), a forced-input
    widget type or a node validating the input itself may take any constant.
    """
    if type(value) is Link:
        return None
    info = {"input_name": port.name, "received_value": value if not isinstance(value, (list, dict)) else None}
    if _looks_like_link(node.raw.get("inputs", {}).get(port.name)):
        return make_error("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, "
                          "slot_index]", f"{port.name}, {value!r}: the slot must be a whole number", **info)
    if isinstance(value, (dict, list)) and too_deep(value, MAX_CONSTANT_DEPTH):
        return make_error("invalid_input_type", f"Input {port.name!r} is nested more than "
                          f"{MAX_CONSTANT_DEPTH} levels deep", port.name, **info)
    wildcard = not isinstance(port.type, str) or "*" in port.type or port.type in WIDGET_TYPES
    if not strict or wildcard or port.force_input or (custom_params is not None and port.name in custom_params):
        return None
    return make_error("invalid_input_type", f"Input {port.name!r} takes a link from a {port.type} output, "
                      f"got a constant", f"{port.name}, {type(value).__name__} constant", **info)


def _extra_input_errors(node: GraphNode, node_def: NodeDef) -> list[dict[str, Any]]:
    """Inputs the schema does not declare are passed through (classic nodes read them); only their
    nesting is bounded, so one cannot break the run's key hashing or the history encoding."""
    errors = []
    for name, value in node.inputs.items():
        if name not in node_def.ports and type(value) is not Link and isinstance(value, (dict, list)) \
                and too_deep(value, MAX_CONSTANT_DEPTH):
            errors.append(make_error("invalid_input_type", f"Input {name!r} is nested more than "
                                     f"{MAX_CONSTANT_DEPTH} levels deep", name, input_name=name))
    return errors


# ---------------------------------------------------------------------------------------------
# The whole graph
# ---------------------------------------------------------------------------------------------


def reachable_order(roots: Sequence[str], nodes: Mapping[str, GraphNode]) -> tuple[list[str], set[str]]:
    """Post-order (sources first) of everything linked from ``roots``, and the nodes on a cycle."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    order: list[str] = []
    cyclic: set[str] = set()
    for root in roots:
        if root in state:
            continue
        stack: list[tuple[str, Any]] = [(root, iter(nodes[root].link_list))]
        path = [root]
        state[root] = 1
        while stack:
            node_id, children = stack[-1]
            advanced = False
            for _, link in children:
                src = link.src
                if src not in nodes:
                    continue
                if state.get(src) == 1:
                    cyclic.update(path[path.index(src):])
                    continue
                if src not in state:
                    state[src] = 1
                    stack.append((src, iter(nodes[src].link_list)))
                    path.append(src)
                    advanced = True
                    break
            if not advanced:
                stack.pop()
                path.pop()
                state[node_id] = 2
                order.append(node_id)
    return order, cyclic


def _unknown_classes(nodes: Mapping[str, GraphNode], registry: Registry) -> dict[str, Any]:
    errors: dict[str, Any] = {}
    for node_id, node in nodes.items():
        if not node.class_type:
            err = make_error("invalid_prompt", f"Node {node_id!r} has no class_type", "", node_id=node_id)
        elif registry.get(node.class_type) is None:
            err = make_error("missing_node_type", f"Node '{node.class_type}' not found. The custom node may "
                             "not be installed.", f"Node ID '#{node_id}'", node_id=node_id,
                             class_type=node.class_type)
        else:
            continue
        errors[node_id] = {"errors": [err], "dependent_outputs": [], "class_type": node.class_type}
    return errors


def _select_outputs(nodes: Mapping[str, GraphNode], registry: Registry,
                    targets: Iterable[str] | None) -> tuple[list[str], dict[str, Any] | None]:
    if targets is not None:
        targets = [str(t) for t in targets]
        missing = [t for t in targets if t not in nodes]
        if missing:
            return [], make_error("invalid_prompt", f"Requested outputs are not in the graph: {missing}", "")
        return targets, None
    outputs = [i for i, n in nodes.items() if registry.get(n.class_type).schema.is_output_node]
    if not outputs:
        return [], make_error("prompt_no_outputs", "Prompt has no outputs", "")
    return outputs, None


def _fail(error: dict[str, Any], node_errors: dict[str, Any] | None = None,
          nodes: dict[str, GraphNode] | None = None) -> Validation:
    return Validation(False, error, node_errors or {}, [], nodes or {})


def validate_prompt(prompt: Any, registry: Registry, targets: list[str] | None = None) -> Validation:
    """Validate an API-format prompt against the registry.

    Args:
        prompt: ``{node_id: {"class_type", "inputs"}}``.
        registry: the :class:`app.registry.Registry`.
        targets: node ids to produce (ComfyUI's ``partial_execution_targets``); default every output node.
    """
    try:
        nodes = parse_prompt(prompt)
    except GraphError as exc:
        return _fail(make_error("invalid_prompt", str(exc), ""))
    unknown = _unknown_classes(nodes, registry)
    if unknown:
        first = next(iter(unknown.values()))["errors"][0]
        return _fail(first, unknown, nodes)
    outputs, error = _select_outputs(nodes, registry, targets)
    if error is not None:
        return _fail(error, {}, nodes)
    order, cyclic = reachable_order(outputs, nodes)
    node_errors: dict[str, Any] = {}
    bad: set[str] = set()
    for node_id in order:  # sources first, so a node knows whether its sources are valid
        node = nodes[node_id]
        errors = node_errors_of(node, registry.get(node.class_type), nodes, registry)
        if node_id in cyclic:
            errors.append(make_error("dependency_cycle", "Dependency cycle detected",
                                     f"node {node_id!r} depends on itself through its inputs"))
        if errors:
            node_errors[node_id] = {"errors": errors, "dependent_outputs": [], "class_type": node.class_type}
            bad.add(node_id)
        elif any(link.src in bad for _, link in node.links()):
            bad.add(node_id)  # invalid only because of an ancestor: not reported itself
    _fill_dependent_outputs(outputs, nodes, bad, node_errors)
    good = [o for o in outputs if o not in bad]
    if not good:
        details = "; ".join(f"{i}: {e['errors'][0]['message']}" for i, e in node_errors.items())
        return _fail(make_error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details),
                     node_errors, nodes)
    return Validation(True, None, node_errors, good, nodes)


def _fill_dependent_outputs(outputs: Sequence[str], nodes: Mapping[str, GraphNode], bad: set[str],
                            node_errors: dict[str, Any]) -> None:
    """Record, on each failing node, the outputs that depend on it."""
    for output in outputs:
        if output not in bad:
            continue
        seen = {output}
        stack = [output]
        while stack:
            node_id = stack.pop()
            if node_id in node_errors:
                node_errors[node_id]["dependent_outputs"].append(output)
            for _, link in nodes[node_id].links():
                if link.src in nodes and link.src not in seen and link.src in bad:
                    seen.add(link.src)
                    stack.append(link.src)
