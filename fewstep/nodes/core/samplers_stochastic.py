"""Exponential-integrator SDE solvers of ComfyUI's list: SEEDS-2/3 (with the exponential Heun special
cases ``exp_heun_2_x0(_sde)``) and SA-Solver (``sa_solver``, ``sa_solver_pece``), one signature as in
``samplers``.

Both work in the half log-SNR lambda = log(a / s) with data prediction, so with a = alpha(sigma) they
serve VP (a = 1) and rectified-flow (a = 1 - sigma) models alike; a flow schedule's first sigma of 1
(lambda = -inf) is moved to the sigma at 0.01% of the sampling range first, as ComfyUI does.
With h = lambda' - lambda, eta the stochasticity and h_eta = (1 + eta) h, every update has the form
of SDE-DPM-Solver++ (Lu et al. 2022b, eq. 18):

    x' = (s'/s) e^{-eta h} x + a' (1 - e^{-h_eta}) D + ... + s' sqrt(1 - e^{-2 eta h}) z.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from fewstep.nodes.core.sampler_math import (
    Callback,
    alpha_at,
    fresh_noise,
    half_log_snr,
    report,
    sigma_from_ratio,
)


def offset_first_sigma(denoiser: Any, sigmas: torch.Tensor, percent: float = 1e-4) -> torch.Tensor:
    """sigmas with a first entry of alpha 0 (flow at sigma = 1, lambda = -inf) replaced by the sigma reached
    after ``percent`` of the model's timesteps (ComfyUI's ``offset_first_sigma_for_snr``)."""
    if len(sigmas) <= 1 or float(alpha_at(denoiser, sigmas[0])) > 0:
        return sigmas
    schedule = denoiser.schedule
    t_max = float(schedule.timestep(torch.tensor(float(schedule.sigma_max))))
    sigmas = sigmas.clone()
    sigmas[0] = float(schedule.sigma_at(torch.tensor((1.0 - percent) * t_max)))
    return sigmas


def _sigma_at_lambda(denoiser: Any, lam: torch.Tensor) -> torch.Tensor:
    return sigma_from_ratio(denoiser, (-lam).exp()).to(lam.dtype)


def _ei_h_phi_1(h: torch.Tensor) -> torch.Tensor:
    """h phi_1(h) = e^h - 1 (the exponential-integrator phi functions times h)."""
    return torch.expm1(h)


def _ei_h_phi_2(h: torch.Tensor) -> torch.Tensor:
    """h phi_2(h) = (e^h - 1 - h) / h."""
    return (torch.expm1(h) - h) / h


class _SeedsNoise:
    """The noise of one SEEDS step, kept consistent across its stages (Gonzalez et al. 2023, SEEDS, the
    exact variance of the linear part): after the stage ending at fraction r of the step,
    z_r = e^{(r_prev - r) h eta} z_{r_prev} + sqrt(1 - e^{2 (r_prev - r) h eta}) n,  n ~ N(0, I) fresh,
    starting from z_0 = 0; the stage adds s_r s_noise z_r."""

    def __init__(self, x: torch.Tensor, h: torch.Tensor, eta: float, generator: torch.Generator | None) -> None:
        self.z, self.h, self.eta, self.generator, self.r = torch.zeros_like(x), h, eta, generator, 0.0

    def to(self, r: float) -> torch.Tensor:
        segment = (self.r - r) * self.h * self.eta
        self.z = self.z * segment.exp() + (-torch.expm1(2 * segment)).sqrt() * fresh_noise(self.z, self.generator)
        self.r = r
        return self.z


def _seeds_stage(denoiser: Any, x: torch.Tensor, data: torch.Tensor, sigma: torch.Tensor, lam: torch.Tensor,
                 h: torch.Tensor, r: float, eta: float, noise: _SeedsNoise | None, s_noise: float,
                 cond: Any) -> torch.Tensor:
    """The denoised prediction at a stage at lambda + r h: x_r = decay_r x - a_r data (+ the stage's share of
    the step's noise), with decay_r = (s_r / s) e^{-r h eta} the SDE's contraction of x and a_r = alpha(s_r);
    returns D(x_r, s_r)."""
    sigma_r = _sigma_at_lambda(denoiser, lam + r * h)
    x_r = sigma_r / sigma * (-r * h * eta).exp() * x - alpha_at(denoiser, sigma_r) * data
    if noise is not None:
        x_r = x_r + noise.to(r) * sigma_r * s_noise
    return denoiser(x_r, sigma_r, cond)


def sample_seeds_2(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                   callback: Callback = None, generator: torch.Generator | None = None, eta: float = 1.0,
                   s_noise: float = 1.0, r: float = 0.5, solver_type: str = "phi_1") -> torch.Tensor:
    """SEEDS-2 (Gonzalez et al. 2023, "SEEDS: exponential SDE solvers for fast high-quality sampling from
    diffusion models", the 2-stage data-prediction VP scheme; ComfyUI ``seeds_2``): a stage to lambda + r h
    gives D_2, then x' = (s'/s) e^{-eta h} x - a' [ (e^{-h_eta} - 1) D ]  with
      "phi_1": D = (1 - 1/(2r)) D_1 + 1/(2r) D_2,
      "phi_2": b2 = h phi_2(-h_eta) / r, b1 = (e^{-h_eta} - 1) - b2, data term b1 D_1 + b2 D_2,
    plus the stage-consistent noise of :class:`_SeedsNoise` (eta > 0). x0 on the last step."""
    if solver_type not in ("phi_1", "phi_2"):
        raise ValueError(f"seeds_2: solver_type must be 'phi_1' or 'phi_2', got {solver_type!r}")
    noisy = eta > 0 and s_noise > 0
    sigmas = offset_first_sigma(denoiser, sigmas)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        report(callback, i, x, sigmas, x0)
        if float(sigma_next) == 0.0:
            x = x0
            continue
        lam, lam_next = half_log_snr(denoiser, sigma), half_log_snr(denoiser, sigma_next)
        h = lam_next - lam
        h_eta = h * (1 + eta)
        noise = _SeedsNoise(x, h, eta, generator) if noisy else None
        x0_2 = _seeds_stage(denoiser, x, _ei_h_phi_1(-r * h_eta) * x0, sigma, lam, h, r, eta, noise, s_noise, cond)
        decay = sigma_next / sigma * (-h * eta).exp()
        a_next = alpha_at(denoiser, sigma_next)
        if solver_type == "phi_1":
            x = decay * x - a_next * _ei_h_phi_1(-h_eta) * torch.lerp(x0, x0_2, 1 / (2 * r))
        else:
            b2 = _ei_h_phi_2(-h_eta) / r
            x = decay * x - a_next * ((_ei_h_phi_1(-h_eta) - b2) * x0 + b2 * x0_2)
        if noise is not None:
            x = x + noise.to(1.0) * sigma_next * s_noise
    return x


def sample_exp_heun_2_x0(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                         callback: Callback = None, generator: torch.Generator | None = None,
                         solver_type: str = "phi_2") -> torch.Tensor:
    """Exponential Heun, 2nd order, data prediction in lambda (ComfyUI ``exp_heun_2_x0``):
    :func:`sample_seeds_2` with r = 1, eta = 0."""
    return sample_seeds_2(denoiser, x, sigmas, cond=cond, callback=callback, generator=generator, eta=0.0,
                          s_noise=0.0, r=1.0, solver_type=solver_type)


def sample_exp_heun_2_x0_sde(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                             callback: Callback = None, generator: torch.Generator | None = None,
                             eta: float = 1.0, s_noise: float = 1.0, solver_type: str = "phi_2") -> torch.Tensor:
    """The stochastic exponential Heun (ComfyUI ``exp_heun_2_x0_sde``): :func:`sample_seeds_2` with r = 1."""
    return sample_seeds_2(denoiser, x, sigmas, cond=cond, callback=callback, generator=generator, eta=eta,
                          s_noise=s_noise, r=1.0, solver_type=solver_type)


def sample_seeds_3(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                   callback: Callback = None, generator: torch.Generator | None = None, eta: float = 1.0,
                   s_noise: float = 1.0, r_1: float = 1 / 3, r_2: float = 2 / 3) -> torch.Tensor:
    """SEEDS-3 (Gonzalez et al. 2023, the 3-stage scheme; ComfyUI ``seeds_3``): stage 1 to lambda + r1 h
    with D_1 gives D_2; stage 2 to lambda + r2 h with a32 = (r2/r1) h phi_2(-r2 h_eta),
    a31 = (e^{-r2 h_eta} - 1) - a32 and data a31 D_1 + a32 D_2 gives D_3; the step ends with
    b3 = h phi_2(-h_eta) / r2, b1 = (e^{-h_eta} - 1) - b3 and data b1 D_1 + b3 D_3. Noise as SEEDS-2."""
    noisy = eta > 0 and s_noise > 0
    sigmas = offset_first_sigma(denoiser, sigmas)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        report(callback, i, x, sigmas, x0)
        if float(sigma_next) == 0.0:
            x = x0
            continue
        lam, lam_next = half_log_snr(denoiser, sigma), half_log_snr(denoiser, sigma_next)
        h = lam_next - lam
        h_eta = h * (1 + eta)
        noise = _SeedsNoise(x, h, eta, generator) if noisy else None
        x0_2 = _seeds_stage(denoiser, x, _ei_h_phi_1(-r_1 * h_eta) * x0, sigma, lam, h, r_1, eta, noise, s_noise,
                            cond)
        a32 = r_2 / r_1 * _ei_h_phi_2(-r_2 * h_eta)
        a31 = _ei_h_phi_1(-r_2 * h_eta) - a32
        x0_3 = _seeds_stage(denoiser, x, a31 * x0 + a32 * x0_2, sigma, lam, h, r_2, eta, noise, s_noise, cond)
        b3 = _ei_h_phi_2(-h_eta) / r_2
        b1 = _ei_h_phi_1(-h_eta) - b3
        x = sigma_next / sigma * (-h * eta).exp() * x - alpha_at(denoiser, sigma_next) * (b1 * x0 + b3 * x0_3)
        if noise is not None:
            x = x + noise.to(1.0) * sigma_next * s_noise
    return x


# -- SA-Solver (Xue et al. 2023, "SA-Solver: stochastic Adams solver for fast sampling of diffusion models") --


def _exponential_moments(lam_s: torch.Tensor, lam_t: torch.Tensor, order: int, tau: float) -> torch.Tensor:
    """c_p = k e^{-k lam_t} int_{lam_s}^{lam_t} e^{k l} l^p dl for p < order, k = 1 + tau^2, by repeated
    integration by parts: c_p = sum_{q <= p} (-1)^{p-q} p! / (q! k^{p-q}) (lam_t^q - lam_s^q e^{-k h})."""
    k, h = 1 + tau**2, lam_t - lam_s
    decay = torch.exp(-k * h)
    terms = [lam_t**q - lam_s**q * decay for q in range(order)]
    return torch.stack([sum((-1) ** (p - q) * math.factorial(p) / (math.factorial(q) * k ** (p - q)) * terms[q]
                            for q in range(p + 1)) for p in range(order)])


def _sa_coefficients(sigma_t: torch.Tensor, lams: torch.Tensor, lam_s: torch.Tensor, lam_t: torch.Tensor,
                     tau: float, simple_order_2: bool, corrector: bool) -> torch.Tensor:
    """b_j of the stochastic Adams step (Xue et al. 2023, eq. 15 predictor / eq. 18 corrector):
    b_j = a_t int_{lam_s}^{lam_t} (1 + tau^2) e^{-(1 + tau^2)(lam_t - l)} L_j(l) dl, L_j the Lagrange basis
    on ``lams`` (oldest first): the Vandermonde system sum_j b_j lam_j^p = a_t c_p. ``simple_order_2`` uses
    the paper's App. D closed forms for two points (predictor b_old = a_t k h^2 / (2 (lam_old - lam_s)),
    corrector b_new = a_t k h / 2, the other = a_t (1 - e^{-k h}) - that)."""
    k, h = 1 + tau**2, lam_t - lam_s
    alpha_t = sigma_t * lam_t.exp()
    if simple_order_2 and lams.shape[0] == 2:
        total = alpha_t * -torch.expm1(-h * k)
        if corrector:
            b_new = alpha_t * 0.5 * k * h
            return torch.stack([total - b_new, b_new])
        b_old = alpha_t * 0.5 * k * h**2 / (lams[0] - lam_s)
        return torch.stack([b_old, total - b_old])
    vander = torch.stack([lams**p for p in range(lams.shape[0])])            # [p, j] = lam_j^p
    return alpha_t * torch.linalg.solve(vander, _exponential_moments(lam_s, lam_t, lams.shape[0], tau))


def _sa_tau(denoiser: Any, eta: float, start_percent: float, end_percent: float) -> Any:
    """tau(sigma) = eta inside the SDE window sigma(start) >= sigma > sigma(end), else 0 (the ODE); the window
    is given in sampling percent as ComfyUI's SamplerSASolver (default 0.2 .. 0.8)."""
    from fewstep.nodes.core.conditioning import percent_to_sigma

    start, end = percent_to_sigma(denoiser.schedule, start_percent), percent_to_sigma(denoiser.schedule, end_percent)
    return lambda sigma: eta if eta > 0 and start >= float(sigma) > end else 0.0


def _sa_combine(sigma_t: torch.Tensor, lams: torch.Tensor, lam_s: torch.Tensor, lam_t: torch.Tensor,
                preds: list[torch.Tensor], tau: float, simple_order_2: bool, corrector: bool) -> torch.Tensor:
    """sum_j b_j D_j for the step lam_s -> lam_t over the predictions ``preds`` made at ``lams`` (oldest first)."""
    b = _sa_coefficients(sigma_t.double(), lams.double(), lam_s.double(), lam_t.double(), tau, simple_order_2,
                         corrector)
    return sum(c.to(preds[-1].dtype) * d for c, d in zip(b, preds, strict=True))


def sample_sa_solver(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                     callback: Callback = None, generator: torch.Generator | None = None, eta: float = 1.0,
                     sde_start_percent: float = 0.2, sde_end_percent: float = 0.8, s_noise: float = 1.0,
                     predictor_order: int = 3, corrector_order: int = 4, use_pece: bool = False,
                     simple_order_2: bool = False) -> torch.Tensor:
    """SA-Solver (Xue et al. 2023, Alg. 1; ComfyUI ``sa_solver``): a stochastic Adams predictor over the last
    ``predictor_order`` x0 predictions,
        x_pred' = (s'/s) e^{-tau^2 h} x + sum_j b_j D_j + s' sqrt(1 - e^{-2 tau^2 h}) z,
    and, once the model has been evaluated at x_pred', a corrector over ``corrector_order`` points including
    that evaluation, re-solving the same step from x with the same noise z. tau = eta inside the SDE window
    (:func:`_sa_tau`). Orders drop near the end when sigmas end in 0; ``use_pece`` re-evaluates the model at
    the corrected point (one more call per step; ``sa_solver_pece``). x0 on the last step."""
    sigmas = offset_first_sigma(denoiser, sigmas)
    lams = half_log_snr(denoiser, sigmas)
    tau_of = _sa_tau(denoiser, eta, sde_start_percent, sde_end_percent)
    n = len(sigmas)
    to_end = float(sigmas[-1]) == 0.0
    x_pred, preds = x, []
    tau, h, noise = 0.0, torch.zeros(()), torch.zeros_like(x)
    for i in range(n - 1):
        x0 = denoiser(x_pred, sigmas[i], cond)
        report(callback, i, x_pred, sigmas, x0)
        preds = (preds + [x0])[-max(predictor_order, corrector_order):]
        p_order = min(predictor_order, len(preds))
        c_order = 0 if i == 0 or (float(sigmas[i + 1]) == 0.0 and not use_pece) else min(corrector_order, len(preds))
        if to_end:
            p_order, c_order = min(p_order, n - 2 - i), min(c_order, n - 1 - i)
        if c_order == 0:
            x = x_pred
        else:
            # the corrector re-solves lambda_{i-1} -> lambda_i with the new prediction at lambda_i included
            x = sigmas[i] / sigmas[i - 1] * math.exp(-(tau**2) * float(h)) * x + _sa_combine(
                sigmas[i], lams[i - c_order + 1:i + 1], lams[i - 1], lams[i], preds[-c_order:], tau, simple_order_2,
                corrector=True)
            if tau > 0 and s_noise > 0:
                x = x + noise
            if use_pece:
                x0 = denoiser(x, sigmas[i], cond)
                preds[-1] = x0
        if float(sigmas[i + 1]) == 0.0:
            x_pred = x0
            continue
        tau = tau_of(sigmas[i + 1])
        h = lams[i + 1] - lams[i]
        x_pred = sigmas[i + 1] / sigmas[i] * math.exp(-(tau**2) * float(h)) * x + _sa_combine(
            sigmas[i + 1], lams[i - p_order + 1:i + 1], lams[i], lams[i + 1], preds[-p_order:], tau, simple_order_2,
            corrector=False)
        if tau > 0 and s_noise > 0:
            noise = fresh_noise(x, generator) * sigmas[i + 1] * math.sqrt(-math.expm1(-2 * tau**2 * float(h))) * s_noise
            x_pred = x_pred + noise
    return x_pred


def sample_sa_solver_pece(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                          callback: Callback = None, generator: torch.Generator | None = None, eta: float = 1.0,
                          sde_start_percent: float = 0.2, sde_end_percent: float = 0.8, s_noise: float = 1.0,
                          predictor_order: int = 3, corrector_order: int = 4,
                          simple_order_2: bool = False) -> torch.Tensor:
    """:func:`sample_sa_solver` in PECE mode (predict, evaluate, correct, evaluate; ComfyUI ``sa_solver_pece``)."""
    return sample_sa_solver(denoiser, x, sigmas, cond=cond, callback=callback, generator=generator, eta=eta,
                            sde_start_percent=sde_start_percent, sde_end_percent=sde_end_percent, s_noise=s_noise,
                            predictor_order=predictor_order, corrector_order=corrector_order, use_pece=True,
                            simple_order_2=simple_order_2)
