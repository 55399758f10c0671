"""ATOP: articulation of static meshes: joint type, axis, origin and range fitted by differentiable
rendering against motion evidence. Library modules beside ``nodes``."""

from __future__ import annotations


def entrypoint() -> list[type]:
    from fewstep.nodes.atop.nodes import NODES

    return list(NODES)
