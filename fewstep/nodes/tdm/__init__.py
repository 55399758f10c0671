"""TDM: trajectory distribution matching (Luo et al. 2025, arXiv 2503.06674) as nodes.

Library: ``loss`` (student timesteps, rollout, the fake-score and generator losses), ``train`` (config, presets,
the student / fake-score pair on the shared trainer), ``steps`` (TDM-unify's step-count input and folding it
out), ``graph_train`` (what the trainer node does), ``students`` / ``table`` / ``gpu_run`` / ``cards`` (the
built-in teacher's students and the miniature table). Nodes: ``nodes``.
"""

from __future__ import annotations

from collections.abc import Callable


def entrypoint() -> list[type]:
    from fewstep.nodes.tdm.nodes import NODES

    return list(NODES)


def cli_commands() -> dict[str, Callable[[list[str]], int]]:
    """``fewstep bench tdm``: the table (python -m fewstep.nodes.tdm.table)."""
    from fewstep.nodes.tdm.table import main

    return {"bench tdm": main}
