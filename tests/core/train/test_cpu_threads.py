"""fewstep/nodes/core/train/cpu_threads.py: a CPU training loop uses the cores other processes leave free."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fewstep.nodes.core.train.cpu_threads as cpu_threads
from fewstep.nodes.core.train.loop import FitSpec, fit


@pytest.mark.parametrize(("cores", "load", "own", "expected"), [
    (2, 0.1, 1, 2),      # idle machine: both cores
    (2, 1.1, 1, 2),      # the load is our own thread
    (2, 3.0, 1, 1),      # two other busy processes: one thread
    (2, 2.6, 2, 1),      # we run 2 threads and another process took a core
    (2, 19.0, 2, 1),     # never below one
    (16, 4.0, 2, 14),    # a bigger machine: what the others leave
    (1, 0.0, 1, 1),      # one usable core
])
def test_training_threads_counts_the_free_cores(cores: int, load: float, own: int, expected: int) -> None:
    assert cpu_threads.training_threads(own, cores=cores, load=load) == expected


def test_usable_cores_is_the_affinity_of_this_process() -> None:
    import os

    if hasattr(os, "sched_getaffinity"):
        assert cpu_threads.usable_cores() == len(os.sched_getaffinity(0))
    assert cpu_threads.usable_cores() >= 1


def test_fit_trains_on_the_thread_count_for_the_load_and_restores_it(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    monkeypatch.setattr(cpu_threads, "training_threads", lambda own: 1)     # a busy machine
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return model(torch.randn(4, 3, generator=gen)).square().mean()

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fit(model, opt, step_fn, FitSpec(total_steps=3))
        assert seen == [1, 1, 1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
