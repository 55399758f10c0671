"""Brownian-tree noise for the SDE samplers (k-diffusion ``BrownianTreeNoiseSampler``; ComfyUI's default).

An SDE sampler needs, for each step sigma -> sigma', a standard normal z. Drawing z fresh per step makes
the result a different random draw at every step count. Instead we fix ONE Brownian path W(t) on
t in [sigma_min, sigma_max] per seed and use its normalised increment over the step,

    z(sigma, sigma') = (W(sigma') - W(sigma)) / sqrt(sigma - sigma')                          (1)

so that 10 and 20 steps integrate the same path: the SDE solution is then a (strong) limit as steps grow,
and images change little with the step count. Increments over disjoint steps are independent N(0, 1)
and z over [a, c] is the variance-weighted sum of z over [a, b] and [b, c] (the Brownian property).

The path is ``torchsde.BrownianInterval`` (Li et al. 2020, "Scalable gradients for SDEs", App. D; Kidger
et al. 2021, "Efficient and accurate gradients for neural SDEs", Sec. 4: the Brownian interval) in its
"halfway tree" mode with tol = 1e-6 and a pool of 24: the same configuration as k-diffusion's
``BrownianTree``, so for one seed our z equals ComfyUI's (``tests/core/test_samplers_sde.py`` checks it).
The tree lives on the CPU (ComfyUI's non-"_gpu" samplers), so a seed gives the same noise on any device.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def seed_of(generator: torch.Generator | None) -> int:
    """The tree's seed: the generator's seed (equal on a CPU generator and the CUDA one the fast path
    swaps in for it), or a fresh draw from torch's global RNG when no generator is given."""
    if generator is not None:
        return int(generator.initial_seed())
    return int(torch.randint(0, 2**62, (1,)).item())


class BrownianTreeNoise:
    """A :data:`NoiseSampler` ``(sigma, sigma_next) -> z`` [x.shape] following eq. (1).

    Args:
        x: a tensor of the sample's shape, dtype and device (z comes back like it).
        sigmas: the sampler's schedule [n + 1]; the path spans its positive range.
        seed: the path's entropy (any int >= 0).
        tol: the halfway tree's search tolerance in sigma units (k-diffusion: 1e-6).
    """

    def __init__(self, x: torch.Tensor, sigmas: torch.Tensor, seed: int, *, tol: float = 1e-6,
                 pool_size: int = 24) -> None:
        positive = sigmas[sigmas > 0].detach().float().cpu()
        if positive.numel() == 0:
            raise ValueError("BrownianTreeNoise: sigmas has no positive entry, there is no step to noise")
        self.lo, self.hi = float(positive.min()), float(positive.max())
        self.shape, self.dtype, self.device = tuple(x.shape), x.dtype, x.device
        self.seed, self.tol, self.pool_size = int(seed), tol, pool_size
        self._interval = None  # built on first use: a one-step schedule never asks for noise

    def _path(self):
        if self._interval is None:
            try:
                import torchsde
            except ImportError as err:  # pragma: no cover - depends on the environment
                raise ImportError("the SDE samplers (dpmpp_sde, dpmpp_2m_sde, dpmpp_3m_sde) need torchsde for "
                                  "their Brownian-tree noise: pip install torchsde") from err
            hi = self.hi if self.hi > self.lo else self.lo + 1.0
            self._interval = torchsde.BrownianInterval(
                t0=self.lo, t1=hi, size=self.shape, dtype=torch.float32, device="cpu", entropy=self.seed,
                tol=self.tol, pool_size=self.pool_size, halfway_tree=True)
        return self._interval

    def __call__(self, sigma: torch.Tensor | float, sigma_next: torch.Tensor | float) -> torch.Tensor:
        # clamp into the path's span, which torchsde stores rounded to log10(1 / tol) digits
        digits = -int(math.log10(self.tol))
        lo, hi = max(self.lo, round(self.lo, digits)), min(self.hi, round(self.hi, digits))
        a = min(max(float(sigma_next), lo), hi)
        b = min(max(float(sigma), lo), hi)
        if not b > a:
            raise ValueError(f"BrownianTreeNoise: need sigma > sigma_next inside [{self.lo:g}, {self.hi:g}], "
                             f"got sigma={float(sigma):g}, sigma_next={float(sigma_next):g}")
        increment = -self._path()(a, b)                       # W(a) - W(b): forward in sampling time
        return (increment / math.sqrt(b - a)).to(device=self.device, dtype=self.dtype)


def default_noise(noise_sampler: NoiseSampler | None, x: torch.Tensor, sigmas: torch.Tensor,
                  generator: torch.Generator | None) -> NoiseSampler:
    """The noise an SDE sampler uses: the caller's ``noise_sampler`` if given, else a Brownian tree
    seeded by ``generator``."""
    if noise_sampler is not None:
        return noise_sampler
    return BrownianTreeNoise(x, sigmas, seed_of(generator))


def independent_noise(x: torch.Tensor, generator: torch.Generator | None) -> NoiseSampler:
    """Fresh N(0, I) per call, ignoring the interval (the pre-tree behaviour; tests contrast the two)."""

    def draw(sigma: torch.Tensor | float, sigma_next: torch.Tensor | float) -> torch.Tensor:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    return draw
