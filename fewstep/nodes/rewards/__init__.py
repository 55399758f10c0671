"""Differentiable rewards as nodes: the zoo scorer, the attribute probe, a rule-based saturation reward and
their weighted combination (with R0's per-reward gradient normalisation). Library: ``library``; nodes:
``nodes``. Used by the reward-trained packs (``fewstep/nodes/r0``, ``fewstep/nodes/pso``)."""

from __future__ import annotations


def entrypoint() -> list[type]:
    from fewstep.nodes.rewards.nodes import NODES

    return list(NODES)
