"""The sampling nodes added for issue #15: Align Your Steps and the other SIGMAS producers checked against
ComfyUI's formulas (numpy transcriptions), and the sampler nodes' SAMPLER values run on the mixture denoiser."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from core_mixture import sample, vp_denoiser

from fewstep.nodes.core import nodes_sampling as N
from fewstep.nodes.core import schedules as S
from fewstep.nodes.core.samplers import get_sampler


def _ays_reference(levels, steps, denoise):
    total = steps if denoise >= 1 else round(steps * denoise)
    sigmas = list(levels)
    if steps + 1 != len(sigmas):
        xs, ys = np.linspace(0, 1, len(sigmas)), np.log(sigmas[::-1])
        sigmas = np.exp(np.interp(np.linspace(0, 1, steps + 1), xs, ys))[::-1].copy()
    sigmas = np.array(sigmas[-(total + 1):], dtype=np.float64)
    sigmas[-1] = 0
    return torch.tensor(sigmas, dtype=torch.float32)


@pytest.mark.parametrize(("model_type", "steps", "denoise"), [("SD1", 10, 1.0), ("SDXL", 10, 1.0), ("SDXL", 25, 1.0),
                                                               ("SD1", 4, 1.0), ("SVD", 30, 0.6), ("SD1", 20, 0.5)])
def test_align_your_steps_matches_comfyui(model_type: str, steps: int, denoise: float) -> None:
    ours = N.AlignYourStepsScheduler.execute(model_type, steps, denoise).values[0]
    theirs = _ays_reference(S.AYS_NOISE_LEVELS[model_type], steps, denoise)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)
    assert float(ours[-1]) == 0.0 and bool((ours[:-1].diff() < 0).all())
    assert N.AlignYourStepsScheduler.execute(model_type, steps, 0.0).values[0].numel() == 0


def test_align_your_steps_published_sd15_list() -> None:
    # the 10-step SD1.5 schedule of the AYS page, ending in 0 instead of sigma_min
    ours = S.align_your_steps("SD1", 10)
    assert ours[:3].tolist() == pytest.approx([14.6146412293, 6.4745760956, 3.8636745985])
    assert ours[-2].item() == pytest.approx(0.1515232662) and ours.shape == (11,)


def test_vp_laplace_and_beta_sampling_schedulers() -> None:
    vp = N.VPScheduler.execute(5, 19.9, 0.1, 0.001).values[0]
    t = np.linspace(1, 0.001, 5)
    ref = np.sqrt(np.expm1(19.9 * t**2 / 2 + 0.1 * t))
    np.testing.assert_allclose(vp[:-1].numpy(), ref, rtol=1e-6)
    assert vp[-1] == 0
    lap = N.LaplaceScheduler.execute(8, 14.6, 0.03, 0.0, 0.5).values[0]
    u = np.linspace(0, 1, 8)
    ref = np.clip(np.exp(-0.5 * np.sign(0.5 - u) * np.log(1 - 2 * np.abs(0.5 - u) + 1e-5)), 0.03, 14.6)
    np.testing.assert_allclose(lap.numpy(), ref, rtol=1e-6)
    model = vp_denoiser()
    beta = N.BetaSamplingScheduler.execute(model, 10, 0.6, 0.6).values[0]
    torch.testing.assert_close(beta, S.beta(model.schedule, 10, 0.6, 0.6).float())


def test_sigma_surgery_nodes() -> None:
    sigmas = torch.tensor([10.0, 5.0, 1.0, 0.0])
    assert N.SetFirstSigma.execute(sigmas, 136.0).values[0].tolist() == [136.0, 5.0, 1.0, 0.0]
    assert sigmas[0] == 10.0                                       # the input is not modified
    ext = N.ExtendIntermediateSigmas.execute(sigmas, 2, -1.0, 4.0, "linear").values[0]
    assert ext.tolist() == pytest.approx([10.0, 7.5, 5.0, 3.0, 1.0, 0.0])
    cos = N.ExtendIntermediateSigmas.execute(sigmas, 3, 6.0, 0.0, "cosine").values[0]
    f = [math.sin(math.pi / 6), math.sin(math.pi / 3)]
    assert cos.tolist() == pytest.approx([10.0, 5.0, 5 - 4 * f[0], 5 - 4 * f[1], 1.0, 1 - f[0], 1 - f[1], 0.0])
    model = vp_denoiser()
    assert N.SamplingPercentToSigma.execute(model, 0.0, False).values[0] == 999999999.9
    assert N.SamplingPercentToSigma.execute(model, 0.0, True).values[0] == pytest.approx(model.schedule.sigma_max)
    assert N.SamplingPercentToSigma.execute(model, 1.0, True).values[0] == pytest.approx(model.schedule.sigma_min)
    mid = N.SamplingPercentToSigma.execute(model, 0.5, False).values[0]
    assert mid == pytest.approx(float(model.schedule.sigma_at(torch.tensor(0.5 * 999.0))))


def _run(spec, n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    model = vp_denoiser()
    sigmas = S.karras(model.schedule, n).float()
    x = sample(64, torch.Generator().manual_seed(seed), sigma=float(sigmas[0])).reshape(64, 1, 1, 1)
    return spec(model, x, sigmas, generator=torch.Generator().manual_seed(3)), x


def test_sampler_nodes_build_the_named_samplers() -> None:
    cases = [
        (N.SamplerEulerAncestralCFGPP.execute(0.5, 1.0), get_sampler("euler_ancestral_cfg_pp", eta=0.5)),
        (N.SamplerEulerCFGpp.execute("regular"), get_sampler("euler_cfg_pp")),
        (N.SamplerDPMAdaptative.execute(3, 0.05, 0.0078, 0.05, 0.0, 1.0, 0.0, 0.81, 0.0, 1.0), get_sampler("dpm_adaptive")),
        (N.SamplerSEEDS2.execute("phi_2", 1.0, 1.0, 1.0), get_sampler("exp_heun_2_x0_sde")),
        (N.SamplerSASolver.execute(vp_denoiser(), 1.0, 0.2, 0.8, 1.0, 3, 4, True, False), get_sampler("sa_solver_pece")),
        (N.SamplerER_SDE.execute("ER-SDE", 3, 1.0, 1.0), get_sampler("er_sde")),
    ]
    for node_output, expected in cases:
        ours, _ = _run(node_output.values[0])
        torch.testing.assert_close(ours, _run(expected)[0], rtol=0, atol=1e-6)


def test_er_sde_node_variants() -> None:
    # the ODE variant with one stage is Euler (s(l) = l makes r = l'/l, x' = r x + (1 - r) x0); the
    # reverse-time SDE (s = l^(eta + 1)) differs from the default ER-SDE noise scale
    ode, _ = _run(N.SamplerER_SDE.execute("ODE", 1, 1.0, 1.0).values[0])
    torch.testing.assert_close(ode, _run(get_sampler("euler"))[0], rtol=0, atol=1e-5)
    sde, _ = _run(N.SamplerER_SDE.execute("Reverse-time SDE", 3, 1.0, 1.0).values[0])
    assert (sde - _run(get_sampler("er_sde"))[0]).abs().max() > 1e-3


def test_euler_cfg_pp_alternative_and_lcm_upscale() -> None:
    alt = N.SamplerEulerCFGpp.execute("alternative").values[0]
    ours, x = _run(alt)
    # without guidance (bare denoiser) D_u = D_g: d = (x - D)/s, plain Euler
    torch.testing.assert_close(ours, _run(get_sampler("euler"))[0], rtol=0, atol=1e-5)
    model = vp_denoiser()
    sigmas = S.karras(model.schedule, 4).float()
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * float(sigmas[0])
    up = N.SamplerLCMUpscale.execute(2.0, -1, "bilinear").values[0]
    out = up(model, x, sigmas, generator=torch.Generator().manual_seed(1))
    assert out.shape == (1, 1, 16, 16)                             # 2 upscale steps of 4: 8 -> 12 -> 16
    same = N.SamplerLCMUpscale.execute(1.0, -1, "bilinear").values[0]
    torch.testing.assert_close(same(model, x, sigmas, generator=torch.Generator().manual_seed(1)),
                               get_sampler("lcm")(model, x, sigmas, generator=torch.Generator().manual_seed(1)))
