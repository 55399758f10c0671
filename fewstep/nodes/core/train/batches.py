"""Distillation batches and the states the losses start from (shared by every distillation pack).

A loss is a small callable ``loss(student, batch, *, teacher, target=None) -> per-sample loss [B]`` over
:class:`~fewstep.nodes.core.train.vp.VPNet` views; this module holds what those losses share: the batch, the
seeded integer draws, the data-free teacher states of TLCM Alg. 1, forward diffusion of real latents and the
multistep-consistency segment jump (Heek et al. 2024).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fewstep.nodes.core.train.vp import (
    Cond,
    DiscreteVPSchedule,
    VPNet,
    bc,
    consistency_x0,
    ddim_to,
    guided_x0_eps,
)


@dataclass
class DistillBatch:
    """One training batch.

    Args:
        cond: student/teacher conditioning, batch-first (token states [B, T, D] for a UNet).
        uncond: the unconditional input for the teacher's CFG ([1, ...] or [B, ...]); None = no CFG.
        shape: the latent shape [B, C, h, w] of the states.
        generator: every random draw of the step comes from it (seeded per step ⇒ resumable runs).
        latents: clean latents [B, C, h, w] when states come from real data (``state_source="real"``).
        prompts: the prompts behind ``cond`` (for a preference/reward term).
    """

    cond: Cond
    uncond: Cond | None
    shape: tuple[int, ...]
    generator: torch.Generator
    latents: Tensor | None = None
    prompts: list[str] | None = None

    @property
    def device(self) -> torch.device:
        return self.cond.device


def randint(lo: Tensor | int, hi: Tensor | int, n: int, gen: torch.Generator, device: torch.device) -> Tensor:
    """Integers uniform in [lo, hi] (inclusive, per sample) drawn from ``gen``."""
    u = torch.rand(n, generator=gen, device=device)
    lo_t = torch.as_tensor(lo, device=device)
    hi_t = torch.as_tensor(hi, device=device)
    return (lo_t + (u * (hi_t - lo_t + 1).float()).floor().long()).clamp(max=hi_t)


@torch.no_grad()
def teacher_states(teacher: VPNet, t_m: Tensor, batch: DistillBatch, scale: float, state_step: int) -> Tensor:
    """Data-free training states: guided teacher DDIM from pure noise at T-1 down to ``t_m`` [B] (TLCM Alg. 1).

    Sample b takes L_b = ceil((T-1 - t_m)/state_step) equal steps (TLCM's L = M - s for state_step = T/M);
    the batch runs max L_b steps and shorter trajectories idle at T-1 first (a DDIM step from T-1 to T-1
    is the identity).
    """
    top = teacher.schedule.num_timesteps - 1
    x = torch.randn(batch.shape, generator=batch.generator, device=batch.device)
    steps = torch.ceil((top - t_m).float() / state_step).long()
    t = torch.full_like(t_m, top)
    for j in range(1, int(steps.max()) + 1):
        k = j - (int(steps.max()) - steps)  # this sample's own step number, <= 0 while idling
        nxt = torch.where(k > 0, torch.round(top + (t_m - top).float() * k / steps.clamp_min(1)).long(), t)
        x0, eps = guided_x0_eps(teacher, x, t, batch.cond, batch.uncond, scale)
        x, t = ddim_to(teacher.schedule, x0, eps, nxt), nxt
    return x


def noised_latents(schedule: DiscreteVPSchedule, latents: Tensor, t: Tensor, gen: torch.Generator) -> Tensor:
    """Forward diffusion of real latents: x_t = α_t x0 + σ_t ε (the LCM / SLAM data path)."""
    eps = torch.randn(latents.shape, generator=gen, device=latents.device)
    return bc(schedule.alpha_t(t), latents) * latents + bc(schedule.sigma_t(t), latents) * eps


def segment_jump(net: VPNet, x: Tensor, t: Tensor, t_lo: Tensor, cond: Cond,
                 timestep_cond: Tensor | None = None, boundary: bool = True) -> Tensor:
    """g(x, t): DDIM jump to the segment start t_lo with x̂0 = f_θ(x, t) (multistep CM, Heek et al. 2024).

    ε̂ = (x - α_t f)/σ_t, g = α_lo f + σ_lo ε̂; g(x, t_lo) = x for any f, so the boundary holds by construction.
    """
    sched = net.schedule
    f = consistency_x0(net, x, t, cond, timestep_cond, boundary)
    eps = (x - bc(sched.alpha_t(t), x) * f) / bc(sched.sigma_t(t), x)
    return bc(sched.alpha_t(t_lo), x) * f + bc(sched.sigma_t(t_lo), x) * eps
