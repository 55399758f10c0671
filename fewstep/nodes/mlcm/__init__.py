"""MLCM / TLCM multistep latent consistency distillation (and plain LCM) as nodes.

Library: ``vp`` (VP math), ``losses`` (MLCD, progressive stage 2), ``sampling`` (milestone subsets, the
consistency sampler), ``train`` (configs, presets, the loop glue), ``students`` / ``table`` (the built-in
teacher's students and the miniature of the papers' tables). Nodes: ``nodes``.
"""

from __future__ import annotations

from collections.abc import Callable


def entrypoint() -> list[type]:
    from fewstep.nodes.mlcm.nodes import NODES

    return list(NODES)


def cli_commands() -> dict[str, Callable[[list[str]], int]]:
    """``fewstep bench distill``: the table (python -m fewstep.nodes.mlcm.table)."""
    from fewstep.nodes.mlcm.table import main

    return {"bench distill": main}
