"""The ComfyUI runtime offered to classic custom packs loaded from ``custom_nodes/``.

Packs written for ComfyUI import its modules by their top-level names (``folder_paths``, ``nodes``,
``server``, ``comfy.utils`` ...). fewstep serves a small, documented part of them
(``docs/comfyui-runtime.md``) from this sub-package, under those names, through one import finder:

- installed only when a registry loads packs from a ``custom_nodes`` folder (:func:`install`); fewstep's
  own packs never import these names (import contracts);
- serving a top-level name only if nothing else can import it at install time, so a real ComfyUI, or any
  module of that name in the user's environment, is never shadowed;
- serving nothing else: a ComfyUI module we do not provide (``comfy.sd``, ``comfy_execution.graph``,
  ``latent_preview`` ...) fails to import with Python's ``ModuleNotFoundError`` naming it, and the
  registry records the pack as failed with that reason plus :func:`missing_hint` (listed by
  ``fewstep nodes`` and ``/api/system_stats``); the app keeps working.

The modules served are aliases of this sub-package's modules (one module object per name, so a pack and
the engine see the same ``ProgressBar`` class and the same state).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from fewstep.app.comfy_runtime.state import STATE, ServerEmit

if TYPE_CHECKING:
    from fewstep.app.registry import Registry

_HERE = "fewstep.app.comfy_runtime"
# ComfyUI module name -> the module of ours it is (None: a package with only the listed children)
PROVIDED: dict[str, str | None] = {
    "folder_paths": f"{_HERE}.files",
    "nodes": f"{_HERE}.node_table",
    "server": f"{_HERE}.prompt_server",
    "comfy": None,
    "comfy.utils": f"{_HERE}.progress",
    "comfy.model_management": f"{_HERE}.devices",
    "comfy_api": None,
    "comfy_api.latest": f"{_HERE}.progress_api",
    "comfy_api.v0_0_2": f"{_HERE}.progress_api",
}
# ComfyUI's other top-level modules: claimed only to fail with a clear message (never provided).
NOT_PROVIDED = ("comfy_extras", "comfy_execution", "comfy_api_nodes", "comfy_config", "execution",
                "node_helpers", "latent_preview", "comfyui_version")
TOP_LEVEL = tuple(dict.fromkeys([name.split(".")[0] for name in PROVIDED] + list(NOT_PROVIDED)))


def missing_hint(exc: BaseException) -> str | None:
    """For a pack's failed import: a note when the module it missed is one of ComfyUI's that fewstep does
    not provide (None for anything else)."""
    name = getattr(exc, "name", None)
    if not isinstance(exc, ModuleNotFoundError) or not name or name.split(".")[0] not in TOP_LEVEL:
        return None
    provided = ", ".join(n for n, target in PROVIDED.items() if target is not None)
    return (f"{name!r} is a ComfyUI module that fewstep does not provide to custom packs (provided: {provided}; "
            "see docs/comfyui-runtime.md)")


class _AliasLoader(importlib.abc.Loader):
    """Serves one of our modules (or a bare package) under a ComfyUI name."""

    def __init__(self, target: str | None) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        if self.target is None:
            package = ModuleType(spec.name, f"fewstep's stand-in for ComfyUI's {spec.name!r} package")
            package.__path__ = []  # children come from this finder only
            return package
        module = importlib.import_module(self.target)
        self._own_spec = module.__spec__  # importlib overwrites __spec__ with the alias's: restored below
        return module

    def exec_module(self, module: ModuleType) -> None:
        if self.target is not None:
            module.__spec__ = self._own_spec


class ComfyRuntimeFinder(importlib.abc.MetaPathFinder):
    """Serves :data:`PROVIDED` under ComfyUI's names and refuses ComfyUI's other modules, clearly.

    A top-level name is served only while no other finder can import it as a module or regular package
    (checked when it is imported, so a module that appears on ``sys.path`` later still wins; a bare folder
    of that name, which Python would import as an empty namespace package, does not count); a child only
    under a package we served.
    """

    def __init__(self) -> None:
        self.served: set[str] = set()

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        head, _, _ = fullname.partition(".")
        if head not in TOP_LEVEL:
            return None
        if "." in fullname:
            if fullname.rpartition(".")[0] not in self.served:
                return None  # a child of a real package of that name: not ours to answer
        elif self._found_elsewhere(fullname, path, target):
            return None
        if fullname not in PROVIDED:
            # None, not an error: importing fails with Python's "No module named ..." naming the module
            # (the registry adds missing_hint to the pack's failure), and importlib.util.find_spec, which
            # packs use to detect optional modules, answers "absent" instead of raising
            return None
        self.served.add(fullname)
        target_name = PROVIDED[fullname]
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(target_name),
                                              is_package=target_name is None)

    def _found_elsewhere(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None) -> bool:
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            try:
                spec = finder.find_spec(fullname, path, target)
            except (ImportError, ValueError):
                continue
            # a folder without __init__.py (a namespace package: tests/server, a data folder) is no module
            if spec is not None and spec.origin is not None:
                return True
        return False


def _finder() -> ComfyRuntimeFinder | None:
    return next((f for f in sys.meta_path if isinstance(f, ComfyRuntimeFinder)), None)


def installed() -> bool:
    """True once :func:`install` ran in this process."""
    return _finder() is not None


def install(registry: Registry) -> None:
    """Offer the runtime to the custom packs ``registry`` is about to load.

    Idempotent: a later call only rebinds the registry (``nodes.NODE_CLASS_MAPPINGS`` lists its nodes).
    """
    STATE.registry = registry
    if _finder() is None:
        sys.meta_path.insert(0, ComfyRuntimeFinder())  # first, but it defers to every other finder


def bind_server(emit: ServerEmit | None) -> None:
    """The running server's emitter (``PromptServer.instance.send_sync``); None when it stops."""
    STATE.emit = emit


def unbind_server(emit: ServerEmit) -> None:
    """A server stops: forget its emitter if it is still the bound one (another app may have replaced it)."""
    if STATE.emit == emit:
        STATE.emit = None


def pack_routes() -> list[Any]:
    """The aiohttp route definitions packs added through ``PromptServer.instance.routes``."""
    return list(STATE.route_defs or ())


__all__ = ["install", "installed", "bind_server", "unbind_server", "pack_routes", "PROVIDED", "missing_hint"]
