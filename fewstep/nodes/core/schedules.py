"""Sampling schedules: functions ``(schedule, n) -> sigmas [n + 1]``, decreasing, ending in 0.

``schedule`` is a trained model's noise schedule (``nodes.core.denoiser``); the functions read its
``sigma_min`` / ``sigma_max``, its timestep mapping and, for table-based ones, its discrete sigma table.
``SCHEDULERS`` maps ComfyUI's scheduler names onto these functions (style principle 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fewstep.nodes.core.denoiser import DiscreteVPSchedule, FlowSchedule, Schedule


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas.float(), sigmas.new_zeros(1).float()])


def sigma_table(schedule: Schedule) -> torch.Tensor:
    """The model's discrete sigma table [N], increasing in timestep."""
    if isinstance(schedule, DiscreteVPSchedule):
        return schedule.sigmas
    if isinstance(schedule, FlowSchedule):
        steps = int(schedule.multiplier)
        return schedule.sigma_at(torch.arange(1, steps + 1, dtype=torch.float32))
    raise ValueError(f"{type(schedule).__name__} has no discrete sigma table; use karras or exponential")


def karras(schedule: Schedule, n: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022 (EDM), eq. 5: sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = schedule.sigma_min ** (1 / rho), schedule.sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


def exponential(schedule: Schedule, n: int) -> torch.Tensor:
    """Log-uniform sigmas from sigma_max to sigma_min (k-diffusion ``get_sigmas_exponential``)."""
    logs = torch.linspace(math.log(schedule.sigma_max), math.log(schedule.sigma_min), n, dtype=torch.float64)
    return _append_zero(logs.exp())


def simple(schedule: Schedule, n: int) -> torch.Tensor:
    """Every (N/n)-th entry of the sigma table from the top (ComfyUI "simple"; uniform in timestep)."""
    table = sigma_table(schedule)
    stride = table.shape[0] / n
    return _append_zero(torch.stack([table[-(1 + int(i * stride))] for i in range(n)]))


def _timestep_linspace(schedule: Schedule, n: int, sgm: bool) -> torch.Tensor:
    t_max = schedule.timestep(torch.tensor(schedule.sigma_max))
    t_min = schedule.timestep(torch.tensor(schedule.sigma_min))
    ts = torch.linspace(float(t_max), float(t_min), n + 1 if sgm else n)
    return _append_zero(schedule.sigma_at(ts[:-1] if sgm else ts))


def sgm_uniform(schedule: Schedule, n: int) -> torch.Tensor:
    """n timesteps uniformly spaced from t_max, excluding t_min ("trailing" spacing; SGM / SDXL-Turbo;
    Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed", Table 2)."""
    return _timestep_linspace(schedule, n, sgm=True)


def normal(schedule: Schedule, n: int) -> torch.Tensor:
    """n timesteps uniformly spaced from t_max to t_min inclusive ("linspace" spacing)."""
    return _timestep_linspace(schedule, n, sgm=False)


def ddim_uniform(schedule: Schedule, n: int) -> torch.Tensor:
    """DDIM's uniform timestep skipping (Song et al. 2021, Sec. 4.2 / App. D.2): t = 1, 1+c, 1+2c ...,
    c = N // n, visited from the top."""
    table = sigma_table(schedule)
    stride = max(1, table.shape[0] // n)
    picked = table[1::stride][:n]
    return _append_zero(picked.flip(0))


def beta(schedule: Schedule, n: int, a: float = 0.6, b: float = 0.6) -> torch.Tensor:
    """Timesteps at quantiles of a Beta(a, b) law (Lee et al. 2024, "Beta Sampling is All You Need",
    Sec. 3, a = b = 0.6), rounded to the table; repeated timesteps are dropped."""
    import scipy.stats  # lazy: scipy.stats costs ~1 s to import

    table = sigma_table(schedule)
    quantiles = 1 - torch.linspace(0, 1, n + 1, dtype=torch.float64)[:-1].numpy()
    ts = (scipy.stats.beta.ppf(quantiles, a, b) * (table.shape[0] - 1)).round().astype(int)
    picked: list[int] = []
    for t in ts:
        if not picked or t != picked[-1]:
            picked.append(int(t))
    return _append_zero(table[picked])


def from_timesteps(schedule: Schedule, timesteps: Sequence[float]) -> torch.Tensor:
    """An explicit list of (possibly fractional) model timesteps, highest first, mapped to sigmas."""
    ts = torch.as_tensor(list(timesteps), dtype=torch.float32)
    if ts.ndim != 1 or ts.numel() == 0:
        raise ValueError(f"timesteps must be a non-empty 1-D list, got {list(timesteps)!r}")
    return _append_zero(schedule.sigma_at(ts))


def flow_shifted(n: int, shift: float = 1.0) -> torch.Tensor:
    """Rectified-flow sigmas: t uniform on [1, 0], shifted by sigma = s t / (1 + (s - 1) t)
    (Esser et al. 2024, SD3 eq. 23). Ends in exactly 0."""
    t = torch.linspace(1, 0, n + 1, dtype=torch.float64)
    return (shift * t / (1 + (shift - 1) * t)).float()


def sd_turbo_sigmas(schedule: Any, steps: int, denoise: float) -> torch.Tensor:
    """SDXL Turbo's schedule (ADD, Sauer et al. 2023, trained at timesteps 999, 899, ..., 99): the top
    ``steps`` of the 10 timesteps 100 k - 1, starting ``10 - int(10 denoise)`` entries down; then 0."""
    start = 10 - int(10 * denoise)
    timesteps = (torch.arange(10, 0, -1) * 100 - 1)[start:start + steps]
    if timesteps.numel() == 0:
        return torch.zeros(0)
    return torch.cat([schedule.sigma_at(timesteps.float()).float(), torch.zeros(1)])


@dataclass(frozen=True)
class SigmaRange:
    """A (sigma_min, sigma_max) pair with the interface the schedules in ``schedules`` read."""

    sigma_min: float
    sigma_max: float


def polyexponential_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    """k-diffusion ``get_sigmas_polyexponential``: log sigma = log smin + r^rho (log smax - log smin),
    r from 1 to 0 in n steps (rho = 1 is the exponential schedule); then 0."""
    ramp = torch.linspace(1, 0, n, dtype=torch.float64) ** rho
    sigmas = (ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)).exp()
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def linear_quadratic(schedule: Schedule, n: int, threshold_noise: float = 0.025,
                     linear_steps: int | None = None) -> torch.Tensor:
    """Movie Gen's linear-quadratic schedule (Polyak et al. 2024, Sec. 3.1.4; ComfyUI ``linear_quadratic``)
    on t in [0, 1]: the first n/2 steps linear up to t = threshold_noise, then a quadratic to 1 that meets
    the line with a continuous slope; sigma = (1 - t) sigma_max."""
    if n == 1:
        return torch.tensor([1.0, 0.0]) * schedule.sigma_max
    linear_steps = n // 2 if linear_steps is None else linear_steps
    line = [i * threshold_noise / linear_steps for i in range(linear_steps)]
    gap = linear_steps - threshold_noise * n
    quadratic_steps = n - linear_steps
    a = gap / (linear_steps * quadratic_steps**2)
    b = threshold_noise / linear_steps - 2 * gap / quadratic_steps**2
    c = a * linear_steps**2
    curve = [a * i**2 + b * i + c for i in range(linear_steps, n)]
    return torch.tensor([1.0 - t for t in line + curve + [1.0]], dtype=torch.float32) * schedule.sigma_max


def kl_optimal(schedule: Schedule, n: int) -> torch.Tensor:
    """The KL-optimal schedule (Sabour et al. 2024, "Align Your Steps", Theorem 3.1: uniform in arctan
    sigma): sigma_i = tan((1 - i/(n-1)) atan(sigma_max) + i/(n-1) atan(sigma_min)); then 0."""
    frac = torch.arange(n, dtype=torch.float64) / max(n - 1, 1)
    sigmas = (frac * math.atan(schedule.sigma_min) + (1 - frac) * math.atan(schedule.sigma_max)).tan()
    return _append_zero(sigmas)


# Align Your Steps (Sabour et al. 2024, "Align Your Steps: optimizing sampling schedules in diffusion models",
# the published 10-step schedules at https://research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html;
# ComfyUI's AlignYourStepsScheduler): optimised for SD1.5, SDXL (both in SD's sigma range) and SVD.
AYS_NOISE_LEVELS: dict[str, tuple[float, ...]] = {
    "SD1": (14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092, 0.9642583904,
            0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582),
    "SDXL": (14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141, 0.5550693289,
             0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582),
    "SVD": (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002),
}


def loglinear_interp(sigmas: Sequence[float], n: int) -> torch.Tensor:
    """n points of a decreasing sigma list, piecewise linear in log sigma over a uniform [0, 1] grid (the AYS
    authors' recipe for step counts other than the published one): both ends are kept."""
    logs = torch.tensor(list(sigmas), dtype=torch.float64).log().flip(0)            # increasing
    grid = torch.linspace(0, 1, n, dtype=torch.float64) * (len(logs) - 1)           # in source intervals
    lower = grid.floor().long().clamp(max=len(logs) - 2)
    frac = grid - lower
    return (logs[lower] + frac * (logs[lower + 1] - logs[lower])).exp().flip(0)


def align_your_steps(model_type: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """AYS sigmas [k + 1] ending in 0: the published 10-step list for ``model_type``, log-linearly
    interpolated to steps + 1 points, of which the last round(steps denoise) + 1 are kept (img2img starts
    part way down) and the final one set to 0; denoise <= 0 gives an empty list (as ComfyUI)."""
    if model_type not in AYS_NOISE_LEVELS:
        raise ValueError(f"Align Your Steps has schedules for {sorted(AYS_NOISE_LEVELS)}, not {model_type!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if denoise <= 0.0:
        return torch.zeros(0)
    kept = steps if denoise >= 1.0 else round(steps * denoise)
    levels = AYS_NOISE_LEVELS[model_type]
    sigmas = torch.tensor(levels, dtype=torch.float64) if steps + 1 == len(levels) else \
        loglinear_interp(levels, steps + 1)
    sigmas = sigmas[-(kept + 1):].clone()
    sigmas[-1] = 0.0
    return sigmas.float()


def vp_sigmas(n: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3) -> torch.Tensor:
    """The continuous VP schedule (Song et al. 2021, SDE paper, eq. 33; k-diffusion ``get_sigmas_vp``):
    t uniform from 1 to eps_s, sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1); then 0."""
    t = torch.linspace(1, eps_s, n, dtype=torch.float64)
    return _append_zero(torch.special.expm1(beta_d * t**2 / 2 + beta_min * t).sqrt())


def laplace_sigmas(n: int, sigma_min: float, sigma_max: float, mu: float = 0.0, beta: float = 0.5) -> torch.Tensor:
    """The Laplace schedule (Hang et al. 2024, "Improved noise schedule for diffusion training"; ComfyUI's
    LaplaceScheduler): log sigma follows the Laplace(mu, beta) quantile function at n uniform points of
    [0, 1] (1e-5 keeps the ends finite), clamped to [sigma_min, sigma_max]. As ComfyUI, no 0 is appended."""
    u = torch.linspace(0, 1, n, dtype=torch.float64)
    log_sigma = mu - beta * torch.sign(0.5 - u) * torch.log(1 - 2 * (0.5 - u).abs() + 1e-5)
    return log_sigma.exp().clamp(sigma_min, sigma_max).float()


def extend_intermediate(sigmas: torch.Tensor, steps: int, start_at_sigma: float, end_at_sigma: float,
                        spacing: str) -> torch.Tensor:
    """ComfyUI's ExtendIntermediateSigmas: every step whose start sigma lies in [end_at_sigma, start_at_sigma]
    (start < 0: no upper bound) is split into ``steps`` sub-steps at s + f(u) (s' - s), u = 1/steps, ...,
    (steps - 1)/steps, with f(u) = u ("linear"), sin(pi u / 2) ("cosine") or 1 - cos(pi u / 2) ("sine")."""
    shapes = {"linear": lambda u: u, "cosine": lambda u: torch.sin(u * math.pi / 2),
              "sine": lambda u: 1 - torch.cos(u * math.pi / 2)}
    if spacing not in shapes:
        raise ValueError(f"spacing must be one of {sorted(shapes)}, got {spacing!r}")
    upper = float("inf") if start_at_sigma < 0 else start_at_sigma
    fractions = shapes[spacing](torch.linspace(0, 1, steps + 1, dtype=torch.float64)[1:-1])
    out: list[float] = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        out.append(sigma)
        if end_at_sigma <= sigma <= upper:
            out.extend((sigma + fractions * (sigma_next - sigma)).tolist())
    if len(sigmas) > 0:
        out.append(float(sigmas[-1]))
    return torch.tensor(out, dtype=torch.float32)


SchedulerFn = Callable[[Schedule, int], torch.Tensor]

# ComfyUI's scheduler names (comfy/samplers.py SCHEDULER_NAMES) that we implement.
SCHEDULERS: dict[str, SchedulerFn] = {
    "simple": simple,
    "sgm_uniform": sgm_uniform,
    "karras": karras,
    "exponential": exponential,
    "ddim_uniform": ddim_uniform,
    "beta": beta,
    "normal": normal,
    "linear_quadratic": linear_quadratic,
    "kl_optimal": kl_optimal,
}


def calculate_sigmas(schedule: Schedule, scheduler: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """ComfyUI's BasicScheduler rule: for denoise < 1 compute int(steps / denoise) steps and keep the
    last ``steps + 1`` sigmas (img2img starts part way down the schedule)."""
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {sorted(SCHEDULERS)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if denoise <= 0.0:
        return torch.zeros(0)
    total = steps if denoise >= 1.0 else int(steps / denoise)
    return SCHEDULERS[scheduler](schedule, total)[-(steps + 1):]
