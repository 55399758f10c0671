"""DiSA's head-step schedules (Zhao et al., arXiv 2505.20297; code ``MAR_DiSA/models/mar.py``).

A masked AR model with a per-token diffusion head runs K AR iterations; at iteration k (0..K−1) the head
denoises the newly revealed tokens with T(k) diffusion steps. The later tokens' conditional distribution is
narrower (most of the image is already fixed), so DiSA spends many steps early and few late:

    linear:     T(k) = lower + ⌊(1 − k/(K−1)) · (upper − lower)⌋
    cosine:     T(k) = lower + ⌊(cos(π k/(K−1)) + 1)/2 · (upper − lower)⌋
    two-stage:  T(k) = upper for k < K/2, lower after
    constant:   T(k) = lower                        (the paper's control: few steps from the start)

(MAR indexes a list of respaced diffusions ``lower..upper`` with ``int(fraction · (len − 1))``; the formulas
above are the same numbers.) With K = 1 every schedule gives ``upper`` (constant: ``lower``).

Each schedule is a frozen dataclass called as ``schedule(iteration, iterations) -> steps``, the
``HeadStepSchedule`` protocol the MAR sampler of ``fewstep.nodes.core.ar.sampling`` takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The paper clips the respaced DDPM timesteps of the MAR head at 950 of 1000 (``create_diffusion(
# clip_timesteps=950)``): the noisiest head step starts at t = 950, not 999. Pass it to the MAR sampler
# as ``sample_mar(..., head_t_max=CLIP_TIMESTEP)`` (``zoo.ar.models.respaced_timesteps`` spaces the steps).
CLIP_TIMESTEP = 950


def _check(upper: int, lower: int) -> None:
    if lower < 1 or upper < lower:
        raise ValueError(f"head steps need 1 <= lower <= upper, got lower={lower}, upper={upper}")


def _progress(iteration: int, iterations: int) -> float:
    """k/(K−1) in [0, 1]; K = 1 counts as the start."""
    if iterations < 1 or not 0 <= iteration < iterations:
        raise ValueError(f"AR iteration must be in 0..{iterations - 1}, got {iteration} (of {iterations})")
    return 0.0 if iterations == 1 else iteration / (iterations - 1)


@dataclass(frozen=True)
class _Annealed:
    """Head steps falling from ``upper`` (first AR iteration) to ``lower`` (last); subclasses give the shape."""

    upper: int = 50
    lower: int = 5
    t_max: int = CLIP_TIMESTEP   # the head's noisiest timestep (the MAR sampler node passes it on)

    def __post_init__(self) -> None:
        _check(self.upper, self.lower)


@dataclass(frozen=True)
class LinearHeadSteps(_Annealed):
    """T(k) falls linearly from ``upper`` (first iteration) to ``lower`` (last); DiSA's default (MAR: 50 → 5)."""

    def __call__(self, iteration: int, iterations: int) -> int:
        return self.lower + math.floor((1 - _progress(iteration, iterations)) * (self.upper - self.lower) + 1e-9)


@dataclass(frozen=True)
class CosineHeadSteps(_Annealed):
    """T(k) follows a half cosine from ``upper`` to ``lower`` (stays high longer, then drops)."""

    def __call__(self, iteration: int, iterations: int) -> int:
        frac = (math.cos(math.pi * _progress(iteration, iterations)) + 1) / 2
        return self.lower + math.floor(frac * (self.upper - self.lower) + 1e-9)


@dataclass(frozen=True)
class TwoStageHeadSteps(_Annealed):
    """``upper`` steps for the first half of the AR iterations, ``lower`` for the second half."""

    def __call__(self, iteration: int, iterations: int) -> int:
        _progress(iteration, iterations)
        return self.upper if iteration < iterations / 2 else self.lower


@dataclass(frozen=True)
class FixedHeadSteps:
    """The same ``steps`` at every iteration (the baseline with many steps, or the few-steps control)."""

    steps: int = 50
    t_max: int = CLIP_TIMESTEP

    def __post_init__(self) -> None:
        _check(self.steps, self.steps)

    def __call__(self, iteration: int, iterations: int) -> int:
        _progress(iteration, iterations)
        return self.steps


SCHEDULES = {"linear": LinearHeadSteps, "cosine": CosineHeadSteps, "two-stage": TwoStageHeadSteps}


def make_schedule(strategy: str, upper: int, lower: int) -> LinearHeadSteps | CosineHeadSteps | TwoStageHeadSteps | FixedHeadSteps:
    """The schedule named ``strategy`` (linear, cosine, two-stage, constant = ``lower`` throughout)."""
    if strategy == "constant":
        return FixedHeadSteps(lower)
    if strategy not in SCHEDULES:
        raise ValueError(f"unknown annealing strategy {strategy!r}; choose one of {[*SCHEDULES, 'constant']}")
    return SCHEDULES[strategy](upper, lower)


def total_head_steps(schedule: LinearHeadSteps | CosineHeadSteps | TwoStageHeadSteps | FixedHeadSteps,
                     iterations: int) -> int:
    """Σ_k T(k): the head's network evaluations per token group over a whole MAR run."""
    return sum(schedule(k, iterations) for k in range(iterations))
