"""DiSA: diffusion-step annealing for masked autoregressive models with per-token diffusion heads
(training-free sampler schedules). Library modules beside ``nodes``."""

from __future__ import annotations


def entrypoint() -> list[type]:
    from fewstep.nodes.disa.nodes import NODES

    return list(NODES)
