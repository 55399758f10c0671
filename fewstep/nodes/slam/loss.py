"""SLAM: sub-path linear approximation consistency distillation (arXiv 2404.13903; MCG-NJU/SPLAM).

Between a skip-grid point x_{n+k} and the teacher's DDIM step x_n, SLAM trains on the drift-corrected
straight line x_γ = γ x_{n+k} + (1-γ) r x_n with r = α_{n+k}/α_n (γ ~ U(0,1)), whose noise std is
s_γ = sqrt((σ_n r)² + γ²(1 - r²)). The student sees γ through its guidance-embedding input (embedding of
10 - 10γ, so γ = 1 is the LCM "w = 0" slot used at inference) and must map x_γ to the EMA target's
consistency value at (x_n, t_n, γ = 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fewstep.nodes.core.train.batches import DistillBatch, noised_latents, randint, teacher_states
from fewstep.nodes.core.train.distill import DistillConfig
from fewstep.nodes.core.train.gamma import gamma_embedding
from fewstep.nodes.core.train.vp import (
    Cond,
    VPNet,
    bc,
    consistency_x0,
    lcm_boundary_scalings,
    pseudo_huber,
    teacher_ddim,
)


def interpolate(x_nk: Tensor, x_n: Tensor, alpha_nk: Tensor, alpha_n: Tensor, sigma_n: Tensor, gamma: Tensor
                ) -> tuple[Tensor, Tensor]:
    """The SL-ODE point x_γ and its noise std s_γ [B] (SLAM eq. for the sub-path linear ODE).

    γ = 1 gives (x_{n+k}, σ_{n+k}); γ = 0 gives (r x_n, r σ_n): the t_n state rescaled to α_{n+k}'s signal.
    """
    r = alpha_nk / alpha_n
    x_g = bc(gamma, x_nk) * x_nk + bc((1.0 - gamma) * r, x_n) * x_n
    s_g = ((sigma_n * r) ** 2 + gamma**2 * (1.0 - r**2)).sqrt()
    return x_g, s_g


def slam_prediction(student: VPNet, x_g: Tensor, s_g: Tensor, t: Tensor, cond: Cond, emb: Tensor,
                    boundary: bool = True) -> Tensor:
    """c_skip(t) x_γ + c_out(t) x̂0 with x̂0 = (x_γ - s_γ ε̂)/α_t: ε̂ from the net at t, noise std s_γ."""
    _, eps = student.x0_eps(x_g, t, cond, emb)
    x0 = (x_g - bc(s_g, x_g) * eps) / bc(student.schedule.alpha_t(t), x_g)
    if not boundary:
        return x0
    c_skip, c_out = lcm_boundary_scalings(t)
    return bc(c_skip, x_g) * x_g + bc(c_out, x_g) * x0


@dataclass
class SLAMLoss:
    """SLAM's distillation loss; ``fixed_gamma=1.0`` is LCM through the same code.

    Args:
        skip: k, the DDIM skip grid stride (1000/50 = 20 in the paper).
        guidance: teacher CFG scale s = w + 1 (SLAM w = 8 ⇒ 9).
        huber_c: pseudo-Huber c (0.001).
        embedding_dim: size of the γ embedding (the UNet's ``time_cond_proj_dim``).
        state_source: "real" (noised dataset latents, the paper) or "teacher" (data-free trajectories).
        state_step: stride of the data-free trajectories.
        fixed_gamma: None = γ ~ U(0,1) (SLAM); a number pins γ (1.0 = LCM).
        gamma_one: share of samples drawn with γ = 1 exactly (ours, not the paper's; 0 = the paper). Under
            γ ~ U(0,1) the inference condition γ = 1 has probability 0, and its embedding (w = 0: sines 0,
            cosines 1) is far from every sampled one in the high-frequency dims (w·1000·f rad with f up to
            1), so the student is never trained at the condition it is sampled with.
    """

    skip: int = 20
    guidance: float = 9.0
    huber_c: float = 0.001
    embedding_dim: int = 256
    state_source: str = "real"
    state_step: int = 125
    fixed_gamma: float | None = None
    gamma_one: float = 0.0
    boundary: bool = True

    def __call__(self, student: VPNet, batch: DistillBatch, *, teacher: VPNet, target: VPNet | None = None
                 ) -> Tensor:
        sched, b, dev, gen = teacher.schedule, batch.shape[0], batch.device, batch.generator
        idx = randint(0, sched.num_timesteps // self.skip - 1, b, gen, dev)
        t_nk = (idx + 1) * self.skip - 1                          # 19, 39, ..., 999
        t_n = (t_nk - self.skip).clamp_min(0)
        x_nk = self.states(teacher, t_nk, batch)
        x_n = teacher_ddim(teacher, x_nk, t_nk, t_n, batch.cond, batch.uncond, self.guidance)
        one = gamma_embedding(torch.ones(b, device=dev), self.embedding_dim)
        with torch.no_grad():
            tgt = consistency_x0(target or student, x_n, t_n, batch.cond, one, self.boundary)
        gamma = self.sample_gamma(b, gen, dev)
        x_g, s_g = interpolate(x_nk, x_n, sched.alpha_t(t_nk), sched.alpha_t(t_n), sched.sigma_t(t_n), gamma)
        pred = slam_prediction(student, x_g, s_g, t_nk, batch.cond,
                               gamma_embedding(gamma, self.embedding_dim), self.boundary)
        return pseudo_huber(pred, tgt, self.huber_c)

    def sample_gamma(self, b: int, gen: torch.Generator, dev: torch.device) -> Tensor:
        """γ [B]: U(0,1) (a ``gamma_one`` share set to exactly 1), or ``fixed_gamma``."""
        if self.fixed_gamma is not None:
            return torch.full((b,), self.fixed_gamma, device=dev)
        gamma = torch.rand(b, generator=gen, device=dev)
        if self.gamma_one > 0:
            gamma = torch.where(torch.rand(b, generator=gen, device=dev) < self.gamma_one, 1.0, gamma)
        return gamma

    def states(self, teacher: VPNet, t: Tensor, batch: DistillBatch) -> Tensor:
        """x_{n+k}: noised real latents (the paper) or data-free teacher trajectory states."""
        if self.state_source == "real":
            if batch.latents is None:
                raise ValueError("SLAMLoss(state_source='real') needs batch.latents (a dataset of latents)")
            return noised_latents(teacher.schedule, batch.latents, t, batch.generator)
        if self.state_source == "teacher":
            return teacher_states(teacher, t, batch, self.guidance, self.state_step)
        raise ValueError(f"state_source must be 'real' or 'teacher', got {self.state_source!r}")


def make_loss(cfg: DistillConfig) -> SLAMLoss:
    """The SLAM loss of a consistency-distillation configuration (``cfg.method == "slam"``)."""
    if cfg.method != "slam":
        raise ValueError(f"nodes.slam.loss.make_loss builds SLAM's loss, not {cfg.method!r}'s")
    return SLAMLoss(skip=cfg.skip, guidance=cfg.guidance, huber_c=cfg.huber_c, embedding_dim=cfg.gamma_dim,
                    state_source=cfg.state_source, state_step=cfg.state_step, gamma_one=cfg.gamma_one)


def node_loss(cfg: DistillConfig, vae: object, device: str) -> SLAMLoss:
    """The trainer node's loss factory (SLAM has no decoded-image terms: ``vae`` and ``device`` are unused)."""
    return make_loss(cfg)
