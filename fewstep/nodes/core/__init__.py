"""The core pack: the shared diffusion library (denoisers, schedules, samplers, guidance, loaders, metrics)
and ComfyUI's core nodes over it. Importing this package does not import torch."""

from __future__ import annotations


def entrypoint() -> list[type]:
    """The core node classes (ComfyUI names), then the metric nodes."""
    from fewstep.nodes.core.metric_nodes import METRIC_NODES
    from fewstep.nodes.core.nodes import NODES

    return [*NODES, *METRIC_NODES]

