"""Milestone subsets, LCM's skip grid and the consistency sampler's contract."""

from __future__ import annotations

import pytest
import torch

from fewstep.nodes.core.train.consistency import SCHEDULERS, lcm_timesteps, milestone_timesteps, milestones


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


def test_mlcm_sigmas_drive_cores_lcm_sampler_through_the_milestones():
    from fewstep.nodes.core.denoiser import DiscreteVPSchedule
    from fewstep.nodes.core.samplers import sample_lcm

    schedule = DiscreteVPSchedule.from_config()
    sigmas = SCHEDULERS["mlcm_milestones"](schedule, 4)
    torch.testing.assert_close(sigmas[:-1], schedule.sigmas[[999, 749, 499, 124]])
    assert sigmas[-1] == 0
    seen = []

    class Const:
        schedule = DiscreteVPSchedule.from_config()

        def __call__(self, x, sigma, cond):
            seen.append(float(torch.as_tensor(sigma).reshape(-1)[0]))
            return torch.full_like(x, 2.0)      # a constant x̂0

    out = sample_lcm(Const(), torch.randn(2, 3) * sigmas[0], sigmas, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, torch.full((2, 3), 2.0)) and seen == pytest.approx(sigmas[:-1].tolist())
    lcm = SCHEDULERS["lcm_skip"](schedule, 4)
    torch.testing.assert_close(lcm[:-1], schedule.sigmas[[999, 759, 519, 279]])
