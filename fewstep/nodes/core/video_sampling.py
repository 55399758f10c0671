"""Flow-matching samplers for video (and any rectified-flow model): shifted schedules, Euler, few-step.

Same contract as ``nodes.core.samplers`` (style principle 1)::

    sample_flow_<name>(denoiser, x, sigmas, *, cond=None, callback=None, generator=None) -> x

- ``denoiser(x, sigma, cond) -> x0`` for a rectified-flow model (``nodes.core.denoiser.Denoiser`` with a
  ``FlowSchedule`` and ``flow`` prediction, or any callable of that contract). x may have any shape
  ``[B, ...]``; video latents are ``[B, T, C, h, w]``.
- Rectified flow (Liu et al. 2022; Esser et al. 2024, SD3 eq. 1-2): ``x_sigma = (1 - sigma) x0 + sigma eps``,
  velocity ``v = dx/dsigma = eps - x0 = (x - x0) / sigma``.
- ``sigmas`` ``[n + 1]``, decreasing from at most 1, ending in 0; x is already at ``sigmas[0]``.
- ``callback({"i", "x", "sigma", "sigma_next", "denoised"})`` after every model evaluation.

Schedules are functions ``steps -> sigmas`` (style principle 2): :func:`shifted_sigmas` (the timestep
shift of SD3 eq. 23, used by video models such as HunyuanVideo with shift 7) and :func:`key_sigmas`
(a subset of a base grid, e.g. AccVideo's 5 key points of the 50-step grid at indices 0, 10, ..., 50).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

Callback = Callable[[dict[str, Any]], None] | None
FlowDenoiser = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


def shift_sigma(u: torch.Tensor, shift: float) -> torch.Tensor:
    """The timestep shift of Esser et al. 2024 (SD3 eq. 23): sigma = shift u / (1 + (shift - 1) u).

    Keeps 0 -> 0 and 1 -> 1; shift > 1 spends more of a uniform grid at high noise."""
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return shift * u / (1 + (shift - 1) * u)


def shifted_sigmas(steps: int, shift: float = 1.0) -> torch.Tensor:
    """``steps + 1`` sigmas: a uniform grid u = 1, 1 - 1/steps, ..., 0 through :func:`shift_sigma`.

    ``sigmas[0] = 1`` (pure noise) and ``sigmas[-1] = 0`` for every shift."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return shift_sigma(u, shift).float()


def key_sigmas(indices: Sequence[int], base_steps: int = 50, shift: float = 1.0) -> torch.Tensor:
    """The sigmas at ``indices`` of the ``base_steps`` grid of :func:`shifted_sigmas` (AccVideo's key
    timesteps: indices 0, 10, 20, 30, 40, 50 of 50 steps at shift 7 give 1 > 0.9651 > ... > 0)."""
    idx = list(indices)
    if not idx or idx[0] != 0 or idx[-1] != base_steps or any(b <= a for a, b in zip(idx, idx[1:], strict=False)):
        raise ValueError(f"key indices must increase from 0 to base_steps={base_steps}, got {idx}")
    return shifted_sigmas(base_steps, shift)[idx]


def flow_velocity(denoiser: FlowDenoiser, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
    """v = (x - x0) / sigma (= eps - x0 on the straight path); sigma > 0."""
    return (x - denoiser(x, sigma, cond)) / sigma


def _report(callback: Callback, i: int, x: torch.Tensor, sigmas: torch.Tensor, x0: torch.Tensor) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigmas[i], "sigma_next": sigmas[i + 1], "denoised": x0})


def _check(sigmas: torch.Tensor) -> None:
    if sigmas.ndim != 1 or len(sigmas) < 2 or float(sigmas[0]) > 1.0 + 1e-6 or float(sigmas[-1]) != 0.0:
        raise ValueError("flow sigmas must be a 1-D tensor from at most 1 down to 0, e.g. shifted_sigmas(steps, shift)")


def sample_flow_euler(denoiser: FlowDenoiser, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                      callback: Callback = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Euler on the flow ODE dx/dsigma = v(x, sigma): x' = x + (sigma' - sigma) v, v = (x - x0) / sigma.

    Exact when the velocity is constant along the path (a straight flow), e.g. a single target x0."""
    _check(sigmas)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        _report(callback, i, x, sigmas, x0)
        x = x + (sigma_next - sigma) * (x - x0) / sigma
    return x


def sample_flow_heun(denoiser: FlowDenoiser, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                     callback: Callback = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Heun's 2nd-order method on the flow ODE (Karras et al. 2022, Alg. 1); Euler on the step to 0."""
    _check(sigmas)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        _report(callback, i, x, sigmas, x0)
        v = (x - x0) / sigma
        x_euler = x + (sigma_next - sigma) * v
        if float(sigma_next) == 0.0:
            x = x_euler
            continue
        v_next = flow_velocity(denoiser, x_euler, sigma_next, cond)
        x = x + (sigma_next - sigma) * (v + v_next) / 2
    return x


def sample_flow_consistency(denoiser: FlowDenoiser, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None,
                            callback: Callback = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Multistep consistency sampling (Song et al. 2023, CM Alg. 1) on the flow path: predict x0, then
    re-noise it to the next level with fresh noise, x' = (1 - sigma') x0 + sigma' z (the few-step sampler of
    consistency-distilled students, e.g. Efficient-vDiT's MLCD)."""
    _check(sigmas)
    for i in range(len(sigmas) - 1):
        x0 = denoiser(x, sigmas[i], cond)
        _report(callback, i, x, sigmas, x0)
        s = sigmas[i + 1]
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x = x0 if float(s) == 0.0 else (1 - s) * x0 + s * noise
    return x


SamplerFn = Callable[..., torch.Tensor]
VIDEO_SAMPLERS: dict[str, SamplerFn] = {
    "flow_euler": sample_flow_euler,
    "flow_heun": sample_flow_heun,
    "flow_consistency": sample_flow_consistency,
}


def get_video_sampler(name: str) -> SamplerFn:
    """The sampler function registered as ``name`` in :data:`VIDEO_SAMPLERS`."""
    if name not in VIDEO_SAMPLERS:
        raise ValueError(f"unknown video sampler {name!r}; choose one of {sorted(VIDEO_SAMPLERS)}")
    return VIDEO_SAMPLERS[name]
