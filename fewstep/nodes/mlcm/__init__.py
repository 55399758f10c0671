"""MLCM / TLCM multistep latent consistency distillation (and plain LCM) as nodes.

Library: ``vp`` (VP math), ``losses`` (MLCD, progressive stage 2), ``sampling`` (milestone subsets, the
consistency sampler), ``train`` (configs, presets, the loop glue), ``students`` (loading the built-in
teacher's shipped students). The tables and training drivers are in ``bench/mlcm`` (``fewstep bench distill``). Nodes: ``nodes``.
"""

from __future__ import annotations


def entrypoint() -> list[type]:
    from fewstep.nodes.mlcm.nodes import NODES

    return list(NODES)

