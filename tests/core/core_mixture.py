"""A 1-D Gaussian mixture whose denoiser E[x0 | x_sigma] is known exactly (test helper).

p0 = sum_k w_k N(mu_k, s_k^2); under x = a x0 + sigma eps the marginal is sum_k w_k N(a mu_k, a^2 s_k^2 +
sigma^2) and E[x0 | x, k] = mu_k + a s_k^2 / (a^2 s_k^2 + sigma^2) (x - a mu_k) (Gaussian conditioning).
"""

from __future__ import annotations

import math

import torch

from fewstep.nodes.core.denoiser import Denoiser, DiscreteVPSchedule, FlowSchedule

W = torch.tensor([0.3, 0.7], dtype=torch.float64)
MU = torch.tensor([-2.0, 1.5], dtype=torch.float64)
SD = torch.tensor([0.3, 0.5], dtype=torch.float64)


def _components(x: torch.Tensor, sigma: torch.Tensor, alpha: torch.Tensor):
    xx = x.double().reshape(-1, 1)                                   # [N, 1]
    s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1)
    a = torch.as_tensor(alpha, dtype=torch.float64).reshape(-1, 1)
    var = a**2 * SD**2 + s**2                                        # [N, K]
    log_p = torch.log(W) - 0.5 * torch.log(var) - 0.5 * (xx - a * MU) ** 2 / var
    return xx, s, a, var, log_p


def posterior_mean(x: torch.Tensor, sigma: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """E[x0 | x] for the mixture, x of any shape with N = x.shape[0] rows of one element."""
    xx, s, a, var, log_p = _components(x, sigma, alpha)
    resp = torch.softmax(log_p, dim=1)
    means = MU + a * SD**2 / var * (xx - a * MU)
    return (resp * means).sum(1).reshape(x.shape).to(x.dtype)


def sample(n: int, generator: torch.Generator, sigma: float = 0.0, alpha: float = 1.0) -> torch.Tensor:
    """n exact draws [n, 1] of the marginal at (sigma, alpha)."""
    k = torch.multinomial(W.float(), n, replacement=True, generator=generator)
    std = (alpha**2 * SD[k] ** 2 + sigma**2).sqrt()
    return (alpha * MU[k] + std * torch.randn(n, generator=generator, dtype=torch.float64)).float().reshape(n, 1)


def quantiles(n: int, sigma: float = 0.0, alpha: float = 1.0) -> torch.Tensor:
    """The exact (i + 1/2)/n quantiles [n, 1] of the marginal, by bisection on its CDF."""
    p = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    std = (alpha**2 * SD**2 + sigma**2).sqrt()
    span = 10.0 + 10 * sigma
    lo, hi = torch.full((n,), -span, dtype=torch.float64), torch.full((n,), span, dtype=torch.float64)
    for _ in range(64):
        mid = (lo + hi) / 2
        cdf = (W * 0.5 * (1 + torch.erf((mid.reshape(-1, 1) - alpha * MU) / (std * math.sqrt(2))))).sum(1)
        below = cdf < p
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return ((lo + hi) / 2).float().reshape(n, 1)


def w1(samples: torch.Tensor, reference: torch.Tensor) -> float:
    """1-D Wasserstein-1 distance between two equal-size samples (mean gap of the sorted values)."""
    return (samples.reshape(-1).sort().values - reference.reshape(-1).sort().values).abs().mean().item()


def vp_denoiser(prediction: str = "eps") -> Denoiser:
    """The exact mixture denoiser behind a DiscreteVP schedule, as a network predicting ``prediction``."""
    schedule = DiscreteVPSchedule.from_config()

    def model_fn(x_in: torch.Tensor, t: torch.Tensor, cond: object) -> torch.Tensor:
        s = schedule.sigma_at(t).reshape(-1, *([1] * (x_in.ndim - 1)))
        x = x_in * (s**2 + 1).sqrt()                                 # back to EDM space
        x0 = posterior_mean(x, s, torch.ones_like(s))
        eps = (x - x0) / s
        return {"eps": eps, "x0": x0, "v": (eps - s * x0) / (s**2 + 1).sqrt()}[prediction]

    return Denoiser(model_fn, prediction, schedule)


def flow_denoiser(shift: float = 1.0) -> Denoiser:
    """The exact mixture denoiser behind a rectified-flow schedule (velocity prediction)."""
    schedule = FlowSchedule(shift=shift)

    def model_fn(x_in: torch.Tensor, t: torch.Tensor, cond: object) -> torch.Tensor:
        s = (t / schedule.multiplier).reshape(-1, *([1] * (x_in.ndim - 1)))
        x0 = posterior_mean(x_in, s, 1 - s)
        return (x_in - x0) / s                                         # v = eps - x0 = (x - x0) / s

    return Denoiser(model_fn, "flow", schedule)
