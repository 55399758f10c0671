"""DiSA head-step schedules at their endpoints, their shapes between, and the 950-clipped head timesteps."""

from __future__ import annotations

import pytest

from fewstep.nodes.disa.schedules import (
    CosineHeadSteps,
    FixedHeadSteps,
    LinearHeadSteps,
    TwoStageHeadSteps,
    make_schedule,
    total_head_steps,
)


@pytest.mark.parametrize("cls", [LinearHeadSteps, CosineHeadSteps, TwoStageHeadSteps])
def test_annealed_schedules_start_at_upper_and_end_at_lower(cls: type) -> None:
    sched = cls(upper=50, lower=5)
    assert sched(0, 64) == 50
    assert sched(63, 64) == 5
    steps = [sched(k, 64) for k in range(64)]
    assert all(a >= b for a, b in zip(steps, steps[1:], strict=False))   # never more steps later


def test_linear_middle_and_paper_formula() -> None:
    sched = LinearHeadSteps(50, 5)
    # T(k) = lower + floor((1 − k/(K−1))(upper − lower)): k = 32 of 65 is exactly half way
    assert sched(32, 65) == 5 + 22
    assert sched(1, 10) == 5 + 40


def test_cosine_stays_above_linear_early_and_below_late() -> None:
    lin, cos = LinearHeadSteps(50, 5), CosineHeadSteps(50, 5)
    assert cos(8, 64) > lin(8, 64)
    assert cos(55, 64) < lin(55, 64)


def test_two_stage_switches_at_half() -> None:
    sched = TwoStageHeadSteps(40, 4)
    assert [sched(k, 8) for k in range(8)] == [40] * 4 + [4] * 4


def test_constant_control_and_single_iteration() -> None:
    assert make_schedule("constant", 50, 5)(0, 64) == 5
    assert isinstance(make_schedule("constant", 50, 5), FixedHeadSteps)
    assert LinearHeadSteps(50, 5)(0, 1) == 50


def test_annealing_spends_about_a_fifth_of_the_constant_steps() -> None:
    # the paper's MAR setting: 64 iterations, 50 -> 5 against the 100-step baseline at 256 iterations
    annealed = total_head_steps(LinearHeadSteps(50, 5), 64)
    assert annealed == sum(5 + int((1 - k / 63) * 45 + 1e-9) for k in range(64))
    assert 0.25 < annealed / (64 * 100) < 0.3


def test_bad_arguments_are_value_errors() -> None:
    with pytest.raises(ValueError, match="lower <= upper"):
        LinearHeadSteps(4, 5)
    with pytest.raises(ValueError, match="iteration"):
        LinearHeadSteps()(64, 64)
    with pytest.raises(ValueError, match="unknown annealing"):
        make_schedule("exp", 50, 5)


def test_clip_at_950_reaches_the_head_sampler() -> None:
    from fewstep.nodes.disa.schedules import CLIP_TIMESTEP
    from fewstep.nodes.zoo.ar.models import respaced_timesteps

    ts = respaced_timesteps(5, CLIP_TIMESTEP)
    assert ts[-1] == 950 and ts[0] == 0 and len(ts) == 5
