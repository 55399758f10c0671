"""Interrupt checks inside one network call.

The samplers check for ``/interrupt`` between steps and the tiled decoder between tiles, but one step of a
network on a huge latent on the CPU (attention over every pixel of a 1024 x 1024 latent) ran for minutes
without a check. While :func:`checks_between_modules` is active, every ``nn.Module`` forward first checks
(at most every ``every_s`` seconds: a monotonic-clock read per module call, ~0.2 µs), so an interrupt lands
within one module's work — one attention block, one convolution — instead of one whole call. A job stuck
inside a single operation is still ended by the process worker (``fewstep serve``'s default), which kills it.

Used on the CPU only: on CUDA the fast path replays graphs (no Python between kernels) and a step is short.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch

from fewstep.app.api import check_interrupted, current_context


@contextlib.contextmanager
def checks_between_modules(every_s: float = 0.05) -> Iterator[None]:
    """Check for an interrupt before module forwards while the block runs (a no-op outside a job).

    The hook is torch's global forward pre-hook, removed when the block ends; other threads see no
    interrupt (the job's context is a context variable of this thread), so they are not affected."""
    if current_context() is None:
        yield
        return
    last = [time.monotonic()]

    def before_forward(module: torch.nn.Module, args: object) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s:
            last[0] = now
            check_interrupted()

    handle = torch.nn.modules.module.register_module_forward_pre_hook(before_forward)
    try:
        yield
    finally:
        handle.remove()
