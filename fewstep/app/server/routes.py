"""Route table: every JSON route is registered at ``/path`` and ``/api/path``; info routes live here.

A path the server does not know answers a JSON 404 (API paths) or the editor's static file.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from fewstep.app.server import editor, files, jobs, userdata
from fewstep.app.server.security import json_object, read_json
from fewstep.app.server.state import CONFIG, EXECUTOR, HUB, LOGS, OPTIONS, REGISTRY, RUNTIME

if TYPE_CHECKING:
    from fewstep.app.registry import Registry

log = logging.getLogger("fewstep.server")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
VERSION = "0.1.0"


def server_flags(max_upload_bytes: int) -> dict[str, Any]:
    """What ``/features`` and the websocket ``feature_flags`` reply advertise."""
    return {"supports_preview_metadata": True, "max_upload_size": max_upload_bytes,
            "node_replacements": True}


async def get_features(request: web.Request) -> web.Response:
    return web.json_response(server_flags(request.app[OPTIONS].max_upload_bytes))


def _object_info(registry: Registry, class_type: str | None = None) -> dict[str, Any]:
    defs = registry.all()
    if class_type is not None:
        defs = {class_type: defs[class_type]} if class_type in defs else {}
    return {name: node_def.object_info() for name, node_def in defs.items()}


async def get_object_info(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.to_thread(_object_info, request.app[REGISTRY]))


async def get_object_info_class(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(_object_info, request.app[REGISTRY], request.match_info["class_type"])
    return web.json_response(info)


def _devices() -> list[dict[str, Any]]:
    """CUDA devices with VRAM figures, else the CPU."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        out = []
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            reserved = torch.cuda.memory_reserved(index)
            out.append({"name": torch.cuda.get_device_name(index), "type": "cuda", "index": index,
                        "vram_total": total, "vram_free": free, "torch_vram_total": reserved,
                        "torch_vram_free": reserved - torch.cuda.memory_allocated(index)})
        return out
    return [{"name": "cpu", "type": "cpu", "index": None, "vram_total": 0, "vram_free": 0,
             "torch_vram_total": 0, "torch_vram_free": 0}]


def _ram() -> tuple[int, int]:
    try:
        with open("/proc/meminfo") as handle:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in handle}
        return info.get("MemTotal", 0), info.get("MemAvailable", 0)
    except OSError:
        return 0, 0


def _cache_stats(worker: Any, executor: Any) -> dict[str, Any]:
    """The running worker's caches (a process worker's live in its child), else the executor's."""
    if worker is not None and hasattr(worker, "cache_stats"):
        return worker.cache_stats()
    caches = getattr(executor, "caches", None)
    return caches.stats() if caches is not None else {}


def _workers(worker: Any) -> list[dict[str, Any]]:
    """Each worker process (index, device, pid, running job, restarts, caches); [] for the thread worker."""
    describe = getattr(worker, "describe", None)
    if describe is None:
        return []
    described = describe()
    return described if isinstance(described, list) else [described]


SECRET_OPTIONS = ("--auth-token",)


def redact_argv(argv: list[str]) -> list[str]:
    """``argv`` with the values of secret options replaced: ``/system_stats`` is readable by every
    client, and it returned the ``--auth-token`` value itself."""
    out, hide_next = [], False
    for arg in argv:
        if hide_next:
            out.append("<redacted>")
            hide_next = False
        elif arg in SECRET_OPTIONS:
            out.append(arg)
            hide_next = True
        elif arg.startswith(tuple(f"{o}=" for o in SECRET_OPTIONS)):
            out.append(arg.partition("=")[0] + "=<redacted>")
        else:
            out.append(arg)
    return out


async def get_system_stats(request: web.Request) -> web.Response:
    """ComfyUI's system stats plus ``fewstep.caches`` (output/model cache sizes) and pack failures."""
    ram_total, ram_free = _ram()
    torch = sys.modules.get("torch")
    registry = request.app[REGISTRY]
    body = {
        "system": {"os": sys.platform, "ram_total": ram_total, "ram_free": ram_free,
                   "comfyui_version": VERSION, "fewstep_version": VERSION,
                   "required_frontend_version": "1.58.1",
                   "python_version": platform.python_version(),
                   "pytorch_version": getattr(torch, "__version__", "not loaded"),
                   "embedded_python": False, "argv": redact_argv(sys.argv)},
        "devices": await asyncio.to_thread(_devices),
        "fewstep": {"caches": await asyncio.to_thread(_cache_stats, request.app[RUNTIME].worker,
                                                      request.app[EXECUTOR]),
                    "pack_failures": [{"pack": f.pack, "reason": f.reason} for f in registry.failures],
                    "workers": _workers(request.app[RUNTIME].worker)},
    }
    return web.json_response(body)


async def get_empty_object(request: web.Request) -> web.Response:
    return web.json_response({})


async def get_i18n(request: web.Request) -> web.Response:
    """Translations merged from packs' ``locales/<lang>/*.json`` (none of ours yet: ``{}``)."""
    import json
    from pathlib import Path

    merged: dict[str, dict[str, Any]] = {}
    for pack in request.app[REGISTRY].packs:
        source = Path(str(pack.source))
        locales = (source if source.is_dir() else source.parent) / "locales"
        for path in sorted(locales.glob("*/*.json")) if locales.is_dir() else []:
            try:
                merged.setdefault(path.parent.name, {}).setdefault(path.stem, {}).update(json.loads(path.read_text()))
            except (json.JSONDecodeError, OSError, AttributeError):
                log.warning("skipping unreadable locale file %s", path)
    return web.json_response(merged)


async def get_global_subgraph(request: web.Request) -> web.Response:
    raise web.HTTPNotFound(text=f"no global subgraph {request.match_info['id']!r}")


async def get_logs(request: web.Request) -> web.Response:
    return web.Response(text="\n".join(e["m"] for e in request.app[LOGS].entries))


async def get_logs_raw(request: web.Request) -> web.Response:
    return web.json_response({"entries": list(request.app[LOGS].entries), "size": None})


async def patch_logs_subscribe(request: web.Request) -> web.Response:
    """``{"clientId": str, "enabled": bool}``: start or stop pushing new log lines to that websocket."""
    body = json_object(await read_json(request), "logs/subscribe body")   # a list once gave a 500
    client_id, enabled = body.get("clientId"), body.get("enabled")
    if not isinstance(client_id, str) or not client_id or not isinstance(enabled, bool):
        raise web.HTTPBadRequest(text="logs/subscribe: expected {\"clientId\": str, \"enabled\": bool}")
    subscribers = request.app[LOGS].subscribers
    subscribers.add(client_id) if enabled else subscribers.discard(client_id)
    return web.json_response({})


async def websocket(request: web.Request) -> web.StreamResponse:
    return await request.app[HUB].serve(request)


async def api_not_found(request: web.Request) -> web.Response:
    raise web.HTTPNotFound(text=f"no route {request.method} {request.path}")


def add_routes(app: web.Application) -> None:
    """Register every route. JSON routes get their ``/api`` twin; the static catch-all goes last."""

    def add(method: str, path: str, handler: Handler) -> None:
        app.router.add_route(method, path, handler)
        app.router.add_route(method, "/api" + path, handler)

    add("GET", "/ws", websocket)
    add("GET", "/features", get_features)
    add("GET", "/object_info", get_object_info)
    add("GET", "/object_info/{class_type}", get_object_info_class)
    add("GET", "/system_stats", get_system_stats)
    add("GET", "/i18n", get_i18n)
    add("GET", "/global_subgraphs", get_empty_object)
    add("GET", "/global_subgraphs/{id}", get_global_subgraph)
    add("GET", "/node_replacements", get_empty_object)
    add("GET", "/internal/logs", get_logs)
    add("GET", "/internal/logs/raw", get_logs_raw)
    add("PATCH", "/internal/logs/subscribe", patch_logs_subscribe)
    jobs.add_job_routes(add)
    files.add_file_routes(add)
    userdata.add_userdata_routes(add)
    editor.add_editor_api_routes(add)
    app.router.add_route("*", "/api/{tail:.*}", api_not_found)
    app.router.add_route("*", "/internal/{tail:.*}", api_not_found)
    editor.add_static_routes(app)


__all__ = ["CONFIG", "add_routes", "server_flags"]
