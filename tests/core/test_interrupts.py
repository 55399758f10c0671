"""An interrupt lands inside one network call on the CPU (between module forwards), not after it."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from fewstep.app.api import ExecutionContext, InterruptedError_, reset_context, set_context
from fewstep.nodes.core.interrupts import checks_between_modules


class _Counting(nn.Module):
    """A layer that counts its calls and asks for an interrupt at call ``stop_at``."""

    def __init__(self, calls: list[int], flag: threading.Event, stop_at: int) -> None:
        super().__init__()
        self.calls, self.flag, self.stop_at = calls, flag, stop_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(1)
        if len(self.calls) == self.stop_at:
            self.flag.set()
        return x + 1


def _job(flag: threading.Event) -> ExecutionContext:
    return ExecutionContext("p", "1", "KSampler", {}, {}, report=lambda *a: None, is_interrupted=flag.is_set)


def test_an_interrupt_stops_a_call_at_the_next_module() -> None:
    calls: list[int] = []
    flag = threading.Event()
    net = nn.Sequential(*[_Counting(calls, flag, stop_at=3) for _ in range(10)])
    token = set_context(_job(flag))
    try:
        with checks_between_modules(every_s=0.0), pytest.raises(InterruptedError_):
            net(torch.zeros(2))
    finally:
        reset_context(token)
    assert len(calls) == 3           # the 4th module's check saw the interrupt: 7 modules never ran


def test_no_checks_outside_the_block_or_outside_a_job() -> None:
    calls: list[int] = []
    flag = threading.Event()
    flag.set()
    net = nn.Sequential(*[_Counting(calls, threading.Event(), stop_at=0) for _ in range(4)])
    with checks_between_modules(every_s=0.0):       # no job context: nothing to check
        assert torch.equal(net(torch.zeros(1)), torch.full((1,), 4.0))
    token = set_context(_job(flag))
    try:
        with checks_between_modules(every_s=0.0):
            pass
        assert torch.equal(net(torch.zeros(1)), torch.full((1,), 4.0))   # the hook is gone after the block
    finally:
        reset_context(token)
