"""Few-step consistency samplers and the timestep subsets they walk.

MLCM (TLCM ``inference.py``): milestones ``int(linspace(T-1, 0, M+1))`` and a fixed subset per step count;
each step predicts x̂0 and re-noises it to the next milestone with fresh noise (LCM's multistep sampler).
SLAM and LCM walk LCM's skip grid (``lcm_origin_steps`` = 50 ⇒ timesteps 19, 39, ..., 999).

In graphs the walk is core's ``sample_lcm`` (shared sampler signature) on the SIGMAS of :data:`SCHEDULERS`;
:func:`sample_consistency_vp` is the same walk in VP space, used inside training (stage 2, previews).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fewstep.nodes.core.train.vp import Cond, VPNet, bc, consistency_x0

# Milestone indices per step count for M = 8 segments (TLCM inference.py, 1-7; 8 = every milestone).
# Index 8 is t = 0 and only marks the end.
MILESTONE_SUBSETS_M8: dict[int, tuple[int, ...]] = {
    1: (0, 8), 2: (0, 4, 8), 3: (0, 4, 7, 8), 4: (0, 2, 4, 7, 8), 5: (0, 2, 4, 6, 7, 8),
    6: (0, 2, 4, 5, 6, 7, 8), 7: (0, 2, 3, 4, 5, 6, 7, 8), 8: (0, 1, 2, 3, 4, 5, 6, 7, 8),
}


def milestones(num_segments: int, num_timesteps: int = 1000) -> list[int]:
    """Segment boundaries, descending: int(linspace(T-1, 0, M+1)); M=8 → [999, 874, ..., 124, 0]."""
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    return [int(v) for v in torch.linspace(num_timesteps - 1, 0, num_segments + 1).tolist()]


def milestone_timesteps(steps: int, num_segments: int = 8, num_timesteps: int = 1000) -> list[int]:
    """The timesteps an N-step MLCM run visits (descending, without the final 0).

    For M = 8 the subsets are TLCM's table (2 steps → 999, 499; 4 → 999, 749, 499, 124). For other M,
    N ≤ M steps take N evenly spaced milestones; N > M is refused (the student knows only M segments).
    """
    ms = milestones(num_segments, num_timesteps)
    if steps < 1 or steps > num_segments:
        raise ValueError(f"MLCM with {num_segments} segments samples in 1..{num_segments} steps, got {steps}")
    if num_segments == 8:
        idx = MILESTONE_SUBSETS_M8[steps][:-1]
    else:
        idx = tuple(int(round(i * num_segments / steps)) for i in range(steps))
    return [ms[i] for i in idx]


def lcm_timesteps(steps: int, origin_steps: int = 50, num_timesteps: int = 1000) -> list[int]:
    """LCM's inference timesteps: the skip grid k-1, 2k-1, ..., T-1 (k = T/origin_steps), reversed,
    then every (origin_steps // steps)-th point; 4 steps → [999, 759, 519, 279]."""
    if not 1 <= steps <= origin_steps:
        raise ValueError(f"LCM steps must be in 1..{origin_steps}, got {steps}")
    k = num_timesteps // origin_steps
    grid = list(range(num_timesteps - 1, -1, -k))  # 999, 979, ..., 19
    return grid[:: len(grid) // steps][:steps]


def mlcm_sigmas(schedule: Any, steps: int) -> Tensor:
    """SIGMAS of an N-step MLCM run with M = 8 (scheduler signature ``(schedule, n) -> sigmas``)."""
    from fewstep.nodes.core.schedules import from_timesteps

    return from_timesteps(schedule, milestone_timesteps(steps, 8, schedule.num_timesteps))


def lcm_sigmas(schedule: Any, steps: int) -> Tensor:
    """SIGMAS on LCM's 50-step skip grid (LCM and SLAM students)."""
    from fewstep.nodes.core.schedules import from_timesteps

    return from_timesteps(schedule, lcm_timesteps(steps, 50, schedule.num_timesteps))


# Schedulers for core's KSampler list (the sampler itself is core's "lcm": predict x0, re-noise fresh).
SCHEDULERS: dict[str, Callable[[Any, int], Tensor]] = {"mlcm_milestones": mlcm_sigmas, "lcm_skip": lcm_sigmas}


def sample_consistency_vp(student: VPNet, noise: Tensor, timesteps: list[int], cond: Cond,
                          generator: torch.Generator | None = None, timestep_cond: Tensor | None = None,
                          boundary: bool = True) -> Tensor:
    """The same walk in VP space: x_T = noise; x̂0 = f_θ(x, t_i); x ← α x̂0 + σ z at t_{i+1}; returns x̂0."""
    sched = student.schedule
    x, b = noise, noise.shape[0]
    for i, t_i in enumerate(timesteps):
        t = torch.full((b,), t_i, device=noise.device, dtype=torch.long)
        x0 = consistency_x0(student, x, t, cond, timestep_cond, boundary)
        if i + 1 == len(timesteps):
            return x0
        s = torch.full((b,), timesteps[i + 1], device=noise.device, dtype=torch.long)
        z = torch.randn(noise.shape, generator=generator, device=noise.device, dtype=noise.dtype)
        x = bc(sched.alpha_t(s), x0) * x0 + bc(sched.sigma_t(s), x0) * z
    return x
