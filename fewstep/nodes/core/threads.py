"""Intra-op thread policy for tiny CPU work.

Measured on the 2-core CI machine while other jobs ran: the built-in UNet at batch 2 took 0.14 s per
call on 1 thread and 6.5 s on 2 (OpenMP workers spin-waiting for a busy core). Tiny tensors gain little
from a second thread even on an idle machine, so tiny CPU work runs on one thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

TINY_NUMEL = 4 * 32 * 32  # per-sample input elements up to which work counts as tiny (built-in: 4x16x16)


@contextlib.contextmanager
def tiny_cpu_work(device: torch.device | str, per_sample_numel: int) -> Iterator[None]:
    """Run the block with one torch thread when it is tiny work on the CPU; restore the count after."""
    if torch.device(device).type != "cpu" or per_sample_numel > TINY_NUMEL:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
