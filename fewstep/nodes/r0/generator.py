"""R0's generator: the pretrained model's own few-step η-DDIM sampler, run with gradients.

G_θ(z, c) (methods.md §8; R0, Luo et al. 2025, §4): K steps t_1 > ... > t_K of the (fine-tuned) diffusion
model, each

    x̂0, ε̂ = model_θ(x_{t_k}, t_k, c)                                   (with CFG scale w if w != 1)
    x_{t_{k+1}} = α_{k+1} x̂0 + sqrt(σ_{k+1}² − c_k²) ε̂ + c_k ξ,   ξ ~ N(0, I)
    c_k = η σ_{k+1} sqrt(1 − ᾱ_{t_k} / ᾱ_{t_{k+1}}) / sqrt(1 − ᾱ_{t_k})   (DDIM, Song et al. 2021, eq. 12 + 16)

and the image is the last step's x̂0. In training η ~ U[0, 1] per sample (R0's "random η-sampling"
regulariser); at test η is fixed (0 = deterministic DDIM), which is ``nodes.core.samplers.sample_ddim``
with ``eta`` on the SIGMAS of the same timesteps — so a graph samples the student with core nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from fewstep.nodes.core.train.vp import Cond, DiscreteVPSchedule, VPNet, bc, guided_x0_eps

# Our choice: diffusers' "trailing" 4-step grid on 1000 steps (999, 749, 499, 249), the grid the teacher's own
# few-step DDIM uses in the README table (rounded to integers). The paper does not give its timesteps.
R0_TIMESTEPS: tuple[int, ...] = (999, 749, 499, 249)


def trailing_timesteps(steps: int, num_timesteps: int = 1000) -> tuple[int, ...]:
    """``steps`` integer timesteps T-1, T-1-T/steps, ... (diffusers' trailing spacing)."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"trailing_timesteps: steps must be in 1..{num_timesteps}, got {steps}")
    return tuple(int(round(num_timesteps - 1 - k * num_timesteps / steps)) for k in range(steps))


def eta_ddim_step(schedule: DiscreteVPSchedule, x0: Tensor, eps: Tensor, t: Tensor, s: Tensor, eta: Tensor,
                  noise: Tensor) -> Tensor:
    """One η-DDIM step from integer timestep ``t`` to ``s`` < t ([B] each) with per-sample ``eta`` [B] in 0..1.

    c = η σ_s sqrt(1 − ᾱ_t/ᾱ_s) / sqrt(1 − ᾱ_t) ≤ σ_s (Song et al. 2021, eq. 16); x_s = α_s x̂0 +
    sqrt(σ_s² − c²) ε̂ + c ξ. η = 0: deterministic DDIM; η = 1: the DDPM posterior sample.
    """
    abar_t, abar_s = schedule.alpha_t(t) ** 2, schedule.alpha_t(s) ** 2              # [B]
    sigma_s = schedule.sigma_t(s)
    c = eta.float() * sigma_s * ((1 - abar_t / abar_s).clamp_min(0) / (1 - abar_t)).sqrt()
    c = torch.minimum(c, sigma_s)
    return (bc(abar_s.sqrt(), x0) * x0 + bc((sigma_s**2 - c**2).clamp_min(0).sqrt(), x0) * eps
            + bc(c, x0) * noise)


@dataclass
class Rollout:
    """What :func:`rollout` returns: the final x̂0 ``[B,C,h,w]`` and the earlier steps' x̂0 (R0+)."""

    x0: Tensor
    intermediate: list[Tensor]


def rollout(model: VPNet, noise: Tensor, timesteps: Sequence[int], cond: Cond, uncond: Cond | None,
            guidance: float, eta: Tensor, generator: torch.Generator | None, grad_steps: int | None = None) -> Rollout:
    """Run G_θ from pure noise ``noise`` [B,C,h,w] over ``timesteps`` (highest first) with per-sample ``eta`` [B].

    Args:
        model: the generator network's VPNet view (student).
        cond / uncond: conditioning [B, ...] / [1, ...] (token states or an SDXL ``Conditioning``; uncond only
            used when ``guidance != 1``).
        generator: draws the η-noise ξ of every step (on ``noise``'s device); may be None when eta == 0.
        grad_steps: back-propagate through only the last this many steps (None = all; the earlier steps run
            under no_grad, a memory saving for large models; methods.md's small-scale note).
    Returns: :class:`Rollout` with the last x̂0 and the x̂0 of every earlier step (for R0+).
    """
    ts = [int(t) for t in timesteps]
    if any(a <= b for a, b in zip(ts, ts[1:], strict=False)) or not ts:
        raise ValueError(f"rollout: timesteps must be strictly decreasing and non-empty, got {ts}")
    first_grad = 0 if grad_steps is None else max(0, len(ts) - grad_steps)
    batch = noise.shape[0]
    x, x0s = noise, []
    for k, t_int in enumerate(ts):
        t = torch.full((batch,), t_int, device=noise.device, dtype=torch.long)
        with torch.set_grad_enabled(torch.is_grad_enabled() and k >= first_grad):
            x0, eps = guided_x0_eps(model, x, t, cond, uncond, guidance)
            x0s.append(x0)
            if k + 1 < len(ts):
                s = torch.full_like(t, ts[k + 1])
                xi = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = eta_ddim_step(model.schedule, x0, eps, t, s, eta, xi)
    return Rollout(x0=x0s[-1], intermediate=x0s[:-1])
