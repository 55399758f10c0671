"""Samplers: plain functions with one signature (style principle 1; k-diffusion ``sampling.py``).

    sample_<name>(denoiser, x, sigmas, *, cond=None, callback=None, generator=None, **knobs) -> x

- ``denoiser(x, sigma, cond) -> x0`` (``nodes.core.denoiser.Denoiser`` or a guider); samplers also read
  ``denoiser.schedule.alpha(sigma)`` — the signal scale of x at sigma (1 for VP models in EDM space,
  1 - sigma for rectified flow) — so the same code serves both without branching on the model type.
- ``x`` [B, C, h, w] is already noised to ``sigmas[0]``; ``sigmas`` [n + 1] decreasing, ending in 0.
- ``callback({"i", "x", "sigma", "sigma_next", "denoised"})`` after every model evaluation step; it may
  raise to stop (the nodes use it for progress + interrupt).
- ``generator``: torch.Generator for the fresh noise of stochastic samplers (on x's device).
No sampler keeps state between calls.

Writing the marginal as x = a x0 + s eps, lambda = log(a / s) is the half log-SNR of Lu et al. 2022.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

Callback = Callable[[dict[str, Any]], None] | None


def _alpha(denoiser: Any, sigma: torch.Tensor) -> torch.Tensor:
    return denoiser.schedule.alpha(sigma.float()).to(sigma.device)


def _lam(denoiser: Any, sigma: torch.Tensor) -> torch.Tensor:
    """Half log-SNR lambda = log(a / s) (Lu et al. 2022, DPM-Solver, Sec. 3.1)."""
    return _alpha(denoiser, sigma).log() - sigma.log()


def _snr_ratio(denoiser: Any, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """r = SNR(sigma) / SNR(sigma_next) = exp(-2h), h = lambda' - lambda, computed without logs so that
    a = 0 (pure noise in flow models, lambda = -inf) gives r = 0 instead of NaN."""
    a, a_next = _alpha(denoiser, sigma), _alpha(denoiser, sigma_next)
    return (a * sigma_next / (a_next * sigma)) ** 2


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _report(callback: Callback, i: int, x: torch.Tensor, sigmas: torch.Tensor, x0: torch.Tensor) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigmas[i], "sigma_next": sigmas[i + 1], "denoised": x0})


def _renoise(denoiser: Any, x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
             eta: float, generator: torch.Generator | None) -> torch.Tensor:
    """One DDIM step with stochasticity eta (Song et al. 2021, DDIM eq. 12 and 16) in (a, s) form:
    eps_hat = (x - a x0) / s; s_up = eta s' sqrt(1 - exp(-2h)), h = lambda' - lambda;
    x' = a' x0 + sqrt(s'^2 - s_up^2) eps_hat + s_up z. eta = 1 is the DDPM posterior sample,
    eta = 0 the deterministic DDIM / probability-flow Euler step."""
    if float(sigma_next) == 0.0:
        return x0
    a, a_next = _alpha(denoiser, sigma), _alpha(denoiser, sigma_next)
    eps_hat = (x - a * x0) / sigma
    r = _snr_ratio(denoiser, sigma, sigma_next)
    s_up = (eta * sigma_next * (1 - r).clamp_min(0).sqrt()).clamp(max=float(sigma_next))
    x = a_next * x0 + (sigma_next**2 - s_up**2).sqrt() * eps_hat
    return x + s_up * _noise(x, generator) if eta > 0 else x


def sample_euler(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                 callback: Callback = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Euler on the probability-flow ODE dx/dsigma = (x - x0) / sigma (Karras et al. 2022, eq. 4 and
    Alg. 2 with S_churn = 0). The derivative holds for a = 1 (EDM space) and a = 1 - sigma (flow)."""
    for i in range(len(sigmas) - 1):
        x0 = denoiser(x, sigmas[i], cond)
        _report(callback, i, x, sigmas, x0)
        x = x + (sigmas[i + 1] - sigmas[i]) * (x - x0) / sigmas[i]
    return x


def sample_heun(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                callback: Callback = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Heun's 2nd-order method (Karras et al. 2022, Alg. 1); Euler on the last step to sigma = 0."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        _report(callback, i, x, sigmas, x0)
        d = (x - x0) / sigma
        x_euler = x + (sigma_next - sigma) * d
        if float(sigma_next) == 0.0:
            x = x_euler
            continue
        d_next = (x_euler - denoiser(x_euler, sigma_next, cond)) / sigma_next
        x = x + (sigma_next - sigma) * (d + d_next) / 2
    return x


def sample_euler_ancestral(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                           callback: Callback = None, generator: torch.Generator | None = None,
                           eta: float = 1.0) -> torch.Tensor:
    """Ancestral sampling: a deterministic step down then fresh noise back up (k-diffusion
    ``sample_euler_ancestral``; = DDIM eq. 12 with stochasticity eta, see :func:`_renoise`)."""
    for i in range(len(sigmas) - 1):
        x0 = denoiser(x, sigmas[i], cond)
        _report(callback, i, x, sigmas, x0)
        x = _renoise(denoiser, x, x0, sigmas[i], sigmas[i + 1], eta, generator)
    return x


def sample_ddim(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                callback: Callback = None, generator: torch.Generator | None = None,
                eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12): x' = a' x0 + s' eps_hat for eta = 0 (stochastic for eta > 0)."""
    return sample_euler_ancestral(denoiser, x, sigmas, cond=cond, callback=callback, generator=generator,
                                  eta=eta)


def sample_ddpm(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                callback: Callback = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Ancestral DDPM: sample the posterior q(x_s | x_t, x0_hat) (Ho et al. 2020, eq. 6-7), written
    with r = SNR(t) / SNR(s) = exp(-2h) (Kingma et al. 2021, VDM eq. 32-33):
    mean = a_s (1 - r) x0 + (a_s / a_t) r x_t,  var = s_s^2 (1 - r)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        _report(callback, i, x, sigmas, x0)
        if float(sigma_next) == 0.0:
            x = x0
            continue
        a, a_next = _alpha(denoiser, sigma), _alpha(denoiser, sigma_next)
        r = _snr_ratio(denoiser, sigma, sigma_next)
        # (a_s / a_t) r = a_t s_s^2 / (a_s s_t^2): finite at a_t = 0
        mean = a_next * (1 - r) * x0 + (a * sigma_next**2 / (a_next * sigma**2)) * x
        x = mean + sigma_next * (1 - r).sqrt() * _noise(x, generator)
    return x


def sample_dpmpp_2m(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                    callback: Callback = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2): x' = (s'/s) x - a' (e^{-h} - 1) D, with
    D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1}, r = h_{i-1} / h_i; first-order on the first and last step."""
    x0_prev, h_prev = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        _report(callback, i, x, sigmas, x0)
        if float(sigma_next) == 0.0:
            x = x0
            continue
        ratio = _snr_ratio(denoiser, sigma, sigma_next)          # exp(-2h)
        h = -0.5 * ratio.log()
        d = x0
        if x0_prev is not None:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        x = (sigma_next / sigma) * x + _alpha(denoiser, sigma_next) * (1 - ratio.sqrt()) * d
        x0_prev, h_prev = x0, h
    return x


def _sde_step(denoiser: Any, x: torch.Tensor, d: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
              generator: torch.Generator | None) -> torch.Tensor:
    """First-order SDE-DPM-Solver++ step (Lu et al. 2022b, eq. 18 / App. B with eta = 1):
    x' = (s'/s) e^{-h} x + a' (1 - e^{-2h}) D + s' sqrt(1 - e^{-2h}) z."""
    r = _snr_ratio(denoiser, sigma, sigma_next)                   # exp(-2h)
    x = (sigma_next / sigma) * r.sqrt() * x + _alpha(denoiser, sigma_next) * (1 - r) * d
    return x + sigma_next * (1 - r).clamp_min(0).sqrt() * _noise(x, generator)


def sample_dpmpp_sde(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                     callback: Callback = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """DPM-Solver++(2S) with SDE noise (Lu et al. 2022b, Alg. 1 + eq. 18; k-diffusion ``sample_dpmpp_sde``
    with r = 1/2): an SDE half-step to the geometric-mean sigma gives x0_mid, then the full SDE step uses
    D = (1 - 1/(2r)) x0 + 1/(2r) x0_mid, r the lambda fraction actually reached. The two noises are
    drawn independently (k-diffusion correlates them with a Brownian tree)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        _report(callback, i, x, sigmas, x0)
        if float(sigma_next) == 0.0:
            x = x0
            continue
        sigma_mid = (sigma * sigma_next).sqrt()
        x_mid = _sde_step(denoiser, x, x0, sigma, sigma_mid, generator)
        x0_mid = denoiser(x_mid, sigma_mid, cond)
        lam, lam_mid, lam_next = (_lam(denoiser, s) for s in (sigma, sigma_mid, sigma_next))
        r = (lam_mid - lam) / (lam_next - lam)
        r = r if bool(torch.isfinite(r)) else torch.tensor(0.5)  # lambda = -inf at pure noise (flow, a = 0)
        d = (1 - 1 / (2 * r)) * x0 + (1 / (2 * r)) * x0_mid
        x = _sde_step(denoiser, x, d, sigma, sigma_next, generator)
    return x


def sample_lcm(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
               callback: Callback = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Multistep consistency sampling (Song et al. 2023, CM Alg. 1; Luo et al. 2023, LCM Alg. 3):
    predict x0, then re-noise it to the next level with fresh noise: x' = a' x0 + s' z."""
    for i in range(len(sigmas) - 1):
        x0 = denoiser(x, sigmas[i], cond)
        _report(callback, i, x, sigmas, x0)
        x = x0
        if float(sigmas[i + 1]) > 0:
            x = _alpha(denoiser, sigmas[i + 1]) * x0 + sigmas[i + 1] * _noise(x0, generator)
    return x


def sample_tcd(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
               callback: Callback = None, generator: torch.Generator | None = None,
               gamma: float = 0.3) -> torch.Tensor:
    """Strategic stochastic sampling of TCD (Zheng et al. 2024, Sec. 4.4, eq. 12): from t go
    deterministically (DDIM) to s_gamma = (1 - gamma) s' in timestep units, then forward-diffuse to s'.
    gamma = 0 is DDIM; gamma = 1 predicts x0 and re-noises fully (LCM)."""
    schedule = denoiser.schedule
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        _report(callback, i, x, sigmas, x0)
        if float(sigma_next) == 0.0:
            x = x0
            continue
        t_down = (1 - gamma) * schedule.timestep(sigma_next.reshape(1).float())
        sigma_down = schedule.sigma_at(t_down).reshape(()).to(sigma.device).clamp(max=float(sigma_next))
        x = x0 if float(sigma_down) <= 0 else _renoise(denoiser, x, x0, sigma, sigma_down, 0.0, None)
        # forward process from s_down to s': x_s' = (a'/a_down) x_down + sqrt(s'^2 - (a'/a_down)^2 s_down^2) z
        a_ratio = _alpha(denoiser, sigma_next) / _alpha(denoiser, sigma_down)
        std = (sigma_next**2 - (a_ratio * sigma_down) ** 2).clamp_min(0).sqrt()
        x = a_ratio * x + std * _noise(x, generator)
    return x


SamplerFn = Callable[..., torch.Tensor]

# ComfyUI's sampler names (comfy/samplers.py KSAMPLER_NAMES + "ddim") that we implement; "tcd" is ours.
SAMPLERS: dict[str, SamplerFn] = {
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_sde": sample_dpmpp_sde,
    "ddpm": sample_ddpm,
    "lcm": sample_lcm,
    "ddim": sample_ddim,
    "tcd": sample_tcd,
}


@dataclass(frozen=True)
class SamplerSpec:
    """The SAMPLER link value: a sampler function plus its knobs."""

    name: str
    fn: SamplerFn
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(self, denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                 callback: Callback = None, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.fn(denoiser, x, sigmas, cond=cond, callback=callback, generator=generator, **self.options)


def get_sampler(name: str, **options: Any) -> SamplerSpec:
    """Look a sampler up by ComfyUI name; a clear error lists the known ones."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    return SamplerSpec(name, SAMPLERS[name], dict(options))
