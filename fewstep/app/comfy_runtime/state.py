"""The one place that holds module-level state for the ComfyUI runtime shims (``docs/comfyui-runtime.md``).

ComfyUI's modules are process globals (``PromptServer.instance``, ``folder_paths.folder_names_and_paths``,
``nodes.NODE_CLASS_MAPPINGS``); packs written for ComfyUI read them as such. The engine itself never does:
it passes registries, paths and emitters down. This module is where the shims find the registry whose
custom packs are being served, the running server's websocket emitter, the routes packs declared, and the
model folders packs added. Nothing outside ``app/comfy_runtime`` and the two hooks that fill it (the
registry loading custom packs, the server starting) reads or writes it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fewstep.app.registry import Registry

# emit(event, data, client_id) of the running server (its websocket clients; all of them when None)
ServerEmit = Callable[[str, Any, "str | None"], None]


@dataclass
class RuntimeState:
    """What the shims read.

    Args:
        registry: the registry whose custom packs are loading or loaded (``nodes.NODE_CLASS_MAPPINGS``).
        emit: the running server's emitter, None without a server (``fewstep run``): messages are dropped.
        route_defs: aiohttp route definitions packs added through ``PromptServer.instance.routes``.
        extra_folders: ``folder_paths.add_model_folder_path`` entries, ``{folder: [paths]}``.
        last_client_id: the client of the last job a node ran for (ComfyUI's ``PromptServer.client_id``
            outside a node call).
    """

    registry: Registry | None = None
    emit: ServerEmit | None = None
    route_defs: Any = None  # an aiohttp RouteTableDef, made when a pack first imports ``server``
    extra_folders: dict[str, list[str]] = field(default_factory=dict)
    last_client_id: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


STATE = RuntimeState()
