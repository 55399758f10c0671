"""Cultural accumulation in reinforcement learning (Cook et al., NeurIPS 2024) as nodes: vectorised torch
environments, recurrent PPO agents and the generational loop. Library modules beside ``nodes``."""

from __future__ import annotations


def entrypoint() -> list[type]:
    from fewstep.nodes.culture.nodes import NODES

    return list(NODES)
