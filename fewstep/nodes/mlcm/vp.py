"""Discrete variance-preserving (VP) diffusion math shared by the consistency-distillation packs.

Notation (see ``shared/methods.md`` "Common notation"): ``x_t = α_t x0 + σ_t ε`` with ``α_t = sqrt(ᾱ_t)``,
``σ_t = sqrt(1 - ᾱ_t)`` on ``T = 1000`` integer timesteps. The k-diffusion noise level of the same state
is ``sigma_k(t) = σ_t / α_t`` and its state is ``x_t / α_t`` — that is how these VP helpers meet the
``D(x, sigma, cond) -> x0`` denoiser contract used by the samplers.

A *network* here is any ``nn.Module`` called ``net(x, t, cond, timestep_cond=None)`` returning its raw
prediction (ε, v or x0); :class:`VPNet` turns that into ``(x0, ε)``. Diffusers UNets are adapted to
that convention by :class:`UNetAdapter`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

PREDICTION_TYPES = ("eps", "v", "x0")


def linear_beta_alphas_cumprod(steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                               scaled: bool = False) -> Tensor:
    """ᾱ_t of the DDPM linear-β schedule (``scaled=True``: SD's "scaled_linear", linear in sqrt β)."""
    if scaled:
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    else:
        betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0).float()


def bc(v: Tensor, x: Tensor) -> Tensor:
    """Broadcast a per-sample vector [B] against a state [B, ...]."""
    return v.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


@dataclass(frozen=True)
class VPSchedule:
    """ᾱ_t on integer timesteps 0..T-1 and the quantities derived from it."""

    alphas_cumprod: Tensor  # [T] float32

    @property
    def num_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def alpha(self, t: Tensor) -> Tensor:
        """α_t = sqrt(ᾱ_t) for integer timesteps ``t`` [B]."""
        return self.alphas_cumprod.to(t.device)[t.long()].sqrt()

    def sigma(self, t: Tensor) -> Tensor:
        """σ_t = sqrt(1 - ᾱ_t)."""
        return (1.0 - self.alphas_cumprod.to(t.device)[t.long()]).sqrt()

    def sigma_k(self, t: Tensor) -> Tensor:
        """k-diffusion noise level σ_t / α_t of timestep ``t``."""
        return self.sigma(t) / self.alpha(t)

    def t_from_sigma_k(self, sigma_k: Tensor) -> Tensor:
        """The nearest integer timestep whose ``sigma_k`` matches (for denoisers called in σ space)."""
        table = ((1.0 - self.alphas_cumprod) / self.alphas_cumprod).sqrt().to(sigma_k.device)
        return (table[None, :].log() - sigma_k.float().clamp_min(1e-8)[:, None].log()).abs().argmin(1)


def to_x0_eps(out: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor, prediction_type: str) -> tuple[Tensor, Tensor]:
    """(x̂0, ε̂) from a raw prediction at noise (α, σ) [B] (ε: x̂0=(x-σε)/α; v: x̂0=αx-σv, ε=σx+αv)."""
    a, s = bc(alpha, x), bc(sigma, x)
    if prediction_type == "eps":
        return (x - s * out) / a, out
    if prediction_type == "v":
        return a * x - s * out, s * x + a * out
    if prediction_type == "x0":
        return out, (x - a * out) / s
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


@dataclass
class VPNet:
    """A network plus its prediction type and schedule: the training-side view of a MODEL."""

    net: nn.Module
    schedule: VPSchedule
    prediction_type: str = "eps"

    def x0_eps(self, x: Tensor, t: Tensor, cond: object, timestep_cond: Tensor | None = None
               ) -> tuple[Tensor, Tensor]:
        """(x̂0, ε̂) of state ``x`` [B, ...] at integer timesteps ``t`` [B]."""
        out = self.net(x, t, cond, timestep_cond).to(x.dtype)
        return to_x0_eps(out, x, self.schedule.alpha(t), self.schedule.sigma(t), self.prediction_type)


def cat_cond(cond: object, uncond: object) -> object:
    """Stack conditional and unconditional inputs along the batch for one CFG forward pass."""
    if isinstance(cond, Tensor):
        return torch.cat([cond, uncond.expand_as(cond) if uncond.shape[0] == 1 else uncond])
    raise TypeError(f"conditioning must be a tensor for batched CFG, got {type(cond).__name__}")


def guided_x0_eps(teacher: VPNet, x: Tensor, t: Tensor, cond: object, uncond: object | None,
                  scale: float) -> tuple[Tensor, Tensor]:
    """Classifier-free guidance ε_w = ε_u + s(ε_c - ε_u) (and the same on x̂0); s = LCM's w + 1."""
    if uncond is None or scale == 1.0:
        return teacher.x0_eps(x, t, cond)
    x0, eps = teacher.x0_eps(torch.cat([x, x]), torch.cat([t, t]), cat_cond(cond, uncond))
    (x0_c, x0_u), (eps_c, eps_u) = x0.chunk(2), eps.chunk(2)
    return x0_u + scale * (x0_c - x0_u), eps_u + scale * (eps_c - eps_u)


def ddim_to(schedule: VPSchedule, x0: Tensor, eps: Tensor, s: Tensor) -> Tensor:
    """Deterministic DDIM (η = 0) jump to timestep ``s``: x_s = α_s x̂0 + σ_s ε̂."""
    return bc(schedule.alpha(s), x0) * x0 + bc(schedule.sigma(s), x0) * eps


@torch.no_grad()
def teacher_ddim(teacher: VPNet, x: Tensor, t: Tensor, s: Tensor, cond: object, uncond: object | None,
                 scale: float, substeps: int = 1) -> Tensor:
    """Guided teacher DDIM from ``t`` to ``s`` [B] over ``substeps`` equal sub-steps (MLCM's skipping-step solver).

    Sub-step j ends at round(t + (s - t) j / k); when t == s every sub-step is the identity.
    """
    for j in range(1, substeps + 1):
        nxt = torch.round(t + (s - t).float() * j / substeps).long()
        x0, eps = guided_x0_eps(teacher, x, t, cond, uncond, scale)
        x, t = ddim_to(teacher.schedule, x0, eps, nxt), nxt
    return x


def lcm_boundary_scalings(t: Tensor, sigma_data: float = 0.5, timestep_scaling: float = 10.0
                          ) -> tuple[Tensor, Tensor]:
    """LCM's discrete consistency boundary scalings (LCM paper eq. 9 with diffusers' constants).

    c_skip = σd² / ((10t)² + σd²), c_out = 10t / sqrt((10t)² + σd²): c_skip(0) = 1, c_out(0) = 0, so
    f(x, 0) = x; for t ≥ 19, c_skip < 1e-5 and f is the network's x̂0 to within 1e-5.
    """
    st = t.float() * timestep_scaling
    return sigma_data**2 / (st**2 + sigma_data**2), st / (st**2 + sigma_data**2).sqrt()


def consistency_x0(student: VPNet, x: Tensor, t: Tensor, cond: object, timestep_cond: Tensor | None = None,
                   boundary: bool = True) -> Tensor:
    """The consistency function f_θ(x, t) = c_skip(t) x + c_out(t) x̂0_θ(x, t) (MLCM eq. 4 / LCM)."""
    x0, _ = student.x0_eps(x, t, cond, timestep_cond)
    if not boundary:
        return x0
    c_skip, c_out = lcm_boundary_scalings(t)
    return bc(c_skip, x) * x + bc(c_out, x) * x0


def pseudo_huber(a: Tensor, b: Tensor, c: float) -> Tensor:
    """Per-sample pseudo-Huber distance, elementwise sqrt((a-b)² + c²) - c averaged over non-batch dims.

    The elementwise form is LCM's (``huber_c`` = 0.001); ``c = 0`` gives the mean absolute error and a
    large ``c`` approaches (a-b)²/(2c).
    """
    d = (a.float() - b.float()) ** 2
    return ((d + c * c).sqrt() - c).flatten(1).mean(1)


def guidance_embedding(w: Tensor, dim: int) -> Tensor:
    """Fourier embedding of a scalar per sample (the LCM w-embedding slot, reused by SLAM for γ).

    w [B] is scaled by 1000 like a timestep; the first dim/2 entries are sines, the rest cosines of
    geometric frequencies 1 .. 1/10000 (the transformer positional code). Returns [B, dim].
    """
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=w.device) / max(half - 1, 1))
    arg = (w.float() * 1000.0)[:, None] * freqs[None, :]
    emb = torch.cat([arg.sin(), arg.cos()], dim=1)
    return nn.functional.pad(emb, (0, dim - 2 * half))


class UNetAdapter(nn.Module):
    """Calls a diffusers ``UNet2DConditionModel`` with this module's ``(x, t, cond, timestep_cond)`` convention."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: Tensor, t: Tensor, cond: Tensor, timestep_cond: Tensor | None = None) -> Tensor:
        dtype = next(self.unet.parameters()).dtype
        tc = None if timestep_cond is None else timestep_cond.to(dtype)
        return self.unet(x.to(dtype), t, encoder_hidden_states=cond.to(dtype), timestep_cond=tc).sample
