"""The queue and history in PostgreSQL: one queue that several ``fewstep serve`` hosts share.

``fewstep serve --queue postgresql://USER@HOST:PORT/DB`` (or ``$FEWSTEP_QUEUE_URL``) selects it; the
driver is psycopg 3 (``pip install "fewstep[postgres]"``). The table has the SQLite store's columns, so
the rows read back into the same history entries and ``/api/jobs`` summaries (``app.storage``'s builders).

What differs from SQLite, and why:

- claims: ``UPDATE ... WHERE seq = (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING *`` — one statement;
  two workers (any hosts) never get the same job, and neither waits for the other's claim;
- queue numbers (``front`` puts a job before every pending one) are assigned under a transaction-scoped
  advisory lock, so concurrent ``POST /prompt`` on two hosts never share a number; completion order
  (``done_seq``) comes from a sequence;
- the workflow id of ``/api/jobs?workflow_id=`` is a column filled at enqueue (stored JSON is text, and
  ``json.dumps`` may write ``NaN``, which PostgreSQL's JSON types refuse);
- :meth:`PostgresJobStore.recover` records only jobs whose lease ran out: other hosts may be running the
  rest (``exclusive = False``).

Every statement runs in autocommit mode or one explicit transaction: a host killed at any point leaves
each job pending, running under a lease that will run out, or finished.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from fewstep.app.storage import (
    API_STATUS,
    API_STATUSES,
    FINISHED,
    LEASE_LOST,
    SORT_COLUMNS,
    Job,
    _dumps,
    _history_entry,
    _job,
    _job_summary,
    _loads,
    _readable,
    _status_block,
    _workflow_id,
    interrupted_message,
    lost_message,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq BIGSERIAL PRIMARY KEY,
    number BIGINT NOT NULL,
    prompt_id TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL,
    prompt TEXT NOT NULL,
    extra_data TEXT NOT NULL,
    targets TEXT NOT NULL,
    client_id TEXT,
    workflow_id TEXT,
    create_time BIGINT NOT NULL,
    start_time BIGINT,
    end_time BIGINT,
    done_seq BIGINT,
    outputs TEXT,
    messages TEXT,
    status_str TEXT,
    completed INTEGER,
    worker_id TEXT,
    lease_until BIGINT,
    interrupt_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, number);
CREATE INDEX IF NOT EXISTS jobs_done ON jobs(done_seq);
CREATE INDEX IF NOT EXISTS jobs_number ON jobs(number);
CREATE INDEX IF NOT EXISTS jobs_workflow ON jobs(workflow_id);
CREATE SEQUENCE IF NOT EXISTS jobs_done_seq;
"""
# Advisory-lock keys (64-bit, this application's own): schema creation, queue numbers.
_SCHEMA_LOCK = zlib.crc32(b"fewstep.queue.schema")
_NUMBER_LOCK = zlib.crc32(b"fewstep.queue.number")


def _ms() -> int:
    return int(time.time() * 1000)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ValueError("a postgresql:// queue needs psycopg 3: pip install 'fewstep[postgres]' "
                         "(or 'psycopg[binary]')") from None
    return psycopg


class PostgresJobStore:
    """Queue + history in a PostgreSQL database; safe to share between threads, processes and hosts.

    Args:
        url: a libpq connection URL, ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DB``; the database must
            exist, the table is created on first use.
        connect_timeout_s: how long to wait for the server when connecting.
    """

    exclusive = False   # other hosts may hold running jobs: recover() takes only expired leases

    def __init__(self, url: str, connect_timeout_s: float = 10.0) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.RLock()          # the writer connection
        self._read_lock = threading.Lock()      # the reader connection: long listings never hold up claims
        self._db = self._connect()
        self._reader = self._connect()
        with self._transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))   # hosts starting together
            db.execute(_SCHEMA)

    def _connect(self) -> Any:
        psycopg = _psycopg()
        from psycopg.rows import dict_row

        try:
            return psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                                   connect_timeout=max(1, int(self.connect_timeout_s)))
        except psycopg.OperationalError as exc:
            raise ValueError(f"cannot reach the PostgreSQL queue at {_redact(self.url)}: {exc}") from None

    def _writer(self) -> Any:
        """The writer connection, reconnected if the server dropped it (the call that saw the drop failed)."""
        if self._db.closed or self._db.broken:
            self._db = self._connect()
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._lock:
            db = self._writer()
            with db.transaction():
                yield db

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._db.close()
            self._reader.close()

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]:
        with self._read_lock:
            if self._reader.closed or self._reader.broken:
                self._reader = self._connect()
            return self._reader.execute(sql, tuple(args)).fetchall()

    def _write(self, sql: str, args: Iterable[Any] = ()) -> int:
        with self._lock:
            return self._writer().execute(sql, tuple(args)).rowcount

    # -- queue ------------------------------------------------------------------------------------
    def enqueue(self, prompt_id: str, prompt: dict[str, Any], extra_data: dict[str, Any] | None = None,
                targets: list[str] | None = None, client_id: str | None = None, *, front: bool = False) -> int:
        """Add a pending job; returns its queue number (``front`` puts it before every pending job)."""
        psycopg = _psycopg()
        extra = extra_data or {}
        sql = "SELECT MIN(number) AS n FROM jobs" if front else "SELECT MAX(number) AS n FROM jobs"
        workflow = _workflow_id(extra)
        row = (prompt_id, _dumps(prompt), _dumps(extra), _dumps(targets), client_id,
               None if workflow is None else str(workflow), int(extra.get("create_time") or _ms()))
        try:
            with self._transaction() as db:
                db.execute("SELECT pg_advisory_xact_lock(%s)", (_NUMBER_LOCK,))
                number = (db.execute(sql).fetchone()["n"] or 0) + (-1 if front else 1)
                db.execute("INSERT INTO jobs (number, prompt_id, status, prompt, extra_data, targets, client_id,"
                           " workflow_id, create_time) VALUES (%s, %s, 'pending', %s, %s, %s, %s, %s, %s)",
                           (number, *row))
        except psycopg.errors.UniqueViolation:
            raise ValueError(f"a job with prompt_id {prompt_id!r} already exists") from None
        return number

    def claim_next(self, worker_id: str | None = None, lease_s: float | None = None) -> Job | None:
        """Mark the oldest pending job running and return it (see ``app.storage.JobStore.claim_next``).
        Rows another claimer has locked are skipped, not waited for."""
        now = _ms()
        lease_until = now + int(1000 * lease_s) if worker_id is not None and lease_s is not None else None
        with self._lock:
            row = self._writer().execute(
                "UPDATE jobs SET status='running', start_time=%s, worker_id=%s, lease_until=%s, "
                "interrupt_requested=0 WHERE seq = (SELECT seq FROM jobs WHERE status='pending' "
                "ORDER BY number, seq LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING *",
                (now, worker_id, lease_until)).fetchone()
        return None if row is None else _job(row, "running")

    def finish(self, prompt_id: str, status_str: str, outputs: dict[str, Any], messages: list[Any], *,
               completed: bool, worker_id: str | None = None) -> bool:
        """Record a finished job in history (with ``worker_id``: only while that worker holds it)."""
        if status_str not in FINISHED:
            raise ValueError(f"status_str must be one of {FINISHED}, got {status_str!r}")
        args = [status_str, _ms(), _dumps(outputs), _dumps(messages), status_str, int(completed), prompt_id]
        owner = "" if worker_id is None else " AND status='running' AND worker_id=%s"
        return self._write(
            "UPDATE jobs SET status=%s, end_time=%s, done_seq=nextval('jobs_done_seq'), outputs=%s, messages=%s,"
            " status_str=%s, completed=%s, lease_until=NULL WHERE prompt_id=%s" + owner,
            args + ([] if worker_id is None else [worker_id])) > 0

    def heartbeat(self, worker_id: str, lease_s: float) -> list[str]:
        """Renew ``worker_id``'s leases; returns its jobs whose interrupt was requested through the store."""
        with self._lock:
            rows = self._writer().execute(
                "UPDATE jobs SET lease_until=%s WHERE status='running' AND worker_id=%s "
                "RETURNING prompt_id, interrupt_requested", (_ms() + int(1000 * lease_s), worker_id)).fetchall()
        return [row["prompt_id"] for row in rows if row["interrupt_requested"]]

    def request_interrupt(self, prompt_id: str) -> bool:
        return self._write("UPDATE jobs SET interrupt_requested=1 WHERE status='running' AND prompt_id=%s",
                           [prompt_id]) > 0

    def reap_expired(self) -> list[Job]:
        """Record as failed (``WorkerLost``) every running job whose lease ran out; returns them. Rows
        another host is reaping at the same moment are skipped (``SKIP LOCKED``)."""
        reaped = []
        with self._transaction() as db:
            rows = db.execute("SELECT * FROM jobs WHERE status='running' AND lease_until < %s "
                              "FOR UPDATE SKIP LOCKED", (_ms(),)).fetchall()
            for row in rows:
                message = lost_message(row["prompt_id"], LEASE_LOST)
                db.execute("UPDATE jobs SET status='error', end_time=%s, done_seq=nextval('jobs_done_seq'), "
                           "outputs='{}', messages=%s, status_str='error', completed=0, lease_until=NULL "
                           "WHERE seq=%s", (_ms(), _dumps([message]), row["seq"]))
                reaped.append(_job(row, "error"))
        return reaped

    def pending(self) -> list[Job]:
        return [_job(r) for r in self._query("SELECT * FROM jobs WHERE status='pending' ORDER BY number, seq")]

    def running(self, worker_id: str | None = None) -> list[Job]:
        if worker_id is None:
            return [_job(r) for r in self._query("SELECT * FROM jobs WHERE status='running' ORDER BY number")]
        return [_job(r) for r in self._query("SELECT * FROM jobs WHERE status='running' AND worker_id=%s "
                                             "ORDER BY number", [worker_id])]

    def workers(self) -> dict[str, str]:
        rows = self._query("SELECT prompt_id, worker_id FROM jobs WHERE status='running' AND worker_id IS NOT NULL")
        return {row["prompt_id"]: row["worker_id"] for row in rows}

    def queue_remaining(self) -> int:
        return self._query("SELECT COUNT(*) AS n FROM jobs WHERE status IN ('pending', 'running')")[0]["n"]

    def delete_pending(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        return self._write("DELETE FROM jobs WHERE status='pending' AND prompt_id = ANY(%s)", [ids]) if ids else 0

    def clear_pending(self) -> int:
        return self._write("DELETE FROM jobs WHERE status='pending'")

    def cancel_pending(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        if not ids:
            return 0
        return self._write("UPDATE jobs SET status='cancelled', end_time=%s WHERE status='pending' "
                           "AND prompt_id = ANY(%s)", [_ms(), ids])

    def requeue(self, prompt_id: str, worker_id: str | None = None) -> bool:
        owner = "" if worker_id is None else " AND worker_id=%s"
        return self._write("UPDATE jobs SET status='pending', start_time=NULL, worker_id=NULL, lease_until=NULL "
                           "WHERE status='running' AND prompt_id=%s" + owner,
                           [prompt_id] + ([] if worker_id is None else [worker_id])) > 0

    def recover(self) -> int:
        """Running jobs nobody holds (claimed without a lease, or whose lease ran out) are recorded:
        the leaseless ones as interrupted, the expired ones as failed (:meth:`reap_expired`)."""
        with self._transaction() as db:
            rows = db.execute("SELECT prompt_id FROM jobs WHERE status='running' AND lease_until IS NULL "
                              "FOR UPDATE SKIP LOCKED").fetchall()
            for row in rows:
                message = interrupted_message(row["prompt_id"], "the server stopped while this job ran")
                db.execute("UPDATE jobs SET status='interrupted', end_time=%s, done_seq=nextval('jobs_done_seq'),"
                           " outputs='{}', messages=%s, status_str='interrupted', completed=0 WHERE prompt_id=%s",
                           (_ms(), _dumps([message]), row["prompt_id"]))
        return len(rows) + len(self.reap_expired())

    # -- history ----------------------------------------------------------------------------------
    def history(self, max_items: int | None = None, offset: int = -1) -> dict[str, dict[str, Any]]:
        """Finished jobs in completion order (see ``app.storage.JobStore.history``)."""
        if offset is None or offset < 0:
            rows = self._query("SELECT * FROM jobs WHERE status = ANY(%s) ORDER BY done_seq DESC LIMIT %s",
                               [list(FINISHED), max_items])[::-1]
        else:
            rows = self._query("SELECT * FROM jobs WHERE status = ANY(%s) ORDER BY done_seq LIMIT %s OFFSET %s",
                               [list(FINISHED), max_items, offset])
        return {row["prompt_id"]: _readable(_history_entry, row) for row in rows}

    def history_entry(self, prompt_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM jobs WHERE prompt_id=%s AND status = ANY(%s)", [prompt_id, list(FINISHED)])
        return _readable(_history_entry, rows[0]) if rows else None

    def delete_history(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        if not ids:
            return 0
        return self._write("DELETE FROM jobs WHERE status NOT IN ('pending', 'running') AND prompt_id = ANY(%s)",
                           [ids])

    def clear_history(self) -> int:
        return self._write("DELETE FROM jobs WHERE status NOT IN ('pending', 'running')")

    # -- /api/jobs --------------------------------------------------------------------------------
    def jobs(self, statuses: Iterable[str] | None = None, sort_by: str = "created_at", sort_order: str = "desc",
             limit: int | None = None, offset: int = 0,
             workflow_id: str | None = None) -> tuple[list[dict[str, Any]], int]:
        """``/api/jobs`` (see ``app.storage.JobStore.jobs``); ValueError names a bad status, key or order."""
        wanted = list(statuses) if statuses else list(API_STATUSES)
        bad = [s for s in wanted if s not in API_STATUSES]
        if bad:
            raise ValueError(f"unknown job status {bad}; use {list(API_STATUSES)}")
        if sort_by not in SORT_COLUMNS or sort_order not in ("asc", "desc"):
            raise ValueError(f"sort_by must be one of {list(SORT_COLUMNS)} and sort_order asc or desc")
        where = "status = ANY(%s)"
        params: list[Any] = [[k for k, v in API_STATUS.items() if v in wanted]]
        if workflow_id:
            where += " AND workflow_id = %s"
            params.append(workflow_id)
        total = self._query(f"SELECT COUNT(*) AS n FROM jobs WHERE {where}", params)[0]["n"]
        order = sort_order.upper()
        rows = self._query(f"SELECT * FROM jobs WHERE {where} ORDER BY {SORT_COLUMNS[sort_by]} {order}, seq {order} "
                           "LIMIT %s OFFSET %s", [*params, limit, max(0, offset)])
        return [_readable(_job_summary, r) for r in rows], total

    def job_detail(self, prompt_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM jobs WHERE prompt_id=%s", [prompt_id])
        if not rows:
            return None
        row = rows[0]
        detail = _readable(_job_summary, row)
        detail["outputs"] = _loads(row["outputs"], {})
        detail["execution_status"] = _status_block(row) if row["status"] in FINISHED else None
        detail["workflow"] = {"prompt": _loads(row["prompt"], {}), "extra_data": _loads(row["extra_data"], {})}
        return detail


def _redact(url: str) -> str:
    """The URL without its password (error messages reach logs)."""
    head, at, tail = url.rpartition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, user_pass = head.partition("//")
    return f"{scheme}//{user_pass.split(':', 1)[0]}:***@{tail}"
