"""AccVideo's key timesteps and its few-step sampler.

The teacher samples 50 flow-Euler steps on the shift-7 schedule ``σ' = 7σ / (1 + 6σ)`` (SD3 eq. 23; the
HunyuanVideo scheduler with ``flow_shift=7``). AccVideo keeps the points at indices 0, 10, 20, 30, 40, 50 of
that grid (paper §4, the commented key-index list of the official ``pipeline_hunyuan_video.py``):

    t' = 1 > 0.9651 > 0.9130 > 0.8235 > 0.6363 > 0

and the student samples with 5 Euler steps between exactly those points (at 5 steps with shift 7 the
scheduler's sigmas equal them, since a 5-step grid is every 10th point of the 50-step grid).

Indexing used throughout the pack (the paper's): ``t'_m = 1`` (noise) down to ``t'_0 = 0`` (clean), m = 5;
tensors hold the points in sampling order, position j = m - k holds ``t'_k``.
"""

from __future__ import annotations

import torch

from fewstep.nodes.core.video_sampling import key_sigmas

KEY_INDICES: tuple[int, ...] = (0, 10, 20, 30, 40, 50)
BASE_STEPS = 50
SHIFT = 7.0


def key_timesteps(indices: tuple[int, ...] = KEY_INDICES, base_steps: int = BASE_STEPS,
                  shift: float = SHIFT) -> torch.Tensor:
    """The key points in sampling order ``[m + 1]`` (1 ... 0): ``key_sigmas`` of the shifted base grid."""
    return key_sigmas(indices, base_steps, shift)


def t_of_key(k: int, keys: torch.Tensor) -> float:
    """``t'_k`` in the paper's indexing (k = 0 clean ... m noise) from the sampling-order tensor ``keys``."""
    m = len(keys) - 1
    if not 0 <= k <= m:
        raise ValueError(f"key index k must be in 0..{m}, got {k}")
    return float(keys[m - k])
