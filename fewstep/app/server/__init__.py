"""fewstep's HTTP + websocket server: ComfyUI's protocol, the pinned ComfyUI editor, our extensions.

``create_app`` builds an aiohttp application from its dependencies (no singletons: state lives in
``web.AppKey``s, see :mod:`app.server.state`). The queue worker runs GPU work in its own thread and
hands events to the event loop through :class:`app.server.ws.ThreadBridge`.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from fewstep import shipped_dir
from fewstep.app import comfy_runtime
from fewstep.app.config import Config
from fewstep.app.server import editor
from fewstep.app.server.jobs import queue_remaining
from fewstep.app.server.routes import add_routes, server_flags
from fewstep.app.server.security import (
    auth_middleware,
    cache_middleware,
    error_middleware,
    host_middleware,
    origin_middleware,
    paths_middleware,
)
from fewstep.app.server.state import (
    CONFIG,
    EXECUTOR,
    HUB,
    LOGS,
    MB,
    OPTIONS,
    PATHS,
    REGISTRY,
    RUNTIME,
    STORE,
    LogBuffer,
    Runtime,
    ServerOptions,
)
from fewstep.app.server.userdata import seed_user_dir
from fewstep.app.server.ws import ClientHub, ThreadBridge, WsMessage

if TYPE_CHECKING:  # annotations only: the engine loads when build_app (or the caller) builds it
    from fewstep.app.executor import Executor
    from fewstep.app.registry import Registry
    from fewstep.app.storage import QueueStore
    from fewstep.app.worker import Worker

log = logging.getLogger("fewstep.server")


def default_options(config: Config) -> ServerOptions:
    """Options from ``config``; ``FEWSTEP_GRAPHS_DIR`` overrides where the template library lives."""
    graphs = Path(os.environ.get("FEWSTEP_GRAPHS_DIR") or shipped_dir("graphs"))
    return ServerOptions(
        editor_root=editor.editor_root(), extensions_dir=shipped_dir("frontend"), graphs_dir=graphs,
        max_upload_bytes=int(config.max_upload_mb * MB), max_graph_bytes=int(config.max_graph_mb * MB),
        auth_token=config.auth_token or None, cors_origin=config.cors_origin,
        preview_size=config.preview_size, host=config.host,
    )


def create_app(config: Config, registry: Registry, executor: Executor, store: QueueStore,
               worker: Worker | None = None, *, options: ServerOptions | None = None) -> web.Application:
    """Build the server application.

    Args:
        config: paths, limits, auth token, CORS origin.
        registry: ``app.registry.Registry`` (``/object_info``, validation, extensions of packs).
        executor: ``app.executor.Executor`` (run by the worker; its cache stats go to ``/system_stats``).
        store: the queue + history (``app.storage.JobStore``, SQLite, or ``app.storage_pg.PostgresJobStore``).
        worker: a queue worker (its ``emit`` is rebound to this app's clients); None builds ``app.worker.QueueWorker(store, executor, emit)``
            when the app starts, with ``emit`` bound to this app's websocket clients.
        options: overrides for :func:`default_options`.
    """
    options = options or default_options(config)
    app = web.Application(
        middlewares=[cache_middleware, error_middleware, host_middleware, origin_middleware, auth_middleware,
                     paths_middleware],
        client_max_size=options.max_upload_bytes + MB,
    )
    app[CONFIG], app[OPTIONS] = config, options
    app[REGISTRY], app[EXECUTOR], app[STORE] = registry, executor, store
    paths = config.paths()
    app[PATHS] = executor.paths if executor.paths == paths else paths   # the same folders: one listing cache
    app[RUNTIME] = Runtime(worker=worker)
    app[LOGS] = LogBuffer()
    app[HUB] = ClientHub(server_flags(options.max_upload_bytes), lambda: queue_remaining(store),
                         options.ws_queue_size)
    app.cleanup_ctx.append(_log_capture)
    app.cleanup_ctx.append(_queue_worker)
    app.on_shutdown.append(_close_websockets)
    _add_pack_routes(app)
    add_routes(app)
    return app


def _add_pack_routes(app: web.Application) -> None:
    """Routes classic custom packs declared with ``PromptServer.instance.routes`` (and their ``/api``
    twins, as ComfyUI adds them). They go before our catch-alls, so they are reachable, but a route that
    would replace one of ours is refused (logged): a pack cannot take over ``/prompt`` or ``/view``."""
    defs = comfy_runtime.pack_routes()
    if not defs:
        return
    probe = web.Application()
    add_routes(probe)
    ours = {(route.method, route.resource.canonical) for route in probe.router.routes()
            if route.resource is not None}
    seen: set[tuple[str, str]] = set()
    for route_def in reversed(defs):  # a pack loaded again (another registry) re-declares: the latest wins
        if not isinstance(route_def, web.RouteDef):
            route_def.register(app.router)  # a static folder
            continue
        for path in (route_def.path, "/api" + route_def.path):
            if (route_def.method, path) in seen:
                continue
            seen.add((route_def.method, path))
            if (route_def.method, path) in ours or ("*", path) in ours:
                log.warning("a custom node pack's route %s %s would replace fewstep's: ignored",
                            route_def.method, path)
                continue
            app.router.add_route(route_def.method, path, route_def.handler, **route_def.kwargs)


class _BufferHandler(logging.Handler):
    """Keeps log lines for ``/internal/logs`` and pushes each to the subscribed websocket clients.

    ``emit`` may run on any thread (the queue worker logs too): the push is handed to the event loop.
    """

    def __init__(self, buffer: LogBuffer, hub: ClientHub, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.buffer, self.hub, self.loop = buffer, hub, loop

    def emit(self, record: logging.LogRecord) -> None:
        entry = {"t": self.formatter.formatTime(record) if self.formatter else str(record.created),
                 "m": self.format(record)}
        self.buffer.add(entry["t"], entry["m"])
        if self.buffer.subscribers and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._push, entry, tuple(self.buffer.subscribers))

    def _push(self, entry: dict[str, str], subscribers: tuple[str, ...]) -> None:
        message = WsMessage("logs", {"entries": [entry], "size": None})
        for sid in subscribers:
            self.hub.send(message, sid)


async def _log_capture(app: web.Application) -> AsyncIterator[None]:
    handler = _BufferHandler(app[LOGS], app[HUB], asyncio.get_running_loop())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("fewstep").addHandler(handler)
    yield
    logging.getLogger("fewstep").removeHandler(handler)


async def _queue_worker(app: web.Application) -> AsyncIterator[None]:
    """Run the worker thread for the app's lifetime; after a restart it recovers and runs pending jobs."""
    config, store, runtime = app[CONFIG], app[STORE], app[RUNTIME]
    await asyncio.to_thread(config.ensure_dirs)
    await asyncio.to_thread(seed_user_dir, config.paths().user_dir)
    bridge = ThreadBridge(asyncio.get_running_loop(), app[HUB], app[OPTIONS].preview_size)
    emit, relay = bridge.emit, None
    shared_url = None if getattr(store, "exclusive", True) else getattr(store, "url", None)
    if shared_url:   # hosts sharing a PostgreSQL queue: a job's events reach its client on whichever host
        from fewstep.app.server.relay import EventRelay

        relay = await asyncio.to_thread(EventRelay, shared_url, bridge.emit, app[HUB].listeners)
        emit = relay.emit
    if comfy_runtime.installed():  # PromptServer.instance.send_sync of classic custom packs reaches our clients
        comfy_runtime.bind_server(emit)
    if runtime.worker is None:
        from fewstep.app.worker import QueueWorker

        # a shared store (PostgreSQL): claim under a lease, as other hosts' workers do
        worker_id = None if getattr(store, "exclusive", True) else f"{socket.gethostname()}/{os.getpid()}/thread"
        runtime.worker = QueueWorker(store, app[EXECUTOR], emit, worker_id=worker_id, lease_s=config.lease_s)
    else:
        runtime.worker.emit = emit   # a worker built by the caller reports to this app's clients
    await asyncio.to_thread(runtime.worker.start)   # recovers jobs a dead process left running
    runtime.worker.wake()          # pending jobs from before a restart run now
    yield
    await asyncio.to_thread(runtime.worker.stop)
    if relay is not None:
        await asyncio.to_thread(relay.close)
    comfy_runtime.unbind_server(emit)
    await app[HUB].close_all()


async def _close_websockets(app: web.Application) -> None:
    """Close editor sockets when shutdown starts: aiohttp waits for open handlers (up to 60 s) before it
    runs cleanup contexts, so with an editor tab open Ctrl-C took 38-55 s."""
    await app[HUB].close_all()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def terminal_logging(logger: logging.Logger) -> None:
    """Show ``logger``'s warnings and errors (500 tracebacks included) on stderr.

    Python prints a record to stderr by itself only while no handler exists anywhere up the chain; the
    ``/internal/logs`` buffer handler is one, so once the app started, warnings and tracebacks reached
    only the editor's log panel. Nothing is added when the user configured logging themselves.
    """
    if logging.getLogger().handlers or any(isinstance(h, logging.StreamHandler) for h in logger.handlers):
        return
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)


def build_app(config: Config) -> web.Application:
    """The production app: real registry, caches, executor, the store ``config`` names (SQLite, or
    PostgreSQL for ``--queue postgresql://...``) and its worker(s)."""
    from fewstep.app.executor import build_executor
    from fewstep.app.storage import open_store
    from fewstep.app.worker_pool import worker_devices

    config.ensure_dirs()
    executor = build_executor(config)
    registry = executor.registry
    for failure in registry.failures:
        log.warning("node pack %s failed to load: %s", failure.pack, failure.reason)
    devices = worker_devices(config)
    worker: Worker | None = None   # the thread worker, built by create_app
    if config.worker == "process":
        from fewstep.app.process_worker import ProcessWorker
        from fewstep.app.worker_pool import WorkerPool

        workers = [ProcessWorker(config, grace_s=config.interrupt_grace_s, preview_size=config.preview_size,
                                 index=i, device=device) for i, device in enumerate(devices)]
        worker = workers[0] if len(workers) == 1 else WorkerPool(workers)
    elif config.worker != "thread":
        raise ValueError(f"worker must be 'process' or 'thread', got {config.worker!r}")
    elif devices != [None]:
        raise ValueError("--workers / --gpus need the process worker (leave out --worker thread)")
    return create_app(config, registry, executor, open_store(config), worker)


def run_server(config: Config) -> None:
    """Serve until interrupted (``fewstep serve``)."""
    if not _is_loopback(config.host) and not config.auth_token:
        log.warning("listening on %s without --auth-token: anyone who can reach this port can run graphs",
                    config.host)
    terminal_logging(logging.getLogger("fewstep"))
    app = build_app(config)
    # Everything loaded so far (torch, node packs: ~200,000 objects) lives as long as the server. Left
    # to the cyclic GC, every full collection walks it, ~120 ms with the GIL held (dev VM), stalling the
    # worker and every request at once; a 10,000-node job triggers several. Frozen, they are skipped.
    gc.collect()
    gc.freeze()
    shown = f"http://{config.host}:{config.port}/"
    log.warning("fewstep serving on %s%s", shown, "?token=<your token>" if config.auth_token else "")
    web.run_app(app, host=config.host, port=config.port, print=None, access_log=None)


__all__ = ["create_app", "run_server", "build_app", "default_options", "ServerOptions"]
