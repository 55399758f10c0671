"""MixDQ (Zhao et al., ECCV 2024, arXiv 2405.17873): metric-decoupled mixed-precision post-training
quantization of few-step text-to-image UNets, with real low-bit GPU kernels from ``fewstep/kernels/``.

Library: ``layers`` (quantized layers, BOS-aware K/V), ``calibrate``, ``sensitivity``, ``allocate``
(integer programming), ``quantize`` (apply / save / load); nodes in ``nodes``. The cost and quality
tables are in ``bench/mixdq`` (``fewstep bench mixdq``).
"""

from __future__ import annotations


def entrypoint() -> list[type]:
    """The pack's node classes."""
    from fewstep.nodes.mixdq.nodes import NODES

    return list(NODES)

