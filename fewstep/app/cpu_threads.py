"""``fewstep run``'s torch thread count: the cores this process may use that other processes leave free.

Graphs of tiny models spend their time in small kernels, each ending at an OpenMP barrier; when another
process holds one of the cores, the second worker waits a scheduler time slice at every barrier. On the
busy 2-core dev VM (2026-12-07) the built-in UNet ran 6-17x slower on 2 threads than on 1, and
``graphs/ar_mar.json`` took 146 s wall at load 11 against 7.5 s at load 5. Trainers re-check before every
step (``fewstep.nodes.core.train.cpu_threads``, the same rule; nodes cannot import the engine).
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; ``os.cpu_count()`` where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def free_cores(own_threads: int = 0, *, cores: int | None = None, load: float | None = None) -> int:
    """``round(cores - max(0, load - own_threads))`` clamped to ``1 .. cores``: the usable cores less those
    the 1-minute load average says others keep busy (``own_threads``: this process's running threads)."""
    # Copied from fewstep/nodes/core/train/cpu_threads.py::training_threads
    cores = usable_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
    return max(1, min(cores, round(cores - max(0.0, load - own_threads))))


def set_threads_for_load() -> int:
    """Set torch's intra-op threads to :func:`free_cores` unless ``OMP_NUM_THREADS`` chose already (the
    user, or ``fewstep run --nproc`` for its workers); returns the count in use."""
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    threads = free_cores()
    torch.set_num_threads(threads)
    return threads
