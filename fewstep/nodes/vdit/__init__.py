"""Efficient-vDiT (Ding et al. 2025): tile-sparse 3D attention for video DiTs and its three-stage pipeline on
the built-in video model — MLCD (``distill``, ``train``), the layer-wise mask search and the a:b masks
(``attention``), KD of the sparse student (``distill``, ``train``), the few-step consistency sampler
(``sampling``). Nodes: ``nodes``; the kernels live in ``fewstep.kernels.tile_attention``; the flow-path
consistency pieces in ``fewstep.nodes.core.train.flow_consistency``."""

from __future__ import annotations


def entrypoint() -> list[type]:
    from fewstep.nodes.vdit.nodes import NODES

    return list(NODES)
