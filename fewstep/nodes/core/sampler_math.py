"""Step arithmetic shared by the sampler modules (``samplers``, ``samplers_cfgpp``, ``samplers_solvers``,
``samplers_stochastic``), and the one extra thing CFG++ samplers ask of a guider.

Conventions as in ``samplers``: x = a x0 + s eps at noise level s = sigma, a = ``denoiser.schedule.alpha``
(1 for VP models in EDM space, 1 - sigma for rectified flow); lambda = log(a / s) is the half log-SNR
(Lu et al. 2022, DPM-Solver, Sec. 3.1); q = s / a = e^{-lambda} the noise-to-signal ratio.

CFG++ (Chung et al. 2024, "CFG++: manifold-constrained classifier free guidance", Alg. 1-2) renoises
with the *unconditional* prediction while stepping to the guided one, so those samplers need both at each
evaluation. A guider offers them through :class:`UncondPredictor` (``predict_with_uncond``); a bare
:class:`~fewstep.nodes.core.denoiser.Denoiser` has no guidance, so its unconditional prediction is its
prediction (CFG++ then reduces to its base sampler). ComfyUI gets the same value with a post-CFG hook that
stores ``uncond_denoised`` in a closure; here it is a return value, with no hook and no state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch

from fewstep.nodes.core.denoiser import Denoiser

Callback = Callable[[dict[str, Any]], None] | None


@runtime_checkable
class UncondPredictor(Protocol):
    """A guider that can return its unconditional x0 prediction beside the guided one."""

    def predict_with_uncond(self, x: torch.Tensor, sigma: torch.Tensor | float,
                            cond: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(guided x0, unconditional x0) at (x, sigma), both [B, C, h, w]."""
        ...


def guided_and_uncond(denoiser: Any, x: torch.Tensor, sigma: torch.Tensor,
                      cond: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(guided x0, unconditional x0) for the CFG++ samplers; see the module docstring."""
    if isinstance(denoiser, UncondPredictor):
        return denoiser.predict_with_uncond(x, sigma, cond)
    if isinstance(denoiser, Denoiser):
        x0 = denoiser(x, sigma, cond)
        return x0, x0
    raise ValueError(f"a CFG++ sampler needs the unconditional prediction, and {type(denoiser).__name__} does not "
                     "offer it (predict_with_uncond); use CFGGuider / KSampler, or the sampler without _cfg_pp")


def alpha_at(denoiser: Any, sigma: torch.Tensor) -> torch.Tensor:
    return denoiser.schedule.alpha(sigma.float()).to(sigma.device)


def half_log_snr(denoiser: Any, sigma: torch.Tensor) -> torch.Tensor:
    """Half log-SNR lambda = log(a / s) (Lu et al. 2022, DPM-Solver, Sec. 3.1)."""
    return alpha_at(denoiser, sigma).log() - sigma.log()


def snr_ratio(denoiser: Any, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """r = SNR(sigma) / SNR(sigma_next) = exp(-2h), h = lambda' - lambda, computed without logs so that
    a = 0 (pure noise in flow models, lambda = -inf) gives r = 0 instead of NaN."""
    a, a_next = alpha_at(denoiser, sigma), alpha_at(denoiser, sigma_next)
    return (a * sigma_next / (a_next * sigma)) ** 2


def fresh_noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def report(callback: Callback, i: int, x: torch.Tensor, sigmas: torch.Tensor, x0: torch.Tensor) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigmas[i], "sigma_next": sigmas[i + 1], "denoised": x0})


def renoise(denoiser: Any, x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
             eta: float, generator: torch.Generator | None, s_noise: float = 1.0) -> torch.Tensor:
    """One DDIM step with stochasticity eta (Song et al. 2021, DDIM eq. 12 and 16) in (a, s) form:
    eps_hat = (x - a x0) / s; s_up = eta s' sqrt(1 - exp(-2h)), h = lambda' - lambda;
    x' = a' x0 + sqrt(s'^2 - s_up^2) eps_hat + s_up z. eta = 1 is the DDPM posterior sample,
    eta = 0 the deterministic DDIM / probability-flow Euler step."""
    if float(sigma_next) == 0.0:
        return x0
    a, a_next = alpha_at(denoiser, sigma), alpha_at(denoiser, sigma_next)
    eps_hat = (x - a * x0) / sigma
    r = snr_ratio(denoiser, sigma, sigma_next)
    s_up = (eta * sigma_next * (1 - r).clamp_min(0).sqrt()).clamp(max=float(sigma_next))
    x = a_next * x0 + (sigma_next**2 - s_up**2).sqrt() * eps_hat
    return x + s_noise * s_up * fresh_noise(x, generator) if eta > 0 else x


def sigma_from_ratio(denoiser: Any, q: torch.Tensor) -> torch.Tensor:
    """The sigma whose noise-to-signal ratio sigma / alpha(sigma) is q (= e^{-lambda}). Every schedule here
    has alpha affine in sigma (1 for VP/EDM, 1 - sigma for rectified flow): alpha = c0 - c1 sigma, so
    sigma = c0 q / (1 + c1 q). A schedule breaking that assumption gets a clear error."""
    probe = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    a0, a_half, a1 = (float(v) for v in denoiser.schedule.alpha(probe).double().expand(3))
    c0, c1 = a0, a0 - a1
    if abs(a_half - (c0 - c1 / 2)) > 1e-6:
        raise ValueError(f"{type(denoiser.schedule).__name__}.alpha is not affine in sigma; the ancestral and "
                         "2S samplers cannot place their intermediate sigma on it")
    return c0 * q / (1 + c1 * q)


def ancestral_split(denoiser: Any, sigma: torch.Tensor, sigma_next: torch.Tensor,
                     eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma_down, s_up) of an ancestral step (k-diffusion ``get_ancestral_step``, = DDIM eq. 16):
    s_up = eta s' sqrt(1 - e^{-2h}); the deterministic part lands where the noise-to-signal ratio is
    sqrt(s'^2 - s_up^2) / a'; re-noising then gives x' = (a'/a_down) x_down + s_up z. For a = 1 this is
    sigma_down = sqrt(s'^2 - s_up^2) exactly as in k-diffusion."""
    r = snr_ratio(denoiser, sigma, sigma_next)
    s_up = (eta * sigma_next * (1 - r).clamp_min(0).sqrt()).clamp(max=float(sigma_next))
    q_down = (sigma_next**2 - s_up**2).clamp_min(0).sqrt() / alpha_at(denoiser, sigma_next)
    return sigma_from_ratio(denoiser, q_down).to(sigma.dtype), s_up


def renoise_from(denoiser: Any, x_down: torch.Tensor, sigma_down: torch.Tensor, sigma_next: torch.Tensor,
                  s_up: torch.Tensor, draw: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Forward process from sigma_down to sigma_next: x' = (a'/a_down) x_down + s_up z (see ancestral_split);
    ``draw()`` gives z, and is not called on the last step to sigma = 0."""
    if float(sigma_next) == 0.0:
        return x_down
    scale = alpha_at(denoiser, sigma_next) / alpha_at(denoiser, sigma_down)
    return scale * x_down + s_up * draw()


def dpmpp_2s_step(denoiser: Any, x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor,
                   sigma_to: torch.Tensor, cond: Any) -> torch.Tensor:
    """DPM-Solver++(2S) (Lu et al. 2022b, Alg. 1, r = 1/2): a first-order step to the lambda midpoint,
    x_mid = (s_mid/s) x + a_mid (1 - e^{-h/2}) x0, then x' = (s'/s) x + a' (1 - e^{-h}) D with
    D = (1 - 1/(2r)) x0 + 1/(2r) x0_mid (r = 1/2 gives D = x0_mid). At a = 0 (flow, sigma = 1) lambda is
    -inf: the midpoint falls back to sqrt(sigma sigma_to) and r to the lambda fraction it reaches."""
    if float(sigma_to) == 0.0:
        return x0
    q, q_to = sigma / alpha_at(denoiser, sigma), sigma_to / alpha_at(denoiser, sigma_to)
    sigma_mid = sigma_from_ratio(denoiser, (q * q_to).sqrt()) if bool(torch.isfinite(q)) else \
        (sigma * sigma_to).sqrt()
    sigma_mid = sigma_mid.to(sigma.dtype)
    x_mid = renoise(denoiser, x, x0, sigma, sigma_mid, 0.0, None)
    x0_mid = denoiser(x_mid, sigma_mid, cond)
    lam, lam_mid, lam_to = (half_log_snr(denoiser, s) for s in (sigma, sigma_mid, sigma_to))
    r = (lam_mid - lam) / (lam_to - lam)
    r = r if bool(torch.isfinite(r)) else torch.tensor(0.5)
    d = (1 - 1 / (2 * r)) * x0 + (1 / (2 * r)) * x0_mid
    return renoise(denoiser, x, d, sigma, sigma_to, 0.0, None)


def res_coefficients(h: torch.Tensor, c2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(b1, b2) of the 2nd-order multistep RES step x' = e^{-h} x + h (b1 D + b2 D_old) (Zhang et al. 2023,
    arXiv 2308.02157): b2 = phi2(-h) / c2, b1 = phi1(-h) - b2 with phi1(z) = (e^z - 1)/z,
    phi2(z) = (phi1(z) - 1)/z and c2 the previous step's length relative to h (0/0 -> 0, as ComfyUI)."""
    phi1 = torch.expm1(-h) / -h
    phi2 = (phi1 - 1) / -h
    return torch.nan_to_num(phi1 - phi2 / c2, nan=0.0), torch.nan_to_num(phi2 / c2, nan=0.0)
