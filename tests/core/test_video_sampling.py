"""Flow samplers for video: shifted schedules and exactness on straight flows."""

import pytest
import torch

from fewstep.nodes.core.denoiser import Denoiser, FlowSchedule
from fewstep.nodes.core.video_sampling import (
    VIDEO_SAMPLERS,
    get_video_sampler,
    key_sigmas,
    sample_flow_consistency,
    sample_flow_euler,
    sample_flow_heun,
    shifted_sigmas,
)


@pytest.mark.parametrize("shift", [0.5, 1.0, 3.0, 7.0])
@pytest.mark.parametrize("steps", [1, 5, 50])
def test_shifted_schedule_endpoints_and_order(steps, shift):
    s = shifted_sigmas(steps, shift)
    assert len(s) == steps + 1 and float(s[0]) == 1.0 and float(s[-1]) == 0.0
    assert (s[1:] < s[:-1]).all()


def test_shift_one_is_uniform_and_larger_shift_keeps_more_noise():
    torch.testing.assert_close(shifted_sigmas(4, 1.0), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    assert (shifted_sigmas(10, 7.0)[1:-1] > shifted_sigmas(10, 3.0)[1:-1]).all()


def test_accvideo_key_timesteps():
    # AccVideo (arXiv 2503.19462, Sec. 4) lists t' = 1 > 0.9651 > 0.9130 > 0.8235 > 0.6363 > 0: the shift-7 grid
    # at indices 0, 10, ..., 50 of 50 steps. The formula 7u / (1 + 6u) at u = 0.8 gives 0.96552 (the paper's
    # 0.9651 looks like a slip; the other four agree to 4 digits); also equal to a 5-step schedule at shift 7
    keys = key_sigmas([0, 10, 20, 30, 40, 50], 50, 7.0)
    torch.testing.assert_close(keys, torch.tensor([1.0, 0.96552, 0.91304, 0.82353, 0.63636, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(keys, shifted_sigmas(5, 7.0))
    with pytest.raises(ValueError, match="increase"):
        key_sigmas([0, 20, 10, 50])


def _point_flow(target):
    """The exact denoiser of a one-point data set: x0 = target whatever x (straight paths)."""
    return Denoiser(lambda x_in, t, cond: (x_in - target) / (t / 1000).view(-1, 1, 1, 1, 1), "flow", FlowSchedule())


@pytest.mark.parametrize("sampler", [sample_flow_euler, sample_flow_heun])
@pytest.mark.parametrize("steps", [1, 3, 50])
def test_ode_samplers_recover_the_target_of_a_straight_flow(sampler, steps):
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 3, 4, 8, 8, generator=g)
    noise = torch.randn(2, 3, 4, 8, 8, generator=g)
    out = sampler(_point_flow(target), noise, shifted_sigmas(steps, 3.0))
    torch.testing.assert_close(out, target, rtol=0, atol=1e-5)


def test_euler_is_first_order_on_a_curved_flow():
    """x0(x, sigma) = x / 2 (not constant along paths): halving the step halves Euler's error."""
    den = Denoiser(lambda x_in, t, cond: x_in - (t / 1000).view(-1, 1) * 0 - x_in / 2 / (t / 1000).view(-1, 1)
                   * (t / 1000).view(-1, 1), "flow", FlowSchedule())
    # model output v = x / 2 / 1 (flow): x0 = x - sigma v; dx/dsigma = v = x / 2 => x(0) = x(1) e^{-1/2}
    x = torch.ones(1, 1)
    exact = x * torch.exp(torch.tensor(-0.5))
    errors = [float((sample_flow_euler(den, x, shifted_sigmas(n)) - exact).abs()) for n in (10, 20, 40)]
    assert 1.8 < errors[0] / errors[1] < 2.2 and 1.8 < errors[1] / errors[2] < 2.2


def test_consistency_sampler_returns_the_last_prediction_and_uses_the_generator():
    target = torch.full((1, 2, 4, 4, 4), 0.25)
    calls = []

    def denoiser(x, sigma, cond):
        calls.append(float(sigma))
        return target + 0.0 * x

    out = sample_flow_consistency(denoiser, torch.randn_like(target), shifted_sigmas(4, 3.0),
                                  generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, target)
    assert len(calls) == 4 and calls[0] == 1.0


def test_callback_registry_and_bad_schedules():
    seen = []
    sample_flow_euler(lambda x, s, c: x * 0, torch.zeros(1, 2), shifted_sigmas(3), callback=seen.append)
    assert [d["i"] for d in seen] == [0, 1, 2] and set(seen[0]) == {"i", "x", "sigma", "sigma_next", "denoised"}
    assert get_video_sampler("flow_euler") is sample_flow_euler and set(VIDEO_SAMPLERS) >= {"flow_euler"}
    with pytest.raises(ValueError, match="unknown video sampler"):
        get_video_sampler("euler")
    with pytest.raises(ValueError, match="down to 0"):
        sample_flow_euler(lambda x, s, c: x, torch.zeros(1), torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="steps"):
        shifted_sigmas(0)
