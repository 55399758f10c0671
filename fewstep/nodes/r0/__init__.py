"""R0 — regularised reward maximisation (Luo et al. 2025, "Rewards Are Enough for Fast Photo-Realistic
Text-to-image Generation"; methods.md §8) as nodes.

Library: ``generator`` (the η-DDIM few-step generator), ``regularizers`` (weight drift), ``loss`` (R0 / R0+),
``train`` (config, ablation arms, loop glue), ``students`` (loading the shipped
students). The table, GPU job, cards and training driver are in ``bench/r0``. Nodes: ``nodes``. Rewards come from ``fewstep/nodes/rewards``.
"""

from __future__ import annotations


def entrypoint() -> list[type]:
    from fewstep.nodes.r0.nodes import NODES

    return list(NODES)
