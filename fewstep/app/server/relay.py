"""Websocket events across hosts that share one PostgreSQL queue (LISTEN / NOTIFY).

With ``--queue postgresql://...`` a job posted to host A may be claimed by a worker of host B, while its
client's websocket is open on A. Each server relays the events of jobs whose client it does not hold to
the others through ``NOTIFY fewstep_events``; every server listens and hands an event to its own clients
when it holds that client. Broadcasts (``client_id`` None: queue status) stay local: each host reports its
own count of the shared queue.

Limits: a NOTIFY payload is at most 8000 bytes, so a larger event (a big ``progress_state`` snapshot, a
preview frame above ~5.8 kB of JPEG) is not relayed and counted in ``dropped``; ``progress``,
``progress_state`` and previews are relayed at most ``MAX_RATE_HZ`` times a second per job (the job's
end and every other event always go).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from fewstep.app.server.ws import PreviewFrame

log = logging.getLogger("fewstep.server")

CHANNEL = "fewstep_events"
PAYLOAD_LIMIT = 7900          # PostgreSQL refuses NOTIFY payloads of 8000 bytes and more
MAX_RATE_HZ = 10.0            # per job, for the events that only report the latest state
THROTTLED = frozenset({"progress", "progress_state", "preview"})
Deliver = Callable[[str, dict[str, Any], "str | None"], None]


def encode_event(sender: str, event: str, data: dict[str, Any], client_id: str | None) -> str:
    """The NOTIFY payload: JSON with previews as base64 and progress snapshots as plain dicts."""
    if event == "preview":
        frame: PreviewFrame = data["frame"]
        data = {"image": base64.b64encode(frame.image).decode(), "mime": frame.mime, "node_id": frame.node_id,
                "prompt_id": frame.prompt_id}
    elif event == "progress_state" and isinstance(data.get("nodes"), Mapping):
        data = {**data, "nodes": dict(data["nodes"])}
    return json.dumps({"from": sender, "event": event, "data": data, "client": client_id}, default=str)


def decode_event(payload: str) -> tuple[str, str, dict[str, Any], str | None]:
    """(sender, event, data, client_id) of a payload; previews back as :class:`PreviewFrame`."""
    message = json.loads(payload)
    event, data = message["event"], message["data"]
    if event == "preview":
        frame = PreviewFrame(base64.b64decode(data["image"]), data["mime"], data["node_id"], data["prompt_id"])
        data = {"frame": frame, "node_id": data["node_id"], "prompt_id": data["prompt_id"]}
    return message["from"], event, data, message["client"]


class EventRelay:
    """Publishes this server's events for clients held elsewhere; delivers others' events to its clients.

    Args:
        url: the shared queue's PostgreSQL URL.
        deliver: ``deliver(event, data, client_id)`` on this server (its ThreadBridge's ``emit``).
        holds: ``holds(client_id)``: whether this server has that client's websocket.
    """

    def __init__(self, url: str, deliver: Deliver, holds: Callable[[str], bool]) -> None:
        self.url = url
        self.server_id = uuid.uuid4().hex
        self.deliver = deliver
        self.holds = holds
        self.dropped = 0
        self._last: dict[tuple[str, str], float] = {}    # (event, prompt_id) -> when last relayed
        self._lock = threading.Lock()              # the publisher connection
        self._deliver_lock = threading.Lock()      # the bridge takes one producer at a time
        self._stop = threading.Event()
        self._publisher = self._connect()
        self._listener = self._connect(listen=True)
        self._thread = threading.Thread(target=self._listen, name="fewstep-event-relay", daemon=True)
        self._thread.start()

    def _connect(self, listen: bool = False) -> Any:
        import psycopg

        connection = psycopg.connect(self.url, autocommit=True)
        if listen:
            connection.execute(f"LISTEN {CHANNEL}")
        return connection

    def emit(self, event: str, data: dict[str, Any], client_id: str | None) -> None:
        """This server's emit: local clients and broadcasts here, other clients through the relay."""
        if client_id is None or self.holds(client_id):
            with self._deliver_lock:
                self.deliver(event, data, client_id)
        else:
            self.publish(event, data, client_id)

    def publish(self, event: str, data: dict[str, Any], client_id: str) -> bool:
        """NOTIFY the other servers; False when throttled or too large (counted in ``dropped``)."""
        if event in THROTTLED:
            key, now = (event, str(data.get("prompt_id"))), time.monotonic()
            if now - self._last.get(key, float("-inf")) < 1.0 / MAX_RATE_HZ:
                return False
            self._last[key] = now
        if event == "executing" and data.get("node") is None:   # the job is over: forget its throttle times
            prompt_id = str(data.get("prompt_id"))
            for name in THROTTLED:
                self._last.pop((name, prompt_id), None)
        payload = encode_event(self.server_id, event, data, client_id)
        if len(payload.encode()) > PAYLOAD_LIMIT:
            self.dropped += 1
            return False
        try:
            with self._lock:
                if self._publisher.closed or self._publisher.broken:   # the server restarted: a new one
                    self._publisher = self._connect()
                self._publisher.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
        except Exception:   # the database is unreachable for now: the client still finds the job in history
            log.exception("could not relay %s for client %s", event, client_id)
            return False
        return True

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                for notify in self._listener.notifies(timeout=0.5):
                    self._receive(notify.payload)
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("the event relay's listener failed; reconnecting")
                self._stop.wait(1.0)
                try:
                    if self._listener.closed or self._listener.broken:
                        self._listener = self._connect(listen=True)
                except Exception:   # still unreachable: the next round tries again
                    log.warning("the event relay cannot reach the queue's database yet")

    def _receive(self, payload: str) -> None:
        try:
            sender, event, data, client_id = decode_event(payload)
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed relayed event")
            return
        if sender != self.server_id and client_id is not None and self.holds(client_id):
            with self._deliver_lock:
                self.deliver(event, data, client_id)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        self._publisher.close()
