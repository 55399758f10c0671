"""Distilled Decoding: one- and two-step sampling of autoregressive image models through a flow map from
Gaussian noise to token embeddings. Library modules beside ``nodes``."""

from __future__ import annotations


def entrypoint() -> list[type]:
    from fewstep.nodes.dd.nodes import NODES

    return list(NODES)
