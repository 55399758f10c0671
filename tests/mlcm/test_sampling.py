"""Milestone subsets, LCM's skip grid and the consistency sampler's contract."""

from __future__ import annotations

import pytest
import torch

from nodes.mlcm.sampling import (
    lcm_timesteps,
    milestone_timesteps,
    milestones,
    sample_consistency,
    sigmas_for_timesteps,
)
from nodes.mlcm.toy import make_teacher


def test_milestones_match_tlcm():
    assert milestones(8) == [999, 874, 749, 624, 499, 374, 249, 124, 0]
    assert milestones(1) == [999, 0]


@pytest.mark.parametrize(("steps", "expected"), [
    (1, [999]), (2, [999, 499]), (3, [999, 499, 124]), (4, [999, 749, 499, 124]),
    (8, [999, 874, 749, 624, 499, 374, 249, 124]),
])
def test_milestone_subsets_per_step_count(steps, expected):
    assert milestone_timesteps(steps, 8) == expected


def test_milestone_subsets_for_other_segment_counts_and_limits():
    assert milestone_timesteps(2, 4) == [999, 499]
    assert milestone_timesteps(1, 1) == [999]
    with pytest.raises(ValueError, match="1..4"):
        milestone_timesteps(8, 4)


def test_lcm_timesteps_follow_the_50_step_skip_grid():
    assert lcm_timesteps(1) == [999]
    assert lcm_timesteps(2) == [999, 499]
    assert lcm_timesteps(4) == [999, 759, 519, 279]
    assert all((t + 1) % 20 == 0 for t in lcm_timesteps(8))


def test_consistency_sampler_predicts_then_renoises_with_fresh_noise():
    schedule = make_teacher().schedule
    sigmas = sigmas_for_timesteps(schedule, [999, 499])
    seen = []

    def denoiser(x, sigma, cond):
        seen.append((x.clone(), sigma.clone()))
        return torch.full_like(x, 2.0)     # a constant x̂0

    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    out = sample_consistency(denoiser, x, sigmas, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out, torch.full_like(x, 2.0))            # the last x̂0 is returned
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(seen[1][0], 2.0 + sigmas[1] * z)  # re-noised to σ_1 with the generator's noise
    assert seen[1][1][0] == sigmas[1] and len(seen) == 2
