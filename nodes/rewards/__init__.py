"""Differentiable rewards as nodes: the zoo scorer, the attribute probe, a rule-based saturation reward and
their weighted combination (with R0's per-reward gradient normalisation). Library: ``library``; nodes:
``nodes``. Used by the reward-trained packs (``nodes/r0``, ``nodes/pso``)."""

from __future__ import annotations


def entrypoint() -> list[type]:
    from nodes.rewards.nodes import NODES

    return list(NODES)
