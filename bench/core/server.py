"""``fewstep bench server``: what the server adds to a job beyond the work of its nodes.

The real app (:func:`app.server.create_app` over the registry, caches, executor and SQLite queue and
history that ``fewstep serve`` builds) serves on a loopback port in this process. A client in a *separate process* (standard library sockets: one
keep-alive HTTP connection and one websocket, as a browser or a script would hold) submits the default
graph on the built-in model N + 1 times, a new seed each time, and waits for each job's end — the
websocket's ``executing {node: None}``, which the server sends after the image is saved and the history
written. The first job is a warm-up and is dropped.

Per job, on one clock (``time.monotonic`` is system-wide on Linux, so both processes read the same one):

- ``wall``: the first byte of ``POST /prompt`` sent -> the end message received. The client builds the
  request body before the clock starts; its JSON work is the client's, not the server's.
- ``nodes``: the sum of the executor's per-node times (``RunResult.node_times``).
- ``beyond = wall - nodes``: HTTP, validation, the queue, the worker hand-off, the executor's own
  bookkeeping, history and the websocket messages. Split into ``until_execute`` (POST sent -> the worker
  calls ``Executor.execute``), ``executor`` (``execute`` wall minus nodes) and ``after_execute``
  (``execute`` returned -> the client has the end message), of which ``output_writing`` is the wait for the
  job's PNG, encoded in the background (``app.writes``; the next job would overlap it, a lone job waits).

``executor_overhead`` runs the same jobs through ``Executor.execute`` alone, no server (validation, keys,
scheduling, events to a no-op listener, caches): the executor's own cost.

Usage: ``fewstep bench server [--jobs 12] [--steps 4] [--out DIR]`` (prints a table, writes
``bench_server.json``). ``python -m fewstep.bench.core.server --client PORT ...`` is the client process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from fewstep import shipped_dir
from fewstep.app.api import Paths
from fewstep.app.cache import CacheSet
from fewstep.app.config import Config
from fewstep.app.executor import Executor
from fewstep.app.registry import load_registry
from fewstep.app.server import create_app, default_options
from fewstep.app.storage import JobStore

CLIENT_ID = "bench-server"


# ---------------------------------------------------------------------------------------------------
# the client process: stdlib sockets only
# ---------------------------------------------------------------------------------------------------

class _Stream:
    """A connected socket with a read buffer (HTTP responses and websocket frames share it)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_headers(self) -> tuple[str, dict[str, str]]:
        """The status line and the headers (lower-case names) of one HTTP response."""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("the server closed the connection mid-headers")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status, *lines = head.decode("latin-1").split("\r\n")
        return status, {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}


def _ws_open(port: int, client_id: str) -> _Stream:
    """RFC 6455 opening handshake; the 101 response must come back."""
    stream = _Stream(port)
    key = base64.b64encode(os.urandom(16)).decode()
    stream.sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                         f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    status, _ = stream.read_headers()
    if " 101 " not in status + " ":
        raise ConnectionError(f"websocket handshake refused: {status}")
    return stream


def _ws_frame(stream: _Stream) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload). Pings are answered; fragments are refused."""
    while True:
        first, second = stream.read_exactly(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(stream.read_exactly(2), "big")
        elif length == 127:
            length = int.from_bytes(stream.read_exactly(8), "big")
        payload = stream.read_exactly(length)
        opcode = first & 0x0F
        if not first & 0x80:
            raise ConnectionError("fragmented websocket frame (the server never sends them)")
        if opcode == 0x9:   # ping -> masked pong with the same payload (zero mask: XOR is the identity)
            stream.sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            continue
        if opcode == 0x8:
            raise ConnectionError("the server closed the websocket")
        return opcode, payload


def _post_request(port: int, body: bytes) -> bytes:
    return (f"POST /prompt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _await_end(ws: _Stream, prompt_id: str) -> None:
    """Read frames until ``executing {node: None}`` of ``prompt_id`` (only frames naming it are parsed)."""
    marker = prompt_id.encode()
    while True:
        opcode, payload = _ws_frame(ws)
        if opcode != 0x1 or marker not in payload or b'"executing"' not in payload:
            continue
        message = json.loads(payload)
        if message["type"] == "executing" and message["data"].get("node") is None:
            return


def run_client(port: int, prompt: dict[str, Any], seed_ids: list[str], jobs: int) -> list[dict[str, Any]]:
    """Submit ``prompt`` ``jobs`` times (seed 1000 + job); per job its id and client-side times."""
    ws = _ws_open(port, CLIENT_ID)
    http = _Stream(port)
    rows = []
    for job in range(jobs):
        _reseed(prompt, seed_ids, 1000 + job)
        prompt_id = str(uuid.uuid4())
        request = _post_request(port, json.dumps({"prompt": prompt, "client_id": CLIENT_ID,
                                                  "prompt_id": prompt_id}).encode())
        sent = time.monotonic()
        http.sock.sendall(request)
        status, headers = http.read_headers()
        answer = http.read_exactly(int(headers["content-length"]))
        if " 200 " not in status + " ":
            raise RuntimeError(f"POST /prompt refused: {status} {answer[:500]!r}")
        posted = time.monotonic()
        _await_end(ws, prompt_id)
        rows.append({"prompt_id": prompt_id, "sent": sent, "posted": posted, "ended": time.monotonic()})
    return rows


# ---------------------------------------------------------------------------------------------------
# the server side
# ---------------------------------------------------------------------------------------------------

def _default_prompt(steps: int) -> tuple[dict[str, Any], list[str]]:
    """``graphs/default.json`` with ``steps`` steps and the ids of its seed-holding nodes."""
    prompt = json.loads((shipped_dir("graphs") / "default.json").read_text())
    ids = [k for k, v in prompt.items() if "seed" in v["inputs"] or "noise_seed" in v["inputs"]]
    for node in prompt.values():                       # KSampler, or a scheduler node of a custom sampler
        if isinstance(node["inputs"].get("steps"), int):
            node["inputs"]["steps"] = steps
    return prompt, ids


def _reseed(prompt: dict[str, Any], ids: list[str], seed: int) -> None:
    """A new seed on every seed-holding node (KSampler ``seed``, RandomNoise ``noise_seed``)."""
    for k in ids:
        key = "seed" if "seed" in prompt[k]["inputs"] else "noise_seed"
        prompt[k]["inputs"][key] = seed


class BenchJobFailed(RuntimeError):
    """A benchmarked job did not succeed: the run reports the error instead of figures."""


def job_error(error: dict[str, Any] | None) -> str:
    """One line naming the failing node and the exception of a ``RunResult.error``."""
    if not error:
        return "no error recorded"
    where = f"node {error['node_id']} ({error.get('node_type')}): " if error.get("node_id") else ""
    message = error.get("exception_message") or error.get("message") or ""
    node_errors = error.get("node_errors") or {}
    if node_errors:
        message += f" {json.dumps(node_errors)[:500]}"
    return f"{where}{error.get('exception_type', error.get('type', ''))} {message}".strip()


class _TimedExecutor(Executor):
    """The engine's executor, recording per job (started, returned, sum of node times) on the shared clock."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.executed: dict[str, tuple[float, float, float]] = {}
        self.failures: dict[str, str] = {}   # prompt id -> why the job did not succeed
        self.written: dict[str, float] = {}    # prompt id -> when its output files were complete

    def execute(self, prompt: dict[str, Any], *args: Any, prompt_id: str, **kw: Any) -> Any:
        started = time.monotonic()
        on_written = kw.get("on_written")
        if on_written is not None:    # the worker's: files are written in the background (app.writes)
            def timed(result: Any, _then: Any = on_written) -> None:
                self.written[prompt_id] = time.monotonic()
                _then(result)
            kw["on_written"] = timed
        result = super().execute(prompt, *args, prompt_id=prompt_id, **kw)
        self.executed[prompt_id] = (started, time.monotonic(), sum(result.node_times.values()))
        if result.status != "success":
            self.failures[prompt_id] = f"{result.status}: {job_error(result.error)}"
        return result


def _build_app(port: int) -> tuple[web.Application, _TimedExecutor]:
    """The production app (:func:`app.server.create_app` over the real registry, caches and SQLite store, as
    ``fewstep serve`` builds it) with a timed executor, on a fresh home folder."""
    config = Config(home=Path(tempfile.mkdtemp(prefix="fewstep-bench-")), port=port, auth_token=None)
    config.ensure_dirs()
    registry = load_registry(list(config.custom_nodes_dirs))
    executor = _TimedExecutor(registry, CacheSet(config.cache), config.paths())
    app = create_app(config, registry, executor, JobStore(config.db_path), options=default_options(config))
    return app, executor


async def _serve_and_measure(jobs: int, steps: int) -> list[dict[str, float]]:
    """Start the app, run the client process against it, join client rows with the executor's times."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app, executor = _build_app(port)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fewstep.bench.core.server", "--client", str(port), "--jobs", str(jobs + 1),
            "--steps", str(steps), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=shipped_dir("graphs").parent)
        out, err = await client.communicate()
        if client.returncode != 0:
            raise RuntimeError(f"bench client failed ({client.returncode}): {err.decode()[-2000:]}")
    finally:
        await runner.cleanup()
    if executor.failures:   # no figures from failed jobs: a failed job is fast and would flatter the table
        prompt_id, why = next(iter(executor.failures.items()))
        raise BenchJobFailed(f"{len(executor.failures)} of {jobs + 1} jobs failed; first ({prompt_id}): {why}")
    rows = []
    for row in json.loads(out)[1:]:            # the first job warms up
        started, returned, nodes_s = executor.executed[row["prompt_id"]]
        rows.append({"wall": row["ended"] - row["sent"], "nodes": nodes_s, "post": row["posted"] - row["sent"],
                     "until_execute": started - row["sent"], "executor": returned - started - nodes_s,
                     "after_execute": row["ended"] - returned,
                     "writing": executor.written.get(row["prompt_id"], returned) - returned})
    return rows


def server_overhead(jobs: int = 12, steps: int = 4) -> dict[str, Any]:
    """Medians (ms) over ``jobs`` jobs of the default graph through the server; see the module doc."""
    rows = asyncio.run(_serve_and_measure(jobs, steps))
    ms = lambda key: [1e3 * r[key] for r in rows]  # noqa: E731
    beyond = [1e3 * (r["wall"] - r["nodes"]) for r in rows]
    med = lambda xs: round(statistics.median(xs), 3)  # noqa: E731
    return {"jobs": jobs, "steps": steps, "server_wall_ms_median": med(ms("wall")),
            "server_nodes_ms_median": med(ms("nodes")),
            "server_beyond_nodes_ms_median": med(beyond), "server_beyond_nodes_ms_max": round(max(beyond), 3),
            "of_which_until_execute_ms_median": med(ms("until_execute")),
            "of_which_executor_ms_median": med(ms("executor")),
            "of_which_after_execute_ms_median": med(ms("after_execute")),
            "of_which_output_writing_ms_median": med(ms("writing")),
            "post_round_trip_ms_median": med(ms("post"))}


def executor_overhead(jobs: int = 12, steps: int = 4) -> dict[str, Any]:
    """The default graph (built-in tiny model) through ``app.executor.Executor``, a new seed per job
    (loader and text encoding cached, sampler + decode + save run): wall time of ``execute`` minus the
    sum of the node times it reports, median over jobs after one warm-up job. The output files are written
    in the background (``app.writes``), as in the server: ``execute`` returns once the nodes have run,
    and the time until the files are complete is reported apart (``output_writing_ms_median``)."""
    prompt, sampler_ids = _default_prompt(steps)
    tmp = Path(tempfile.mkdtemp(prefix="fewstep-bench-"))
    paths = Paths(model_roots=(tmp / "models",), output_dir=tmp / "output", temp_dir=tmp / "temp",
                  input_dir=tmp / "input")
    executor = Executor(load_registry(), CacheSet(), paths)
    walls, overheads, node_sums, writing = [], [], [], []
    for job in range(jobs + 1):
        _reseed(prompt, sampler_ids, 1000 + job)
        finals: list[Any] = []
        done = threading.Event()
        t0 = time.perf_counter()
        executor.execute(prompt, prompt_id=f"bench-{job}", emit=lambda kind, data: None,
                         on_written=lambda final, _out=finals, _done=done: (_out.append((final, time.perf_counter())),
                                                                             _done.set()))
        wall = time.perf_counter() - t0
        done.wait()
        result, written = finals[0]
        if result.status != "success":
            raise BenchJobFailed(f"job {job} of {jobs + 1} {result.status}: {job_error(result.error)}")
        if job == 0:
            continue
        nodes_s = sum(result.node_times.values())
        if nodes_s == 0.0:
            raise BenchJobFailed("every node was cached: the graph has no seed input to vary")
        walls.append(wall * 1e3)
        node_sums.append(nodes_s * 1e3)
        overheads.append((wall - nodes_s) * 1e3)
        writing.append(max(0.0, written - t0 - wall) * 1e3)
    return {"output_writing_ms_median": round(statistics.median(writing), 2),"jobs": jobs, "steps": steps, "wall_ms_median": round(statistics.median(walls), 2),
            "nodes_ms_median": round(statistics.median(node_sums), 2),
            "executor_overhead_ms_median": round(statistics.median(overheads), 3),
            "executor_overhead_ms_max": round(max(overheads), 3)}


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------

def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fewstep bench server", description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=12, help="timed jobs (one more warms up)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")), help="folder for the JSON")
    p.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    if args.client is not None:
        prompt, ids = _default_prompt(args.steps)
        sys.stdout.write(json.dumps(run_client(args.client, prompt, ids, args.jobs)) + "\n")
        return 0
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(1)     # the built-in model's tiny tensors: a spinning thread pool only competes
    try:
        result = _measure(args)
    except BenchJobFailed as exc:
        sys.stderr.write(f"fewstep bench server: no figures, a job failed: {exc}\n")
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_server.json").write_text(json.dumps(result, indent=1))
    lines = ["| what (ms per job) | value |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in result.items() if k.endswith(("_median", "_max"))]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    """Both measurements (server, executor alone) as one JSON-ready dict; raises BenchJobFailed."""
    import torch

    result = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": platform.processor()
                       or platform.machine(), "cores": os.cpu_count(), "load_1min": os.getloadavg()[0],
                       "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"},
              **server_overhead(args.jobs, args.steps)}
    direct = executor_overhead(args.jobs, args.steps)
    result["executor_direct"] = direct
    result["executor_alone_overhead_ms_median"] = direct.get("executor_overhead_ms_median")
    return result


if __name__ == "__main__":
    raise SystemExit(main())
