"""Multistep consistency distillation on a rectified-flow path (Heek et al. 2024 with flow's DDIM).

The VP pieces of ``batches`` / ``consistency`` (``segment_jump``, milestones in DDPM timesteps) assume
``x_t = alpha_t x0 + sigma_t eps``. A rectified-flow model (``nodes.core.video_sampling``; SD3, video DiTs)
has ``x_sigma = (1 - sigma) x0 + sigma eps`` on a sigma grid instead. This module is the same algorithm on
that path, for any flow model (the built-in video DiT is the first user):

- :class:`FlowSegments`: the teacher's solver grid (``shifted_sigmas(base_steps, shift)``, e.g. 50 steps)
  cut into ``segments`` equal runs of grid steps (e.g. 10 segments of 5 steps: a 10-step student of a
  50-step teacher). Segment boundaries are the grid points ``0, base/segments, ..., base``, which equal
  ``shifted_sigmas(segments, shift)`` because the shift maps a uniform grid pointwise;
- :func:`flow_jump`: DDIM (Song et al. 2021, eq. 12 with eta = 0) on the flow path: keep x0 and the
  implied noise ``eps = (x - (1 - sigma) x0) / sigma``, move to ``sigma_to``. It equals an Euler step of
  the flow ODE with ``v = (x - x0) / sigma``, so a multistep consistency sampler with deterministic jumps is
  Euler on the segment boundaries;
- :func:`flow_segment_jump`: ``g(x, sigma) = flow_jump(x, f(x, sigma), sigma, sigma_lo)``, the student's
  jump to the start (lower edge) of its segment (MLCM eq. 6 / Heek et al. Alg. 1); ``g(x, sigma_lo) = x``
  for any ``f``, the boundary condition by construction;
- :func:`flow_teacher_states`: data-free training states, the guided teacher's Euler trajectories from
  pure noise down to each sample's grid point (TLCM Alg. 1, "multistep denoising strategy").

Shapes: ``x`` is ``[B, ...]`` (video latents ``[B, T, C, h, w]``); sigmas are per sample ``[B]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from fewstep.nodes.core.train.flow_param import flow_noised, x0_to_eps
from fewstep.nodes.core.train.vp import bc
from fewstep.nodes.core.video_sampling import shifted_sigmas

# velocity(x [B, ...], sigma [B]) -> v [B, ...]: the (guided) teacher as a function of the state
FlowVelocity = Callable[[Tensor, Tensor], Tensor]


def flow_jump(x: Tensor, x0: Tensor, sigma: Tensor, sigma_to: Tensor) -> Tensor:
    """DDIM on the flow path from ``sigma`` to ``sigma_to`` (both ``[B]``) keeping x0 and
    ``eps = (x - (1 - sigma) x0) / sigma``: ``(1 - sigma_to) x0 + sigma_to eps`` (= Euler with v = (x - x0)/sigma).
    The conversions are ``flow_param``'s ``x0_to_eps`` and ``flow_noised``.

    ``sigma_to == sigma`` returns x itself (the consistency boundary; also at sigma = 0, where eps is undefined)."""
    eps = x0_to_eps(x0, x, sigma, min_sigma=1e-12)
    return torch.where(bc(sigma, x) == bc(sigma_to, x), x, flow_noised(x0, sigma_to, eps))


def flow_euler_step(velocity: Tensor, x: Tensor, sigma: Tensor, sigma_to: Tensor) -> Tensor:
    """One Euler step of dx/dsigma = v: ``x + (sigma_to - sigma) v`` (the teacher's solver)."""
    return x + bc(sigma_to - sigma, x) * velocity


def flow_segment_jump(x0_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, sigma: Tensor, sigma_lo: Tensor) -> Tensor:
    """g(x, sigma): the DDIM jump to the segment start ``sigma_lo`` with ``x0 = x0_fn(x, sigma)``."""
    return flow_jump(x, x0_fn(x, sigma), sigma, sigma_lo)


@dataclass(frozen=True)
class FlowSegments:
    """A teacher grid of ``base_steps`` shifted flow steps cut into ``segments`` equal segments.

    Args:
        base_steps: the teacher's solver steps (Efficient-vDiT's base model: 50 here, 100 in the paper).
        segments: consistency segments = the student's largest step count (MLCD: 10, a 5x cut).
        shift: the schedule's timestep shift (SD3 eq. 23; the built-in video model samples at 3).
    """

    base_steps: int = 50
    segments: int = 10
    shift: float = 3.0

    def __post_init__(self) -> None:
        if self.segments < 1 or self.base_steps < 1 or self.base_steps % self.segments:
            raise ValueError(f"FlowSegments: base_steps ({self.base_steps}) must be a positive multiple of "
                             f"segments ({self.segments})")

    @property
    def per_segment(self) -> int:
        return self.base_steps // self.segments

    def grid(self) -> Tensor:
        """``[base_steps + 1]`` teacher sigmas, 1 -> 0."""
        return shifted_sigmas(self.base_steps, self.shift)

    def boundaries(self) -> Tensor:
        """``[segments + 1]`` segment edges (grid points ``0, k, 2k, ..., base``), 1 -> 0."""
        return self.grid()[:: self.per_segment]

    def sampling_sigmas(self, steps: int) -> Tensor:
        """The ``steps + 1`` sigmas a ``steps``-step student run visits: evenly spaced segment boundaries
        (``steps = segments``: every boundary), ending at 0. More steps than segments is refused."""
        if not 1 <= steps <= self.segments:
            raise ValueError(f"a student of {self.segments} segments samples in 1..{self.segments} steps, got {steps}")
        idx = [round(i * self.segments / steps) for i in range(steps + 1)]
        return self.boundaries()[idx]

    def draw(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu"
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(k, sigma_m, sigma_n, sigma_lo), each ``[n]``: grid index k ~ U{0..base-1}, sigma_m = grid[k], the
        teacher's next grid point sigma_n = grid[k + 1] (one solver step below) and the lower edge of k's
        segment sigma_lo (sigma_n = sigma_lo on a segment's last step: the target is then the teacher's step)."""
        grid = self.grid().to(device)
        k = torch.randint(0, self.base_steps, (n,), generator=generator, device=generator.device).to(device)
        lo = (k // self.per_segment + 1) * self.per_segment
        return k, grid[k], grid[k + 1], grid[lo]


@torch.no_grad()
def flow_teacher_states(velocity: FlowVelocity, noise: Tensor, k: Tensor, grid: Tensor, stride: int) -> Tensor:
    """States at grid index ``k`` [B] from the guided teacher's Euler trajectories started at ``noise``
    (sigma = 1; TLCM Alg. 1 on the flow path).

    Sample b takes ``L_b = ceil(k_b / stride)`` Euler steps through the grid indices ``round(k_b j / L_b)``;
    the batch runs ``max L_b`` steps and shorter trajectories idle at index 0 first (a step from sigma 1 to
    sigma 1 is the identity)."""
    if stride < 1:
        raise ValueError(f"teacher state stride must be >= 1, got {stride}")
    grid = grid.to(noise.device)
    k = k.to(noise.device)
    steps = torch.ceil(k.float() / stride).long()
    total = int(steps.max()) if len(steps) else 0
    x, idx = noise, torch.zeros_like(k)
    for j in range(1, total + 1):
        own = j - (total - steps)                                    # this sample's step number, <= 0 idling
        nxt = torch.where(own > 0, torch.round(k.float() * own / steps.clamp_min(1)).long(), idx)
        x = flow_euler_step(velocity(x, grid[idx]), x, grid[idx], grid[nxt])
        idx = nxt
    return x
