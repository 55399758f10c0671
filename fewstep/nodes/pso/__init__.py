"""PSO — Pairwise Sample Optimization of timestep-distilled students (Miao et al., ICLR 2025), as nodes.

Library: ``policy`` (the few-step sampler as a Gaussian policy, log-probs, the adapters-off reference), ``losses``
(online clipped log-ratio, offline hinge / DPO, the naive denoising baseline), ``train`` (configs, presets, step
functions, the resumable loop), ``students`` (LoRA on the MLCM student: export / load), ``concept`` (the offline
demo's concept). The GPU job, table and cards are in ``bench/pso``. Nodes: ``nodes``.
"""

from __future__ import annotations


def entrypoint() -> list[type]:
    from fewstep.nodes.pso.nodes import NODES

    return list(NODES)
