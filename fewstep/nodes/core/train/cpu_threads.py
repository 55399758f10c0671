"""How many intra-op threads a CPU training loop runs on: the cores this process may use that other
processes leave free.

The students trained on a CPU here are tiny (the built-in UNet: 7.6 M parameters on 4x16x16 latents), so
each optimizer step is a few hundred small kernels, and each kernel ends at an OpenMP barrier. When another
process holds one of the cores, the second worker waits a scheduler time slice at every barrier. Measured
on the 2-core dev VM, 2026-12-07 (built-in UNet, forward at batch 8 / forward + backward at batch 4):

    threads  two pinned busy loops (load 4)   other jobs (load 5)
    1        0.16 s / 0.26 s                   0.22-0.26 s / 0.36-0.42 s
    2        0.89 s / 2.3 s                    2.5-3.8 s / 3.7-5.2 s

so a busy machine makes two threads 6-17x slower than one. :func:`training_threads` counts the free cores
from ``os.sched_getaffinity`` (the cores this process may run on) and the 1-minute load average less this
process's own running threads; :func:`fit <fewstep.nodes.core.train.loop.fit>` asks again before every
step, so a run moves to one thread when other work starts and back when it ends (the load average lags
by tens of seconds).
"""

from __future__ import annotations

import os

import torch


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; ``os.cpu_count()`` where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):      # not every platform has sched_getaffinity
        return max(1, os.cpu_count() or 1)


def training_threads(own_threads: int, *, cores: int | None = None, load: float | None = None) -> int:
    """Threads for the next CPU training step: the usable cores less those other processes keep busy.

    Args:
        own_threads: threads this process runs now (they are part of the load average while it trains).
        cores / load: the usable cores and the 1-minute load average (default: read from the system).
    Returns: ``round(cores - max(0, load - own_threads))`` clamped to ``1 .. cores``.
    """
    cores = usable_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:                    # no load average: assume the machine is ours
            load = 0.0
    others = max(0.0, load - own_threads)
    return max(1, min(cores, round(cores - others)))


def adjust_cpu_threads(device: str | torch.device) -> int:
    """On the CPU, set torch's intra-op threads to :func:`training_threads`; returns the count in use."""
    current = torch.get_num_threads()
    if torch.device(device).type != "cpu":
        return current
    wanted = training_threads(current)
    if wanted != current:
        torch.set_num_threads(wanted)
    return wanted

