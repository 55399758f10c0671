"""Efficient-vDiT (Ding et al. 2025): tile-sparse 3D attention for video DiTs — the a:b masks on the
built-in video model, the layer-wise mask search, the attention's tile map. Library: ``attention``; nodes:
``nodes``; the kernels live in ``fewstep.kernels.tile_attention``."""

from __future__ import annotations


def entrypoint() -> list[type]:
    from fewstep.nodes.vdit.nodes import NODES

    return list(NODES)
