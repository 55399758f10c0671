"""CFG++ samplers (Chung et al. 2024, "CFG++: manifold-constrained classifier free guidance"; ComfyUI's
``*_cfg_pp`` family), one signature as in ``samplers``.

Plain CFG steps along the guided prediction D_g = D_u + w (D_c - D_u) and also renoises with it. CFG++
(Alg. 1: DDIM; Alg. 2: Euler-ancestral) jumps to the guided x0 but renoises with the noise implied by the
*unconditional* prediction D_u,

    eps_u = (x - a D_u) / s,    x' = a' D_g + s' eps_u                      (DDIM / Euler step, eta = 0),

so each evaluation needs both predictions: :func:`~fewstep.nodes.core.sampler_math.guided_and_uncond`
(a guider's ``predict_with_uncond``; the negative pass runs even at cfg 1, as in ComfyUI). Guidance
scales of CFG++ are small (0 < w < 1 in the paper). Every formula is written with a = alpha(sigma), so
VP (a = 1, where each sampler reproduces ComfyUI's step; tests/core/test_samplers_cfgpp.py) and
rectified-flow models share the code.
"""

from __future__ import annotations

from typing import Any

import torch

from fewstep.nodes.core.sampler_math import (
    Callback,
    alpha_at,
    ancestral_split,
    dpmpp_2s_step,
    fresh_noise,
    guided_and_uncond,
    renoise_from,
    report,
    res_coefficients,
    snr_ratio,
)


class Unconditional:
    """The unconditional half of a guider as a denoiser ``D_u(x, sigma, cond)`` (for the inner stage of
    DPM-Solver++(2S) CFG++, which ComfyUI runs on the captured ``uncond_denoised``)."""

    def __init__(self, guider: Any) -> None:
        self.guider = guider

    @property
    def schedule(self) -> Any:
        return self.guider.schedule

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: Any = None) -> torch.Tensor:
        return guided_and_uncond(self.guider, x, torch.as_tensor(sigma), cond)[1]


def sample_euler_ancestral_cfg_pp(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                                  callback: Callback = None, generator: torch.Generator | None = None,
                                  eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Euler-ancestral CFG++ (Chung et al. 2024, Alg. 2; ComfyUI ``euler_ancestral_cfg_pp``): with the
    ancestral split of DDIM eq. 16, s_up = min(eta s' sqrt(1 - e^{-2h}), s'),
        x' = a' D_g + sqrt(s'^2 - s_up^2) eps_u + s_noise s_up z,    eps_u = (x - a D_u) / s;
    the guided x0 on the last step."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0, x0_u = guided_and_uncond(denoiser, x, sigma, cond)
        report(callback, i, x, sigmas, x0)
        if float(sigma_next) == 0.0:
            x = x0
            continue
        eps_u = (x - alpha_at(denoiser, sigma) * x0_u) / sigma
        r = snr_ratio(denoiser, sigma, sigma_next)                       # e^{-2h}
        s_up = (eta * sigma_next * (1 - r).clamp_min(0).sqrt()).clamp(max=float(sigma_next))
        x = alpha_at(denoiser, sigma_next) * x0 + (sigma_next**2 - s_up**2).sqrt() * eps_u
        if eta > 0 and s_noise > 0:
            x = x + s_noise * s_up * fresh_noise(x, generator)
    return x


def sample_euler_cfg_pp(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                        callback: Callback = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Euler / DDIM CFG++ (Chung et al. 2024, Alg. 1; ComfyUI ``euler_cfg_pp``): x' = a' D_g + s' eps_u."""
    return sample_euler_ancestral_cfg_pp(denoiser, x, sigmas, cond=cond, callback=callback, generator=generator,
                                         eta=0.0, s_noise=0.0)


def sample_dpmpp_2m_cfg_pp(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                           callback: Callback = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) CFG++ (ComfyUI ``dpmpp_2m_cfg_pp``): the 2M step (Lu et al. 2022b, Alg. 2) with the
    x-direction taken from D_u and the second-order difference between D_g and the previous D_u:
        x' = (s'/s)(x - a D_u) + a' D_g + a' (1 - e^{-h}) / (2 r) (D_g - D_u,prev),   r = h_prev / h;
    first order (without the last term) on the first step; D_g on the last. With D_u = D_g this is 2M."""
    x0_u_prev = h_prev = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0, x0_u = guided_and_uncond(denoiser, x, sigma, cond)
        report(callback, i, x, sigmas, x0)
        if float(sigma_next) == 0.0:
            x = x0
            continue
        ratio = snr_ratio(denoiser, sigma, sigma_next)                  # e^{-2h}
        h = -0.5 * ratio.log()
        a_next = alpha_at(denoiser, sigma_next)
        x_new = (sigma_next / sigma) * (x - alpha_at(denoiser, sigma) * x0_u) + a_next * x0
        if x0_u_prev is not None and bool(torch.isfinite(h_prev)):
            x_new = x_new + a_next * (1 - ratio.sqrt()) * (h / (2 * h_prev)) * (x0 - x0_u_prev)
        x, x0_u_prev, h_prev = x_new, x0_u, h
    return x


def sample_dpmpp_2s_ancestral_cfg_pp(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                                     callback: Callback = None, generator: torch.Generator | None = None,
                                     eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral DPM-Solver++(2S) CFG++ (ComfyUI ``dpmpp_2s_ancestral_cfg_pp``): the 2S step to sigma_down
    run entirely on the unconditional prediction (D_u at sigma, then D_u at the lambda midpoint), fresh noise
    s_up back to sigma', then the guidance vector a' (D_g - D_u) added. Ends on D_g at sigma = 0."""
    unconditional = Unconditional(denoiser)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0, x0_u = guided_and_uncond(denoiser, x, sigma, cond)
        report(callback, i, x, sigmas, x0)
        sigma_down, s_up = ancestral_split(denoiser, sigma, sigma_next, eta)
        x = dpmpp_2s_step(unconditional, x, x0_u, sigma, sigma_down, cond)
        x = renoise_from(denoiser, x, sigma_down, sigma_next, s_up, lambda ref=x: s_noise * fresh_noise(ref, generator))
        x = x + alpha_at(denoiser, sigma_next) * (x0 - x0_u)
    return x


def sample_res_multistep_cfg_pp(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                                callback: Callback = None, generator: torch.Generator | None = None,
                                eta: float = 0.0, s_noise: float = 1.0) -> torch.Tensor:
    """RES multistep CFG++ (ComfyUI ``res_multistep_cfg_pp``), in EDM space (a = 1) as ``res_multistep``:
    the first step and the step to 0 go x' = a_down D_g + (sigma_down / s)(x - a D_u); the others
        x' = e^{-h} (x + D_g - D_u) + h (b1 D_u + b2 D_u,prev)
    (b1, b2 from :func:`~fewstep.nodes.core.sampler_math.res_coefficients`). ``eta`` > 0 adds ancestral noise
    (``res_multistep_ancestral_cfg_pp``)."""
    x0_u_old = sigma_down_old = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0, x0_u = guided_and_uncond(denoiser, x, sigma, cond)
        report(callback, i, x, sigmas, x0)
        sigma_down, s_up = ancestral_split(denoiser, sigma, sigma_next, eta)
        if float(sigma_down) == 0.0 or x0_u_old is None:
            x = alpha_at(denoiser, sigma_down) * x0 + (sigma_down / sigma) * (x - alpha_at(denoiser, sigma) * x0_u)
        else:
            t, t_old, t_next, t_prev = (-s.log() for s in (sigma, sigma_down_old, sigma_down, sigmas[i - 1]))
            h = t_next - t
            b1, b2 = res_coefficients(h, (t_prev - t_old) / h)
            x = (-h).exp() * (x + x0 - x0_u) + h * (b1 * x0_u + b2 * x0_u_old)
        if float(sigma_next) > 0 and eta > 0:
            x = x + s_noise * s_up * fresh_noise(x, generator)
        x0_u_old, sigma_down_old = x0_u, sigma_down
    return x


def sample_res_multistep_ancestral_cfg_pp(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *,
                                          cond: Any = None, callback: Callback = None,
                                          generator: torch.Generator | None = None, eta: float = 1.0,
                                          s_noise: float = 1.0) -> torch.Tensor:
    """:func:`sample_res_multistep_cfg_pp` with ancestral noise (eta = 1)."""
    return sample_res_multistep_cfg_pp(denoiser, x, sigmas, cond=cond, callback=callback, generator=generator,
                                       eta=eta, s_noise=s_noise)


def sample_gradient_estimation_cfg_pp(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                                      callback: Callback = None, generator: torch.Generator | None = None,
                                      ge_gamma: float = 2.0) -> torch.Tensor:
    """Gradient estimation CFG++ (ComfyUI ``gradient_estimation_cfg_pp``): the CFG++ Euler step
    x' = a' D_g + s' d with d = eps_u = (x - a D_u)/s, plus Permenter & Yuan's correction
    (gamma - 1)(d - d_prev)(s' - s) from the second step on; D_g on the last step."""
    d_prev = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0, x0_u = guided_and_uncond(denoiser, x, sigma, cond)
        report(callback, i, x, sigmas, x0)
        d = (x - alpha_at(denoiser, sigma) * x0_u) / sigma
        if float(sigma_next) == 0.0:
            x = x0
        else:
            x = alpha_at(denoiser, sigma_next) * x0 + sigma_next * d
            if d_prev is not None:
                x = x + (ge_gamma - 1) * (d - d_prev) * (sigma_next - sigma)
        d_prev = d
    return x


def sample_euler_cfg_pp_alternative(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                                    callback: Callback = None,
                                    generator: torch.Generator | None = None) -> torch.Tensor:
    """The "alternative" Euler CFG++ of ComfyUI's SamplerEulerCFGpp (its ``sample_euler_pp``): plain Euler
    x' = x + (s' - s) d with d = (x - 2 D_g + D_u) / s, the slope of the guided prediction reflected
    through the unconditional one (a = 1). It is not in the KSampler list."""
    for i in range(len(sigmas) - 1):
        x0, x0_u = guided_and_uncond(denoiser, x, sigmas[i], cond)
        report(callback, i, x, sigmas, x0)
        x = x + (sigmas[i + 1] - sigmas[i]) * (x - 2 * x0 + x0_u) / sigmas[i]
    return x
