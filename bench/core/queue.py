"""``fewstep bench queue``: how fast N worker processes drain one queue, against one worker, in one run.

The workers are the server's own (:class:`app.worker_pool.WorkerPool` of ``ProcessWorker`` children, as
``fewstep serve --workers N`` runs them) over the store ``fewstep serve`` would open (SQLite in a temporary
home, or ``--queue postgresql://...``). The job is the default graph on the built-in model at a larger
size (``--size``, ``--batch``, ``--steps``): CPU-bound torch work, a new seed per job, the output cache off,
each worker limited to ``--threads`` torch threads so that N workers use N cores and no more.

Per worker count: start the workers and wait until every child is ready, run one warm-up job per worker
(imports, the model load into each worker's cache), then enqueue ``--jobs`` jobs at once and time from the
enqueue to the last history record. Reported: the drain time, jobs per second, the speed-up over the first
worker count, how many jobs each worker ran, the CPU seconds the worker processes spent during the drain
(``/proc/PID/stat``) and so how many cores they kept busy, and the load average before the drain. On a
machine other processes load, N workers get less than N cores: "cores busy" tells how much parallel work
the workers actually got, the speed-up what it bought.

Usage: ``fewstep bench queue [--workers 1 2] [--jobs 12] [--size 256] [--batch 2] [--steps 8]
[--threads 1] [--queue URL] [--out DIR]`` (prints a table, writes ``bench_queue.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fewstep import shipped_dir
from fewstep.app.config import Config
from fewstep.app.storage import QueueStore, open_store
from fewstep.app.worker_pool import WorkerPool


def job_graph(seed: int, size: int, batch: int, steps: int) -> dict[str, Any]:
    """The default graph (built-in student, LCM sampler) at ``size`` px, ``batch`` images, ``steps`` steps."""
    graph = json.loads((shipped_dir("graphs") / "default.json").read_text())
    graph["5"]["inputs"].update(width=size, height=size, batch_size=batch)
    graph["20"]["inputs"]["steps"] = steps
    graph["23"]["inputs"]["noise_seed"] = seed
    return graph


def _wait(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(0.02)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; 0.0 where it cannot be read)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")   # utime, stime in clock ticks


def _finished(store: QueueStore, ids: list[str]) -> bool:
    return all(store.history_entry(pid) is not None for pid in ids)


def _failures(store: QueueStore, ids: list[str]) -> dict[str, str]:
    """Job id -> its status and last history message, for every job that did not succeed."""
    failures: dict[str, str] = {}
    for pid in ids:
        status = store.history_entry(pid)["status"]
        if status["status_str"] != "success":
            last = status["messages"][-1] if status.get("messages") else "no message"
            failures[pid] = f"{status['status_str']}: {json.dumps(last, default=str)[:2000]}"
    return failures


def drain(workers: int, args: argparse.Namespace, home: Path) -> dict[str, Any]:
    """One measurement: ``workers`` worker processes drain ``args.jobs`` jobs (after a warm-up)."""
    config = Config(home=home / f"w{workers}", cache="none", workers=workers, queue_url=args.queue,
                    auth_token=None)
    config.ensure_dirs()
    store = open_store(config)
    pool = WorkerPool.from_config(config)
    ran: dict[str, int] = {}

    def record(index: int) -> Any:
        def emit(event: str, data: dict[str, Any], client_id: str | None) -> None:
            if event == "execution_start":
                ran[data["prompt_id"]] = index
        return emit

    for worker in pool.workers:
        worker.emit = record(worker.index)
    tag = f"{workers}-{time.time_ns()}"
    pool.start()
    try:
        _wait(lambda: all(w.child_info for w in pool.workers), 300, "the workers' start")
        warm = [f"warm-{tag}-{i}" for i in range(workers)]
        for i, pid in enumerate(warm):
            store.enqueue(pid, job_graph(10_000 + i, args.size, args.batch, args.steps), {}, None, None)
        pool.wake()
        _wait(lambda: _finished(store, warm), 600, "the warm-up")
        ids = [f"job-{tag}-{i}" for i in range(args.jobs)]
        graphs = [job_graph(i, args.size, args.batch, args.steps) for i in range(args.jobs)]
        children = [int(w.child_info["pid"]) for w in pool.workers]
        load = os.getloadavg()[0]
        cpu_before = sum(cpu_seconds(pid) for pid in children)
        started = time.perf_counter()
        for pid, graph in zip(ids, graphs, strict=True):
            store.enqueue(pid, graph, {}, None, None)
        pool.wake()
        _wait(lambda: _finished(store, ids), 1800, "the drain")
        seconds = time.perf_counter() - started
        cpu_s = sum(cpu_seconds(pid) for pid in children) - cpu_before
        restarts = pool.restarts
        failures = _failures(store, warm + ids)
    finally:
        pool.stop()
        store.close()
    if failures or restarts:
        detail = "".join(f"\n  {pid}: {why}" for pid, why in failures.items())
        raise RuntimeError(f"{len(failures)} jobs failed ({restarts} worker restarts): no figures reported{detail}")
    per_worker = [sum(1 for pid in ids if ran.get(pid) == w.index) for w in pool.workers]
    return {"workers": workers, "jobs": args.jobs, "seconds": seconds, "jobs_per_s": args.jobs / seconds,
            "jobs_per_worker": per_worker, "worker_cpu_s": cpu_s, "cores_busy": cpu_s / seconds,
            "load_avg_1min_before": load}


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| workers | jobs | drain s | jobs/s | speed-up | worker CPU s | cores busy | load before | "
             "jobs per worker |", "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    base = rows[0]["jobs_per_s"]
    for row in rows:
        lines.append(f"| {row['workers']} | {row['jobs']} | {row['seconds']:.2f} | {row['jobs_per_s']:.3f} | "
                     f"{row['jobs_per_s'] / base:.2f}x | {row['worker_cpu_s']:.1f} | {row['cores_busy']:.2f} | "
                     f"{row['load_avg_1min_before']:.1f} | {', '.join(map(str, row['jobs_per_worker']))} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fewstep bench queue", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    parser.add_argument("--jobs", type=int, default=12, help="jobs drained per worker count")
    parser.add_argument("--size", type=int, default=256, help="image side, px")
    parser.add_argument("--batch", type=int, default=2, help="images per job")
    parser.add_argument("--steps", type=int, default=8, help="sampler steps per job")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker process")
    parser.add_argument("--queue", default=None, help="queue URL (default: SQLite in a temporary home)")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for bench_queue.json")
    args = parser.parse_args(argv)
    if args.jobs < 1 or any(w < 1 for w in args.workers) or args.threads < 1:
        parser.error("--jobs, --workers and --threads must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # read by torch when each child imports it: N workers then use N cores
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="fewstep-bench-queue-") as home:
        rows = [drain(n, args, Path(home)) for n in args.workers]
    table = _table(rows)
    sys.stdout.write(table + "\n")
    result = {"command": "fewstep bench queue " + " ".join(argv or []), "rows": rows,
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": {
                  "cpus": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg()},
              "settings": {k: v for k, v in vars(args).items() if k != "out"}, "table": table}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_queue.json").write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
