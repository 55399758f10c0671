"""fewstep/app/cpu_threads.py: ``fewstep run`` uses the cores other processes leave free."""

from __future__ import annotations

import pytest
import torch

from fewstep.app import cpu_threads


@pytest.mark.parametrize(("cores", "load", "expected"), [
    (2, 0.2, 2), (2, 1.2, 1), (2, 4.0, 1), (16, 3.0, 13), (1, 0.0, 1),
])
def test_free_cores_are_the_usable_ones_less_the_load(cores: int, load: float, expected: int) -> None:
    assert cpu_threads.free_cores(cores=cores, load=load) == expected


def test_run_sets_the_free_cores_unless_omp_num_threads_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(cpu_threads, "free_cores", lambda: 1)
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(2)
        assert cpu_threads.set_threads_for_load() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        torch.set_num_threads(2)
        assert cpu_threads.set_threads_for_load() == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
