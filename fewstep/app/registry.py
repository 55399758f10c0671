"""The node registry: every node class of every pack, normalised into :class:`NodeDef`.

Packs come from three places, loaded in this order (the first definition of a node name wins):

1. built-in packs: each sub-package ``fewstep/nodes/<name>/`` whose ``__init__`` exposes ``entrypoint()``
   (found by scanning the ``nodes`` package directory; ``app`` never imports ``nodes`` otherwise);
2. external packs in ``custom_nodes`` folders: a sub-folder with ``__init__.py`` or a single ``.py`` file
   (``*.disabled``, hidden and ``__pycache__`` entries are skipped);
3. the Python entry-point group ``fewstep.nodes`` (the entry point names a module or an ``entrypoint``).

A pack module exposes ``entrypoint() -> list[type]`` and/or ComfyUI's ``NODE_CLASS_MAPPINGS`` (+
``NODE_DISPLAY_NAME_MAPPINGS``, ``WEB_DIRECTORY``) and may expose ``cli_commands()``. A pack that raises
on import, a class that cannot be adapted and a node name defined twice are recorded as
:class:`PackFailure` and logged; everything else keeps working.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from fewstep.app import comfy_runtime
from fewstep.app.api import Input, Node, Schema
from fewstep.app.classic import (
    Hook,
    NodeDefinitionError,
    classic_input_info,
    classic_schema,
    declarative_hidden_names,
    declared_types,
    make_hook,
)

log = logging.getLogger("fewstep.registry")


@dataclass(frozen=True)
class PackFailure:
    """A pack (or one of its nodes) that could not be loaded, and why."""

    pack: str
    reason: str


@dataclass
class PackInfo:
    """A loaded pack.

    Args:
        name: pack name (folder, module or entry-point name).
        source: "builtin", "custom_nodes" or "entry_point".
        node_names: the class types it registered.
        web_dir: its ``WEB_DIRECTORY`` (served at ``/extensions/<name>/``), if any.
        commands: ``cli_commands()`` of the module: ``{"bench sampling": fn(argv) -> int, ...}``.
    """

    name: str
    source: str
    node_names: list[str]
    web_dir: Path | None = None
    commands: dict[str, Callable[[list[str]], int]] = field(default_factory=dict)


@dataclass
class NodeDef:
    """One registered node class, classic or declarative, normalised for the engine.

    Args:
        class_type: the name graphs use.
        schema: its declaration (classic classes are translated).
        pack / python_module: where it came from (``python_module`` is what ``/object_info`` reports).
        cls: the class itself.
        classic: True for ComfyUI-protocol classes (called on a per-node instance through ``function``).
        hidden_names: ``{keyword: kind}`` of hidden values passed to the call (kind = ``Hidden`` value).
        declared_types: classic inputs whose declared type is an object other than a plain string (link
            checks compare with the object, as ComfyUI does).
        fingerprint / validator / lazy_check: optional hooks (``IS_CHANGED`` / ``fingerprint_inputs``,
            ``VALIDATE_INPUTS`` / ``validate_inputs``, ``check_lazy_status``).
    """

    class_type: str
    schema: Schema
    pack: str
    python_module: str
    cls: type
    classic: bool = False
    function: str = "execute"
    hidden_names: dict[str, str] = field(default_factory=dict)
    is_async: bool = False
    fingerprint: Hook | None = None
    validator: Hook | None = None
    lazy_check_name: str | None = None
    declared_types: dict[str, Any] = field(default_factory=dict)  # classic inputs typed by a non-str object
    # derived once, read on every execution
    ports: dict[str, Input] = field(default_factory=dict)
    lazy_inputs: frozenset[str] = frozenset()
    output_is_list: tuple[bool, ...] = ()
    output_types: tuple[str, ...] = ()
    uses_unique_id: bool = False

    def __post_init__(self) -> None:
        self.ports = {port.name: port for port in self.schema.inputs}
        self.lazy_inputs = frozenset(p.name for p in self.schema.inputs if p.lazy)
        self.output_is_list = tuple(o.is_list for o in self.schema.outputs)
        self.output_types = tuple(o.type for o in self.schema.outputs)
        self.uses_unique_id = "UNIQUE_ID" in self.hidden_names.values()

    def new_instance(self) -> Any:
        """The object whose ``function`` is called: an instance for classic nodes, the class otherwise."""
        return self.cls() if self.classic else self.cls

    def lazy_hook(self, instance: Any) -> Hook | None:
        """``check_lazy_status`` bound to ``instance`` (classic: a method; declarative: a classmethod)."""
        if self.lazy_check_name is None:
            return None
        return make_hook(getattr(instance, self.lazy_check_name))

    @property
    def reported_module(self) -> str:
        """``python_module`` as ``/object_info`` reports it. The editor badges a node by this: ``nodes.*``
        and ``comfy_extras.*`` as "Comfy Core", ``custom_nodes.<pack>.*`` as ``<pack>``, anything else as
        unknown; our built-in packs (``fewstep.nodes.<pack>``) report ``custom_nodes.fewstep-<pack>`` so
        each node shows the pack it comes from."""
        if self.python_module.startswith(BUILTIN_MODULE_PREFIX):
            return f"custom_nodes.fewstep-{self.pack}"
        return self.python_module

    def object_info(self) -> dict[str, Any]:
        """ComfyUI's node-definition JSON (``/object_info``)."""
        schema = self.schema
        inputs = classic_input_info(self.cls) if self.classic else _declarative_input_info(self)
        info: dict[str, Any] = {
            **inputs,
            "output": list(self.output_types),
            "output_is_list": list(self.output_is_list),
            "output_name": [o.name for o in schema.outputs],
            "name": self.class_type,
            "display_name": schema.display_name or self.class_type,
            "description": schema.description,
            "python_module": self.reported_module,
            "category": schema.category,
            "output_node": schema.is_output_node,
        }
        tooltips = [o.tooltip or "" for o in schema.outputs]
        if any(tooltips):
            info["output_tooltips"] = tooltips
        if schema.deprecated:
            info["deprecated"] = True
        if schema.experimental:
            info["experimental"] = True
        return info


def _port_options(port: Input) -> dict[str, Any]:
    """A declarative port's options in ComfyUI's v1 spelling."""
    options: dict[str, Any] = {}
    for key, value in (("default", port.default), ("min", port.min), ("max", port.max), ("step", port.step),
                       ("round", port.round), ("tooltip", port.tooltip), ("display_name", port.display_name)):
        if value is not None:
            options[key] = value
    for key, flag in (("multiline", port.multiline), ("lazy", port.lazy), ("forceInput", port.force_input),
                      ("rawLink", port.raw_link), ("control_after_generate", port.control_after_generate)):
        if flag:
            options[key] = True
    options.update(port.extra)
    if port.type == "COMBO" and "default" not in options:
        choices = port.resolved_choices()
        if choices:
            options["default"] = choices[0]
    return options


def _declarative_input_info(node: NodeDef) -> dict[str, Any]:
    required: dict[str, Any] = {}
    optional: dict[str, Any] = {}
    for port in node.schema.inputs:
        first: Any = port.resolved_choices() if port.type == "COMBO" else port.type
        (optional if port.optional else required)[port.name] = [first, _port_options(port)]
    info: dict[str, Any] = {"required": required}
    order: dict[str, list[str]] = {"required": list(required)}
    if optional:
        info["optional"] = optional
        order["optional"] = list(optional)
    if node.hidden_names:
        info["hidden"] = dict(node.hidden_names)
    return {"input": info, "input_order": order}


# ---------------------------------------------------------------------------------------------
# Building NodeDefs
# ---------------------------------------------------------------------------------------------


def is_declarative(cls: Any) -> bool:
    """True for :class:`app.api.Node` subclasses."""
    return isinstance(cls, type) and issubclass(cls, Node)


def make_node_def(cls: type, *, pack: str, python_module: str, name: str | None = None,
                  display_name: str | None = None) -> NodeDef:
    """Normalise one class. Raises NodeDefinitionError naming what is wrong."""
    if is_declarative(cls):
        schema = cls.define_schema()
        if not isinstance(schema, Schema):
            raise NodeDefinitionError(f"{cls.__name__}.define_schema() must return a Schema")
        return NodeDef(
            class_type=schema.node_id, schema=schema, pack=pack, python_module=python_module, cls=cls,
            hidden_names=declarative_hidden_names(schema.hidden),
            is_async=inspect.iscoroutinefunction(cls.execute),
            fingerprint=make_hook(getattr(cls, "fingerprint_inputs", None)),
            validator=make_hook(getattr(cls, "validate_inputs", None)),
            lazy_check_name="check_lazy_status" if getattr(cls, "check_lazy_status", None) else None,
        )
    if not isinstance(cls, type) or not hasattr(cls, "INPUT_TYPES"):
        raise NodeDefinitionError(f"{name or cls!r} is neither an app.api.Node subclass nor a classic class "
                                  "with INPUT_TYPES")
    name = name or cls.__name__
    function = getattr(cls, "FUNCTION", None)
    if not isinstance(function, str) or not callable(getattr(cls, function, None)):
        raise NodeDefinitionError(f"{name}: FUNCTION={function!r} does not name a method of the class")
    schema, hidden = classic_schema(name, cls, display_name)
    return NodeDef(
        class_type=name, schema=schema, pack=pack, python_module=python_module, cls=cls, classic=True,
        function=function, hidden_names=hidden, declared_types=declared_types(cls), is_async=inspect.iscoroutinefunction(getattr(cls, function)),
        fingerprint=make_hook(getattr(cls, "IS_CHANGED", None)),
        validator=make_hook(getattr(cls, "VALIDATE_INPUTS", None)),
        lazy_check_name="check_lazy_status" if callable(getattr(cls, "check_lazy_status", None)) else None,
    )


class Registry:
    """All node definitions by class type, plus the packs they came from and the failures."""

    def __init__(self) -> None:
        self._nodes: dict[str, NodeDef] = {}
        self.failures: list[PackFailure] = []
        self.packs: list[PackInfo] = []
        self.warm_ups: list[tuple[str, Callable[[], None]]] = []   # (pack, its warm_up()), see start_warm_up
        self.version = 0  # bumped on every registration: memoised validations of older versions miss

    def get(self, class_type: str) -> NodeDef | None:
        """The definition of ``class_type``, or None."""
        return self._nodes.get(class_type)

    def all(self) -> dict[str, NodeDef]:
        """Every definition by class type (a copy)."""
        return dict(self._nodes)

    def object_info(self) -> dict[str, dict[str, Any]]:
        """``/object_info`` for every node; a node whose declaration now fails is left out and logged."""
        info = {}
        for name, node in self._nodes.items():
            try:
                info[name] = node.object_info()
            except Exception as exc:  # a dynamic INPUT_TYPES may break later; keep the rest
                log.warning("object_info of %s failed: %s", name, exc)
        return info

    def commands(self) -> dict[str, Callable[[list[str]], int]]:
        """CLI commands contributed by packs (``{"bench sampling": fn, "eval": fn}``)."""
        found: dict[str, Callable[[list[str]], int]] = {}
        for pack in self.packs:
            for key, fn in pack.commands.items():
                found.setdefault(key, fn)
        return found

    def add_failure(self, pack: str, reason: str) -> None:
        """Record (and log) a failure."""
        self.failures.append(PackFailure(pack, reason))
        log.warning("node pack %s: %s", pack, reason)

    def register_pack(self, name: str, classes: Iterable[Any] | Mapping[str, Any], *, source: str = "builtin",
                      python_module: str | None = None, display_names: Mapping[str, str] | None = None,
                      web_dir: Path | None = None,
                      commands: Mapping[str, Callable[[list[str]], int]] | None = None) -> PackInfo:
        """Register a pack's classes (a list, or a ``{name: class}`` mapping); problems become failures."""
        items = list(classes.items()) if isinstance(classes, Mapping) else [(None, c) for c in classes]
        self.version += 1
        info = PackInfo(name, source, [], web_dir, dict(commands or {}))
        for node_name, cls in items:
            self._register_one(info, node_name, cls, python_module or name, display_names or {})
        self.packs.append(info)
        return info

    def _register_one(self, info: PackInfo, node_name: str | None, cls: Any, python_module: str,
                      display_names: Mapping[str, str]) -> None:
        try:
            node = make_node_def(cls, pack=info.name, python_module=python_module, name=node_name,
                                 display_name=display_names.get(node_name or ""))
        except Exception as exc:  # one bad class must not take the pack down
            label = node_name or getattr(cls, "__name__", repr(cls))
            self.add_failure(info.name, f"node {label!r} could not be adapted: {type(exc).__name__}: {exc}")
            return
        existing = self._nodes.get(node.class_type)
        if existing is not None:
            self.add_failure(info.name, f"node {node.class_type!r} is already defined by pack "
                                        f"{existing.pack!r}; this definition was ignored")
            return
        self._nodes[node.class_type] = node
        info.node_names.append(node.class_type)


# ---------------------------------------------------------------------------------------------
# Loading packs
# ---------------------------------------------------------------------------------------------


def _pack_contents(module: ModuleType, registry: Registry, pack: str) -> tuple[list[Any], dict[str, Any]]:
    """``entrypoint()`` classes and ``NODE_CLASS_MAPPINGS`` of a module."""
    listed: list[Any] = []
    entry = getattr(module, "entrypoint", None)
    if callable(entry):
        result = entry()
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
        listed = list(result or [])
    mappings = dict(getattr(module, "NODE_CLASS_MAPPINGS", None) or {})
    return listed, mappings


async def _await(awaitable: Any) -> Any:
    return await awaitable


def register_module(registry: Registry, module: ModuleType, *, name: str, source: str, python_module: str,
                    base_dir: Path | None = None) -> None:
    """Register everything a pack module exposes."""
    try:
        listed, mappings = _pack_contents(module, registry, name)
        commands = dict(module.cli_commands()) if callable(getattr(module, "cli_commands", None)) else {}
        warm_up = getattr(module, "warm_up", None)
        if callable(warm_up):
            registry.warm_ups.append((name, warm_up))
    except Exception as exc:
        registry.add_failure(name, f"entrypoint failed: {type(exc).__name__}: {exc}")
        log.debug("%s", traceback.format_exc())
        return
    if not listed and not mappings:
        return  # a library sub-package without nodes
    web_dir = None
    web = getattr(module, "WEB_DIRECTORY", None)
    if isinstance(web, str) and base_dir is not None and (base_dir / web).is_dir():
        web_dir = (base_dir / web).resolve()
    info = registry.register_pack(name, listed, source=source, python_module=python_module, web_dir=web_dir,
                                  commands=commands)
    display = dict(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {})
    for node_name, cls in mappings.items():
        registry._register_one(info, node_name, cls, python_module, display)


def _import_path(path: Path) -> ModuleType:
    """Import a pack folder (with ``__init__.py``) or a single ``.py`` file under a private name."""
    safe = re.sub(r"\W", "_", path.stem if path.is_file() else path.name)
    module_name = f"fewstep_custom_nodes.{safe}"
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(module_name, path / "__init__.py",
                                                      submodule_search_locations=[str(path)])
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fewstep_custom_nodes", ModuleType("fewstep_custom_nodes"))
    sys.modules[module_name] = module  # relative imports inside the pack need it
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def custom_pack_paths(directory: Path) -> list[Path]:
    """The packs of one custom_nodes folder, sorted by name (ComfyUI's order is unsorted)."""
    if not directory.is_dir():
        return []
    found = []
    for child in sorted(directory.iterdir()):
        if child.name.startswith((".", "__")) or child.name.endswith(".disabled"):
            continue
        if (child.is_dir() and (child / "__init__.py").is_file()) or (child.is_file() and child.suffix == ".py"):
            found.append(child)
    return found


def _load_custom(registry: Registry, directory: Path) -> None:
    paths = custom_pack_paths(directory)
    if paths:  # ComfyUI's modules (folder_paths, server, comfy.utils ...) exist for these packs only
        comfy_runtime.install(registry)
    for path in paths:
        name = path.stem if path.is_file() else path.name
        try:
            module = _import_path(path)
        except BaseException as exc:  # SystemExit from a pack counts as a failure too
            if isinstance(exc, KeyboardInterrupt):
                raise
            hint = comfy_runtime.missing_hint(exc)
            registry.add_failure(name, f"import failed: {type(exc).__name__}: {exc}" + (f": {hint}" if hint else ""))
            log.debug("%s", traceback.format_exc())
            continue
        register_module(registry, module, name=name, source="custom_nodes", python_module=f"custom_nodes.{name}",
                        base_dir=path if path.is_dir() else path.parent)


PACK_GROUP = "fewstep.nodes"
BUILTIN_MODULE_PREFIX = "fewstep."


def _is_builtin(ep: importlib.metadata.EntryPoint) -> bool:
    """Our own packs are entry points of the same group whose module lies inside ``fewstep``."""
    return ep.value.startswith(BUILTIN_MODULE_PREFIX)


def _load_entry_points(registry: Registry, *, builtin: bool, group: str = PACK_GROUP) -> None:
    """Load the ``group`` entry points that are built-in (``builtin=True``) or external (False)."""
    points = [ep for ep in importlib.metadata.entry_points(group=group) if _is_builtin(ep) == builtin]
    source = "builtin" if builtin else "entry_point"
    for ep in sorted(points, key=lambda e: e.name):
        try:
            target = ep.load()
        except Exception as exc:
            registry.add_failure(ep.name, f"import failed: {type(exc).__name__}: {exc}")
            log.debug("%s", traceback.format_exc())
            continue
        if isinstance(target, ModuleType):
            base_dir = Path(target.__file__).parent if getattr(target, "__file__", None) else None
            register_module(registry, target, name=ep.name, source=source, python_module=target.__name__,
                            base_dir=base_dir)
            continue
        shim = ModuleType(ep.name)
        shim.entrypoint = target  # an entry point may name the entrypoint function itself
        register_module(registry, shim, name=ep.name, source=source, python_module=ep.value.split(":")[0])


def load_registry(custom_nodes_dirs: Iterable[Path] = (), entry_points: bool = True,
                  builtin: bool = True) -> Registry:
    """Load every pack: built-ins, then each custom_nodes folder, then external entry points.

    Built-in and external packs alike are entry points of the ``fewstep.nodes`` group; the built-in ones
    are those whose module lies inside ``fewstep`` (``fewstep.nodes.<name>``).

    Args:
        custom_nodes_dirs: folders whose sub-folders / ``.py`` files are packs.
        entry_points: also load the external packs of the ``fewstep.nodes`` entry-point group.
        builtin: also load fewstep's own packs.
    """
    registry = Registry()
    if builtin:
        _load_entry_points(registry, builtin=True)
    for directory in custom_nodes_dirs:
        _load_custom(registry, Path(directory))
    if entry_points:
        _load_entry_points(registry, builtin=False)
    return registry


def start_warm_up(registry: Registry) -> threading.Thread | None:
    """Run every pack's ``warm_up()`` (a module-level function beside ``entrypoint``: imports of heavy
    libraries its nodes will need) once, on a background thread; the queue worker calls it when it starts.

    Listing nodes never runs it (``fewstep nodes`` and ``/object_info`` stay free of torch). Jobs must not
    start before the thread ends (the worker joins it before its first job): diffusers' lazy package,
    imported from two threads at once, raised "cannot import name 'AutoencoderKL'" in one of them.
    Measured on the 2-core dev VM: the first ``diffusers`` + ``transformers`` import took 10-26 s, the
    whole of a first checkpoint load's wait once the load itself went down to ~2 s."""
    if not registry.warm_ups:
        return None

    def run() -> None:
        for pack, warm_up in registry.warm_ups:
            try:
                warm_up()
            except Exception:   # a pack whose libraries are missing reports it when its nodes run
                log.warning("node pack %s: warm-up failed", pack, exc_info=True)

    thread = threading.Thread(target=run, name="fewstep-warm-up", daemon=True)
    thread.start()
    return thread
