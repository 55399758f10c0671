"""The core pack: the shared diffusion library (denoisers, schedules, samplers, guidance, loaders, metrics)
and ComfyUI's core nodes over it. Importing this package does not import torch."""

from __future__ import annotations

from collections.abc import Callable


def entrypoint() -> list[type]:
    """The core node classes (ComfyUI names), then the metric nodes."""
    from fewstep.nodes.core.metric_nodes import METRIC_NODES
    from fewstep.nodes.core.nodes import NODES

    return [*NODES, *METRIC_NODES]


def cli_commands() -> dict[str, Callable[[list[str]], int]]:
    """``fewstep eval ...`` (a grid of sampler x steps x guidance on held-out prompts),
    ``fewstep bench sampling ...`` (the fast path against diffusers' LCM pipelines) and
    ``fewstep bench server ...`` (what the server adds to a job beyond its nodes)."""
    from fewstep.nodes.core.bench_sampling import main as bench_sampling_main
    from fewstep.nodes.core.bench_server import main as bench_server_main
    from fewstep.nodes.core.eval import main as eval_main

    return {"eval": eval_main, "bench sampling": bench_sampling_main, "bench server": bench_server_main}
