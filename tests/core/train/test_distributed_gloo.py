"""Data-parallel ``fit`` in real worker processes (gloo on CPU, torch's elastic launcher): equal global batch,
identical ranks, resume across world sizes, a dying worker. Each test starts 1-3 short runs of a toy model."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.multiprocess

WORKER = Path(__file__).with_name("dist_worker_toy.py")
LAUNCH = "import sys; from fewstep.app.launch import launch; launch(int(sys.argv[1]), sys.argv[2:])"


@pytest.fixture(autouse=True)
def _one_process_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process (1-process) runs see no torchrun environment, whatever started pytest."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "FEWSTEP_DIST_TIMEOUT": "60"}


def _worker_main() -> Callable[[list[str]], int]:
    spec = importlib.util.spec_from_file_location("dist_worker_toy", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _run(nproc: int, out: Path, *args: str) -> subprocess.CompletedProcess:
    """1 process: the worker in this process (no torchrun environment); N: N workers under the launcher."""
    out.mkdir(parents=True, exist_ok=True)
    if nproc == 1:
        code = _worker_main()([str(out), *args])
        return subprocess.CompletedProcess([], code, "", "")
    cmd = [sys.executable, "-c", LAUNCH, str(nproc), str(WORKER), str(out), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env())


def _result(out: Path, rank: int = 0) -> dict:
    return json.loads((out / f"rank{rank}.json").read_text())


def _close(a: list[float], b: list[float], tol: float = 1e-5) -> bool:
    return len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b, strict=True)) < tol


def test_two_processes_train_as_one_process_at_equal_global_batch(tmp_path: Path) -> None:
    """Rank r takes rows r*4..r*4+3 of step n's fixed batch of 8: DDP's averaged gradient is the 8-sample one,
    so weights, EMA and the reported (rank-mean) losses equal the 1-process run's; both ranks stay identical
    although they built their networks from different seeds."""
    one, two = tmp_path / "one", tmp_path / "two"
    for n, out in ((1, one), (2, two)):
        proc = _run(n, out, "--data", "fixed", "--steps", "15")
        assert proc.returncode == 0, proc.stderr[-2000:]
    ref, r0, r1 = _result(one), _result(two, 0), _result(two, 1)
    assert r0["world"] == 2 and ref["world"] == 1
    assert _close(r0["losses"], ref["losses"]) and _close(r0["weights"], ref["weights"])
    assert _close(r0["ema"], ref["ema"])
    assert r1["weights"] == r0["weights"] and r1["ema"] == r0["ema"] and r1["losses"] == r0["losses"]


def test_ranks_draw_different_samples_and_report_their_mean(tmp_path: Path) -> None:
    """The trainers' way (each rank draws its half from its own step generator): the 2-process losses are not
    the 1-process ones (rank 1 sees other samples), yet both ranks hold the same weights and losses."""
    proc = _run(2, tmp_path, "--data", "draws", "--steps", "10")
    assert proc.returncode == 0, proc.stderr[-2000:]
    one = _run(1, tmp_path / "one", "--data", "draws", "--steps", "10")
    assert one.returncode == 0, one.stderr[-2000:]
    r0, r1, ref = _result(tmp_path, 0), _result(tmp_path, 1), _result(tmp_path / "one")
    assert r0["weights"] == r1["weights"] and r0["losses"] == r1["losses"]
    assert not _close(r0["losses"], ref["losses"], tol=1e-3)
    # main_rank_first: rank 0 wrote the shared file, rank 1 ran after it and found it
    assert (r0["shared_found"], r1["shared_found"]) == (False, True)
    assert r1["shared"] == "written by rank 0"


def test_a_run_resumes_across_world_sizes(tmp_path: Path) -> None:
    """1 process to step 6, 2 processes on to 12, 1 process on to 18 in the same run folder: rank 0's
    consolidated checkpoints carry the run, and with the fixed global batch the result is the uninterrupted
    1-process run's."""
    run, ref = tmp_path / "run", tmp_path / "ref"
    for nproc, steps in ((1, 6), (2, 12), (1, 18)):
        proc = _run(nproc, run, "--data", "fixed", "--steps", str(steps), "--every", "3")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert _result(run)["resumed_from"] == (None if steps == 6 else steps - 6)
        assert _result(run)["world"] == nproc
    assert _run(1, ref, "--data", "fixed", "--steps", "18").returncode == 0
    assert _close(_result(run)["losses"], _result(ref)["losses"])
    assert _close(_result(run)["weights"], _result(ref)["weights"])
    assert _close(_result(run)["ema"], _result(ref)["ema"])
    assert sorted(p.name for p in (run / "ckpt").iterdir()) == ["step_00000015.safetensors",
                                                                "step_00000018.safetensors"]


def test_a_dying_worker_ends_the_run_with_an_error_naming_it(tmp_path: Path) -> None:
    """Rank 1 is SIGKILLed at step 3 of 400: the launch fails at once (no rank left waiting), naming the rank
    and the signal; rank 0 never finishes."""
    start = time.monotonic()
    proc = _run(2, tmp_path, "--data", "draws", "--steps", "400", "--die-rank", "1", "--die-step", "3")
    assert proc.returncode != 0
    assert time.monotonic() - start < 60
    assert "rank 1" in proc.stderr and "SIGKILL" in proc.stderr and "the launcher stops the others" in proc.stderr
    assert not (tmp_path / "rank0.json").exists()
