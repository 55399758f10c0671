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
import itertools
import json
import logging
import math
import struct
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from fewstep.app.events import ProgressSnapshot

log = logging.getLogger("fewstep.server")

# Binary frame event types (first 4 bytes, big-endian), as the editor decodes them.
PREVIEW_IMAGE = 1                    # + 4-byte image type (1 = JPEG, 2 = PNG) + image bytes
PREVIEW_IMAGE_WITH_METADATA = 4      # + 4-byte JSON length + JSON metadata + image bytes
IMAGE_TYPE_CODES = {"image/jpeg": 1, "image/png": 2}
SEND_TIMEOUT_S = 30.0                # a send blocked this long (peer not reading) drops the client
STALL_S = 5.0                        # a nearly full queue with no send for this long: the peer is not reading


@dataclass(frozen=True)
class WsMessage:
    """One JSON websocket message ``{"type": type, "data": data}``."""

    type: str
    data: dict[str, Any]

    def encode(self) -> str:
        return json.dumps({"type": self.type, "data": self.data}, default=_json_default)


def _json_default(value: Any) -> Any:
    """Mappings that are not dicts (``events.ProgressSnapshot``) as objects; anything else as its text."""
    return dict(value) if isinstance(value, Mapping) else str(value)


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
    """A PIL image as JPEG bytes, its longest side capped at ``max_size`` (runs in the worker thread).

    ComfyUI's preview tuple ``(format, PIL image, size)`` (``comfy.utils.ProgressBar`` of classic custom
    packs) is honoured as ComfyUI's server honours it: ``"PNG"`` or ``"JPEG"``, capped at ``size``, or sent
    at full size when ``size`` is None — the websocket image-save node streams its outputs this way."""
    fmt = "JPEG"
    if isinstance(image, tuple):
        fmt, image, max_size = str(image[0]).upper(), image[1], image[2] if len(image) > 2 else max_size
    if max_size:
        image = image.copy()
        image.thumbnail((max_size, max_size))
    buffer = io.BytesIO()
    if fmt == "PNG":
        image.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue(), "image/png"
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
    last_sent: float = field(default_factory=time.monotonic)   # when a send last completed (or it connected)


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
        """Queue ``message`` for client ``sid`` (every client when None). Never blocks. Nothing is encoded
        when nobody would receive it (a big graph's thousands of messages cost nothing unwatched)."""
        targets = self._targets(sid)
        if not targets:
            return
        encoded = message.encode()
        for client in targets:
            self._put(client, encoded)

    def send_text(self, encoded: str, sid: str | None = None) -> None:
        """Queue an already encoded JSON message (see :class:`StateEncoder`)."""
        for client in self._targets(sid):
            self._put(client, encoded)

    def has_room(self, sid: str | None) -> bool:
        """Whether every client ``sid`` names can take more now (below 3/4 of its queue). A client whose
        queue is that full and has sent nothing for ``STALL_S`` is not reading: it is dropped here, so it
        never holds up the others for longer than that."""
        high_water = max(1, self.queue_size * 3 // 4)
        now = time.monotonic()
        for client in self._targets(sid):
            if client.queue.qsize() < high_water:
                continue
            if now - client.last_sent > STALL_S:
                log.warning("websocket client %s sent nothing for %.0f s with %d messages waiting; "
                            "disconnecting it", client.sid, now - client.last_sent, client.queue.qsize())
                self._drop(client)
                continue
            return False
        return True

    def listeners(self, sid: str | None) -> bool:
        """Whether a message for ``sid`` would reach anyone."""
        return bool(self.clients) if sid is None else sid in self.clients

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
                idle = client.queue.empty()
                item = await client.queue.get()
                if idle:   # it waited for work: the stall clock starts now, not at the last send
                    client.last_sent = time.monotonic()
                await _send_within(client.ws, item, SEND_TIMEOUT_S)
                client.last_sent = time.monotonic()
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
JOB_END_EVENTS = frozenset({"execution_success", "execution_error", "execution_interrupted"})
SLICE = 256                  # items delivered per loop callback; then HTTP handlers and senders run
PAUSE_S = 0.01               # retry delay while a reading client's queue is nearly full
WAKE_GAP_S = 0.005           # a busy worker wakes the loop at most this often
ENCODE_SLICE = 2000          # progress entries encoded ahead per drain (~10 ms on the 2-core dev VM)
STATE_MIN_INTERVAL_S = 0.1   # progress_state at most this often per job ...
STATE_COST_FACTOR = 10       # ... and at most 1/10 of the loop's time (a 10,000-node snapshot is ~2 MB)
STATE_BYTES_PER_S = 4 << 20  # ... and at most 4 MB/s of snapshots per job (each client parses them all)


# One event waiting for the loop: (sequence number, event, data, client id, coalescing key). Plain tuples:
# a 10,000-node graph emits 30,000 events, and the worker pays for each one.
_Entry = tuple[int, str, dict[str, Any], "str | None", "tuple[Any, ...] | None"]


def coalesce_key(event: str, data: dict[str, Any], client_id: str | None) -> tuple[Any, ...] | None:
    """Which earlier undelivered event this one makes pointless, as a key; None: every one counts.

    Only the latest state matters for ``progress_state`` (a full snapshot), ``progress`` of one node, and
    ``executing`` (the node running now; ``executing {node: None}``, the end, always counts). The editor
    itself keeps only the latest ``progress_state`` per animation frame. ``executed``, errors, the job's
    start and end, and binary frames are never dropped: ComfyUI's websocket image example receives a
    job's images as frames (``SaveImageWebsocket``).
    """
    if event == "progress_state" or (event == "executing" and data.get("node") is not None):
        return (event, data.get("prompt_id"), client_id)
    if event == "progress":
        return (event, data.get("prompt_id"), data.get("node"), client_id)
    return None


_ENTRY_KEYS = frozenset({"value", "max", "state", "node_id", "prompt_id", "display_node_id", "parent_node_id",
                         "real_node_id"})
_ENTRY_STATES = frozenset({"running", "finished", "error", "pending"})
_NUMBERS = frozenset({int, float})


class StateEncoder:
    """One job's ``progress_state`` messages as text, encoded incrementally.

    Each node's entry is encoded once, when it changes; a message is then one string join of the
    latest fragments, so a 10,000-node snapshot (~2 MB) costs a couple of milliseconds of the loop
    instead of a 30-50 ms ``json.dumps`` that holds the GIL throughout.
    """

    def __init__(self) -> None:
        self.fragments: dict[str, str] = {}   # node id -> '"id": {entry}', in first-seen order
        self.seen = 0                         # log entries already encoded
        self._text: dict[Any, str] = {}       # id (or None) -> its JSON text: the same few ids recur

    def advance(self, nodes: ProgressSnapshot, most: int | None = None) -> None:
        """Encode the entries ``nodes`` adds to what was seen (at most ``most`` of them)."""
        end = nodes.length if most is None else min(nodes.length, self.seen + most)
        # dict() keeps each node's last entry of the slice: a node that started and finished since the
        # last call is encoded once, not twice
        for node_id, entry in dict(nodes.entries(self.seen)[:end - self.seen]).items():
            self.fragments[node_id] = f"{self._quoted(node_id)}: {self._entry(entry)}"
        self.seen = max(self.seen, end)

    def encode(self, data: dict[str, Any], nodes: ProgressSnapshot) -> str:
        self.advance(nodes)
        head = json.dumps({k: v for k, v in data.items() if k != "nodes"}, default=str)[:-1]
        return (f'{{"type": "progress_state", "data": {head}{", " if len(head) > 1 else ""}'
                f'"nodes": {{{", ".join(self.fragments.values())}}}}}}}')

    def _quoted(self, value: Any) -> str:
        text = self._text.get(value)
        if text is None:   # json.dumps with default= builds a new encoder per call: 5x slower for a str
            text = self._text[value] = json.dumps(value) if value is None or type(value) is str \
                else json.dumps(value, default=str)
        return text

    def _entry(self, entry: dict[str, Any]) -> str:
        """The usual entry (our eight keys, finite numbers, a known state) formatted directly, its ids
        from the memo; anything else through ``json.dumps``."""
        value, total, state = entry.get("value"), entry.get("max"), entry.get("state")
        if (entry.keys() != _ENTRY_KEYS or state not in _ENTRY_STATES or type(value) not in _NUMBERS
                or type(total) not in _NUMBERS or not math.isfinite(value) or not math.isfinite(total)):
            return json.dumps(entry, default=str)
        q = self._quoted
        return (f'{{"value": {value!r}, "max": {total!r}, "state": "{state}", "node_id": {q(entry["node_id"])}, '
                f'"prompt_id": {q(entry["prompt_id"])}, "display_node_id": {q(entry["display_node_id"])}, '
                f'"parent_node_id": {q(entry["parent_node_id"])}, "real_node_id": {q(entry["real_node_id"])}}}')


class ThreadBridge:
    """What the queue worker calls from its thread: ``emit(event, data, client_id)``.

    Bounded per job whatever the graph's size: every event joins one FIFO that the event loop drains,
    and an event that supersedes an undelivered one (:func:`coalesce_key`) cancels it, so however far
    the worker runs ahead, at most one ``progress_state`` / ``executing`` per job and one ``progress``
    per node wait. Only an emit that finds no drain scheduled wakes the loop. The loop delivers
    ``SLICE`` items per callback, so HTTP requests and the per-client senders run between slices, and it
    waits (never drops) while a client that is reading has a nearly full queue (:meth:`ClientHub.has_room`).
    ``progress_state`` snapshots are built (O(nodes)) only when sent, at most every
    ``STATE_MIN_INTERVAL_S`` per job and then only when someone listens; the latest one always goes out
    before the job's end. Order is the emit order; the worker never waits on the loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, hub: ClientHub, preview_size: int) -> None:
        self.loop = loop
        self.hub = hub
        self.preview_size = preview_size
        # Worker -> loop without a lock: deque appends/pops, dict item sets and ``next`` on a counter are
        # each atomic in CPython, and the emit cost is what a 10,000-node graph pays 30,000 times.
        self._pending: deque[_Entry] = deque()
        self._latest: dict[tuple[Any, ...], int] = {}    # coalescing key -> seq of its newest entry
        self._counter = itertools.count(1)
        self._drain_scheduled = False
        self._backlog: deque[_Entry] = deque()           # loop only: live entries not yet delivered
        self._held: dict[tuple[Any, ...], dict[str, Any]] = {}   # loop only: progress_state data awaiting its time
        self._state_sent: dict[tuple[Any, ...], float] = {}      # loop only: when each job's state may go next
        self._timer: asyncio.TimerHandle | None = None
        self._last_drain = float("-inf")
        self._states: dict[tuple[Any, ...], StateEncoder] = {}   # loop only: each job's encoded entries

    def emit(self, event: str, data: dict[str, Any], client_id: str | None = None) -> None:
        if event == "preview" and "frame" not in data:   # encoded here, in the worker thread (a worker
            # process sends its previews encoded)
            image, mime = encode_preview(data["image"], self.preview_size)
            data = {"frame": PreviewFrame(image, mime, str(data.get("node_id")), str(data.get("prompt_id"))),
                    "node_id": data.get("node_id"), "prompt_id": data.get("prompt_id")}
        key = coalesce_key(event, data, client_id)
        seq = next(self._counter)
        if key is not None:
            self._latest[key] = seq      # before the append: a drain that sees the entry sees this too
        self._pending.append((seq, event, data, client_id, key))
        if self._drain_scheduled:        # read after the append: a drain clears it before it pops
            return
        self._drain_scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._wake)
        except RuntimeError:   # the loop is closed: nobody is listening
            pass

    def _wake(self) -> None:
        """Drain now, or ``WAKE_GAP_S`` after the previous drain when that was just now: a worker emitting
        continuously then hands the loop batches, not one GIL hand-over per few events (a 10,000-node
        graph ran 2x slower with the bridge than without a listener; a single burst still goes at once)."""
        delay = self._last_drain + WAKE_GAP_S - self.loop.time()
        if delay > 0:
            self.loop.call_later(delay, self._drain)
        else:
            self._drain()

    def _drain(self) -> None:
        """Deliver up to ``SLICE`` entries; reschedule itself while entries remain (see the class docstring)."""
        self._drain_scheduled = False    # before popping: an emit after the last pop schedules a new drain
        pending, latest, backlog = self._pending, self._latest, self._backlog
        while pending:                   # superseded entries are dropped here
            entry = pending.popleft()
            key = entry[4]
            if key is None or latest.get(key) == entry[0]:
                backlog.append(entry)
        self._last_drain = self.loop.time()
        for _ in range(SLICE):
            if not backlog:
                return
            _, event, data, client_id, _ = backlog[0]
            if not self.hub.has_room(client_id):
                self._schedule(PAUSE_S)   # a reading client is behind: let its sender catch up
                return
            backlog.popleft()
            self._take(event, data, client_id)
        self._schedule(0.0)

    def _schedule(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(delay, self._drain) if delay else self.loop.call_soon(self._drain)

    def _take(self, event: str, data: dict[str, Any], client_id: str | None) -> None:
        if event == "preview":
            self.hub.send_preview(data["frame"], client_id)
        elif event == "progress_state":
            self._hold_state(data, client_id)
        else:
            if event in JOB_END_EVENTS or (event == "executing" and data.get("node") is None):
                self._flush_state(data.get("prompt_id"), client_id)   # the job's final state first
            self._deliver(WsMessage(event, data), client_id)

    def _hold_state(self, data: dict[str, Any], client_id: str | None) -> None:
        """Send a job's ``progress_state`` now if its interval has passed, else keep the latest for later."""
        key = (data.get("prompt_id"), client_id)
        waiting = key in self._held          # then a flush is already scheduled for this job
        self._held[key] = data
        nodes = data.get("nodes")
        if isinstance(nodes, ProgressSnapshot) and self.hub.listeners(client_id):
            # keep encoding as entries come, a bounded slice per drain: a flush then has little left to do
            self._states.setdefault(key, StateEncoder()).advance(nodes, ENCODE_SLICE)
        self._flush_when_due(key, waiting)

    def _flush_when_due(self, key: tuple[Any, ...], waiting: bool = False) -> None:
        """Flush the job's held state if its interval has passed, else (unless a timer waits) later."""
        wait = self._state_sent.get(key, 0.0) - time.monotonic()
        if wait <= 0:
            self._flush_state(*key)
        elif not waiting:   # a timer from before a flush at the job's end may come early: it checks again
            self.loop.call_later(wait, self._flush_when_due, key)

    def _flush_state(self, prompt_id: Any, client_id: str | None) -> None:
        key = (prompt_id, client_id)
        data = self._held.pop(key, None)
        if data is None or not self.hub.listeners(client_id):
            return   # nothing held, or nobody to tell: the snapshot is never even built
        started = time.monotonic()
        nodes = data.get("nodes")
        text = None
        if isinstance(nodes, ProgressSnapshot):
            text = self._states.setdefault(key, StateEncoder()).encode(data, nodes)
            self.hub.send_text(text, client_id)
        else:   # a plain dict (from a pack's send_sync): encoded as it is
            self.hub.send(WsMessage("progress_state", data), client_id)
        cost = time.monotonic() - started
        size = len(text) if text is not None else 0
        self._state_sent[key] = time.monotonic() + max(STATE_MIN_INTERVAL_S, STATE_COST_FACTOR * cost,
                                                       size / STATE_BYTES_PER_S)

    def _deliver(self, message: WsMessage, client_id: str | None) -> None:
        self.hub.send(message, client_id)
        ends = message.type == "executing" and message.data.get("node") is None
        if ends:
            prompt_id = message.data.get("prompt_id")
            self._state_sent.pop((prompt_id, client_id), None)
            self._states.pop((prompt_id, client_id), None)
            for key in list(self._latest):   # list() copies atomically; the job emits nothing more
                if key[1] == prompt_id:
                    self._latest.pop(key, None)
        if client_id is not None:
            if message.type == "executing" and not ends:
                self.hub.executing[client_id] = message
            elif ends or message.type in ("execution_success", "execution_error", "execution_interrupted"):
                self.hub.executing.pop(client_id, None)
        if ends or message.type in QUEUE_EVENTS:
            self.hub.schedule_status()
