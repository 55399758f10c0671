"""The websocket side: per-client send queues, message routing, binary preview frames, thread bridge.

Each client gets a bounded queue and its own sender task, so one slow or dead socket never delays the
others: when a client's queue is full it is disconnected (the editor reconnects and re-syncs).
Routing follows ComfyUI: messages about a prompt go to the client that submitted it, to every client
when the prompt has no ``client_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import struct
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

log = logging.getLogger("fewstep.server")

# Binary frame event types (first 4 bytes, big-endian), as the editor decodes them.
PREVIEW_IMAGE = 1                    # + 4-byte image type (1 = JPEG, 2 = PNG) + image bytes
PREVIEW_IMAGE_WITH_METADATA = 4      # + 4-byte JSON length + JSON metadata + image bytes
IMAGE_TYPE_CODES = {"image/jpeg": 1, "image/png": 2}
SEND_TIMEOUT_S = 30.0                # a send blocked this long (peer not reading) drops the client


@dataclass(frozen=True)
class WsMessage:
    """One JSON websocket message ``{"type": type, "data": data}``."""

    type: str
    data: dict[str, Any]

    def encode(self) -> str:
        return json.dumps({"type": self.type, "data": self.data}, default=str)


@dataclass(frozen=True)
class PreviewFrame:
    """An encoded preview image plus what the type-4 metadata names."""

    image: bytes
    mime: str
    node_id: str
    prompt_id: str

    def encode(self, with_metadata: bool) -> bytes:
        """The binary frame: type 4 (metadata) when the client supports it, else type 1."""
        if with_metadata:
            meta = json.dumps({"node_id": self.node_id, "display_node_id": self.node_id,
                               "parent_node_id": None, "real_node_id": self.node_id,
                               "prompt_id": self.prompt_id, "image_type": self.mime}).encode()
            return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(meta)) + meta + self.image
        return struct.pack(">II", PREVIEW_IMAGE, IMAGE_TYPE_CODES[self.mime]) + self.image


def encode_preview(image: Any, max_size: int) -> tuple[bytes, str]:
    """A PIL image as JPEG bytes, its longest side capped at ``max_size`` (runs in the worker thread)."""
    image = image.copy()
    image.thumbnail((max_size, max_size))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), "image/jpeg"


@dataclass
class Client:
    """One connected socket and its private send queue."""

    sid: str
    ws: web.WebSocketResponse
    queue: asyncio.Queue
    flags: dict[str, Any] = field(default_factory=dict)
    sender: asyncio.Task | None = None
    dropped: bool = False


class ClientHub:
    """All connected clients of one app.

    Args:
        server_flags: what the ``feature_flags`` reply and ``/features`` advertise.
        queue_remaining: async callable giving the number of pending + running jobs (for ``status``).
        queue_size: per-client queue bound.
    """

    def __init__(self, server_flags: dict[str, Any], queue_remaining: Callable[[], Awaitable[int]],
                 queue_size: int = 1024) -> None:
        self.server_flags = server_flags
        self.queue_remaining = queue_remaining
        self.queue_size = queue_size
        self.clients: dict[str, Client] = {}
        self.executing: dict[str, WsMessage] = {}   # client id -> its job's latest `executing` (node not None)
        self._status_task: asyncio.Task | None = None

    # -- sending ---------------------------------------------------------------------------------
    def send(self, message: WsMessage, sid: str | None = None) -> None:
        """Queue ``message`` for client ``sid`` (every client when None). Never blocks."""
        encoded = message.encode()
        for client in self._targets(sid):
            self._put(client, encoded)

    def send_preview(self, frame: PreviewFrame, sid: str | None = None) -> None:
        """Queue a binary preview frame, type 4 or 1 depending on each client's feature flags."""
        for client in self._targets(sid):
            self._put(client, frame.encode(bool(client.flags.get("supports_preview_metadata"))))

    def _targets(self, sid: str | None) -> list[Client]:
        if sid is None:
            return list(self.clients.values())
        client = self.clients.get(sid)
        return [client] if client is not None else []

    def _put(self, client: Client, item: str | bytes) -> None:
        if client.dropped:
            return
        try:
            client.queue.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("websocket client %s is not reading (%d messages behind); disconnecting it",
                        client.sid, client.queue.qsize())
            self._drop(client)

    def _drop(self, client: Client) -> None:
        client.dropped = True
        if self.clients.get(client.sid) is client:
            del self.clients[client.sid]
        if client.sender is not None:
            client.sender.cancel()
        asyncio.get_running_loop().create_task(_close_quietly(client.ws))

    def schedule_status(self) -> None:
        """Broadcast the queue size soon; bursts of queue changes coalesce into one message."""
        if self._status_task is None or self._status_task.done():
            self._status_task = asyncio.get_running_loop().create_task(self._broadcast_status())

    async def _broadcast_status(self) -> None:
        await asyncio.sleep(0.05)
        remaining = await self.queue_remaining()
        self.send(WsMessage("status", {"status": {"exec_info": {"queue_remaining": remaining}}}))

    # -- connections -----------------------------------------------------------------------------
    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        """The ``/ws?clientId=`` handler."""
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1024 * 1024)
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        # Ask for the queue size before the client is registered: once it is, a running job's messages
        # may be queued for it, and `status` must be the first frame it gets (as ComfyUI).
        remaining = await self.queue_remaining()
        previous = self.clients.get(sid)
        if previous is not None:           # same id reconnecting: the new socket replaces the old
            self._drop(previous)
        client = Client(sid, ws, asyncio.Queue(self.queue_size))
        client.sender = asyncio.get_running_loop().create_task(self._pump(client))
        self.clients[sid] = client
        self._put(client, WsMessage("status", {"status": {"exec_info": {"queue_remaining": remaining}},
                                               "sid": sid}).encode())
        if sid in self.executing:          # reconnecting while its job runs: say where the job is (as ComfyUI)
            self._put(client, self.executing[sid].encode())
        try:
            await self._read(client)
        finally:
            if self.clients.get(sid) is client:
                del self.clients[sid]
            client.sender.cancel()
        return ws

    async def _read(self, client: Client) -> None:
        first = True
        async for msg in client.ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                payload = json.loads(msg.data)
            except json.JSONDecodeError:
                log.debug("ignoring non-JSON websocket text from %s", client.sid)
                continue
            if first and isinstance(payload, dict) and payload.get("type") == "feature_flags":
                client.flags = payload.get("data") if isinstance(payload.get("data"), dict) else {}
                self._put(client, WsMessage("feature_flags", self.server_flags).encode())
            first = False

    async def _pump(self, client: Client) -> None:
        try:
            while True:
                await _send_within(client.ws, await client.queue.get(), SEND_TIMEOUT_S)
        except (ConnectionError, RuntimeError, asyncio.TimeoutError):
            if not client.dropped:
                self._drop(client)

    async def close_all(self) -> None:
        """Close every socket (app shutdown)."""
        for client in list(self.clients.values()):
            if client.sender is not None:
                client.sender.cancel()
            await _close_quietly(client.ws)
        self.clients.clear()


async def _send_within(ws: web.WebSocketResponse, item: str | bytes, seconds: float) -> None:
    """Send one frame; ``TimeoutError`` when it has not gone out after ``seconds`` (a peer not reading)."""
    send = ws.send_str(item) if isinstance(item, str) else ws.send_bytes(item)
    if sys.version_info < (3, 11):
        await asyncio.wait_for(send, seconds)
        return
    async with asyncio.timeout(seconds):   # before 3.12, wait_for wraps every frame in a new Task
        await send


async def _close_quietly(ws: web.WebSocketResponse) -> None:
    with contextlib.suppress(Exception):
        await ws.close()


QUEUE_EVENTS = frozenset({"execution_start", "execution_success", "execution_error",
                          "execution_interrupted"})


class ThreadBridge:
    """What the queue worker calls from its thread: ``emit(event, data, client_id)``.

    Preview images are encoded here, in the worker thread. Every event then joins one FIFO that the
    event loop drains; only an emit that finds the FIFO without a drain scheduled wakes the loop
    (``loop.call_soon_threadsafe``), so events emitted before the loop gets to run (``executing`` +
    ``progress_state`` at each node, three at the end of a job) share one wake-up and one loop iteration:
    the default graph's 28 events per job took 17 wake-ups instead of 28 (dev VM, 2026-11-30). Each
    wake-up is a hand-over of the GIL between the worker and the loop. Order is the emit order. The loop
    never waits on the worker and the worker never waits on the loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, hub: ClientHub, preview_size: int) -> None:
        self.loop = loop
        self.hub = hub
        self.preview_size = preview_size
        self._lock = threading.Lock()
        self._pending: list[tuple[WsMessage | PreviewFrame, str | None]] = []
        self._drain_scheduled = False

    def emit(self, event: str, data: dict[str, Any], client_id: str | None = None) -> None:
        if self.loop.is_closed():
            return
        item: WsMessage | PreviewFrame
        if event == "preview":
            image, mime = encode_preview(data["image"], self.preview_size)
            item = PreviewFrame(image, mime, str(data.get("node_id")), str(data.get("prompt_id")))
        else:
            item = WsMessage(event, data)
        with self._lock:
            self._pending.append((item, client_id))
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:   # the loop closed between the check and the call: nobody is listening
            pass

    def _drain(self) -> None:
        with self._lock:
            items, self._pending = self._pending, []
            self._drain_scheduled = False
        for item, client_id in items:
            if isinstance(item, PreviewFrame):
                self.hub.send_preview(item, client_id)
            else:
                self._deliver(item, client_id)

    def _deliver(self, message: WsMessage, client_id: str | None) -> None:
        self.hub.send(message, client_id)
        ends = message.type == "executing" and message.data.get("node") is None
        if client_id is not None:
            if message.type == "executing" and not ends:
                self.hub.executing[client_id] = message
            elif ends or message.type in ("execution_success", "execution_error", "execution_interrupted"):
                self.hub.executing.pop(client_id, None)
        if ends or message.type in QUEUE_EVENTS:
            self.hub.schedule_status()
