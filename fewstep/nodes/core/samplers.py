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
The shared step arithmetic is in ``sampler_math``; the CFG++ family in ``samplers_cfgpp``, DEIS / iPNDM-v /
Heun++ / DPM-Solver-fast and -adaptive in ``samplers_solvers``, SEEDS and SA-Solver in ``samplers_stochastic``;
``SAMPLERS`` below registers them all under ComfyUI's names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from fewstep.nodes.core.brownian import NoiseSampler, default_noise
from fewstep.nodes.core.sampler_math import Callback
from fewstep.nodes.core.sampler_math import alpha_at as _alpha
from fewstep.nodes.core.sampler_math import ancestral_split as _ancestral_split
from fewstep.nodes.core.sampler_math import dpmpp_2s_step as _dpmpp_2s_step
from fewstep.nodes.core.sampler_math import fresh_noise as _noise
from fewstep.nodes.core.sampler_math import half_log_snr as _lam
from fewstep.nodes.core.sampler_math import renoise as _renoise
from fewstep.nodes.core.sampler_math import renoise_from as _renoise_from
from fewstep.nodes.core.sampler_math import report as _report
from fewstep.nodes.core.sampler_math import res_coefficients as _res_coefficients
from fewstep.nodes.core.sampler_math import snr_ratio as _snr_ratio
from fewstep.nodes.core.samplers_cfgpp import (
    sample_dpmpp_2m_cfg_pp,
    sample_dpmpp_2s_ancestral_cfg_pp,
    sample_euler_ancestral_cfg_pp,
    sample_euler_cfg_pp,
    sample_gradient_estimation_cfg_pp,
    sample_res_multistep_ancestral_cfg_pp,
    sample_res_multistep_cfg_pp,
)
from fewstep.nodes.core.samplers_solvers import (
    sample_deis,
    sample_dpm_adaptive,
    sample_dpm_fast,
    sample_heunpp2,
    sample_ipndm_v,
)
from fewstep.nodes.core.samplers_stochastic import (
    sample_exp_heun_2_x0,
    sample_exp_heun_2_x0_sde,
    sample_sa_solver,
    sample_sa_solver_pece,
    sample_seeds_2,
    sample_seeds_3,
)


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
                           eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral sampling: a deterministic step down then fresh noise back up (k-diffusion
    ``sample_euler_ancestral``; = DDIM eq. 12 with stochasticity eta, see :func:`_renoise`); ``s_noise``
    scales the fresh noise."""
    for i in range(len(sigmas) - 1):
        x0 = denoiser(x, sigmas[i], cond)
        _report(callback, i, x, sigmas, x0)
        x = _renoise(denoiser, x, x0, sigmas[i], sigmas[i + 1], eta, generator, s_noise)
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


def sample_dpmpp_sde(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                     callback: Callback = None, generator: torch.Generator | None = None,
                     eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5,
                     noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """DPM-Solver++(2S) with SDE noise, as k-diffusion's ``sample_dpmpp_sde`` (r = 1/2 by default; Lu et al. 2022b,
    Alg. 1 made stochastic by ancestral steps). Each of the two stages is an ancestral step
    (:func:`_ancestral_stage`): stage 1 goes sigma -> sigma_mid (the lambda midpoint, sqrt(sigma sigma')
    for a = 1) with x0 and gives x0_mid; stage 2 goes sigma -> sigma' with
    D = (1 - 1/(2r)) x0 + 1/(2r) x0_mid (= x0_mid at r = 1/2). The noises are the Brownian increments over
    [sigma_mid, sigma] and [sigma', sigma] of one path (``nodes.core.brownian``): stable across step counts,
    and ComfyUI's draws for the same seed up to the float rounding of the queried sigmas (a Brownian path
    moves by ~sqrt(ulp) there; tests/core/test_samplers_kdiffusion.py)."""
    noise = default_noise(noise_sampler, x, sigmas, generator) if eta > 0 and s_noise > 0 else None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        _report(callback, i, x, sigmas, x0)
        if float(sigma_next) == 0.0:
            x = x0
            continue
        sigma_mid = (sigma.log() + r * (sigma_next.log() - sigma.log())).exp()    # lambda at fraction r (a = 1)
        x_mid = _ancestral_stage(denoiser, x, x0, sigma, sigma_mid, eta, s_noise, noise)
        x0_mid = denoiser(x_mid, sigma_mid, cond)
        lam, lam_mid, lam_next = (_lam(denoiser, s) for s in (sigma, sigma_mid, sigma_next))
        frac = (lam_mid - lam) / (lam_next - lam)
        frac = frac if bool(torch.isfinite(frac)) else torch.tensor(r)  # lambda = -inf at pure noise (flow)
        d = (1 - 1 / (2 * frac)) * x0 + (1 / (2 * frac)) * x0_mid
        x = _ancestral_stage(denoiser, x, d, sigma, sigma_next, eta, s_noise, noise)
    return x


def sample_lcm(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
               callback: Callback = None, generator: torch.Generator | None = None, s_noise: float = 1.0,
               s_noise_end: float | None = None, noise_clip_std: float = 0.0) -> torch.Tensor:
    """Multistep consistency sampling (Song et al. 2023, CM Alg. 1; Luo et al. 2023, LCM Alg. 3):
    predict x0, then re-noise it to the next level with fresh noise: x' = a' x0 + s' c_i z. As ComfyUI's
    ``lcm``: c_i runs linearly from ``s_noise`` to ``s_noise_end`` (default: constant) over the steps, and
    ``noise_clip_std`` > 0 clips z to +-noise_clip_std std(z) before scaling."""
    n = max(1, len(sigmas) - 1)
    s_end = s_noise if s_noise_end is None else s_noise_end
    for i in range(len(sigmas) - 1):
        x0 = denoiser(x, sigmas[i], cond)
        _report(callback, i, x, sigmas, x0)
        x = x0
        if float(sigmas[i + 1]) > 0:
            z = _noise(x0, generator)
            if noise_clip_std > 0:
                bound = noise_clip_std * float(z.std())
                z = z.clamp(-bound, bound)
            scale = s_noise + (s_end - s_noise) * (i / (n - 1) if n > 1 else 0.0)
            x = _alpha(denoiser, sigmas[i + 1]) * x0 + sigmas[i + 1] * scale * z
    return x


def sample_lcm_upscale(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                       callback: Callback = None, generator: torch.Generator | None = None,
                       total_upscale: float = 2.0, upscale_method: str = "bislerp",
                       upscale_steps: int | None = None) -> torch.Tensor:
    """LCM sampling that enlarges the latent between steps (ComfyUI's SamplerLCMUpscale): after step i < k the x0
    prediction is resized to scale u_i of the input size, u = linspace(1, total_upscale, k + 1)[1:],
    k = upscale_steps (default len(sigmas) // 2), then re-noised: x' = a' resize(x0) + s' z. The output is
    total_upscale times larger than the input when k < steps."""
    from fewstep.nodes.core.latent_ops import scale_latent

    k = max(len(sigmas) // 2 + 1, 2) - 1 if upscale_steps is None else min(upscale_steps + 1, len(sigmas) + 1) - 1
    scales = torch.linspace(1.0, total_upscale, k + 1, dtype=torch.float64)[1:].tolist()
    height, width = x.shape[-2:]
    for i in range(len(sigmas) - 1):
        x0 = denoiser(x, sigmas[i], cond)
        _report(callback, i, x, sigmas, x0)
        x = x0
        if i < len(scales):
            x = scale_latent(x0, upscale_method, round(width * scales[i]), round(height * scales[i]), "disabled")
            x = x.to(x0.dtype)
        if float(sigmas[i + 1]) > 0:
            x = _alpha(denoiser, sigmas[i + 1]) * x + sigmas[i + 1] * _noise(x, generator)
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


def _ancestral_stage(denoiser: Any, x: torch.Tensor, d: torch.Tensor, sigma: torch.Tensor, sigma_to: torch.Tensor,
                     eta: float, s_noise: float, noise: NoiseSampler | None) -> torch.Tensor:
    """One ancestral step with data estimate D: first-order DPM-Solver++ (= DDIM, :func:`_renoise` with
    eta 0) to sigma_down, then s_up s_noise z(sigma, sigma_to) back up to sigma_to."""
    sigma_down, s_up = _ancestral_split(denoiser, sigma, sigma_to, eta)
    x_down = _renoise(denoiser, x, d, sigma, sigma_down, 0.0, None)
    if noise is None:
        return _renoise_from(denoiser, x_down, sigma_down, sigma_to, s_up, lambda: torch.zeros_like(x))
    return _renoise_from(denoiser, x_down, sigma_down, sigma_to, s_up, lambda: s_noise * noise(sigma, sigma_to))


def _sde_multistep_terms(denoiser: Any, sigma: torch.Tensor, sigma_next: torch.Tensor,
                         eta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shared quantities of the SDE-DPM-Solver++ multistep updates (Lu et al. 2022b, eq. 18 / App. B):
    h = lambda' - lambda, h_eta = (1 + eta) h, the factor on x: (s'/s) e^{-eta h}, and the noise std
    s' sqrt(1 - e^{-2 eta h}). Written through r = e^{-2h} so that a = 0 (flow, sigma = 1) stays finite."""
    r = _snr_ratio(denoiser, sigma, sigma_next)
    h = -0.5 * r.log()
    x_scale = (sigma_next / sigma) * r ** (eta / 2)
    noise_std = sigma_next * (1 - r**eta).clamp_min(0).sqrt()
    return h, (1 + eta) * h, x_scale, noise_std


def sample_dpmpp_2m_sde(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                        callback: Callback = None, generator: torch.Generator | None = None,
                        eta: float = 1.0, s_noise: float = 1.0, solver_type: str = "midpoint",
                        noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022b, App. B, Alg. "SDE-DPM-Solver++(2M)"; k-diffusion
    ``sample_dpmpp_2m_sde``), eta = 1 is the reverse SDE, eta = 0 the ODE solver DPM-Solver++(2M):
        x' = (s'/s) e^{-eta h} x + a' (1 - e^{-h_eta}) x0 + a' c (x0 - x0_prev) / r
             + s' sqrt(1 - e^{-2 eta h}) z,
    r = h_prev / h, c = (1 - e^{-h_eta}) / 2 ("midpoint") or 1 - (1 - e^{-h_eta}) / h_eta ("heun"); both
    are h_eta / 2 + O(h^2). First-order on the first step; x0 on the last;
    z is Brownian-tree noise (``nodes.core.brownian``) unless ``noise_sampler`` is given."""
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"dpmpp_2m_sde: solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
    noise = default_noise(noise_sampler, x, sigmas, generator) if eta > 0 and s_noise > 0 else None
    x0_prev, h_prev = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        _report(callback, i, x, sigmas, x0)
        if float(sigma_next) == 0.0:
            x = x0
            continue
        h, h_eta, x_scale, noise_std = _sde_multistep_terms(denoiser, sigma, sigma_next, eta)
        a_next, one_minus = _alpha(denoiser, sigma_next), -torch.expm1(-h_eta)
        x = x_scale * x + a_next * one_minus * x0
        if x0_prev is not None:
            c = one_minus / 2 if solver_type == "midpoint" else 1 - one_minus / h_eta
            x = x + a_next * c * (h / h_prev) * (x0 - x0_prev)
        if noise is not None:
            x = x + s_noise * noise_std * noise(sigma, sigma_next)
        # a = 0 at flow's sigma = 1 makes h infinite: that point carries no slope information, drop it
        x0_prev, h_prev = (x0, h) if bool(torch.isfinite(h)) else (None, None)
    return x


def sample_dpmpp_2m_sde_heun(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                             callback: Callback = None, generator: torch.Generator | None = None,
                             eta: float = 1.0, s_noise: float = 1.0,
                             noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """:func:`sample_dpmpp_2m_sde` with the "heun" second-order correction (ComfyUI ``dpmpp_2m_sde_heun``)."""
    return sample_dpmpp_2m_sde(denoiser, x, sigmas, cond=cond, callback=callback, generator=generator, eta=eta,
                               s_noise=s_noise, solver_type="heun", noise_sampler=noise_sampler)


def _phi_terms(h_eta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """phi_2 = (e^{-h} - 1)/h + 1 and phi_3 = phi_2 / h - 1/2 (the exponential-integrator phi functions
    times h, as k-diffusion's 3M SDE uses them: Lu et al. 2022b, eq. 14 with the 3rd-order term)."""
    phi_2 = torch.expm1(-h_eta) / h_eta + 1
    return phi_2, phi_2 / h_eta - 0.5


def sample_dpmpp_3m_sde(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                        callback: Callback = None, generator: torch.Generator | None = None,
                        eta: float = 1.0, s_noise: float = 1.0,
                        noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """SDE-DPM-Solver++(3M) (k-diffusion ``sample_dpmpp_3m_sde``; Lu et al. 2022b, multistep 3rd order):
    the 2M SDE step plus divided differences of the last three x0 predictions,
        d1_0 = (x0 - x0_1) / r0, d1_1 = (x0_1 - x0_2) / r1  (r0 = h_1/h, r1 = h_2/h),
        d1 = d1_0 + (d1_0 - d1_1) r0/(r0 + r1),  d2 = (d1_0 - d1_1)/(r0 + r1),
        x' += a' (phi_2 d1 - phi_3 d2)  (x' += a' phi_2 d1_0 with two points only)."""
    noise = default_noise(noise_sampler, x, sigmas, generator) if eta > 0 and s_noise > 0 else None
    hist: list[tuple[torch.Tensor, torch.Tensor]] = []           # (x0, h) of earlier steps, newest first
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        _report(callback, i, x, sigmas, x0)
        if float(sigma_next) == 0.0:
            x = x0
            continue
        h, h_eta, x_scale, noise_std = _sde_multistep_terms(denoiser, sigma, sigma_next, eta)
        a_next = _alpha(denoiser, sigma_next)
        x = x_scale * x - a_next * torch.expm1(-h_eta) * x0
        phi_2, phi_3 = _phi_terms(h_eta)
        if len(hist) >= 2:
            (x0_1, h_1), (x0_2, h_2) = hist[0], hist[1]
            r0, r1 = h_1 / h, h_2 / h
            d1_0, d1_1 = (x0 - x0_1) / r0, (x0_1 - x0_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            x = x + a_next * (phi_2 * d1 - phi_3 * d2)
        elif hist:
            x0_1, h_1 = hist[0]
            x = x + a_next * phi_2 * (x0 - x0_1) * (h / h_1)
        if noise is not None:
            x = x + s_noise * noise_std * noise(sigma, sigma_next)
        hist = ([(x0, h)] + hist)[:2] if bool(torch.isfinite(h)) else []
    return x


# -- UniPC ------------------------------------------------------------------------------------------


def _unipc_system(hist: list[tuple[torch.Tensor, torch.Tensor]], lam_t: torch.Tensor,
                  variant: str) -> dict[str, Any]:
    """The UniPC coefficients for one step (Zhao et al. 2023, UniPC, Alg. 2 / App. B in data prediction):
    hist = [(lambda_k, x0_k)] oldest first, the last one at the step's start s0; h = lambda_t - lambda_s0,
    hh = -h, r_k = (lambda_{-k} - lambda_s0) / h, D1_k = (x0_{-k} - x0_s0) / r_k, B(h) = hh ("bh1") or
    e^{hh} - 1 ("bh2"); R[i] = r^i and b[i] = i! phi_{i+1}(hh) / B(h) with phi_1 = (e^{hh}-1)/hh - 1 ..."""
    lam0, m0 = hist[-1]
    h = lam_t - lam0
    hh = -h
    older = list(reversed(hist[:-1]))                             # newest previous first
    rks = [(lam_k - lam0) / h for lam_k, _ in older]
    d1s = [(m_k - m0) / r_k for (_, m_k), r_k in zip(older, rks, strict=True)]
    rk = torch.stack([r.double() for r in rks] + [torch.ones((), dtype=torch.float64)])  # [order]
    h_phi_1 = torch.expm1(hh)
    b_h = hh if variant == "bh1" else h_phi_1
    h_phi_k, factorial, rows, b = h_phi_1 / hh - 1, 1, [], []
    for i in range(1, len(hist) + 1):
        rows.append(rk ** (i - 1))
        b.append((h_phi_k * factorial / b_h).double())
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return {"m0": m0, "h_phi_1": h_phi_1, "b_h": b_h, "R": torch.stack(rows), "b": torch.stack(b), "d1s": d1s}


def _unipc_base(denoiser: Any, x: torch.Tensor, sigma: torch.Tensor, sigma_t: torch.Tensor,
                sys: dict[str, Any]) -> torch.Tensor:
    """The first-order part x_t_ = (s_t/s) x - a_t (e^{hh} - 1) x0_s0 (= DPM-Solver++ 1)."""
    return (sigma_t / sigma) * x - _alpha(denoiser, sigma_t) * sys["h_phi_1"] * sys["m0"]


def _unipc_predict(denoiser: Any, x: torch.Tensor, sigma: torch.Tensor, sigma_t: torch.Tensor,
                   sys: dict[str, Any]) -> torch.Tensor:
    """UniP-p (Zhao et al. 2023, eq. 8): x_t = x_t_ - a_t B(h) sum_k rho_p_k D1_k, rho_p solving the
    (order-1) x (order-1) system R rho = b (rho_p = 1/2 at order 2, as in the reference code)."""
    base, order = _unipc_base(denoiser, x, sigma, sigma_t, sys), sys["R"].shape[0]
    if order == 1:
        return base
    rhos = torch.tensor([0.5], dtype=torch.float64) if order == 2 else \
        torch.linalg.solve(sys["R"][:-1, :-1], sys["b"][:-1])
    res = sum(rho.to(x.dtype) * d for rho, d in zip(rhos, sys["d1s"], strict=True))
    return base - _alpha(denoiser, sigma_t) * sys["b_h"] * res


def _unipc_correct(denoiser: Any, x: torch.Tensor, sigma: torch.Tensor, sigma_t: torch.Tensor,
                   sys: dict[str, Any], x0_t: torch.Tensor) -> torch.Tensor:
    """UniC-p (Zhao et al. 2023, eq. 6): re-solve the step from x (at sigma) using also the model output
    x0_t at the predicted point, D1_t = x0_t - x0_s0 (r = 1); rho_c solves the full system (1/2 at order 1)."""
    order = sys["R"].shape[0]
    rhos = torch.tensor([0.5], dtype=torch.float64) if order == 1 else torch.linalg.solve(sys["R"], sys["b"])
    res = sum((rho.to(x.dtype) * d for rho, d in zip(rhos[:-1], sys["d1s"], strict=True)), torch.zeros_like(x))
    res = res + rhos[-1].to(x.dtype) * (x0_t - sys["m0"])
    return _unipc_base(denoiser, x, sigma, sigma_t, sys) - _alpha(denoiser, sigma_t) * sys["b_h"] * res


def sample_uni_pc(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                  callback: Callback = None, generator: torch.Generator | None = None,
                  order: int = 3, variant: str = "bh1") -> torch.Tensor:
    """UniPC multistep (Zhao et al. 2023), data prediction, order 3 with lower orders while warming up and
    on the last steps (min(order, steps left)); the UniC corrector reuses the next step's model output, so
    NFE = steps; no corrector after the last step. variant "bh1": B(h) = h, "bh2": B(h) = e^h - 1.
    Same scheme as diffusers' UniPCMultistepScheduler(solver_order=3, predict_x0=True). ComfyUI's uni_pc
    stops at sigma 0.001 instead of 0; here the given sigmas are followed exactly (x0 at sigma = 0)."""
    if variant not in ("bh1", "bh2") or order < 1:
        raise ValueError(f"uni_pc: variant must be 'bh1' or 'bh2' and order >= 1, got {variant!r}, {order}")
    n, hist, pending = len(sigmas) - 1, [], None
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        _report(callback, i, x, sigmas, x0)
        if pending is not None:
            x = _unipc_correct(denoiser, *pending, x0)
        lam = _lam(denoiser, sigma)
        # lambda = -inf (flow at sigma = 1) carries no slope information: start the history afresh
        hist = (hist + [(lam, x0)])[-order:] if bool(torch.isfinite(lam)) else []
        if float(sigma_next) == 0.0:
            x, pending = x0, None
            continue
        if not hist:
            x, pending = _renoise(denoiser, x, x0, sigma, sigma_next, 0.0, None), None
            continue
        step_hist = hist[-min(order, n - i, len(hist)):]
        sys = _unipc_system(step_hist, _lam(denoiser, sigma_next), variant)
        pending = (x, sigma, sigma_next, sys) if i < n - 1 else None
        x = _unipc_predict(denoiser, x, sigma, sigma_next, sys)
    return x


def sample_uni_pc_bh2(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                      callback: Callback = None, generator: torch.Generator | None = None,
                      order: int = 3) -> torch.Tensor:
    """:func:`sample_uni_pc` with B(h) = e^h - 1 (ComfyUI ``uni_pc_bh2``; diffusers' default solver_type)."""
    return sample_uni_pc(denoiser, x, sigmas, cond=cond, callback=callback, generator=generator, order=order,
                         variant="bh2")


# -- k-diffusion's classic ODE / ancestral samplers -----------------------------------------------------


def _lms_coefficient(ts: list[float], i: int, j: int, order: int) -> float:
    """integral over [t_i, t_{i+1}] of the Lagrange basis polynomial through t_i, ..., t_{i-order+1} that is
    1 at t_{i-j} (linear multistep, Adams-Bashforth in sigma). Integrated exactly with numpy (degree < 4);
    k-diffusion and diffusers use scipy quad, which is exact for these degrees too."""
    import numpy as np

    others = [ts[i - k] for k in range(order) if k != j]
    if not others:                                                # order 1: the basis is the constant 1
        return ts[i + 1] - ts[i]
    poly = np.poly1d(others, r=True) / float(np.prod([ts[i - j] - o for o in others]))
    antiderivative = poly.integ()
    return float(antiderivative(ts[i + 1]) - antiderivative(ts[i]))


def sample_lms(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
               callback: Callback = None, generator: torch.Generator | None = None,
               order: int = 4) -> torch.Tensor:
    """Linear multistep (k-diffusion ``sample_lms``; Karras et al. 2022 discuss it as "LMS"): on the ODE
    dx/dsigma = d = (x - x0)/sigma, x' = x + sum_j c_j d_{i-j}, c_j the exact integrals of the Lagrange
    basis over [sigma_i, sigma_{i+1}] on the last min(i + 1, order) sigmas."""
    ts = [float(s) for s in sigmas.double()]
    ds: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        x0 = denoiser(x, sigmas[i], cond)
        _report(callback, i, x, sigmas, x0)
        ds = ([(x - x0) / sigmas[i]] + ds)[:order]                # newest first
        coeffs = [_lms_coefficient(ts, i, j, len(ds)) for j in range(len(ds))]
        x = x + sum(c * d for c, d in zip(coeffs, ds, strict=True))
    return x


def _dpm2_step(denoiser: Any, x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor,
               sigma_to: torch.Tensor, cond: Any) -> torch.Tensor:
    """DPM-Solver-2 in k-diffusion's form (Lu et al. 2022, Alg. 1 as an explicit midpoint rule in sigma):
    Euler to sigma_mid = sqrt(sigma sigma_to), then the full step with the derivative there; Euler to 0."""
    d = (x - x0) / sigma
    if float(sigma_to) == 0.0:
        return x + d * (sigma_to - sigma)
    sigma_mid = (sigma.log() + 0.5 * (sigma_to.log() - sigma.log())).exp()
    x_mid = x + d * (sigma_mid - sigma)
    d_mid = (x_mid - denoiser(x_mid, sigma_mid, cond)) / sigma_mid
    return x + d_mid * (sigma_to - sigma)


def sample_dpm_2(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                 callback: Callback = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """DPM-Solver-2 (k-diffusion ``sample_dpm_2`` with s_churn = 0): 2 model calls per step, 1 on the last."""
    for i in range(len(sigmas) - 1):
        x0 = denoiser(x, sigmas[i], cond)
        _report(callback, i, x, sigmas, x0)
        x = _dpm2_step(denoiser, x, x0, sigmas[i], sigmas[i + 1], cond)
    return x


def sample_dpm_2_ancestral(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                           callback: Callback = None, generator: torch.Generator | None = None,
                           eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral DPM-Solver-2 (k-diffusion ``sample_dpm_2_ancestral``): a DPM-2 step to sigma_down, then
    fresh noise s_up back to sigma_next (:func:`_ancestral_split`). eta = 0 is :func:`sample_dpm_2`."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        _report(callback, i, x, sigmas, x0)
        sigma_down, s_up = _ancestral_split(denoiser, sigma, sigma_next, eta)
        x = _dpm2_step(denoiser, x, x0, sigma, sigma_down, cond)
        x = _renoise_from(denoiser, x, sigma_down, sigma_next, s_up, lambda ref=x: s_noise * _noise(ref, generator))
    return x


def sample_dpmpp_2s_ancestral(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                              callback: Callback = None, generator: torch.Generator | None = None,
                              eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral DPM-Solver++(2S) (k-diffusion ``sample_dpmpp_2s_ancestral``): a 2S step to sigma_down, then
    fresh noise s_up back to sigma_next. eta = 0 is the deterministic 2nd-order DPM-Solver++(2S)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        _report(callback, i, x, sigmas, x0)
        sigma_down, s_up = _ancestral_split(denoiser, sigma, sigma_next, eta)
        x = _dpmpp_2s_step(denoiser, x, x0, sigma, sigma_down, cond)
        x = _renoise_from(denoiser, x, sigma_down, sigma_next, s_up, lambda ref=x: s_noise * _noise(ref, generator))
    return x


# -- fixed-coefficient multistep samplers on the probability-flow ODE ----------------------------------

# Adams-Bashforth weights of d_i, d_{i-1}, ... for orders 1-4 (equal steps; Zhang & Chen 2023, DEIS,
# Sec. 5 "iPNDM": the improved pseudo-numerical method uses them with lower orders while warming up).
_AB_WEIGHTS = ((1.0,), (3 / 2, -1 / 2), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))


def sample_ipndm(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                 callback: Callback = None, generator: torch.Generator | None = None,
                 max_order: int = 4) -> torch.Tensor:
    """iPNDM (Zhang & Chen 2023, DEIS, Sec. 5; ComfyUI ``ipndm``): explicit Adams-Bashforth of order
    min(i + 1, 4) on dx/dsigma = (x - x0)/sigma with the equal-step weights, whatever the spacing; x0 on the
    last step to sigma = 0."""
    if not 1 <= max_order <= 4:
        raise ValueError(f"ipndm: max_order must be in 1..4, got {max_order}")
    ds: list[torch.Tensor] = []                                   # newest first
    for i in range(len(sigmas) - 1):
        x0 = denoiser(x, sigmas[i], cond)
        _report(callback, i, x, sigmas, x0)
        ds = ([(x - x0) / sigmas[i]] + ds)[:max_order]
        if float(sigmas[i + 1]) == 0.0:                           # the final step returns x0 (as ComfyUI)
            x = x0
            continue
        slope = sum(w * d for w, d in zip(_AB_WEIGHTS[len(ds) - 1], ds, strict=True))
        x = x + (sigmas[i + 1] - sigmas[i]) * slope
    return x


def sample_gradient_estimation(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                               callback: Callback = None, generator: torch.Generator | None = None,
                               ge_gamma: float = 2.0) -> torch.Tensor:
    """Gradient estimation (Permenter & Yuan 2024, "Interpreting and improving diffusion models from an
    optimization perspective", Alg. 2; ComfyUI ``gradient_estimation``): Euler with the direction
    d_bar = gamma d_i + (1 - gamma) d_{i-1}, d = (x - x0)/sigma; gamma = 2 by default, plain Euler first,
    x0 on the last step to sigma = 0 (as ComfyUI)."""
    d_prev = None
    for i in range(len(sigmas) - 1):
        x0 = denoiser(x, sigmas[i], cond)
        _report(callback, i, x, sigmas, x0)
        d = (x - x0) / sigmas[i]
        d_bar = d if d_prev is None else ge_gamma * d + (1 - ge_gamma) * d_prev
        x = x0 if float(sigmas[i + 1]) == 0.0 else x + (sigmas[i + 1] - sigmas[i]) * d_bar
        d_prev = d
    return x


# -- exponential-integrator multistep samplers of ComfyUI (res_multistep, er_sde) ----------------------


def sample_res_multistep(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                         callback: Callback = None, generator: torch.Generator | None = None,
                         eta: float = 0.0, s_noise: float = 1.0) -> torch.Tensor:
    """RES multistep, 2nd order (Zhang et al. 2023, "Improved order analysis and design of exponential
    integrator for diffusion models", arXiv 2308.02157, the multistep RES scheme; ComfyUI ``res_multistep``),
    in k-diffusion's EDM space (a = 1). With t = -log sigma, h = t' - t and c2 = (t_prev - t_old) / h (the
    previous step's start and end in t):
        x' = e^{-h} x + h (b1 x0 + b2 x0_prev),  b2 = phi2(-h) / c2,  b1 = phi1(-h) - b2,
    phi1(z) = (e^z - 1) / z, phi2(z) = (phi1(z) - 1) / z. Euler on the first step and to sigma 0. ``eta`` > 0
    makes it ancestral (steps to sigma_down, then fresh noise s_up; ``res_multistep_ancestral``)."""
    x0_old = sigma_down_old = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        _report(callback, i, x, sigmas, x0)
        sigma_down, s_up = _ancestral_split(denoiser, sigma, sigma_next, eta)
        if float(sigma_down) == 0.0 or x0_old is None:
            x = x + (sigma_down - sigma) * (x - x0) / sigma                 # Euler
        else:
            t, t_old, t_next, t_prev = (-s.log() for s in (sigma, sigma_down_old, sigma_down, sigmas[i - 1]))
            h = t_next - t
            b1, b2 = _res_coefficients(h, (t_prev - t_old) / h)
            x = (-h).exp() * x + h * (b1 * x0 + b2 * x0_old)
        if float(sigma_next) > 0 and eta > 0:
            x = x + s_noise * s_up * _noise(x, generator)
        x0_old, sigma_down_old = x0, sigma_down
    return x


def sample_res_multistep_ancestral(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                                   callback: Callback = None, generator: torch.Generator | None = None,
                                   eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """:func:`sample_res_multistep` with ancestral noise (eta = 1; ComfyUI ``res_multistep_ancestral``)."""
    return sample_res_multistep(denoiser, x, sigmas, cond=cond, callback=callback, generator=generator, eta=eta,
                                s_noise=s_noise)


def _er_noise_scaler(lam: torch.Tensor) -> torch.Tensor:
    """ER-SDE's default noise scale function s(lambda) = lambda (e^{lambda^0.3} + 10) (Cui et al. 2023,
    the "ER-SDE 5" choice that ComfyUI ships)."""
    return lam * ((lam**0.3).exp() + 10.0)


def sample_er_sde(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                  callback: Callback = None, generator: torch.Generator | None = None,
                  s_noise: float = 1.0, max_stage: int = 3,
                  noise_scaler: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Extended reverse-time SDE solver (Cui et al. 2023, "Elucidating the solution space of extended
    reverse-time SDE for diffusion models", ER-SDE-Solver-3; ComfyUI ``er_sde``). With lambda = sigma / a
    (noise-to-signal), s(.) the noise scale function and r = s(lambda') / s(lambda):
        x' = (a'/a) r x + a' (1 - r) x0                                          (stage 1)
           + a' (dl + S1 s(lambda')) D1          D1 = divided difference of x0 in lambda   (stage 2)
           + a' (dl^2 / 2 + S2 s(lambda')) D2    D2 = second divided difference          (stage 3)
           + a' sqrt(lambda'^2 - lambda^2 r^2) z,
    S1 = int 1/s, S2 = int (l - lambda)/s over [lambda', lambda], by a 200-point Riemann sum from lambda'
    as ComfyUI; stage min(max_stage, i + 1); x0 on the last step. ``noise_scaler`` replaces s(.) (ComfyUI's
    SamplerER_SDE: s(l) = l^(eta + 1) is the reverse-time SDE, s(l) = l with s_noise 0 the ODE)."""
    scaler = _er_noise_scaler if noise_scaler is None else noise_scaler
    points = torch.arange(0, 200, dtype=torch.float32)
    lams = sigmas / _alpha(denoiser, sigmas)
    x0_old = d_old = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        _report(callback, i, x, sigmas, x0)
        stage = min(max_stage, i + 1)
        if float(sigma_next) == 0.0:
            x = x0
        else:
            lam, lam_next = lams[i], lams[i + 1]
            a, a_next = _alpha(denoiser, sigma), _alpha(denoiser, sigma_next)
            r = scaler(lam_next) / scaler(lam)
            x = (a_next / a) * r * x + a_next * (1 - r) * x0
            if stage >= 2:
                dl = lam_next - lam
                step = -dl / 200.0
                pos = lam_next + points.to(lams.device) * step
                scaled = scaler(pos)
                d1 = (x0 - x0_old) / (lam - lams[i - 1])
                x = x + a_next * (dl + (1 / scaled).sum() * step * scaler(lam_next)) * d1
                if stage >= 3:
                    s_u = ((pos - lam) / scaled).sum() * step
                    d2 = (d1 - d_old) / ((lam - lams[i - 2]) / 2)
                    x = x + a_next * (dl**2 / 2 + s_u * scaler(lam_next)) * d2
                d_old = d1
            if s_noise > 0:
                std = (lam_next**2 - lam**2 * r**2).sqrt().nan_to_num(nan=0.0)
                x = x + a_next * s_noise * std * _noise(x, generator)
        x0_old = x0
    return x


SamplerFn = Callable[..., torch.Tensor]

# All of ComfyUI's KSampler names, in its order (comfy/samplers.py: KSAMPLER_NAMES, then "ddim", "uni_pc",
# "uni_pc_bh2"); "tcd" is ours. The "_gpu" names are ComfyUI's Brownian tree on
# the GPU; ours always lives on the CPU (same noise on every device), so they are plain aliases.
SAMPLERS: dict[str, SamplerFn] = {
    "euler": sample_euler,
    "euler_cfg_pp": sample_euler_cfg_pp,
    "euler_ancestral": sample_euler_ancestral,
    "euler_ancestral_cfg_pp": sample_euler_ancestral_cfg_pp,
    "heun": sample_heun,
    "heunpp2": sample_heunpp2,
    "exp_heun_2_x0": sample_exp_heun_2_x0,
    "exp_heun_2_x0_sde": sample_exp_heun_2_x0_sde,
    "dpm_2": sample_dpm_2,
    "dpm_2_ancestral": sample_dpm_2_ancestral,
    "lms": sample_lms,
    "dpm_fast": sample_dpm_fast,
    "dpm_adaptive": sample_dpm_adaptive,
    "dpmpp_2s_ancestral": sample_dpmpp_2s_ancestral,
    "dpmpp_2s_ancestral_cfg_pp": sample_dpmpp_2s_ancestral_cfg_pp,
    "dpmpp_sde": sample_dpmpp_sde,
    "dpmpp_sde_gpu": sample_dpmpp_sde,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_cfg_pp": sample_dpmpp_2m_cfg_pp,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_2m_sde_gpu": sample_dpmpp_2m_sde,
    "dpmpp_2m_sde_heun": sample_dpmpp_2m_sde_heun,
    "dpmpp_2m_sde_heun_gpu": sample_dpmpp_2m_sde_heun,
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
    "dpmpp_3m_sde_gpu": sample_dpmpp_3m_sde,
    "ddpm": sample_ddpm,
    "lcm": sample_lcm,
    "ipndm": sample_ipndm,
    "ipndm_v": sample_ipndm_v,
    "deis": sample_deis,
    "res_multistep": sample_res_multistep,
    "res_multistep_cfg_pp": sample_res_multistep_cfg_pp,
    "res_multistep_ancestral": sample_res_multistep_ancestral,
    "res_multistep_ancestral_cfg_pp": sample_res_multistep_ancestral_cfg_pp,
    "gradient_estimation": sample_gradient_estimation,
    "gradient_estimation_cfg_pp": sample_gradient_estimation_cfg_pp,
    "er_sde": sample_er_sde,
    "seeds_2": sample_seeds_2,
    "seeds_3": sample_seeds_3,
    "sa_solver": sample_sa_solver,
    "sa_solver_pece": sample_sa_solver_pece,
    "ddim": sample_ddim,
    "uni_pc": sample_uni_pc,
    "uni_pc_bh2": sample_uni_pc_bh2,
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
