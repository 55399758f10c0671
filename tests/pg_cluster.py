"""A throwaway PostgreSQL server for the storage tests: ``initdb`` in a temporary folder, ``postgres`` on a
free loopback port, one fresh database per test.

PostgreSQL refuses to run as root (CI runs as root): then the cluster belongs to the ``postgres`` user of
Debian's package (``nobody`` when there is none) and its commands run through ``runuser``. Tests skip, with
the reason, only when no server binaries exist on this machine (``.ci/run`` installs Debian's
``postgresql`` package, so CI always has them).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

ADMIN_DB = "postgres"
USER = "fewstep"


def server_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``postgres`` (PATH first, then Debian's /usr/lib/postgresql/N/bin)."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_as() -> tuple[list[str], pwd.struct_passwd | None]:
    """The command prefix that runs the server as a non-root user, and that user (None: ourselves)."""
    if os.geteuid() != 0:
        return [], None
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"], user
    raise RuntimeError("running as root, and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


class Cluster:
    """One running server; :meth:`create_database` gives each test its own database URL."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="fewstep-pg-"))
        self.port = _free_port()
        self.prefix, user = _run_as()
        if user is not None:
            os.chown(self.root, user.pw_uid, user.pw_gid)
        data = self.root / "data"
        subprocess.run([*self.prefix, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", USER,
                        "-E", "UTF8", "--no-sync", "--no-instructions"], check=True, capture_output=True,
                       cwd=self.root)   # the server's user may not enter our working folder (/root/...)
        self.log = open(self.root / "server.log", "wb")   # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [*self.prefix, str(bin_dir / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.root),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "shared_buffers=16MB", "-c", "max_connections=200"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.root)
        self._wait_ready()

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def _wait_ready(self, timeout_s: float = 30.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                psycopg.connect(self.url(ADMIN_DB), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log = (self.root / "server.log").read_text(errors="replace") if self.root.exists() else ""
                    raise RuntimeError(f"PostgreSQL did not start: {log[-2000:]}") from None
                time.sleep(0.1)

    def create_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(ADMIN_DB), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(ADMIN_DB), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster: open connections are ended, not waited for). The
        postmaster's pid comes from its pid file: under runuser, our child is runuser itself."""
        pid_file = self.root / "data" / "postmaster.pid"
        pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
        if self.process.poll() is None and pid is not None:
            os.kill(pid, signal.SIGINT)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:   # the postmaster itself, not only runuser
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            self.process.kill()
            self.process.wait(5)
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)
