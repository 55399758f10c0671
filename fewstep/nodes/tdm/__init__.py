"""TDM: trajectory distribution matching (Luo et al. 2025, arXiv 2503.06674) as nodes.

Library: ``loss`` (student timesteps, rollout, the fake-score and generator losses), ``train`` (config, presets,
the student / fake-score pair on the shared trainer), ``steps`` (TDM-unify's step-count input and folding it
out), ``graph_train`` (what the trainer node does), ``students`` (loading the
shipped students). The table, GPU job, cards and training drivers are in ``bench/tdm`` (``fewstep bench tdm``). Nodes: ``nodes``.
"""

from __future__ import annotations


def entrypoint() -> list[type]:
    from fewstep.nodes.tdm.nodes import NODES

    return list(NODES)

