"""Configuration of a running fewstep app: one dataclass, filled by the CLI."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fewstep.app.api import Paths


@dataclass
class Config:
    """Everything the server, executor and storage need to know at start.

    Args:
        home: base directory for input/, output/, temp/, user/ and the queue database.
        model_roots: models directories in ComfyUI's layout; empty means ``home/models``.
        custom_nodes_dirs: folders whose sub-folders (or .py files) are external node packs.
        cache: output-cache policy: ``none`` | ``run`` | ``lru:N`` | ``ram:GB`` | ``vram:GB``.
        auth_token: when set, every HTTP and websocket request must present it.
        cors_origin: an Origin allowed for cross-site requests ("*" for any); None = same-origin only.
        max_upload_mb / max_graph_mb: request size limits.
        device: "auto" (CUDA when available), "cpu" or "cuda[:i]".
        worker: "process" (jobs run in a child process that /interrupt can kill and restart) or "thread"
            (in the server's process: model caches shared with it, but a job stuck in one long call
            cannot be ended).
        builtin_nodes: load fewstep's own node packs (``--no-builtin-nodes`` turns them off).
        interrupt_grace_s: with the process worker, how long an interrupted job may run before its process
            is killed and restarted.
        queue_url: where the queue and history live: None (or empty) for the SQLite file under
            ``home/user``; ``postgresql://USER@HOST:PORT/DB`` for a PostgreSQL database that several
            ``fewstep serve`` hosts share (``$FEWSTEP_QUEUE_URL`` by default).
        workers: how many worker processes claim jobs from the queue (process worker only).
        gpus: the CUDA devices of the workers, one worker per entry (``("0", "1")``); empty: ``workers``
            workers that all see every device.
        lease_s: how long a worker's claim on a job lasts without a heartbeat (heartbeats come every
            ``lease_s / 10`` seconds, at most every 2 s); a worker killed mid-job loses it after this.
    """

    home: Path = field(default_factory=lambda: Path(os.environ.get("FEWSTEP_HOME", ".")))
    host: str = "127.0.0.1"
    port: int = 8188
    model_roots: list[Path] = field(default_factory=list)
    custom_nodes_dirs: list[Path] = field(default_factory=list)
    cache: str = "lru:64"
    auth_token: str | None = field(default_factory=lambda: os.environ.get("FEWSTEP_AUTH_TOKEN") or None)
    cors_origin: str | None = None
    max_upload_mb: float = 100.0
    max_graph_mb: float = 10.0
    device: str = "auto"
    preview_size: int = 512
    worker: str = "process"
    builtin_nodes: bool = True
    interrupt_grace_s: float = 5.0
    queue_url: str | None = field(default_factory=lambda: os.environ.get("FEWSTEP_QUEUE_URL") or None)
    workers: int = 1
    gpus: tuple[str, ...] = ()
    lease_s: float = 30.0

    @property
    def db_path(self) -> Path:
        """SQLite file holding the queue and history."""
        return self.home / "user" / "fewstep-queue.sqlite3"

    def paths(self) -> Paths:
        """The Paths object nodes see through ``app.api.current_paths()``."""
        env_roots = [Path(p) for p in os.environ.get("FEWSTEP_MODELS_DIRS", "").split(os.pathsep) if p]
        roots = tuple(self.model_roots) or tuple(env_roots) or (self.home / "models",)
        return Paths(
            model_roots=roots,
            input_dir=self.home / "input",
            output_dir=self.home / "output",
            temp_dir=self.home / "temp",
            user_dir=self.home / "user",
        )

    def ensure_dirs(self) -> None:
        """Create input/, output/, temp/, user/ under home."""
        paths = self.paths()
        for directory in (paths.input_dir, paths.output_dir, paths.temp_dir, paths.user_dir):
            directory.mkdir(parents=True, exist_ok=True)
