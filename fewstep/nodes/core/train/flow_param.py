"""Rectified-flow parameterisation for trainers: velocity <-> (x̂0, ε̂), the path's (α, σ), its SNR, and
:class:`FlowNet`, the flow counterpart of :class:`~fewstep.nodes.core.train.vp.VPNet`.

Rectified flow (Liu et al. 2022; Esser et al. 2024, SD3 eq. 1-2) on continuous σ ∈ [0, 1]::

    x_σ = (1 − σ) x0 + σ ε            (α_σ = 1 − σ, σ_σ = σ: an affine Gaussian path like VP's α_t x0 + σ_t ε)
    v   = dx_σ/dσ = ε − x0            (what a flow model predicts)

so, for a state x at σ and a predicted velocity v̂ (two equations, two unknowns)::

    x̂0 = x − σ v̂                      (from x = (1 − σ) x0 + σ (x0 + v) = x0 + σ v)
    ε̂  = x̂0 + v̂ = x + (1 − σ) v̂
    ε̂  = (x − (1 − σ) x̂0) / σ         (the noise x̂0 implies; σ > 0)
    v̂  = ε̂ − x̂0 = (x − x̂0) / σ = (ε̂ − x) / (1 − σ)

This module owns these conversions (``flow_consistency`` and the method packs import them): one small pure
function each, with per-sample ``sigma`` [B] broadcast against the state [B, ...].

A method written for ε/x0 models (DDIM jumps, forward transitions q(x_τ | x_s), SNR weights) carries over by
reading α = 1 − σ, σ = σ. In particular the deterministic DDIM jump with the model's own ε̂ is Euler on the
flow ODE: (1 − s) x̂0 + s ε̂ = x − σ v̂ + s v̂ = x + (s − σ) v̂.

A *flow network* is any ``nn.Module`` called ``net(x, sigma, cond, timestep_cond=None) -> v`` with ``sigma``
[B] in [0, 1] (the model's own timestep scaling, e.g. σ·1000, is the adapter's business).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fewstep.nodes.core.train.vp import Cond, bc, cat_cond


def flow_noised(x0: Tensor, sigma: Tensor, noise: Tensor) -> Tensor:
    """The state of the path, x_σ = (1 − σ) x0 + σ ε (the forward process: noised clean latents ``x0`` [B, ...])."""
    s = bc(sigma, x0)
    return (1 - s) * x0 + s * noise


def velocity_to_x0(v: Tensor, x: Tensor, sigma: Tensor) -> Tensor:
    """x̂0 = x − σ v of a velocity ``v`` at state ``x`` [B, ...], noise level ``sigma`` [B]."""
    return x - bc(sigma, x) * v


def velocity_to_eps(v: Tensor, x: Tensor, sigma: Tensor) -> Tensor:
    """ε̂ = x + (1 − σ) v of a velocity ``v`` at state ``x`` [B, ...], noise level ``sigma`` [B]."""
    return x + (1 - bc(sigma, x)) * v


def velocity_to_x0_eps(v: Tensor, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """(x̂0, ε̂) of a velocity ``v`` at state ``x`` [B, ...], noise level ``sigma`` [B]: x̂0 = x − σ v, ε̂ = x + (1 − σ) v."""
    return velocity_to_x0(v, x, sigma), velocity_to_eps(v, x, sigma)


def x0_to_eps(x0: Tensor, x: Tensor, sigma: Tensor, min_sigma: float = 0.0) -> Tensor:
    """ε̂ = (x − (1 − σ) x̂0) / σ, the noise that x̂0 implies at state ``x`` [B, ...], ``sigma`` [B].

    ``min_sigma`` clamps the divisor only (σ ↦ max(σ, min_sigma)): a caller that masks σ = 0 out afterwards
    gets a finite value there instead of 0/0."""
    s = bc(sigma, x)
    return (x - (1 - s) * x0) / s.clamp_min(min_sigma)


def x0_eps_to_velocity(x0: Tensor, eps: Tensor) -> Tensor:
    """v = ε − x0 (the straight path's constant velocity)."""
    return eps - x0


def x0_to_velocity(x0: Tensor, x: Tensor, sigma: Tensor) -> Tensor:
    """v = (x − x̂0) / σ (σ > 0)."""
    return (x - x0) / bc(sigma, x)


def eps_to_velocity(eps: Tensor, x: Tensor, sigma: Tensor) -> Tensor:
    """v = (ε̂ − x) / (1 − σ) (σ < 1; at σ = 1 the state is ε itself and carries no x0 information)."""
    return (eps - x) / (1 - bc(sigma, x))


def flow_snr(sigma: Tensor) -> Tensor:
    """Signal-to-noise ratio α²/σ² = ((1 − σ)/σ)² of the rectified-flow path."""
    sigma = sigma.float()
    return ((1 - sigma) / sigma) ** 2


class FlowPath:
    """The rectified-flow path with the VP-style accessors of ``DiscreteVPSchedule`` on continuous σ:
    ``alpha_t(σ) = 1 − σ``, ``sigma_t(σ) = σ``. Math written against (α_t, σ_t) — DDIM jumps, forward kernels
    q(x_τ | x_s) — runs on flow states by passing this object."""

    def alpha_t(self, sigma: Tensor) -> Tensor:
        return 1.0 - sigma.float()

    def sigma_t(self, sigma: Tensor) -> Tensor:
        return sigma.float()


FLOW_PATH = FlowPath()


@dataclass
class FlowNet:
    """A flow network (velocity prediction) as the trainers see it: ``x0_eps(x, σ, cond) -> (x̂0, ε̂)``."""

    net: nn.Module
    prediction_type: str = "flow"
    schedule: FlowPath = FLOW_PATH

    def velocity(self, x: Tensor, sigma: Tensor, cond: Cond, timestep_cond: Tensor | None = None) -> Tensor:
        """v̂ of state ``x`` [B, ...] at noise levels ``sigma`` [B]."""
        return self.net(x, sigma, cond, timestep_cond).to(x.dtype)

    def x0_eps(self, x: Tensor, sigma: Tensor, cond: Cond, timestep_cond: Tensor | None = None
               ) -> tuple[Tensor, Tensor]:
        """(x̂0, ε̂) of state ``x`` at ``sigma`` [B] (see the module docstring)."""
        return velocity_to_x0_eps(self.velocity(x, sigma, cond, timestep_cond), x, sigma)


def guided_flow_x0_eps(teacher: FlowNet, x: Tensor, sigma: Tensor, cond: Cond, uncond: Cond | None,
                       scale: float) -> tuple[Tensor, Tensor]:
    """Classifier-free guidance v_w = v_u + s (v_c − v_u), both branches in one batch; x̂0 and ε̂ are affine in v
    at fixed (x, σ), so this is the same guidance on x̂0 and ε̂."""
    if uncond is None or scale == 1.0:
        return teacher.x0_eps(x, sigma, cond)
    v = teacher.velocity(torch.cat([x, x]), torch.cat([sigma, sigma]), cat_cond(cond, uncond))
    v_c, v_u = v.chunk(2)
    return velocity_to_x0_eps(v_u + scale * (v_c - v_u), x, sigma)
