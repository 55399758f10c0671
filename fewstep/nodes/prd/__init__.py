"""PRD (Progressive Rendering Distillation, TriplaneTurbo): a K-step text-to-triplane generator distilled from a
camera-conditioned multi-view teacher by score distillation on its renders. Library modules beside ``nodes``."""

from __future__ import annotations


def entrypoint() -> list[type]:
    from fewstep.nodes.prd.nodes import NODES

    return list(NODES)
