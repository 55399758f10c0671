"""Trajectory Distribution Matching (TDM, Luo et al. 2025, arXiv 2503.06674): the student rollout and the two losses.

Notation of ``shared/methods.md`` §2 (VP, ``x_t = α_t x0 + σ_t ε``, 1000 integer timesteps). A K-step student
visits ``t_k = k·T'/K − 1`` (k = K..1, T' = ``total_steps`` = 900: 899, 674, 449, 224 for K = 4), each step a
deterministic DDIM jump with the student's own ε̂: ``x_{t_{k-1}} = α x̂0 + σ ε̂`` (t_0 = 0). TDM matches the
distribution of every intermediate state, diffused further inside *its own* interval, to the teacher's marginal
(paper eq. 5-7): one fake-score network models all steps because the intervals (t_{k-1}, t_k] do not overlap.

Per training step (the official demo ``train_tdm_demo.py``, restated):

* fake score (denoising score matching on the student's next-state points, importance weighted):
  k ~ U{1..K}; x_mid = α_{t_{k-1}} x̂0 + σ_{t_{k-1}} ε̂ (the point the student moves to);
  τ ~ U[max(20, t_{k-1}), t_k − 10) ("--use_separate"; else the upper end is T' − 10);
  x_τ = (α_τ/α_mid) x_mid + β z, β² = σ_τ² − (α_τ σ_mid / α_mid)²  (the forward kernel q(x_τ | x_mid));
  x_τ = α_τ x̂0 + σ_τ ñ with ñ = ((α_τ/α_mid) σ_mid ε̂ + β z) / σ_τ, not exactly Gaussian, hence
  w_IS = exp(−½ mean ñ²) / exp(−½ mean z²) and L_fake = min(SNR(τ), 5) · w_IS · ‖x̂0_fake(x_τ, τ) − x̂0‖²;
* generator (DMD direction through the step-k x̂0 only, pseudo-Huber, DMD normalisation):
  r = x̂0_real with CFG s at (x_τ, τ), f = x̂0_fake(x_τ, τ); target = sg(x̂0 + r − f);
  L_G = mean((sqrt((x̂0 − target)² + c²) − c) / mean|x̂0 − r|),  c = 1e-3 (the demo's ``--use_huber``).

The demo draws k and τ afresh for each of the two updates; so do we. Our t_mid is the student's next point
t_{k-1} exactly (the demo uses t_k − T'/K + 1, one timestep above it for k ≥ 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fewstep.nodes.core.train.batches import DistillBatch
from fewstep.nodes.core.train.vp import Cond, DiscreteVPSchedule, VPNet, bc, guided_x0_eps

STEPS_COND_DIM = 8  # one-hot width of the sampling-steps condition (TDM-unify): K = 1..8


def student_timesteps(steps: int, total_steps: int = 900) -> list[int]:
    """The K timesteps a K-step TDM student visits, highest first: k·T'/K − 1 for k = K..1 (900, 4 → 899..224)."""
    if not 1 <= steps <= total_steps // 20:
        raise ValueError(f"TDM student steps must be in 1..{total_steps // 20} for total_steps={total_steps}, "
                         f"got {steps}")
    return [k * total_steps // steps - 1 for k in range(steps, 0, -1)]


def steps_condition(steps: int, batch: int, device: torch.device | str, dim: int = STEPS_COND_DIM) -> Tensor:
    """One-hot [batch, dim] of the step count K (TDM-unify's condition; position K − 1)."""
    if not 1 <= steps <= dim:
        raise ValueError(f"the steps condition holds K = 1..{dim}, got {steps}")
    out = torch.zeros(batch, dim, device=device)
    out[:, steps - 1] = 1.0
    return out


@dataclass
class Rollout:
    """A deterministic K-step student trajectory (no gradients).

    Args:
        timesteps: [K] descending t_K..t_1.  states: [K, B, ...] the state x at each t_k.
        x0 / eps: [K, B, ...] the student's x̂0 and ε̂ at each state.
    """

    timesteps: Tensor
    states: Tensor
    x0: Tensor
    eps: Tensor

    def next_timesteps(self) -> Tensor:
        """[K] t_{k-1} of each step (0 after the last)."""
        return torch.cat([self.timesteps[1:], self.timesteps.new_zeros(1)])


@torch.no_grad()
def rollout(student: VPNet, noise: Tensor, timesteps: list[int], cond: Cond,
            timestep_cond: Tensor | None = None) -> Rollout:
    """Run the student from ``noise`` (taken as x at timesteps[0]) with deterministic DDIM on its own ε̂."""
    sched, b = student.schedule, noise.shape[0]
    x, states, x0s, epss = noise, [], [], []
    nxt = [*timesteps[1:], 0]
    for t_i, s_i in zip(timesteps, nxt, strict=True):
        t = torch.full((b,), t_i, device=noise.device, dtype=torch.long)
        x0, eps = student.x0_eps(x, t, cond, timestep_cond)
        states.append(x)
        x0s.append(x0.float())
        epss.append(eps.float())
        s = torch.full((b,), s_i, device=noise.device, dtype=torch.long)
        x = (bc(sched.alpha_t(s), x0) * x0 + bc(sched.sigma_t(s), x0) * eps).to(noise.dtype)
    return Rollout(torch.tensor(timesteps, device=noise.device), torch.stack(states), torch.stack(x0s),
                   torch.stack(epss))


def sample_tdm_vp(student: VPNet, noise: Tensor, timesteps: list[int], cond: Cond,
                  timestep_cond: Tensor | None = None) -> Tensor:
    """The student's K-step sample x̂0 (deterministic; previews and tests)."""
    ro = rollout(student, noise, timesteps, cond, timestep_cond)
    return ro.x0[-1]


def dmd_huber_distance(x0: Tensor, real_x0: Tensor, fake_x0: Tensor, huber_c: float) -> Tensor:
    """Per-sample pseudo-Huber distance of the student's x̂0 (with grad) to its DMD target sg(x̂0 + r − f),
    divided by mean|x̂0 − r| (the DMD normalisation); r, f: the teacher's (CFG) and the fake score's x̂0."""
    with torch.no_grad():
        target = x0.detach().float() + real_x0.float() - fake_x0.float()
        norm = (x0.detach().float() - real_x0.float()).abs().flatten(1).mean(1).clamp_min(1e-6)   # [B]
    dist = ((x0.float() - target) ** 2 + huber_c * huber_c).sqrt() - huber_c
    return dist.flatten(1).mean(1) / norm


def diffuse_within(schedule: DiscreteVPSchedule, x0: Tensor, eps: Tensor, t_mid: Tensor, tau: Tensor, z: Tensor
                   ) -> tuple[Tensor, Tensor]:
    """(x_τ, ñ): the ODE point x_mid = α_mid x̂0 + σ_mid ε̂ diffused forward to τ ≥ t_mid with fresh noise z.

    x_τ = (α_τ/α_mid) x_mid + β z with β = sqrt(σ_τ² − (α_τ σ_mid/α_mid)²) (q(x_τ | x_mid) of the VP process);
    the same point is α_τ x̂0 + σ_τ ñ with the effective noise ñ = ((α_τ/α_mid) σ_mid ε̂ + β z) / σ_τ.
    """
    a_m, s_m = bc(schedule.alpha_t(t_mid), x0), bc(schedule.sigma_t(t_mid), x0)
    a_t, s_t = bc(schedule.alpha_t(tau), x0), bc(schedule.sigma_t(tau), x0)
    ratio = a_t / a_m
    beta = (s_t**2 - (ratio * s_m) ** 2).clamp_min(0).sqrt()
    x_mid = a_m * x0 + s_m * eps
    return ratio * x_mid + beta * z, (ratio * s_m * eps + beta * z) / s_t


def importance_weight(mixed: Tensor, z: Tensor) -> Tensor:
    """w_IS = exp(−½ mean ñ²) / exp(−½ mean z²) per sample (the demo's correction for non-Gaussian ñ)."""
    return torch.exp(-0.5 * (mixed.float() ** 2).flatten(1).mean(1) + 0.5 * (z.float() ** 2).flatten(1).mean(1))


@dataclass(frozen=True)
class TDMLoss:
    """Both TDM objectives for one batch: ``(generator loss [B], fake-score loss [B])``.

    The two have disjoint graphs (the fake loss reaches only the fake network, the generator loss only the
    student), so one backward of their sum equals the demo's two separate updates on the same draws.

    Args:
        guidance: teacher CFG scale s of the real score (demo 4.5 for PixArt-α; ours 5, the teacher's own).
        huber_c: pseudo-Huber c of the generator loss (demo 1e-3, elementwise).
        total_steps: T', the top of the student's trajectory + 1 (900).
        separate: τ only inside the step's own interval (``--use_separate``); False: up to T' − 10.
        snr_cap: the fake loss's min(SNR(τ), cap) weight (5).
        tau_min / tau_margin: τ ≥ tau_min (20) and τ < t_k − tau_margin (10).
    """

    guidance: float = 5.0
    huber_c: float = 1e-3
    total_steps: int = 900
    separate: bool = True
    snr_cap: float = 5.0
    tau_min: int = 20
    tau_margin: int = 10

    def draw(self, ro: Rollout, batch: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(step index [B], t_k [B], t_mid = t_{k-1} [B], τ [B]) with τ ~ U[max(τ_min, t_mid), hi)."""
        k = len(ro.timesteps)
        idx = torch.randint(0, k, (batch,), generator=gen, device=gen.device).to(ro.timesteps.device)
        t_k, t_mid = ro.timesteps[idx], ro.next_timesteps()[idx]
        lo = t_mid.clamp_min(self.tau_min)
        hi = t_k - self.tau_margin if self.separate else torch.full_like(t_k, self.total_steps - self.tau_margin)
        hi = torch.maximum(hi, lo + 1)
        u = torch.rand(batch, generator=gen, device=gen.device).to(lo.device)
        tau = (lo + (u * (hi - lo).float()).long()).clamp(max=hi - 1)
        return idx, t_k, t_mid, tau

    def fake_loss(self, fake: VPNet, ro: Rollout, batch: DistillBatch, tcond: Tensor | None) -> Tensor:
        """min(SNR(τ), cap) · w_IS · ‖x̂0_fake(x_τ, τ) − x̂0‖² per sample (DSM on the student's points)."""
        b, gen = batch.shape[0], batch.generator
        idx, _, t_mid, tau = self.draw(ro, b, gen)
        rows = torch.arange(b, device=idx.device)
        x0, eps = ro.x0[idx, rows], ro.eps[idx, rows]                                  # [B, ...]
        z = torch.randn(x0.shape, generator=gen, device=gen.device).to(x0.device)
        x_tau, mixed = diffuse_within(fake.schedule, x0, eps, t_mid, tau, z)
        pred, _ = fake.x0_eps(x_tau.to(ro.states.dtype), tau, batch.cond, tcond)
        ac = fake.schedule.alphas_cumprod.to(tau.device)[tau]
        weight = (ac / (1 - ac)).clamp(max=self.snr_cap) * importance_weight(mixed, z)
        return weight * ((pred.float() - x0) ** 2).flatten(1).mean(1)

    def generator_loss(self, student: VPNet, teacher: VPNet, fake: VPNet, ro: Rollout, batch: DistillBatch,
                       tcond: Tensor | None) -> Tensor:
        """Pseudo-Huber distance of the step-k x̂0 to sg(x̂0 + r_cfg − f), divided by mean|x̂0 − r_cfg| (DMD)."""
        b, gen = batch.shape[0], batch.generator
        idx, t_k, t_mid, tau = self.draw(ro, b, gen)
        rows = torch.arange(b, device=idx.device)
        x0, eps = student.x0_eps(ro.states[idx, rows], t_k, batch.cond, tcond)        # with grad
        z = torch.randn(x0.shape, generator=gen, device=gen.device).to(x0.device)
        with torch.no_grad():
            x_tau, _ = diffuse_within(student.schedule, x0.detach().float(), eps.detach().float(), t_mid, tau, z)
            x_tau = x_tau.to(ro.states.dtype)
            real, _ = guided_x0_eps(teacher, x_tau, tau, batch.cond, batch.uncond, self.guidance)
            fake_x0, _ = fake.x0_eps(x_tau, tau, batch.cond, tcond)
        return dmd_huber_distance(x0, real, fake_x0, self.huber_c)

    def __call__(self, student: VPNet, batch: DistillBatch, *, teacher: VPNet, fake: VPNet, steps: int,
                 tcond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Roll the K-step student out from fresh noise, then both losses (per sample)."""
        gen = batch.generator
        noise = torch.randn(batch.shape, generator=gen, device=gen.device).to(batch.device)
        ro = rollout(student, noise, student_timesteps(steps, self.total_steps), batch.cond, tcond)
        return (self.generator_loss(student, teacher, fake, ro, batch, tcond),
                self.fake_loss(fake, ro, batch, tcond))
