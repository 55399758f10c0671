"""Adapter of classic ComfyUI node classes (``INPUT_TYPES``, ``RETURN_TYPES``, ``FUNCTION`` ...) into a
:class:`~app.api.Schema`, and the call protocol shared by classic and declarative nodes.

A classic class is read once at registration: its inputs become :class:`~app.api.Input` ports, its flags
become schema fields, and its optional hooks (``IS_CHANGED``, ``VALIDATE_INPUTS``, ``check_lazy_status``)
become plain callables that the engine calls with keyword arguments filtered to what they accept.
Nothing here imports ComfyUI; a pack written for ComfyUI that imports none of ComfyUI's own modules is
called exactly the way ComfyUI calls it.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from fewstep.app.api import ExecutionBlocker, Hidden, Input, NodeOutput, Output, Schema

# Option keys of a classic input that map onto Input fields; everything else goes to Input.extra.
_OPTION_FIELDS = {
    "default": "default", "min": "min", "max": "max", "step": "step", "round": "round",
    "multiline": "multiline", "lazy": "lazy", "forceInput": "force_input", "rawLink": "raw_link",
    "control_after_generate": "control_after_generate", "tooltip": "tooltip", "display_name": "display_name",
}
HIDDEN_KINDS = {h.value for h in Hidden} | {"AUTH_TOKEN_COMFY_ORG", "API_KEY_COMFY_ORG"}


class NodeDefinitionError(ValueError):
    """A node class whose declaration cannot be understood (reported as a pack failure)."""


# ---------------------------------------------------------------------------------------------
# Classic declaration -> Schema
# ---------------------------------------------------------------------------------------------


def _classic_input(name: str, spec: Any, optional: bool) -> Input:
    """One ``name: (TYPE, {options})`` entry of ``INPUT_TYPES`` as an Input."""
    if isinstance(spec, str):  # a bare type string is tolerated by ComfyUI too
        spec = (spec,)
    if not isinstance(spec, (list, tuple)) or not spec:
        raise NodeDefinitionError(f"input {name!r}: expected (TYPE, {{options}}), got {spec!r}")
    type_spec = spec[0]
    options = dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in options.items():
        if key in _OPTION_FIELDS:
            fields[_OPTION_FIELDS[key]] = value
        elif key != "options":
            extra[key] = value
    if isinstance(type_spec, (list, tuple)):
        return Input(name, "COMBO", choices=list(type_spec), optional=optional, extra=extra, **fields)
    # The port's type is a plain str: a str subclass such as AlwaysEqualProxy("*") compares equal to every
    # string and would pass for "COMBO", "INT" ... everywhere; its own comparison is kept for link checks
    # (declared_types). Any other object (e.g. {}) is named by its text, as ComfyUI's /object_info shows it.
    type_name = str.__str__(type_spec) if isinstance(type_spec, str) else str(type_spec)
    if type_name == "COMBO":
        return Input(name, "COMBO", choices=list(options.get("options", [])), optional=optional, extra=extra,
                     **fields)
    return Input(name, type_name, optional=optional, extra=extra, **fields)


def declared_types(cls: type) -> dict[str, Any]:
    """Inputs whose declared type is not a plain string or choice list (a ``str`` subclass such as
    ``AlwaysEqualProxy``, a dict ...): links to them are checked against the object itself, as ComfyUI's
    ``comfy_execution/validation.py::validate_node_input`` does (``not received != declared`` first)."""
    found: dict[str, Any] = {}
    declared = _read_input_types(cls)
    for section in ("required", "optional"):
        for input_name, spec in dict(declared.get(section) or {}).items():
            type_spec = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
            if type(type_spec) is not str and not isinstance(type_spec, (list, tuple)):
                found[input_name] = type_spec
    return found


def _read_input_types(cls: type) -> dict[str, Any]:
    """Call ``INPUT_TYPES()`` and check its shape."""
    try:
        declared = cls.INPUT_TYPES()
    except Exception as exc:  # a broken declaration is the pack's fault, reported by the registry
        raise NodeDefinitionError(f"INPUT_TYPES() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(declared, Mapping):
        raise NodeDefinitionError(f"INPUT_TYPES() must return a dict, got {type(declared).__name__}")
    return dict(declared)


def classic_schema(name: str, cls: type, display_name: str | None = None) -> tuple[Schema, dict[str, str]]:
    """Translate a classic class into a Schema plus its hidden inputs ``{keyword: kind}``."""
    declared = _read_input_types(cls)
    inputs: list[Input] = []
    for section, optional in (("required", False), ("optional", True)):
        for input_name, spec in dict(declared.get(section) or {}).items():
            port = _classic_input(input_name, spec, optional)
            if port.type == "COMBO":  # choices may list files: re-read INPUT_TYPES on each request
                port = _with_live_choices(port, cls, section)
            inputs.append(port)
    hidden_names = {key: str(kind) for key, kind in dict(declared.get("hidden") or {}).items()}
    return_types = tuple(getattr(cls, "RETURN_TYPES", ()) or ())
    names = tuple(getattr(cls, "RETURN_NAMES", None) or ())
    is_list = tuple(getattr(cls, "OUTPUT_IS_LIST", None) or ())
    tooltips = tuple(getattr(cls, "OUTPUT_TOOLTIPS", None) or ())
    outputs = []
    for i, out_type in enumerate(return_types):
        type_name = "COMBO" if isinstance(out_type, (list, tuple)) else str(out_type)
        outputs.append(Output(names[i] if i < len(names) else type_name, type_name,
                              is_list=bool(is_list[i]) if i < len(is_list) else False,
                              tooltip=tooltips[i] if i < len(tooltips) else None))
    schema = Schema(
        node_id=name, display_name=display_name or name, category=getattr(cls, "CATEGORY", "sd"),
        description=getattr(cls, "DESCRIPTION", "") or "", inputs=tuple(inputs), outputs=tuple(outputs),
        hidden=tuple(Hidden(k) for k in hidden_names.values() if k in Hidden._value2member_map_),
        is_output_node=bool(getattr(cls, "OUTPUT_NODE", False)),
        not_idempotent=bool(getattr(cls, "NOT_IDEMPOTENT", False)),
        is_input_list=bool(getattr(cls, "INPUT_IS_LIST", False)), enable_expand=True,
        deprecated=bool(getattr(cls, "DEPRECATED", False)), experimental=bool(getattr(cls, "EXPERIMENTAL", False)),
    )
    return schema, hidden_names


def _with_live_choices(port: Input, cls: type, section: str) -> Input:
    """A copy of ``port`` whose choices are re-read from ``INPUT_TYPES()`` each time they are asked for."""
    fixed = list(port.choices or [])

    def live() -> list[Any]:
        try:
            spec = dict(cls.INPUT_TYPES().get(section) or {}).get(port.name)
            return list(_classic_input(port.name, spec, port.optional).choices or [])
        except Exception:  # keep the choices read at registration rather than failing validation
            return fixed

    return replace(port, choices=live)


def jsonable(value: Any) -> Any:
    """Tuples -> lists recursively, so ``INPUT_TYPES`` output serialises like ComfyUI's."""
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def classic_input_info(cls: type) -> dict[str, Any]:
    """``/object_info``'s ``input`` and ``input_order`` from a fresh ``INPUT_TYPES()`` call."""
    declared = _read_input_types(cls)
    info: dict[str, Any] = {}
    order: dict[str, list[str]] = {}
    for section in ("required", "optional", "hidden"):
        entries = dict(declared.get(section) or {})
        if entries:
            info[section] = jsonable(entries)
            order[section] = list(entries)
    return {"input": info, "input_order": order}


# ---------------------------------------------------------------------------------------------
# Hooks: called with only the keywords they accept
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hook:
    """An optional node hook and the keywords it accepts (``None`` = any, it takes ``**kwargs``)."""

    fn: Callable[..., Any]
    params: frozenset[str] | None
    is_async: bool = False

    def call(self, kwargs: Mapping[str, Any]) -> Any:
        """Call with ``kwargs`` filtered to the accepted names; an ``async def`` hook is awaited (ComfyUI
        awaits ``VALIDATE_INPUTS``, ``check_lazy_status`` and ``IS_CHANGED`` when they are coroutines)."""
        if self.params is None:
            result = self.fn(**kwargs)
        else:
            result = self.fn(**{k: v for k, v in kwargs.items() if k in self.params})
        return resolve_awaitable(result) if self.is_async or inspect.isawaitable(result) else result


def resolve_awaitable(value: Any) -> Any:
    """The result of ``value`` if it is awaitable (else ``value``), computed synchronously.

    Hooks are called from sync code: validation (possibly inside the server's event loop) and the
    executor (possibly inside its own loop, while async nodes run). Without a running loop the awaitable
    runs on a fresh one; with one, on a private loop in a helper thread (a loop cannot be re-entered),
    with the caller's context variables so the hook sees the node's ExecutionContext.
    """
    if not inspect.isawaitable(value):
        return value
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(value))
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fewstep-hook") as pool:
        return pool.submit(context.run, asyncio.run, _await(value)).result()


async def _await(value: Any) -> Any:
    return await value


def make_hook(fn: Callable[..., Any] | None) -> Hook | None:
    """Wrap a callable, reading its signature once."""
    if fn is None:
        return None
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return Hook(fn, None, inspect.iscoroutinefunction(fn))
    kinds = [p.kind for p in signature.parameters.values()]
    params = None if inspect.Parameter.VAR_KEYWORD in kinds else frozenset(signature.parameters)
    return Hook(fn, params, inspect.iscoroutinefunction(fn))


# ---------------------------------------------------------------------------------------------
# Results: every accepted return shape -> (values, ui, expand)
# ---------------------------------------------------------------------------------------------


def is_blocker(value: Any) -> bool:
    """An :class:`~app.api.ExecutionBlocker`, or any object of a class of that name with ``.message`` (a
    ComfyUI pack that cannot import ComfyUI's class defines one of the same shape)."""
    return isinstance(value, ExecutionBlocker) or (
        type(value).__name__ == "ExecutionBlocker" and hasattr(value, "message"))


@dataclass
class CallResult:
    """One call's normalised result. ``values`` has one entry per output slot."""

    values: tuple[Any, ...]
    ui: dict[str, Any] | None = None
    expand: dict[str, Any] | None = None


def normalize_result(raw: Any, n_outputs: int, class_type: str) -> CallResult:
    """Accept a tuple, a list, a ``{"result", "ui", "expand"}`` dict, a NodeOutput, an ExecutionBlocker
    or None (a node without outputs), as ComfyUI does."""
    if isinstance(raw, NodeOutput):
        return CallResult(_pad(tuple(raw.values), n_outputs), raw.ui, raw.expand)
    if is_blocker(raw):
        return CallResult(tuple(raw for _ in range(n_outputs)))
    if raw is None:
        return CallResult(_pad((), n_outputs))
    if isinstance(raw, Mapping):
        unknown = set(raw) - {"result", "ui", "expand"}
        if unknown:
            raise TypeError(f"{class_type} returned a dict with unknown keys {sorted(unknown)} "
                            "(expected 'result', 'ui', 'expand')")
        result = raw.get("result")
        values = tuple(result) if isinstance(result, (list, tuple)) else (
            tuple(result for _ in range(n_outputs)) if is_blocker(result) else ())
        return CallResult(_pad(values, n_outputs), raw.get("ui"), raw.get("expand"))
    if isinstance(raw, (tuple, list)):
        return CallResult(_pad(tuple(raw), n_outputs))
    if n_outputs == 1:
        raise TypeError(f"{class_type} returned a bare {type(raw).__name__}; return a tuple (value,)")
    raise TypeError(f"{class_type} returned {type(raw).__name__}; expected a tuple of {n_outputs} values")


def _pad(values: tuple[Any, ...], n_outputs: int) -> tuple[Any, ...]:
    """Missing trailing outputs become None (an output node may declare outputs it never returns)."""
    if len(values) >= n_outputs:
        return values[:n_outputs] if n_outputs else values[:0]
    return values + (None,) * (n_outputs - len(values))


def declarative_hidden_names(hidden: Sequence[Hidden]) -> dict[str, str]:
    """Declarative nodes receive hidden values under the lower-cased kind (``unique_id`` ...)."""
    return {Hidden(h).value.lower(): Hidden(h).value for h in hidden}
