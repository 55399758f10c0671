"""Data-parallel machinery that needs no second process: batch split, per-rank draws, torchrun env, launcher argv."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from fewstep.app import launch
from fewstep.app.api import ExecutionContext, reset_context, set_context
from fewstep.app.cli import build_parser
from fewstep.nodes.core.train.distributed import (
    World,
    env_world,
    join,
    local_batch_size,
    mean_over_ranks,
    timeout_seconds,
)
from fewstep.nodes.core.train.loop import report_training, step_generator


def test_local_batch_is_the_ranks_share_and_uneven_splits_are_refused() -> None:
    assert local_batch_size(32, World(0, 1)) == 32
    assert local_batch_size(32, World(1, 4)) == 8
    with pytest.raises(ValueError, match="batch_size 6 does not split over 4 processes: choose a multiple of 4"):
        local_batch_size(6, World(0, 4))


def test_rank_zero_draws_what_one_process_draws_other_ranks_draw_otherwise() -> None:
    one = torch.randn(8, generator=step_generator(5, 17))
    assert torch.equal(torch.randn(8, generator=step_generator(5, 17, rank=0)), one)
    ranks = [torch.randn(8, generator=step_generator(5, 17, rank=r)) for r in (1, 2)]
    assert not torch.equal(ranks[0], one) and not torch.equal(ranks[1], one) and not torch.equal(*ranks)
    assert torch.equal(torch.randn(8, generator=step_generator(5, 17, rank=1)), ranks[0])   # reproducible


def test_torchrun_environment_is_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert env_world() == World(0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_world() == World(3, 4, 1) and not env_world().is_main and env_world().distributed
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4, WORLD_SIZE=4"):
        env_world()
    monkeypatch.setenv("FEWSTEP_DIST_TIMEOUT", "-3")
    with pytest.raises(ValueError, match="FEWSTEP_DIST_TIMEOUT must be > 0"):
        timeout_seconds()


def test_one_process_joins_no_group_and_its_loss_is_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert join("cpu") == World(0, 1, 0)
    assert not torch.distributed.is_initialized()
    assert mean_over_ranks(torch.tensor(2.5), World()).item() == 2.5


def _context(events: list[dict]) -> ExecutionContext:
    return ExecutionContext("p", "1", "T", {}, {}, report=lambda v, m, prev, info: events.append(info or {}),
                            is_interrupted=lambda: False)


def test_only_rank_zero_reports_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[dict] = []
    token = set_context(_context(events))
    try:
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", "1")
        report_training(1, 10, {"loss": 0.5})
        assert events == []
        monkeypatch.setenv("RANK", "0")
        report_training(1, 10, {"loss": 0.5})
        assert events == [{"loss": 0.5}]
    finally:
        reset_context(token)


def _run_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["run"]


def test_workers_get_the_same_run_command_without_nproc() -> None:
    argv = ["run", "g.json", "--nproc", "2", "--set", "10.steps=4", "--set", "10.seed=1", "--home", "/h",
            "--models-dir", "/m1", "--models-dir", "/m2", "--target", "9", "--no-builtin-nodes", "--cache", "none"]
    args = build_parser().parse_args(argv)
    rebuilt = launch.run_argv(_run_parser(), args, drop=["nproc"])
    again = build_parser().parse_args(["run", *rebuilt])
    assert "--nproc" not in rebuilt
    assert {**vars(again), "nproc": 2} == vars(args)
    assert again.set == ["10.steps=4", "10.seed=1"] and again.models_dir == [Path("/m1"), Path("/m2")]


def test_nproc_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="--nproc must be >= 1, got 0"):
        launch.check_nproc(0)


def test_a_failed_worker_is_described_by_rank_signal_and_its_own_error() -> None:
    from types import SimpleNamespace

    killed = SimpleNamespace(exitcode=-9, pid=41, message="Signal 9 (SIGKILL) received by PID 41")
    stopped = SimpleNamespace(exitcode=143, pid=40, message="")
    failed = SimpleNamespace(exitcode=1, pid=42, message="Traceback ...\nValueError: batch_size 3 does not split")
    assert launch.describe_failure(1, killed) == "rank 1 (pid 41) ended with signal SIGKILL"
    assert launch.describe_failure(0, stopped) == "rank 0 (pid 40) ended with exit code 143 (stopped by the launcher)"
    assert launch.describe_failure(2, failed) == ("rank 2 (pid 42) ended with exit code 1: "
                                                  "ValueError: batch_size 3 does not split")
