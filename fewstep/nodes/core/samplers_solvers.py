"""Deterministic ODE solvers of ComfyUI's list beyond ``samplers``: Heun++ (``heunpp2``), variable-step
iPNDM (``ipndm_v``), DEIS (``deis``) and DPM-Solver's fast and adaptive drivers (``dpm_fast``,
``dpm_adaptive``), one signature as in ``samplers``.

All of them work on the probability-flow ODE of Karras et al. 2022 (eq. 4) in sigma,
dx/dsigma = d = (x - D(x, sigma)) / sigma, which holds for VP models in EDM space and for rectified flow
alike; DPM-Solver integrates in t = -log(sigma) with the noise prediction eps = d and needs alpha = 1.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from fewstep.nodes.core.sampler_math import Callback, alpha_at, fresh_noise, report


def _d(x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return (x - x0) / sigma


def sample_heunpp2(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                   callback: Callback = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Heun++ (ComfyUI ``heunpp2``, from the sd-webui-samplers-scheduler extension): Euler predictors to the
    next one or two sigmas and a weighted slope
        3 points: d' = w1 d + w2 d_2 + w3 d_3,  w2 = s_{i+1} / (3 s_0), w3 = s_{i+2} / (3 s_0), w1 = 1 - w2 - w3,
        2 points (second-to-last step): w2 = s_{i+1} / (2 s_0), w1 = 1 - w2,
    x' = x + (s_{i+1} - s_i) d', where d_2 is taken at the Euler point x_2 = x + d (s_{i+1} - s_i) and d_3 at
    x_3 = x_2 + d_2 (s_{i+2} - s_{i+1}); plain Euler on the last step. Up to 3 model calls per step
    (S_churn of ComfyUI's version is left at its default 0)."""
    s_end = float(sigmas[-1])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        report(callback, i, x, sigmas, x0)
        d = _d(x, x0, sigma)
        dt = sigma_next - sigma
        if float(sigma_next) == s_end:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = _d(x_2, denoiser(x_2, sigma_next, cond), sigma_next)
        if float(sigmas[i + 2]) == s_end:
            w2 = sigma_next / (2 * sigmas[0])
            x = x + ((1 - w2) * d + w2 * d_2) * dt
            continue
        x_3 = x_2 + d_2 * (sigmas[i + 2] - sigma_next)
        d_3 = _d(x_3, denoiser(x_3, sigmas[i + 2], cond), sigmas[i + 2])
        w2, w3 = sigma_next / (3 * sigmas[0]), sigmas[i + 2] / (3 * sigmas[0])
        x = x + ((1 - w2 - w3) * d + w2 * d_2 + w3 * d_3) * dt
    return x


def _ipndm_v_weights(h: list[torch.Tensor]) -> list[torch.Tensor]:
    """Weights of d_i, d_{i-1}, ... in iPNDM-v (Zhou et al. 2024, "Fast ODE-based sampling for diffusion models
    in around 5 steps", the variable-step Adams-Bashforth of iPNDM; as ComfyUI's ``ipndm_v``), from the
    current step h0 = s_{i+1} - s_i and the previous ones h1, h2, h3 (h_k = s_{i-k+1} - s_{i-k}).
    Order 2: (1 + rho/2, -rho/2), rho = h0/h1. Order 3 adds t1 = (1 - h0^2 / (3 h1 (h1 + h2))) / 2 as
    (+t1, -(1 + h1/h2) t1, + t1 h1/h2). Order 4 adds t2 = [(1 - h0/(3 H1))/2 + (1 - h0/(2 H1)) h0/(6 H2)]
    H1 H2 h0 / (h1 G1 G2) with H1 = h0 + h1, H2 = H1 + h2, G1 = h1 + h2, G2 = G1 + h3 and R = h1 G1/(h2 (h2 + h3)):
    (+t2, -(1 + h1/h2 + R) t2, (h1/h2 + R (1 + h2/h3)) t2, -R h1/h2 t2) — the coefficients as ComfyUI uses
    them; the order-4 ones sum to 1 only on uniform grids (1.0034 for steps 0.5, 1, 2, 3; measured)."""
    order = len(h)
    if order == 1:
        return [torch.ones_like(h[0])]
    h0, h1 = h[0], h[1]
    rho = h0 / h1
    w = [1 + rho / 2, -rho / 2]
    if order == 2:
        return w
    h2 = h[2]
    t1 = (1 - h0**2 / (3 * h1 * (h1 + h2))) / 2
    w = [w[0] + t1, w[1] - (1 + h1 / h2) * t1, t1 * h1 / h2]
    if order == 3:
        return w
    h3 = h[3]
    big1, big2, g1, g2 = h0 + h1, h0 + h1 + h2, h1 + h2, h1 + h2 + h3
    t2 = ((1 - h0 / (3 * big1)) / 2 + (1 - h0 / (2 * big1)) * h0 / (6 * big2)) * (h0 * big1 * big2) / (h1 * g1 * g2)
    r = h1 * g1 / (h2 * (h2 + h3))
    return [w[0] + t2, w[1] - (1 + h1 / h2 + r) * t2, w[2] + (h1 / h2 + r * (1 + h2 / h3)) * t2, -t2 * r * h1 / h2]


def sample_ipndm_v(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                   callback: Callback = None, generator: torch.Generator | None = None,
                   max_order: int = 4) -> torch.Tensor:
    """iPNDM with variable-step weights (ComfyUI ``ipndm_v``): x' = x + (s' - s) sum_k w_k d_{i-k} with
    :func:`_ipndm_v_weights` of order min(i + 1, max_order); x0 on the last step to sigma = 0."""
    if not 1 <= max_order <= 4:
        raise ValueError(f"ipndm_v: max_order must be in 1..4, got {max_order}")
    ds: list[torch.Tensor] = []                                   # newest first
    for i in range(len(sigmas) - 1):
        x0 = denoiser(x, sigmas[i], cond)
        report(callback, i, x, sigmas, x0)
        ds = ([_d(x, x0, sigmas[i])] + ds)[:max_order]
        if float(sigmas[i + 1]) == 0.0:
            x = x0
            continue
        steps = [sigmas[i + 1 - k] - sigmas[i - k] for k in range(len(ds))]      # h0, h1, ... (negative)
        weights = _ipndm_v_weights(steps)
        x = x + (sigmas[i + 1] - sigmas[i]) * sum(w * d for w, d in zip(weights, ds, strict=True))
    return x


# -- DEIS ---------------------------------------------------------------------------------------------

# The VP-SDE fitted to EDM's range (sigma in [0.002, 80] at t in [1e-3, 1]) that ComfyUI's DEIS maps the
# sigmas onto: abar(t) = exp(-beta_min t - (beta_d / 2) t^2) (Song et al. 2021, SDE paper, eq. 33).
_DEIS_SIGMA_MIN, _DEIS_SIGMA_MAX, _DEIS_EPS_T = 0.002, 80.0, 1e-3


def _deis_vp() -> tuple[float, float]:
    """(beta_min, beta_d) with sigma(1e-3) = 0.002 and sigma(1) = 80, sigma(t)^2 = 1/abar(t) - 1."""
    log_max, log_min = math.log(_DEIS_SIGMA_MAX**2 + 1), math.log(_DEIS_SIGMA_MIN**2 + 1)
    beta_d = 2 * (log_min / _DEIS_EPS_T - log_max) / (_DEIS_EPS_T - 1)
    return log_max - beta_d / 2, beta_d


def _deis_time(sigmas: torch.Tensor) -> torch.Tensor:
    """VP time of each sigma: the root of (beta_d / 2) t^2 + beta_min t = log(1 + sigma^2)."""
    beta_min, beta_d = _deis_vp()
    return ((beta_min**2 + 2 * beta_d * (sigmas.double() ** 2 + 1).log()).sqrt() - beta_min) / beta_d


def _deis_coefficients(times: torch.Tensor, i: int, order: int, points: int = 10000) -> list[torch.Tensor]:
    """C_ij = int_{t_i}^{t_{i+1}} (dsigma/dtau) L_j(tau) dtau (Zhang & Chen 2023, DEIS, eq. 14, "tAB"):
    eps extrapolated by the Lagrange polynomial L_j through t_i, ..., t_{i-order+1}, integrated against
    dsigma/dtau = -(1/2) (d log abar / dtau) / sqrt(abar (1 - abar)). The integral is ComfyUI's Riemann sum:
    ``points`` equally spaced nodes from t_i to t_{i+1} (both ends) times (t_{i+1} - t_i) / points."""
    beta_min, beta_d = _deis_vp()
    t_cur, t_next = times[i], times[i + 1]
    taus = torch.linspace(float(t_cur), float(t_next), points, dtype=torch.float64)
    abar = torch.exp(-beta_min * taus - 0.5 * beta_d * taus**2)
    dsigma = 0.5 * (beta_min + beta_d * taus) / (abar * (1 - abar)).sqrt()
    nodes = [times[i - k] for k in range(order)]
    coefficients = []
    for j in range(order):
        basis = torch.ones_like(taus)
        for k, node in enumerate(nodes):
            if k != j:
                basis = basis * (taus - node) / (nodes[j] - node)
        coefficients.append((dsigma * basis).sum() * (t_next - t_cur) / points)
    return coefficients


def sample_deis(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                callback: Callback = None, generator: torch.Generator | None = None,
                max_order: int = 3) -> torch.Tensor:
    """DEIS, time-polynomial Adams-Bashforth ("tAB", Zhang & Chen 2023; ComfyUI ``deis``, mode "tab"):
    x' = x + sum_j C_ij d_{i-j} (:func:`_deis_coefficients`) at order min(i + 1, max_order), Euler on the
    first step and to sigma = 0. The coefficients assume the VP-SDE fitted to EDM's sigma range (as ComfyUI)."""
    if not 1 <= max_order <= 4:
        raise ValueError(f"deis: max_order must be in 1..4, got {max_order}")
    times = _deis_time(sigmas)
    ds: list[torch.Tensor] = []                                   # newest first
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        report(callback, i, x, sigmas, x0)
        ds = ([_d(x, x0, sigma)] + ds)[:max_order]
        order = 1 if float(sigma_next) <= 0 else len(ds)
        if order == 1:
            x = x + (sigma_next - sigma) * ds[0]
            continue
        coefficients = _deis_coefficients(times, i, order)
        x = x + sum(c.to(x.dtype) * d for c, d in zip(coefficients, ds, strict=True))
    return x


# -- DPM-Solver, fast and adaptive (Lu et al. 2022, arXiv 2206.00927) --------------------------------------


class _EpsModel:
    """eps(x, t) = (x - D(x, sigma)) / sigma at sigma = e^{-t}, counting model calls."""

    def __init__(self, denoiser: Any, cond: Any) -> None:
        self.denoiser, self.cond, self.calls = denoiser, cond, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = (-t).exp()
        x0 = self.denoiser(x, sigma, self.cond)
        self.calls += 1
        return (x - x0) / sigma, x0


def _dpm_solver_step(eps_model: _EpsModel, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
                     eps: torch.Tensor, order: int, r1: float = 0.5,
                     stages: dict[float, torch.Tensor] | None = None) -> torch.Tensor:
    """One DPM-Solver step of order 1, 2 or 3 in t = -log sigma (Lu et al. 2022, eq. 3.7 and Alg. 4-5),
    h = t' - t, with sigma(t) = e^{-t}:
        1: x' = x - s' (e^h - 1) eps
        2: u = x - s_1 (e^{r1 h} - 1) eps;  x' = x - s' (e^h - 1) eps - s' / (2 r1) (e^h - 1) (eps_1 - eps)
        3: (r1, r2) = (1/3, 2/3); u2 = x - s_2 (e^{r2 h} - 1) eps - s_2 (r2/r1) ((e^{r2 h} - 1)/(r2 h) - 1)
           (eps_1 - eps);  x' = x - s' (e^h - 1) eps - s' / r2 ((e^h - 1)/h - 1)(eps_2 - eps)
    where eps_k is the model at the stage point u_k, t + r_k h. ``stages`` keeps eps_1 by r1 across the
    two solvers of one adaptive trial step (the order-2 step with r1 = 1/3 and the order-3 step share it)."""
    h = t_next - t
    sigma = lambda tt: (-tt).exp()  # noqa: E731
    base = x - sigma(t_next) * torch.expm1(h) * eps
    if order == 1:
        return base
    r1 = r1 if order == 2 else 1 / 3
    s1 = t + r1 * h
    stages = {} if stages is None else stages
    if r1 not in stages:
        stages[r1] = eps_model(x - sigma(s1) * torch.expm1(r1 * h) * eps, s1)[0]
    eps_1 = stages[r1]
    if order == 2:
        return base - sigma(t_next) / (2 * r1) * torch.expm1(h) * (eps_1 - eps)
    r2 = 2 / 3
    s2 = t + r2 * h
    u2 = x - sigma(s2) * torch.expm1(r2 * h) * eps - sigma(s2) * (r2 / r1) * (
        torch.expm1(r2 * h) / (r2 * h) - 1) * (eps_1 - eps)
    eps_2, _ = eps_model(u2, s2)
    return base - sigma(t_next) / r2 * (torch.expm1(h) / h - 1) * (eps_2 - eps)


def _dpm_ends(denoiser: Any, sigmas: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(t_start, t_end) = -log(sigma_max), -log(sigma_min) with sigma_min the last nonzero sigma (ComfyUI's
    wrapper: these solvers stop there, the result keeps that much noise)."""
    if float(alpha_at(denoiser, sigmas[:1].reshape(()))) != 1.0:
        raise ValueError(f"{name} integrates in EDM space (alpha = 1): use it with VP (eps / v) models")
    sigma_min = sigmas[-1] if float(sigmas[-1]) > 0 else sigmas[-2]
    return -sigmas[0].double().log(), -sigma_min.double().log()


def sample_dpm_fast(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                    callback: Callback = None, generator: torch.Generator | None = None,
                    eta: float = 0.0, s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver-fast (Lu et al. 2022, Sec. 3.4; k-diffusion ``sample_dpm_fast`` as ComfyUI's ``dpm_fast``):
    NFE = n = len(sigmas) - 1 model calls spent on m = n // 3 + 1 steps uniform in t = -log sigma from
    sigma_max to the last nonzero sigma, of orders 3, ..., 3, then [2, 1] (n % 3 = 0) or [n % 3]. Only the
    first and last sigma are used; the result is at the last nonzero sigma (not denoised further), as in
    ComfyUI. ``eta`` > 0 takes ancestral steps."""
    if len(sigmas) <= 1:
        return x
    t_start, t_end = _dpm_ends(denoiser, sigmas, "dpm_fast")
    n = len(sigmas) - 1
    m = n // 3 + 1
    ts = torch.linspace(float(t_start), float(t_end), m + 1, dtype=torch.float64)
    orders = [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]
    eps_model = _EpsModel(denoiser, cond)
    for i, order in enumerate(orders):
        t, t_next = ts[i], ts[i + 1]
        t_to, s_up = t_next, torch.zeros((), dtype=torch.float64)
        if eta:
            t_to, s_up = _ancestral_in_t(t, t_next, t_end, eta)
        eps, x0 = eps_model(x, t)
        x_new = _dpm_solver_step(eps_model, x, t, t_to, eps, order)
        if eta:
            x_new = x_new + s_up * s_noise * fresh_noise(x, generator)
        if callback is not None:
            callback({"i": eps_model.calls - 1, "x": x, "sigma": (-t).exp(), "sigma_next": (-t_next).exp(),
                      "denoised": x0})
        x = x_new
    return x


def _ancestral_in_t(t: torch.Tensor, t_next: torch.Tensor, t_end: torch.Tensor,
                    eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(t_down, s_up): k-diffusion's ancestral split of sigma = e^{-t} -> e^{-t'} (DDIM eq. 16), with the
    step down clipped at t_end and s_up recomputed so the variances add up to sigma'^2."""
    sigma, sigma_next = (-t).exp(), (-t_next).exp()
    s_up = torch.minimum(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2).sqrt())
    t_down = torch.minimum(t_end, -(sigma_next**2 - s_up**2).sqrt().log())
    return t_down, (sigma_next**2 - (-t_down).exp() ** 2).sqrt()


class _PIDStepSize:
    """PID step-size control (Söderlind 2003; k-diffusion's ``PIDStepSizeController``): with e_k the inverse
    error of the last three accepted steps, factor = 1 + atan(e_0^b1 e_1^b2 e_2^b3 - 1) (a smooth limiter),
    b1 = (p + i + d) / order, b2 = -(p + 2 d) / order, b3 = d / order; the step is accepted when
    factor >= accept_safety, and h *= factor either way."""

    def __init__(self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float,
                 accept_safety: float, eps: float = 1e-8) -> None:
        self.h = h
        self.b = ((pcoeff + icoeff + dcoeff) / order, -(pcoeff + 2 * dcoeff) / order, dcoeff / order)
        self.accept_safety, self.eps = accept_safety, eps
        self.inverse_errors: list[float] = []

    def propose(self, error: float) -> bool:
        inverse = 1 / (error + self.eps)
        if not self.inverse_errors:
            self.inverse_errors = [inverse] * 3
        self.inverse_errors[0] = inverse
        e = self.inverse_errors
        factor = 1 + math.atan(e[0] ** self.b[0] * e[1] ** self.b[1] * e[2] ** self.b[2] - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.inverse_errors = [e[0], e[0], e[1]]
        self.h *= factor
        return accept


def sample_dpm_adaptive(denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                        callback: Callback = None, generator: torch.Generator | None = None,
                        order: int = 3, rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.05,
                        pcoeff: float = 0.0, icoeff: float = 1.0, dcoeff: float = 0.0, accept_safety: float = 0.81,
                        eta: float = 0.0, s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver-12 / -23 with adaptive steps (Lu et al. 2022, Sec. 3.3 and App. C; ComfyUI ``dpm_adaptive``):
    from t = -log sigma_max to -log(last nonzero sigma), each trial step of length h in t runs the order-1
    (resp. 2 with r1 = 1/3) and order-2 (resp. 3) solvers, error = ||(x_low - x_high) / delta|| / sqrt(numel)
    with delta = max(atol, rtol max(|x_low|, |x_prev|)), and :class:`_PIDStepSize` accepts / resizes.
    ``sigmas`` gives only its ends (the step count is the solver's). The callback's ``i`` follows the
    fraction of log-sigma covered, scaled to len(sigmas) - 1, for the progress bar."""
    if order not in (2, 3):
        raise ValueError(f"dpm_adaptive: order must be 2 or 3, got {order}")
    if len(sigmas) <= 1:
        return x
    t_start, t_end = _dpm_ends(denoiser, sigmas, "dpm_adaptive")
    s, x_prev, n = t_start, x, len(sigmas) - 1
    pid = _PIDStepSize(abs(h_init), pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    eps_model = _EpsModel(denoiser, cond)
    while s < t_end - 1e-5:
        t = torch.minimum(t_end, s + pid.h)
        t_to, s_up = (t, torch.zeros((), dtype=torch.float64)) if not eta else _ancestral_in_t(s, t, t_end, eta)
        eps, x0 = eps_model(x, s)
        stages: dict[float, torch.Tensor] = {}
        x_low = _dpm_solver_step(eps_model, x, s, t_to, eps, order - 1, r1=1 / 3, stages=stages)
        x_high = _dpm_solver_step(eps_model, x, s, t_to, eps, order, stages=stages)
        delta = torch.maximum(torch.tensor(atol), rtol * torch.maximum(x_low.abs(), x_prev.abs()))
        error = float(torch.linalg.norm((x_low - x_high) / delta)) / x.numel() ** 0.5
        x_before, s_before = x, s
        if pid.propose(error):
            x_prev = x_low
            x = x_high + s_up * s_noise * fresh_noise(x, generator) if eta else x_high
            s = t
        if callback is not None:
            done = float((s - t_start) / (t_end - t_start))
            callback({"i": min(n - 1, max(0, math.ceil(done * n) - 1)), "x": x_before, "sigma": (-s_before).exp(),
                      "sigma_next": (-s).exp(), "denoised": x0})
    return x
