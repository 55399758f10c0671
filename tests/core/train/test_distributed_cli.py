"""``fewstep run --nproc 2``: a shipped trainer graph trained data-parallel by two gloo workers from the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fewstep import shipped_dir
from fewstep.nodes.core.train.loop import Checkpointer

pytestmark = pytest.mark.multiprocess


def _graph() -> tuple[Path, str]:
    path = shipped_dir("graphs") / "mlcm_distill.json"
    prompt = json.loads(path.read_text())
    return path, next(k for k, v in prompt.items() if v["class_type"] == "MLCMDistill")


def _fewstep(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FEWSTEP_DIST_TIMEOUT": "60", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "fewstep.app.cli", "run", "--home", str(home), *args],
                          capture_output=True, text=True, timeout=240, env=env)


def test_two_workers_train_the_graph_and_rank_zero_writes_once(tmp_path: Path) -> None:
    graph, node = _graph()
    sets = [f"{node}.{k}={v}" for k, v in (("steps", 4), ("batch_size", 4), ("prompt_count", 8),
                                            ("checkpoint_every", 2))]
    proc = _fewstep(tmp_path, str(graph), "--nproc", "2", *[a for s in sets for a in ("--set", s)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(printed) == 1 and Path(printed[0]).is_file()            # rank 0's output only
    assert sorted(p.name for p in (tmp_path / "output").iterdir()) == [Path(printed[0]).name]
    folders = list((tmp_path / "models" / "checkpoints" / "distill").iterdir())
    assert len(folders) == 1
    ckpt = Checkpointer(folders[0], keep=2)
    assert [p.name for p in ckpt.paths()] == ["step_00000002.safetensors", "step_00000004.safetensors"]
    losses = Checkpointer.load(ckpt.latest()).meta["losses"]
    assert len(losses) == 4 and all(0 < x < 1 for x in losses)


def test_a_batch_that_does_not_split_fails_with_a_clear_error(tmp_path: Path) -> None:
    graph, node = _graph()
    proc = _fewstep(tmp_path, str(graph), "--nproc", "2", "--set", f"{node}.batch_size=3", "--set", f"{node}.steps=2")
    assert proc.returncode == 1
    assert "batch_size 3 does not split over 2 processes: choose a multiple of 2" in proc.stderr
    assert "2-process run failed" in proc.stderr and "exit code 1" in proc.stderr
    assert not (tmp_path / "output").exists() or not any((tmp_path / "output").iterdir())


def _worker_pid(launcher: int, rank: int) -> int | None:
    """The pid of the launcher's worker process with ``RANK=rank`` (read from /proc), None if not started."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = dict(item.split("=", 1) for item in (entry / "environ").read_text().split("\0") if "=" in item)
        except (OSError, ValueError, IndexError):
            continue
        if ppid == launcher and env.get("RANK") == str(rank) and "TORCHELASTIC_RUN_ID" in env:
            return int(entry.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker through /proc (Linux)")
def test_a_killed_worker_ends_the_graph_run_with_a_clear_error(tmp_path: Path) -> None:
    """SIGKILL rank 1 after the first checkpoint of a 400-step run: the launcher ends the job within seconds
    (exit 1, rank and signal named, rank 0 stopped); the checkpoints on disk are whole."""
    graph, node = _graph()
    sets = [f"{node}.{k}={v}" for k, v in (("steps", 400), ("batch_size", 2), ("prompt_count", 8),
                                            ("checkpoint_every", 2))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FEWSTEP_DIST_TIMEOUT": "60", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fewstep.app.cli", "run", "--home", str(tmp_path), str(graph),
                             "--nproc", "2", *[a for s in sets for a in ("--set", s)]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 150
        folder = tmp_path / "models" / "checkpoints" / "distill"
        while not list(folder.glob("*/step_*.safetensors")):
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the kill"
            time.sleep(0.2)
        victim = _worker_pid(proc.pid, rank=1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert time.monotonic() - killed < 60
    assert f"rank 1 (pid {victim}) ended with signal SIGKILL" in err
    assert "2-process run failed" in err
    files = list(folder.glob("*/*"))
    assert files and all(p.suffix == ".safetensors" for p in files)           # no half-written .tmp left
    for path in files:
        assert len(Checkpointer.load(path).meta["losses"]) == Checkpointer.load(path).step
