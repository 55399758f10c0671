"""``server`` for classic custom packs: ``PromptServer.instance`` without a global server.

``send_sync`` reaches the websocket clients of the running fewstep server (through the emitter the server
binds when it starts; without a server, e.g. ``fewstep run``, messages are dropped). ``routes`` collects
the aiohttp routes a pack declares at import; the server adds them (and their ``/api`` twins) when it is
created, after its own routes, which a pack cannot replace. ``client_id`` is the client of the job the
current node runs for.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from fewstep.app.api import current_context
from fewstep.app.comfy_runtime.state import STATE

log = logging.getLogger("fewstep.comfy_runtime")

if STATE.route_defs is None:  # one table per process, like ComfyUI's PromptServer.routes
    STATE.route_defs = web.RouteTableDef()


class BinaryEventTypes:
    """ComfyUI's binary websocket frame types (named for packs that import them)."""

    PREVIEW_IMAGE = 1
    UNENCODED_PREVIEW_IMAGE = 2
    TEXT = 3
    PREVIEW_IMAGE_WITH_METADATA = 4


class PromptServer:
    """The part of ComfyUI's PromptServer that packs use: ``instance``, ``routes``, ``send_sync``,
    ``send``, ``client_id``."""

    instance: PromptServer

    @property
    def routes(self) -> web.RouteTableDef:
        return STATE.route_defs

    @property
    def client_id(self) -> str | None:
        context = current_context()
        if context is not None:
            return context.extra.get("client_id")
        return STATE.last_client_id

    @property
    def last_node_id(self) -> str | None:
        context = current_context()
        return context.node_id if context is not None else None

    @property
    def last_prompt_id(self) -> str | None:
        context = current_context()
        return context.prompt_id if context is not None else None

    def send_sync(self, event: Any, data: Any, sid: str | None = None) -> None:
        """Send ``{"type": event, "data": data}`` to client ``sid`` (every client when None)."""
        emit = STATE.emit
        if not isinstance(event, str):
            log.warning("send_sync: binary event %r is not supported by fewstep's ComfyUI runtime", event)
            return
        if emit is None:
            log.debug("send_sync(%s) without a running server: dropped", event)
            return
        emit(event, data, sid)

    async def send(self, event: Any, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    async def send_json(self, event: str, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)


PromptServer.instance = PromptServer()
