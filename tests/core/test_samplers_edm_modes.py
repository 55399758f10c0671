"""ModelSamplingContinuousEDM's modes (issue #15): eps, v_prediction, edm and cosmos_rflow, each checked against
ComfyUI's model_sampling formulas (calculate_input, timestep, calculate_denoised, noise_scaling) on a toy
network, and run through a sampler."""

from __future__ import annotations

import math

import pytest
import torch

from fewstep.nodes.core.denoiser import CosmosRFlowSchedule, Denoiser, DiscreteVPSchedule
from fewstep.nodes.core.model_sampling import model_sampling_edm
from fewstep.nodes.core.samplers import get_sampler
from fewstep.nodes.core.schedules import karras

SIGMAS = torch.tensor([80.0, 14.6, 3.0, 0.7, 0.05])


def _net(x_in: torch.Tensor, t: torch.Tensor, cond: object) -> torch.Tensor:
    """Any smooth function of the scaled input and the timestep."""
    return torch.tanh(x_in) * (1 + 0.3 * t.reshape(-1, 1, 1, 1)) + 0.1 * t.reshape(-1, 1, 1, 1)


def _comfy(mode: str, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """ComfyUI: ModelSamplingContinuousEDM (or ModelSamplingCosmosRFlow) with EPS / V_PREDICTION / EDM /
    COSMOS_RFLOW, sigma_data 1 (0.5 for edm)."""
    s = sigma.reshape(-1, 1, 1, 1)
    if mode == "cosmos_rflow":
        frac = s / (s + 1)
        out = _net(x * (1 - frac), sigma / (sigma + 1), None)
        return x * (1 - frac) - out * frac
    sd = 0.5 if mode == "edm" else 1.0
    out = _net(x / (s**2 + sd**2) ** 0.5, 0.25 * sigma.log(), None)
    if mode == "eps":
        return x - out * s
    if mode == "v_prediction":
        return x * sd**2 / (s**2 + sd**2) - out * s * sd / (s**2 + sd**2) ** 0.5
    return x * sd**2 / (s**2 + sd**2) + out * s * sd / (s**2 + sd**2) ** 0.5


@pytest.mark.parametrize("mode", ["eps", "v_prediction", "edm", "cosmos_rflow"])
def test_denoiser_matches_comfyuis_model_sampling(mode: str) -> None:
    base = Denoiser(_net, "eps", DiscreteVPSchedule.from_config())
    model = model_sampling_edm(base, mode, 120.0, 0.002)
    x = torch.randn(len(SIGMAS), 2, 3, 3, generator=torch.Generator().manual_seed(0)) * 5
    torch.testing.assert_close(model(x, SIGMAS), _comfy(mode, x, SIGMAS), rtol=1e-5, atol=1e-5)
    # noise_scaling of all four: latent + sigma noise
    latent, noise = torch.ones(1, 2, 3, 3), torch.full((1, 2, 3, 3), 2.0)
    torch.testing.assert_close(model.noise_latent(latent, noise, 3.0), latent + 3.0 * noise)
    out = get_sampler("euler")(model, x[:1] * 120, karras(model.schedule, 6))
    assert torch.isfinite(out).all()


def test_edm_modes_schedules() -> None:
    base = Denoiser(_net, "eps", DiscreteVPSchedule.from_config())
    edm = model_sampling_edm(base, "edm", 80.0, 0.002)
    assert edm.prediction == "edm" and edm.schedule.sigma_data == 0.5
    assert float(edm.schedule.timestep(torch.tensor(math.e**4))) == pytest.approx(1.0)
    cosmos = model_sampling_edm(base, "cosmos_rflow", 80.0, 0.002).schedule
    assert isinstance(cosmos, CosmosRFlowSchedule)
    torch.testing.assert_close(cosmos.sigma_at(cosmos.timestep(SIGMAS)), SIGMAS, rtol=1e-5, atol=0)
    assert float(cosmos.sigma_at(torch.tensor(0.9999))) == 80.0                 # capped at sigma_max
    with pytest.raises(ValueError, match="latent format"):
        model_sampling_edm(base, "edm_playground_v2.5", 80.0, 0.002)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        model_sampling_edm(base, "edm", 0.002, 80.0)


def test_edm_preconditioning_recovers_the_data_from_the_ideal_output() -> None:
    # with F = (x0 - c_skip x) / c_out (EDM eq. 7 solved for the target), D returns x0 at every sigma
    base = Denoiser(_net, "eps", DiscreteVPSchedule.from_config())
    x0 = torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([50.0, 5.0, 0.5, 0.01])
    s = sigma.reshape(-1, 1, 1, 1)

    def ideal(x_in: torch.Tensor, t: torch.Tensor, cond: object) -> torch.Tensor:
        x = x_in * (s**2 + 0.25) ** 0.5
        return (x0 - 0.25 / (s**2 + 0.25) * x) / (s * 0.5 / (s**2 + 0.25) ** 0.5)

    model = model_sampling_edm(base.clone(model_fn=ideal), "edm", 80.0, 0.002)
    x = x0 + s * torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(model(x, sigma), x0, rtol=1e-4, atol=1e-4)


def test_percent_to_sigma_of_edm_schedules_is_log_linear() -> None:
    # ComfyUI's ModelSamplingContinuousEDM.percent_to_sigma: exp((ln smax - ln smin)(1 - p) + ln smin); it sets
    # sa_solver's SDE window and ConditioningSetTimestepRange on EDM models
    from fewstep.nodes.core.conditioning import percent_to_sigma

    base = Denoiser(_net, "eps", DiscreteVPSchedule.from_config())
    for mode in ("edm", "cosmos_rflow"):
        schedule = model_sampling_edm(base, mode, 80.0, 0.002).schedule
        for p in (0.2, 0.5, 0.8):
            expected = math.exp((math.log(80.0) - math.log(0.002)) * (1 - p) + math.log(0.002))
            assert percent_to_sigma(schedule, p) == pytest.approx(expected, rel=1e-9)
        assert percent_to_sigma(schedule, 0.0) == float("inf") and percent_to_sigma(schedule, 1.0) == 0.0


def test_model_sampling_continuous_v_matches_comfyui() -> None:
    # ComfyUI: ModelSamplingContinuousV + V_PREDICTION, sigma_data 1: x_in = x / sqrt(s^2 + 1), t = atan(s) 2/pi,
    # D = x / (s^2 + 1) - out s / sqrt(s^2 + 1)
    from fewstep.nodes.core.nodes_sampling import ModelSamplingContinuousV

    base = Denoiser(_net, "eps", DiscreteVPSchedule.from_config())
    model = ModelSamplingContinuousV.execute(base, "v_prediction", 500.0, 0.03).values[0]
    x = torch.randn(len(SIGMAS), 2, 3, 3, generator=torch.Generator().manual_seed(3)) * 5
    s = SIGMAS.reshape(-1, 1, 1, 1)
    out = _net(x / (s**2 + 1) ** 0.5, SIGMAS.atan() / math.pi * 2, None)
    torch.testing.assert_close(model(x, SIGMAS), x / (s**2 + 1) - out * s / (s**2 + 1) ** 0.5, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.schedule.sigma_at(model.schedule.timestep(SIGMAS)), SIGMAS, rtol=1e-4, atol=0)
    assert model.schedule.sigma_max == 500.0
