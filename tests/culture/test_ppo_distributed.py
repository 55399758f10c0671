"""Data-parallel PPO with 2 gloo worker processes on CPU: one update split over ranks by env columns equals the
1-process update on all columns (global advantage normalisation, averaged gradients, per-member clip after the
average); a 2-process training run keeps its ranks identical, reports global metrics and resumes on 1 process."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fewstep.nodes.core.train.distributed import World
from fewstep.nodes.culture.ppo import PPOConfig, local_envs

pytestmark = pytest.mark.multiprocess

WORKER = Path(__file__).with_name("dist_worker_ppo.py")
LAUNCH = "import sys; from fewstep.app.launch import launch; launch(int(sys.argv[1]), sys.argv[2:])"


@pytest.fixture(autouse=True)
def _one_process_here(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)


def _run(nproc: int, out: Path, *args: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if nproc == 1:
        spec = importlib.util.spec_from_file_location("dist_worker_ppo", WORKER)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.main([str(out), *args]) == 0
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FEWSTEP_DIST_TIMEOUT": "60"}
    proc = subprocess.run([sys.executable, "-c", LAUNCH, str(nproc), str(WORKER), str(out), *args],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _result(out: Path, rank: int = 0) -> dict:
    return json.loads((out / f"rank{rank}.json").read_text())


def test_envs_split_over_ranks_and_each_share_must_fill_the_minibatches() -> None:
    cfg = PPOConfig(num_envs=16, num_steps=4, total_steps=64, minibatches=4)
    assert local_envs(cfg, World(0, 1)) == 16 and local_envs(cfg, World(1, 2)) == 8
    with pytest.raises(ValueError, match="leaves 2 envs per process, not a multiple of minibatches \\(4\\): "
                                         "choose num_envs as a multiple of 32"):
        local_envs(cfg, World(0, 8))
    with pytest.raises(ValueError, match="batch_size 16 does not split over 3 processes"):
        local_envs(cfg, World(0, 3))


def test_an_update_split_over_two_ranks_is_the_one_process_update(tmp_path: Path) -> None:
    """8 env columns of one fixed rollout; rank r updates on 4 of them. Float32 tolerance 1e-6: the weights are
    O(0.1-1) and move ~1e-2 per Adam step; measured gap 6e-8 (the all-reduce sums in another order). Normalising
    advantages per rank instead of over both ranks, or not averaging gradients, moves them by > 1e-4."""
    _run(1, tmp_path / "one", "update")
    _run(2, tmp_path / "two", "update")
    ref, r0, r1 = _result(tmp_path / "one"), _result(tmp_path / "two", 0), _result(tmp_path / "two", 1)
    assert r0["world"] == 2 and r0["weights"] == r1["weights"]
    assert max(abs(a - b) for a, b in zip(ref["weights"], r0["weights"], strict=True)) < 1e-6
    for key in ("loss", "actor", "value", "entropy"):        # equal local batches: the rank mean is the global one
        assert (r0["stats"][key] + r1["stats"][key]) / 2 == pytest.approx(ref["stats"][key], abs=1e-5), key


def test_two_process_training_stays_in_step_reports_global_metrics_and_resumes_on_one(tmp_path: Path) -> None:
    """4 envs (2 per rank, own seeds) for 3 updates on 2 processes, then on to 5 updates on 1 process from rank 0's
    checkpoint. Every update's metrics are those of all 4 envs (episodes summed, returns weighted), both ranks hold
    the same weights, and the resumed run carries the whole history."""
    run = tmp_path / "run"
    _run(2, run, "train", "3")
    r0, r1 = _result(run, 0), _result(run, 1)
    assert r0["world"] == 2 and r0["weights"] == r1["weights"] and r0["history"] == r1["history"]
    for u, merged in enumerate(r0["history"]):                # the episodes of both ranks, means weighted by them
        mine, theirs = r0["local"][u], r1["local"][u]
        assert merged["episodes"] == mine["episodes"] + theirs["episodes"] > 0
        expected = (mine.get("return", 0) * mine["episodes"] + theirs.get("return", 0) * theirs["episodes"])
        assert merged["return"] == pytest.approx(expected / merged["episodes"])
        assert merged["loss"] == pytest.approx((mine["loss"] + theirs["loss"]) / 2)
    assert r0["local"] != r1["local"]                          # the ranks played different episodes
    _run(1, run, "train", "5")
    resumed = _result(run)
    assert resumed["world"] == 1 and len(resumed["history"]) == 5
    assert resumed["history"][:3] == r0["history"]
    assert sorted(p.name for p in (run / "ckpt").iterdir()) == ["step_00000003.safetensors",
                                                                "step_00000004.safetensors"]
