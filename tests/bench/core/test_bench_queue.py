"""``fewstep bench queue``: its job graph, CPU accounting, argument checks, and one tiny real run of 1 and 2
workers draining the queue."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from fewstep.bench.core import queue as bench_queue


def test_job_graph_sets_size_batch_steps_and_seed() -> None:
    graph = bench_queue.job_graph(seed=7, size=96, batch=3, steps=5)
    assert graph["5"]["inputs"]["width"] == graph["5"]["inputs"]["height"] == 96
    assert graph["5"]["inputs"]["batch_size"] == 3 and graph["20"]["inputs"]["steps"] == 5
    assert graph["23"]["inputs"]["noise_seed"] == 7
    assert bench_queue.job_graph(8, 96, 3, 5)["23"]["inputs"]["noise_seed"] == 8   # a fresh copy each time


def test_cpu_seconds_counts_this_process_work() -> None:
    before = bench_queue.cpu_seconds(os.getpid())
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    assert bench_queue.cpu_seconds(os.getpid()) - before >= 0.2
    assert bench_queue.cpu_seconds(2**22 + 12345) == 0.0          # no such process


def test_bad_counts_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench_queue.parse_args(["--workers", "0"])
    assert "at least 1" in capsys.readouterr().err


def test_two_workers_drain_a_tiny_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")   # main() sets these for the children; restored after
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    code = bench_queue.main(["--workers", "2", "--jobs", "4", "--size", "32", "--batch", "1", "--steps", "1",
                             "--out", str(tmp_path)])
    assert code == 0
    [row] = json.loads((tmp_path / "bench_queue.json").read_text())["rows"]
    assert row["workers"] == 2 and sum(row["jobs_per_worker"]) == 4 and len(row["jobs_per_worker"]) == 2
    assert row["worker_cpu_s"] > 0 and row["cores_busy"] > 0


def test_table_reports_speed_up_against_the_first_row() -> None:
    rows = [{"workers": w, "jobs": 4, "seconds": s, "jobs_per_s": 4 / s, "worker_cpu_s": 2.0, "cores_busy": c,
             "load_avg_1min_before": 0.5, "jobs_per_worker": split}
            for w, s, c, split in ((1, 8.0, 0.25, [4]), (2, 4.0, 0.5, [2, 2]))]
    table = bench_queue._table(rows).splitlines()
    assert table[2].startswith("| 1 | 4 | 8.00 | 0.500 | 1.00x |")
    assert table[3].startswith("| 2 | 4 | 4.00 | 1.000 | 2.00x | 2.0 | 0.50 | 0.5 | 2, 2 |")
