"""TDM on rectified-flow (velocity-prediction) models: the student rollout and the two losses on continuous σ.

The algorithm is ``nodes/tdm/loss.py``'s (``shared/methods.md`` §2, the demo ``train_tdm_demo.py``) with the
flow path x_σ = (1 − σ) x0 + σ ε in place of VP's x_t = α_t x0 + σ_t ε, i.e. α = 1 − σ (conversions and their
derivation: ``nodes/core/train/flow_param.py``). Where the demo uses ε̂ it is ε̂ = x + (1 − σ) v̂, and x̂0 = x − σ v̂.

* Student timesteps. A K-step student visits σ_k = shift(k/K) for k = K..1 (SD3 eq. 23's shift, 3 for the
  built-in video model, the teacher's own sampling schedule): K = 4 → 1, 0.9, 0.75, 0.5; K = 2 → 1, 0.75.
  The demo starts a VP student at t = 899 of 1000 because SD-type VP schedules never reach pure noise; a flow
  model is trained up to σ = 1 (x = ε), so the top is 1 (``top`` < 1 is the demo's T' < T).
* Rollout: the DDIM jump with the student's own ε̂, x_{σ_{k-1}} = (1 − σ_{k-1}) x̂0 + σ_{k-1} ε̂, which is Euler
  x + (σ_{k-1} − σ_k) v̂: the student samples with ``core.video_sampling.sample_flow_euler`` on its σ's.
* Fake score (DSM with the importance weight), for step k with x_mid = (1 − σ_m) x̂0 + σ_m ε̂, σ_m = σ_{k-1}:
  τ ~ U[max(τ_min, σ_m), σ_k − margin) (``separate``; else up to top − margin), with the demo's 20 / 10 of
  1000 timesteps as τ_min = 0.02, margin = 0.01 of σ;
  x_τ = (α_τ/α_m) x_mid + β z, β² = σ_τ² − (α_τ σ_m/α_m)² (the flow's forward kernel q(x_τ | x_mid): the same
  Gaussian transition, α = 1 − σ); x_τ = α_τ x̂0 + σ_τ ñ, w_IS = exp(−½ mean ñ²)/exp(−½ mean z²);
  L_fake = min(SNR(τ), 5) · w_IS · ‖x̂0_fake(x_τ, τ) − x̂0‖², SNR(τ) = ((1 − τ)/τ)².
  In velocity terms (x̂0_fake = x_τ − τ v_fake): ‖x̂0_fake − x̂0‖² = τ² ‖v_fake − v*‖², v* = (x_τ − x̂0)/τ — flow
  matching toward the student's x̂0, weighted by τ² · min(SNR, 5) · w_IS.
* Generator: x̂0 = x_{σ_k} − σ_k v_θ(x_{σ_k}) with gradients; r = x̂0 of the teacher with CFG on the velocity,
  f = x̂0 of the fake score, both at (x_τ, τ) without gradients;
  L_G = mean((sqrt((x̂0 − sg(x̂0 + r − f))² + c²) − c) / mean|x̂0 − r|), c = 1e-3.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fewstep.nodes.core.train.batches import DistillBatch
from fewstep.nodes.core.train.flow_param import FLOW_PATH, FlowNet, flow_snr, guided_flow_x0_eps
from fewstep.nodes.core.train.vp import Cond
from fewstep.nodes.core.video_sampling import shift_sigma
from fewstep.nodes.tdm.loss import diffuse_within, dmd_huber_distance, importance_weight


def flow_student_sigmas(steps: int, shift: float = 3.0, top: float = 1.0) -> list[float]:
    """The K noise levels a K-step flow TDM student visits, highest first: shift(top · k/K) for k = K..1."""
    if not 1 <= steps <= 50:
        raise ValueError(f"TDM student steps must be in 1..50, got {steps}")
    if not 0.0 < top <= 1.0:
        raise ValueError(f"top must be in (0, 1], got {top}")
    u = torch.tensor([top * k / steps for k in range(steps, 0, -1)], dtype=torch.float64)
    return [float(s) for s in shift_sigma(u, shift)]


def student_sigma_schedule(steps: int, shift: float = 3.0, top: float = 1.0) -> Tensor:
    """The student's sampler schedule [K + 1]: its K noise levels then 0 (``core.video_sampling`` form)."""
    return torch.tensor([*flow_student_sigmas(steps, shift, top), 0.0])


@dataclass
class FlowRollout:
    """A deterministic K-step flow-student trajectory (no gradients).

    Args:
        sigmas: [K] descending σ_K..σ_1.  states: [K, B, ...] the state x at each σ_k.
        x0 / eps: [K, B, ...] the student's x̂0 and ε̂ (= x + (1 − σ) v̂) at each state.
    """

    sigmas: Tensor
    states: Tensor
    x0: Tensor
    eps: Tensor

    def next_sigmas(self) -> Tensor:
        """[K] σ_{k-1} of each step (0 after the last)."""
        return torch.cat([self.sigmas[1:], self.sigmas.new_zeros(1)])


@torch.no_grad()
def flow_rollout(student: FlowNet, noise: Tensor, sigmas: list[float], cond: Cond,
                 timestep_cond: Tensor | None = None) -> FlowRollout:
    """Run the student from ``noise`` (taken as x at sigmas[0]) with the DDIM jump on its own ε̂ (= Euler)."""
    b = noise.shape[0]
    x, states, x0s, epss = noise, [], [], []
    for s_i, n_i in zip(sigmas, [*sigmas[1:], 0.0], strict=True):
        sigma = torch.full((b,), s_i, device=noise.device)
        x0, eps = student.x0_eps(x, sigma, cond, timestep_cond)
        states.append(x)
        x0s.append(x0.float())
        epss.append(eps.float())
        x = ((1 - n_i) * x0.float() + n_i * eps.float()).to(noise.dtype)    # x_{σ_{k-1}} = α x̂0 + σ ε̂
    return FlowRollout(torch.tensor(sigmas, device=noise.device), torch.stack(states), torch.stack(x0s),
                       torch.stack(epss))


def sample_tdm_flow(student: FlowNet, noise: Tensor, sigmas: list[float], cond: Cond) -> Tensor:
    """The student's K-step sample x̂0 (deterministic; previews and tests)."""
    return flow_rollout(student, noise, sigmas, cond).x0[-1]


@dataclass(frozen=True)
class TDMFlowLoss:
    """Both TDM objectives on a flow model for one batch: ``(generator loss [B], fake-score loss [B])``.

    As :class:`~fewstep.nodes.tdm.loss.TDMLoss`, the graphs are disjoint, so one backward of the sum is the
    demo's two updates on the same draws.

    Args:
        guidance: CFG scale of the real score (on the velocity; the built-in video teacher samples with 4).
        huber_c: pseudo-Huber c (demo 1e-3).  shift / top: the student's σ's (:func:`flow_student_sigmas`).
        separate: τ only inside the step's own interval; False: up to top − tau_margin.
        snr_cap: the fake loss's min(SNR(τ), cap) (5).  tau_min / tau_margin: τ ≥ 0.02, τ < σ_k − 0.01.
    """

    guidance: float = 4.0
    huber_c: float = 1e-3
    shift: float = 3.0
    top: float = 1.0
    separate: bool = True
    snr_cap: float = 5.0
    tau_min: float = 0.02
    tau_margin: float = 0.01

    def draw(self, ro: FlowRollout, batch: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(step index [B], σ_k [B], σ_m = σ_{k-1} [B], τ [B]) with τ ~ U[max(τ_min, σ_m), hi)."""
        k = len(ro.sigmas)
        idx = torch.randint(0, k, (batch,), generator=gen, device=gen.device).to(ro.sigmas.device)
        s_k, s_mid = ro.sigmas[idx], ro.next_sigmas()[idx]
        lo = s_mid.clamp_min(self.tau_min)
        hi = s_k - self.tau_margin if self.separate else torch.full_like(s_k, self.top - self.tau_margin)
        hi = torch.maximum(hi, lo + 1e-4)
        u = torch.rand(batch, generator=gen, device=gen.device).to(lo.device)
        return idx, s_k, s_mid, lo + u * (hi - lo)

    def fake_loss(self, fake: FlowNet, ro: FlowRollout, batch: DistillBatch, tcond: Tensor | None) -> Tensor:
        """min(SNR(τ), cap) · w_IS · ‖x̂0_fake(x_τ, τ) − x̂0‖² per sample (DSM on the student's points)."""
        b, gen = batch.shape[0], batch.generator
        idx, _, s_mid, tau = self.draw(ro, b, gen)
        rows = torch.arange(b, device=idx.device)
        x0, eps = ro.x0[idx, rows], ro.eps[idx, rows]                                  # [B, ...]
        z = torch.randn(x0.shape, generator=gen, device=gen.device).to(x0.device)
        x_tau, mixed = diffuse_within(FLOW_PATH, x0, eps, s_mid, tau, z)
        pred, _ = fake.x0_eps(x_tau.to(ro.states.dtype), tau, batch.cond, tcond)
        weight = flow_snr(tau).clamp(max=self.snr_cap) * importance_weight(mixed, z)
        return weight * ((pred.float() - x0) ** 2).flatten(1).mean(1)

    def generator_loss(self, student: FlowNet, teacher: FlowNet, fake: FlowNet, ro: FlowRollout,
                       batch: DistillBatch, tcond: Tensor | None) -> Tensor:
        """Pseudo-Huber distance of the step-k x̂0 to sg(x̂0 + r_cfg − f), divided by mean|x̂0 − r_cfg| (DMD)."""
        b, gen = batch.shape[0], batch.generator
        idx, s_k, s_mid, tau = self.draw(ro, b, gen)
        rows = torch.arange(b, device=idx.device)
        x0, eps = student.x0_eps(ro.states[idx, rows], s_k, batch.cond, tcond)         # with grad
        z = torch.randn(x0.shape, generator=gen, device=gen.device).to(x0.device)
        with torch.no_grad():
            x_tau, _ = diffuse_within(FLOW_PATH, x0.detach().float(), eps.detach().float(), s_mid, tau, z)
            x_tau = x_tau.to(ro.states.dtype)
            real, _ = guided_flow_x0_eps(teacher, x_tau, tau, batch.cond, batch.uncond, self.guidance)
            fake_x0, _ = fake.x0_eps(x_tau, tau, batch.cond, tcond)
        return dmd_huber_distance(x0, real, fake_x0, self.huber_c)

    def __call__(self, student: FlowNet, batch: DistillBatch, *, teacher: FlowNet, fake: FlowNet, steps: int,
                 tcond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Roll the K-step student out from fresh noise, then both losses (per sample)."""
        gen = batch.generator
        noise = torch.randn(batch.shape, generator=gen, device=gen.device).to(batch.device)
        ro = flow_rollout(student, noise, flow_student_sigmas(steps, self.shift, self.top), batch.cond, tcond)
        return (self.generator_loss(student, teacher, fake, ro, batch, tcond),
                self.fake_loss(fake, ro, batch, tcond))
