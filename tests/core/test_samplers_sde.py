"""Brownian-tree noise (fewstep/nodes/core/brownian.py) and what it buys the SDE samplers (ComfyUI sampler gaps
after issue #4).

The noise of step sigma -> sigma' is the normalised increment of ONE Brownian path per seed, so the SDE
samplers integrate the same path at any step count (ComfyUI / k-diffusion behaviour).
"""

from __future__ import annotations

import math

import pytest
import torch
from core_mixture import sample, vp_denoiser

from fewstep.nodes.core import schedules as S
from fewstep.nodes.core.brownian import BrownianTreeNoise, independent_noise
from fewstep.nodes.core.samplers import SAMPLERS

torchsde = pytest.importorskip("torchsde")


def test_noise_equals_k_diffusions_brownian_tree_for_the_same_seed() -> None:
    # k-diffusion / ComfyUI: torchsde.BrownianTree(sigma_min, 0, sigma_max, entropy=seed, tol=1e-6,
    # pool_size=24), queried sorted, sign -1 for (sigma, sigma_next), divided by sqrt(sigma - sigma_next).
    sigmas = S.karras(vp_denoiser().schedule, 10)
    x = torch.zeros(2, 4, 8, 8)
    ours = BrownianTreeNoise(x, sigmas, 42)
    lo, hi = sigmas[sigmas > 0].min(), sigmas[sigmas > 0].max()
    tree = torchsde.BrownianTree(lo, torch.zeros_like(x), hi, entropy=42, tol=1e-6, pool_size=24)
    for i in range(1, 9):                                 # (the top and bottom steps touch the rounded ends)
        s, s_next = sigmas[i], sigmas[i + 1]
        reference = -tree(s_next, s) / (s - s_next).sqrt()
        # measured gap <= 1.5e-5 on values ~N(0, 1): float32 rounding (the tree sums sub-interval
        # increments, grouped by the query history; the sqrt is float64 here). Another path: O(1) gaps.
        torch.testing.assert_close(ours(s, s_next), reference, rtol=0, atol=1e-4)


def test_increments_are_standard_normal_independent_and_additive() -> None:
    sigmas = torch.tensor([8.0, 4.0, 1.0, 0.25, 0.0])
    noise = BrownianTreeNoise(torch.zeros(20000), sigmas, 7)
    z1, z2 = noise(sigmas[0], sigmas[1]), noise(sigmas[1], sigmas[2])
    for z in (z1, z2):                                    # N = 20000: std error of mean / std ~0.007
        assert abs(float(z.mean())) < 0.03 and abs(float(z.std()) - 1) < 0.03
    assert abs(float((z1 * z2).mean())) < 0.03           # disjoint steps: uncorrelated
    # one path: the increment over [1, 8] is the sum of those over [1, 4] and [4, 8]
    whole = noise(sigmas[0], sigmas[2]) * math.sqrt(7.0)
    torch.testing.assert_close(whole, z1 * 2.0 + z2 * math.sqrt(3.0), rtol=0, atol=1e-5)
    again = BrownianTreeNoise(torch.zeros(20000), sigmas, 7)
    assert torch.equal(again(sigmas[1], sigmas[2]), z2)  # a seed fixes the path, whatever was asked before
    assert not torch.equal(BrownianTreeNoise(torch.zeros(20000), sigmas, 8)(sigmas[1], sigmas[2]), z2)


def test_bad_queries_get_clear_errors() -> None:
    with pytest.raises(ValueError, match="no positive entry"):
        BrownianTreeNoise(torch.zeros(3), torch.zeros(2), 0)
    noise = BrownianTreeNoise(torch.zeros(3), torch.tensor([2.0, 1.0, 0.0]), 0)
    with pytest.raises(ValueError, match="need sigma > sigma_next"):
        noise(1.0, 2.0)


# dpmpp_3m_sde draws its noise exactly as dpmpp_2m_sde (measured gaps 0.05 / 0.08 as well)
@pytest.mark.parametrize("name", ["dpmpp_2m_sde", "dpmpp_sde"])
def test_sde_samplers_follow_one_path_across_step_counts(name: str) -> None:
    # Same seed, same start, 25 / 50 / 100 Karras steps (same sigma range, so the same path). Mean
    # per-sample gap to 100 steps, measured on the VP mixture with N = 2000: 0.05-0.09 at 50 steps and
    # 0.08-0.16 at 25 (strong convergence), against 1.7-1.8 with fresh noise per step (independent draws).
    d = vp_denoiser()
    x = sample(2000, torch.Generator().manual_seed(5), sigma=float(S.karras(d.schedule, 2)[0]))
    runs = {n: SAMPLERS[name](d, x, S.karras(d.schedule, n), generator=torch.Generator().manual_seed(9))
            for n in (25, 50, 100)}
    fresh = [SAMPLERS[name](d, x, S.karras(d.schedule, n), noise_sampler=independent_noise(x, torch.Generator()
             .manual_seed(n))) for n in (50, 100)]
    gap_25, gap_50 = ((runs[n] - runs[100]).abs().mean().item() for n in (25, 50))
    gap_fresh = (fresh[0] - fresh[1]).abs().mean().item()
    assert gap_50 < 0.15 and gap_50 < gap_25, (name, gap_25, gap_50)
    assert gap_fresh > 10 * gap_50, (name, gap_fresh, gap_50)
