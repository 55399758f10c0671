"""SLAM / SPLAM sub-path linear approximation distillation as a node (library: ``loss``, ``student``)."""

from __future__ import annotations


def entrypoint() -> list[type]:
    from fewstep.nodes.slam.nodes import NODES

    return list(NODES)
