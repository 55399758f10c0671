"""Noise schedules of trained models and the denoiser wrapper ``D(x, sigma, cond) -> x0``.

Every loaded network becomes a :class:`Denoiser`: the raw network plus its prediction type and its
noise schedule. Samplers only ever see ``D`` and ``denoiser.schedule`` (for ``alpha(sigma)``), so they
never branch on eps / v / x0 / flow prediction (style principle 3; k-diffusion ``external.py``).

The DDPM schedule itself, :class:`DiscreteVPSchedule`, is defined once in ``nodes.core.train.vp`` (its
σ-space view for samplers and its integer-timestep view for the trainers share one table).

Conventions (k-diffusion / ComfyUI): a noisy sample at level sigma is ``x = alpha(sigma) * x0 +
sigma * eps``.
- VP models (DDPM, SD1.5, SDXL) live in the "variance-exploding" space of Karras et al. 2022
  (EDM, Sec. 2 and Table 1): ``alpha = 1``, ``sigma = sqrt((1 - abar) / abar)`` and the network sees
  ``x / sqrt(sigma^2 + 1)`` (which is exactly the DDPM sample ``sqrt(abar) x0 + sqrt(1-abar) eps``).
- Rectified-flow models (Liu et al. 2022; Esser et al. 2024, SD3 eq. 1-2): ``alpha = 1 - sigma``,
  ``sigma = t`` in [0, 1] and the network sees ``x`` unscaled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from fewstep.nodes.core.train.vp import DiscreteVPSchedule

PREDICTION_TYPES = ("eps", "v", "x0", "flow", "edm")


def _as_batch(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """sigma as a float tensor [B] on x's device."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
    return sigma.reshape(-1).expand(x.shape[0]) if sigma.numel() == 1 else sigma.reshape(x.shape[0])


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, 1, ...] to broadcast against x."""
    return v.reshape(v.shape[0], *([1] * (x.ndim - 1))).to(x.dtype)


@dataclass(frozen=True, eq=False)
class FlowSchedule:
    """Rectified flow with a timestep shift: ``sigma(t) = shift t / (1 + (shift - 1) t)``.

    Esser et al. 2024 (SD3), eq. 23 (resolution-dependent shift); the network's timestep is
    ``sigma * multiplier`` (ComfyUI ``ModelSamplingDiscreteFlow``).
    """

    shift: float = 1.0
    multiplier: float = 1000.0

    @property
    def sigma_min(self) -> float:
        return float(self.sigma_at(torch.tensor(1.0 / self.multiplier)))

    @property
    def sigma_max(self) -> float:
        return 1.0

    def alpha(self, sigma: torch.Tensor) -> torch.Tensor:
        return 1.0 - torch.as_tensor(sigma, dtype=torch.float32)

    def c_in(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(sigma)

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(sigma, dtype=torch.float32) * self.multiplier

    def sigma_at(self, t: torch.Tensor | float) -> torch.Tensor:
        """sigma for a timestep in [0, multiplier] (shifted, SD3 eq. 23)."""
        u = torch.as_tensor(t, dtype=torch.float32) / self.multiplier
        return self.shift * u / (1 + (self.shift - 1) * u)


@dataclass(frozen=True, eq=False)
class EDMSchedule:
    """Continuous VE schedule of Karras et al. 2022 (Table 1, "ours"): c_noise = ln(sigma) / 4."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5

    def alpha(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(torch.as_tensor(sigma, dtype=torch.float32))

    def c_in(self, sigma: torch.Tensor) -> torch.Tensor:
        return 1.0 / (sigma**2 + self.sigma_data**2) ** 0.5

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(sigma, dtype=torch.float32).log() / 4

    def sigma_at(self, t: torch.Tensor | float) -> torch.Tensor:
        return (torch.as_tensor(t, dtype=torch.float32) * 4).exp()


@dataclass(frozen=True, eq=False)
class CosmosRFlowSchedule(EDMSchedule):
    """A rectified-flow network sampled in EDM space (ComfyUI's ``cosmos_rflow``; NVIDIA Cosmos): x = x0 +
    sigma eps (alpha = 1) is the flow sample x_rf = (1 - t) x0 + t eps scaled by 1 + sigma, t = sigma / (1 + sigma):
    the net sees c_in x = x / (1 + sigma) at timestep t; sigma_at(t) = t / (1 - t), capped at sigma_max."""

    def c_in(self, sigma: torch.Tensor) -> torch.Tensor:
        return 1.0 / (sigma + 1.0)

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        return sigma / (sigma + 1)

    def sigma_at(self, t: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float32)
        return torch.where(t >= self.sigma_max / (self.sigma_max + 1), torch.tensor(self.sigma_max),
                           t / (1 - t).clamp_min(1e-12))


@dataclass(frozen=True, eq=False)
class ContinuousVSchedule(EDMSchedule):
    """EDM-space sampling with an arctangent timestep (ComfyUI's ModelSamplingContinuousV, for continuous-time
    v-prediction nets): t = (2 / pi) atan(sigma) in [0, 1), sigma_at(t) = tan(pi t / 2)."""

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(sigma, dtype=torch.float32).atan() * (2 / torch.pi)

    def sigma_at(self, t: torch.Tensor | float) -> torch.Tensor:
        return (torch.as_tensor(t, dtype=torch.float32) * (torch.pi / 2)).tan()


Schedule = DiscreteVPSchedule | FlowSchedule | EDMSchedule
ModelFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


class Denoiser:
    """``D(x, sigma, cond) -> x0``: a network + prediction type + schedule.

    Args:
        model_fn: ``model_fn(x_in [B,C,h,w], timestep [B], cond) -> raw output`` with x's shape.
        prediction: ``eps`` | ``v`` | ``x0`` | ``flow`` — what the raw output is.
        schedule: one of the schedules above.
        boundary: ``"lcm"`` applies the consistency boundary condition of LCM (Luo et al. 2023, eq. 9;
            Song et al. 2023 CM, eq. 7 with sigma_data = 0.5 and timestep scaling 10, as in the LCM
            reference scheduler), else None.
        extras: anything the loader wants to keep beside the model (latent format, names ...).
    """

    def __init__(self, model_fn: ModelFn, prediction: str, schedule: Schedule, *,
                 boundary: str | None = None, extras: dict[str, Any] | None = None) -> None:
        if prediction not in PREDICTION_TYPES:
            raise ValueError(f"prediction must be one of {PREDICTION_TYPES}, got {prediction!r}")
        if prediction == "v" and isinstance(schedule, FlowSchedule):
            raise ValueError("v-prediction is defined for VP schedules, not for a FlowSchedule")
        if prediction == "flow" and not isinstance(schedule, FlowSchedule | CosmosRFlowSchedule):
            raise ValueError("flow prediction needs a FlowSchedule or a CosmosRFlowSchedule")
        if prediction == "edm" and not isinstance(schedule, EDMSchedule):
            raise ValueError("EDM (F) prediction needs an EDMSchedule: its sigma_data sets the preconditioning")
        self.model_fn = model_fn
        self.prediction = prediction
        self.schedule = schedule
        self.boundary = boundary
        self.extras = dict(extras or {})

    def clone(self, **changes: Any) -> Denoiser:
        """A new wrapper sharing the network, with some fields replaced (LoRA, boundary ...)."""
        fields = dict(model_fn=self.model_fn, prediction=self.prediction, schedule=self.schedule,
                      boundary=self.boundary, extras=dict(self.extras))
        fields.update(changes)
        model_fn = fields.pop("model_fn")
        prediction = fields.pop("prediction")
        schedule = fields.pop("schedule")
        return Denoiser(model_fn, prediction, schedule, **fields)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: Any = None) -> torch.Tensor:
        s = _as_batch(sigma, x)                                   # [B]
        sb = _bcast(s, x)                                         # [B,1,1,1]
        x_in = x * _bcast(self.schedule.c_in(s), x)
        out = self.model_fn(x_in, self.schedule.timestep(s), cond)
        x0 = self._to_x0(x, out, sb)
        if self.boundary == "lcm":
            x0 = self._lcm_boundary(x_in, x0, s)
        return x0

    def _to_x0(self, x: torch.Tensor, out: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if self.prediction == "x0":
            return out
        if self.prediction == "eps":
            # x = alpha x0 + sigma eps  =>  x0 = (x - sigma eps) / alpha
            return (x - s * out) / self.schedule.alpha(s).to(x.dtype)
        if self.prediction == "flow":
            # velocity v = eps - x0 and x_rf = (1 - t) x0 + t eps  =>  x0 = x_rf - t v. For a FlowSchedule x_rf = x
            # and t = sigma (c_in = 1); a rectified-flow net sampled in EDM space (Cosmos) sees x_rf = c_in x with
            # t = c_in sigma, c_in = 1 / (1 + sigma): both are x0 = c_in (x - sigma v)
            return self.schedule.c_in(s).to(x.dtype) * (x - s * out)
        if self.prediction == "edm":
            # Karras et al. 2022, eq. 7 and Table 1: D = c_skip x + c_out F, c_skip = sd^2 / (s^2 + sd^2),
            # c_out = s sd / sqrt(s^2 + sd^2) with sd = schedule.sigma_data
            sd = self.schedule.sigma_data
            return x * sd**2 / (s**2 + sd**2) + out * s * sd / (s**2 + sd**2) ** 0.5
        # v-prediction (Salimans & Ho 2022, Sec. 4 / App. D): v = a eps - b x0 with a, b the VP
        # coefficients a = 1/sqrt(1+s^2), b = s/sqrt(1+s^2)  =>  x0 = x / (1+s^2) - s/sqrt(1+s^2) v
        return x / (s**2 + 1) - s / (s**2 + 1) ** 0.5 * out

    def _lcm_boundary(self, x_in: torch.Tensor, x0: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        # f(x, t) = c_skip(t) x_vp + c_out(t) x0 with c_skip = sd^2 / ((10 t)^2 + sd^2),
        # c_out = 10 t / sqrt((10 t)^2 + sd^2), sd = 0.5 (LCM eq. 9); x_in is the DDPM-space sample.
        t10 = self.schedule.timestep(s).round() * 10.0
        c_skip = 0.25 / (t10**2 + 0.25)
        c_out = t10 / (t10**2 + 0.25) ** 0.5
        return _bcast(c_skip, x0) * x_in + _bcast(c_out, x0) * x0

    def noise_latent(self, latent: torch.Tensor, noise: torch.Tensor, sigma: float,
                     max_denoise: bool = False) -> torch.Tensor:
        """The forward process q(x_sigma | x0): ``alpha(sigma) x0 + sigma noise``.

        ``max_denoise`` (sampling from the top of a VP schedule, latent ignored): noise is scaled by
        sqrt(1 + sigma^2) instead, i.e. unit-variance noise in the DDPM space, the convention of DDIM /
        DDPM pipelines and of ComfyUI's KSampler."""
        s = torch.tensor(float(sigma))
        if max_denoise and isinstance(self.schedule, DiscreteVPSchedule):
            return latent + noise * (1.0 + float(sigma) ** 2) ** 0.5
        return float(self.schedule.alpha(s)) * latent + float(sigma) * noise

