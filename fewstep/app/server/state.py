"""Typed application state: every dependency the handlers need lives under one ``web.AppKey``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from fewstep.app.api import Paths
from fewstep.app.config import Config

if TYPE_CHECKING:  # annotations only: the engine loads when the app is built
    from fewstep.app.executor import Executor
    from fewstep.app.registry import Registry
    from fewstep.app.server.ws import ClientHub
    from fewstep.app.storage import QueueStore
    from fewstep.app.worker import Worker

MB = 1024 * 1024


@dataclass(frozen=True)
class ServerOptions:
    """Server settings derived from :class:`Config` plus where the static files live.

    Args:
        editor_root: the pinned editor package's ``static/`` folder, served at ``/``.
        extensions_dir: our own editor extensions (plain ES modules), served at ``/extensions/fewstep/``.
        graphs_dir: the template library (``/templates/...``) and the default graph.
        default_graph: name (without ``.json``) in ``graphs_dir`` the editor opens on first visit.
        max_upload_bytes / max_graph_bytes: request size limits (413 above them).
        auth_token: when set, every request must present it (header, cookie or ``?token=``).
        cors_origin: an Origin allowed cross-site ("*" = any); None = same-origin only.
        preview_size: longest side of websocket preview frames, pixels.
        ws_queue_size: per-client send queue length; a client that falls this far behind is dropped.
        host: the host the server listens on; without a token, requests must name it or a loopback
            host in their ``Host`` header (DNS rebinding defence, see ``security.host_middleware``).
    """

    editor_root: Path
    extensions_dir: Path
    graphs_dir: Path
    default_graph: str = "default"
    max_upload_bytes: int = 100 * MB
    max_graph_bytes: int = 10 * MB
    auth_token: str | None = None
    cors_origin: str | None = None
    preview_size: int = 512
    ws_queue_size: int = 1024
    host: str = "127.0.0.1"


@dataclass
class LogBuffer:
    """The last log lines for ``/internal/logs`` (bounded) and the websocket clients that asked for them
    live (``PATCH /internal/logs/subscribe``: each new line then reaches them as a ``logs`` message)."""

    limit: int = 2000
    entries: list[dict[str, Any]] = field(default_factory=list)
    subscribers: set[str] = field(default_factory=set)

    def add(self, t: str, message: str) -> None:
        self.entries.append({"t": t, "m": message})
        if len(self.entries) > self.limit:
            del self.entries[: len(self.entries) - self.limit]


# Image previews decoded at once (/view?preview=...): each decodes the whole image (up to the pixel budget,
# ~270 MB at 8192x8192 plus its conversion), so concurrent requests multiplied memory (~550 MB each).
PREVIEW_CONCURRENCY = 2


@dataclass
class Runtime:
    """What exists only while the app runs: the queue worker (started in the app's cleanup context) and
    the bound on concurrent image previews."""

    worker: Worker | None = None
    previews: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(PREVIEW_CONCURRENCY))


CONFIG = web.AppKey("config", Config)
OPTIONS = web.AppKey("options", ServerOptions)
# Keys typed by annotation: their types are imported for type checking only (see above).
REGISTRY: web.AppKey[Registry] = web.AppKey("registry")
EXECUTOR: web.AppKey[Executor] = web.AppKey("executor")
STORE: web.AppKey[QueueStore] = web.AppKey("store")
RUNTIME = web.AppKey("runtime", Runtime)
HUB: web.AppKey[ClientHub] = web.AppKey("hub")
LOGS = web.AppKey("logs", LogBuffer)
PATHS = web.AppKey("paths", Paths)    # one object, so its listing cache is shared
