"""Data-parallel ``fit`` on 2 GPUs (NCCL, one process per GPU via LOCAL_RANK): the 1-GPU run, reproduced.

Run on a machine with 2+ GPUs:  pytest -q -m gpu tests/core/train/test_distributed_nccl.py
(DDP and FSDP2; the FSDP test has not run on GPUs yet - no multi-GPU machine was lent for this work).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.multiprocess,
              pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")]

WORKER = Path(__file__).with_name("dist_worker_toy.py")
LAUNCH = "import sys; from fewstep.app.launch import launch; launch(int(sys.argv[1]), sys.argv[2:])"


def _run(nproc: int, out: Path, shard: str = "auto") -> dict:
    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["FEWSTEP_SHARD"] = shard
    cmd = [sys.executable, "-c", LAUNCH, str(nproc), str(WORKER), str(out), "--data", "fixed", "--steps", "15",
           "--device", "cuda"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**env, "FEWSTEP_DIST_TIMEOUT": "120"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {r: json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)}


def test_two_gpus_train_as_one_gpu_at_equal_global_batch(tmp_path: Path) -> None:
    one, two = _run(1, tmp_path / "one")[0], _run(2, tmp_path / "two")
    assert two[0]["world"] == 2 and two[0]["weights"] == two[1]["weights"]
    for key in ("weights", "ema", "losses"):
        assert max(abs(a - b) for a, b in zip(one[key], two[0][key], strict=True)) < 1e-4, key


def test_fsdp_on_two_gpus_trains_as_one_gpu_and_hands_back_a_plain_module(tmp_path: Path) -> None:
    """FSDP2 over NCCL (FEWSTEP_SHARD=fsdp): the 1-GPU run's weights, EMA and losses; both ranks get the plain
    student back."""
    one, two = _run(1, tmp_path / "one")[0], _run(2, tmp_path / "two", shard="fsdp")
    assert two[0]["world"] == 2 and two[0]["weights"] == two[1]["weights"]
    assert two[0]["plain"] and two[1]["plain"]
    for key in ("weights", "ema", "losses"):
        assert max(abs(a - b) for a, b in zip(one[key], two[0][key], strict=True)) < 1e-4, key
