"""MLCM / TLCM multistep latent consistency distillation losses (arXiv 2406.05768 v6, §3.2, Alg. 1-2).

Plain LCM is :class:`MLCDLoss` with one segment. Each loss is a small callable
``loss(student, batch, *, teacher, target=None) -> per-sample loss [B]``; ``target`` is the EMA network
(None = the online student under stop-gradient, the paper's default "to save memory").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from fewstep.nodes.core.train.batches import (
    DistillBatch,
    noised_latents,
    randint,
    segment_jump,
    teacher_states,
)
from fewstep.nodes.core.train.consistency import milestone_timesteps, milestones, sample_consistency_vp
from fewstep.nodes.core.train.vp import VPNet, consistency_x0, pseudo_huber, teacher_ddim


@dataclass
class MLCDLoss:
    """Stage 1: multistep latent consistency distillation (MLCD); ``num_segments=1`` is plain LCM.

    Args:
        num_segments: M; milestones int(linspace(T-1, 0, M+1)).
        skip: teacher skip in timesteps between t_m and t_n (TLCM: 20; MCM: 1).
        substeps: teacher DDIM sub-steps over the skip (k).
        guidance: teacher CFG scale s = LCM's w + 1 (TLCM w = 8 ⇒ 9).
        huber_c: pseudo-Huber c (0 = L1-like, LCM 0.001).
        state_source: "teacher" (data-free trajectories from noise) or "real" (noised ``batch.latents``).
        state_step: largest timestep stride of the data-free trajectories (T/M = 125 for M = 8).
        perceptual: optional feature map Φ applied to both sides (TLCM's latent LPIPS; EffNet here).
        perceptual_weight: weight of ||Φ(pred) - Φ(target)||² added to the Huber term.
        reward: optional ``reward(x0 [B,...], batch) -> [B]`` (a preference scorer on decoded images).
        reward_weight / reward_margin: adds weight · relu(margin - reward(f(x_tm))) (TLCM's MPS hinge); the
            default margin 1 keeps the hinge always active for a cosine reward (<= 1), i.e. plain reward ascent.
    """

    num_segments: int = 8
    skip: int = 20
    substeps: int = 1
    guidance: float = 9.0
    huber_c: float = 0.001
    state_source: str = "teacher"
    state_step: int = 125
    boundary: bool = True
    perceptual: Callable[[Tensor], Tensor] | None = field(default=None, repr=False)
    perceptual_weight: float = 0.0
    reward: Callable[[Tensor, DistillBatch], Tensor] | None = field(default=None, repr=False)
    reward_weight: float = 0.0
    reward_margin: float = 1.0

    def sample_times(self, batch: DistillBatch, num_timesteps: int) -> tuple[Tensor, Tensor, Tensor]:
        """(t_m, t_n, t_lo) [B]: segment i ~ U{0..M-1}, t_m ~ U(t_lo, t_hi], t_n = max(t_m - skip, t_lo)."""
        ms = torch.tensor(milestones(self.num_segments, num_timesteps), device=batch.device)
        b = batch.shape[0]
        seg = randint(0, self.num_segments - 1, b, batch.generator, batch.device)
        t_hi, t_lo = ms[seg], ms[seg + 1]
        t_m = randint(t_lo + 1, t_hi, b, batch.generator, batch.device)
        return t_m, torch.maximum(t_m - self.skip, t_lo), t_lo

    def states(self, teacher: VPNet, t_m: Tensor, batch: DistillBatch) -> Tensor:
        """x_{t_m}: from teacher trajectories (data-free) or from noised real latents."""
        if self.state_source == "teacher":
            return teacher_states(teacher, t_m, batch, self.guidance, self.state_step)
        if self.state_source == "real":
            if batch.latents is None:
                raise ValueError("MLCDLoss(state_source='real') needs batch.latents (a dataset of latents)")
            return noised_latents(teacher.schedule, batch.latents, t_m, batch.generator)
        raise ValueError(f"state_source must be 'teacher' or 'real', got {self.state_source!r}")

    def __call__(self, student: VPNet, batch: DistillBatch, *, teacher: VPNet, target: VPNet | None = None
                 ) -> Tensor:
        t_m, t_n, t_lo = self.sample_times(batch, teacher.schedule.num_timesteps)
        x_tm = self.states(teacher, t_m, batch)
        x_tn = teacher_ddim(teacher, x_tm, t_m, t_n, batch.cond, batch.uncond, self.guidance, self.substeps)
        pred = segment_jump(student, x_tm, t_m, t_lo, batch.cond, boundary=self.boundary)
        with torch.no_grad():
            tgt = segment_jump(target or student, x_tn, t_n, t_lo, batch.cond, boundary=self.boundary)
        loss = pseudo_huber(pred, tgt, self.huber_c)
        return loss + self.extra_terms(student, pred, tgt, x_tm, t_m, batch)

    def extra_terms(self, student: VPNet, pred: Tensor, tgt: Tensor, x_tm: Tensor, t_m: Tensor,
                    batch: DistillBatch) -> Tensor:
        """The optional perceptual and preference terms (zero when their weights are 0)."""
        extra = pred.new_zeros(pred.shape[0])
        if self.perceptual is not None and self.perceptual_weight > 0:
            diff = self.perceptual(pred) - self.perceptual(tgt).detach()
            extra = extra + self.perceptual_weight * diff.flatten(1).pow(2).mean(1)
        if self.reward is not None and self.reward_weight > 0:
            x0 = consistency_x0(student, x_tm, t_m, batch.cond, boundary=self.boundary)
            extra = extra + self.reward_weight * torch.relu(self.reward_margin - self.reward(x0, batch))
        return extra


@dataclass
class ProgressiveLCDLoss:
    """Stage 2: consistency between milestones on the student's own samples (TLCM "improved LCD", Alg. 2).

    ẑ0 = the student's q-step sample (detached); milestone i ~ U{0..M-1}; ẑ_tm = α ẑ0 + σ ε' at t_m = m_i;
    ẑ_tn = p guided teacher DDIM sub-steps to t_n = m_{i+1}; loss = Huber(f_θ(ẑ_tm, t_m), sg f(ẑ_tn, t_n)).

    Args:
        num_segments: M (as in stage 1). student_steps: q (4). teacher_substeps: p (3).
        guidance / huber_c / boundary: as in :class:`MLCDLoss`.
    """

    num_segments: int = 8
    student_steps: int = 4
    teacher_substeps: int = 3
    guidance: float = 9.0
    huber_c: float = 0.001
    boundary: bool = True

    def __call__(self, student: VPNet, batch: DistillBatch, *, teacher: VPNet, target: VPNet | None = None
                 ) -> Tensor:
        sched, b, dev, gen = teacher.schedule, batch.shape[0], batch.device, batch.generator
        q = min(self.student_steps, self.num_segments)
        with torch.no_grad():
            noise = torch.randn(batch.shape, generator=gen, device=dev)
            z0 = sample_consistency_vp(student, noise, milestone_timesteps(q, self.num_segments, sched.num_timesteps),
                                       batch.cond, gen, boundary=self.boundary)
        ms = torch.tensor(milestones(self.num_segments, sched.num_timesteps), device=dev)
        i = randint(0, self.num_segments - 1, b, gen, dev)
        t_m, t_n = ms[i], ms[i + 1]
        z_tm = noised_latents(sched, z0, t_m, gen)
        z_tn = teacher_ddim(teacher, z_tm, t_m, t_n, batch.cond, batch.uncond, self.guidance, self.teacher_substeps)
        pred = consistency_x0(student, z_tm, t_m, batch.cond, boundary=self.boundary)
        with torch.no_grad():
            tgt = consistency_x0(target or student, z_tn, t_n, batch.cond, boundary=self.boundary)
        return pseudo_huber(pred, tgt, self.huber_c)
