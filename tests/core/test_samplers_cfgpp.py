"""The CFG++ samplers (issue #15): each checked step for step against a transcription of ComfyUI's
k-diffusion loop (its structure: t_fn / sigma_fn lambdas, get_ancestral_step, the post-CFG
``uncond_denoised``) on a toy guided model: the exact VP mixture denoiser shifted by +c (positive prompt)
or -c (negative prompt), combined by ``CFGGuider`` on our side and by hand (D_u + w (D_c - D_u)) in the
reference, with the same noise draws."""

from __future__ import annotations

import pytest
import torch
from core_mixture import posterior_mean, sample

from fewstep.nodes.core import schedules as S
from fewstep.nodes.core.denoiser import Denoiser, DiscreteVPSchedule
from fewstep.nodes.core.guidance import BasicGuider, CFGGuider
from fewstep.nodes.core.samplers import SAMPLERS, get_sampler

SCALE = 1.6
SHIFT = 0.4


def _prompted_denoiser() -> Denoiser:
    """An eps-prediction network whose x0 is the mixture posterior mean plus the prompt's ``shift``."""
    schedule = DiscreteVPSchedule.from_config()

    def model_fn(x_in: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        s = schedule.sigma_at(t).reshape(-1, *([1] * (x_in.ndim - 1)))
        x = x_in * (s**2 + 1).sqrt()
        x0 = posterior_mean(x, s, torch.ones_like(s)) + cond["shift"].reshape(-1, 1, 1, 1)
        return (x - x0) / s

    return Denoiser(model_fn, "eps", schedule)


def _guider(model: Denoiser) -> CFGGuider:
    return CFGGuider(model, {"shift": torch.tensor([[SHIFT]])}, {"shift": torch.tensor([[-SHIFT]])}, SCALE)


def _by_hand(model: Denoiser):
    """ComfyUI's model call as the reference sees it: (denoised, uncond_denoised)."""
    def call(x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        d_c = model(x, sigma, {"shift": torch.full((n, 1), SHIFT)})
        d_u = model(x, sigma, {"shift": torch.full((n, 1), -SHIFT)})
        return d_u + SCALE * (d_c - d_u), d_u
    return call


def _ancestral_step(sigma_from, sigma_to, eta):
    if not eta:
        return sigma_to, torch.zeros(())
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    return (sigma_to**2 - sigma_up**2) ** 0.5, sigma_up


def _to_d(x, sigma, denoised):
    return (x - denoised) / sigma


def ref_euler_ancestral_cfg_pp(model, x, sigmas, g, eta=1.0, s_noise=1.0):
    for i in range(len(sigmas) - 1):
        denoised, uncond = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        alpha_s = alpha_t = 1.0                                     # VP in EDM space
        d = _to_d(x, sigmas[i], alpha_s * uncond)
        sigma_down, sigma_up = _ancestral_step(sigmas[i] / alpha_s, sigmas[i + 1] / alpha_t, eta)
        x = alpha_t * denoised + alpha_t * sigma_down * d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * torch.randn(x.shape, generator=g) * s_noise * sigma_up
    return x


def ref_euler_cfg_pp(model, x, sigmas, g):
    return ref_euler_ancestral_cfg_pp(model, x, sigmas, g, eta=0.0, s_noise=0.0)


def ref_dpmpp_2m_cfg_pp(model, x, sigmas, g):
    t_fn = lambda sigma: sigma.log().neg()  # noqa: E731
    old_uncond = None
    for i in range(len(sigmas) - 1):
        denoised, uncond = model(x, sigmas[i])
        t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = t_next - t
        if old_uncond is None or sigmas[i + 1] == 0:
            mix = -torch.exp(-h) * uncond
        else:
            r = (t - t_fn(sigmas[i - 1])) / h
            mix = -torch.exp(-h) * uncond - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond)
        x = denoised + mix + torch.exp(-h) * x
        old_uncond = uncond
    return x


def ref_dpmpp_2s_ancestral_cfg_pp(model, x, sigmas, g, eta=1.0, s_noise=1.0):
    sigma_fn = lambda t: t.neg().exp()  # noqa: E731
    t_fn = lambda sigma: sigma.log().neg()  # noqa: E731
    for i in range(len(sigmas) - 1):
        denoised, uncond = model(x, sigmas[i])
        guidance = denoised - uncond
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0:
            x = x + _to_d(x, sigmas[i], uncond) * (sigma_down - sigmas[i])
        else:
            t, t_next = t_fn(sigmas[i]), t_fn(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_2 = (sigma_fn(s) / sigma_fn(t)) * x - (-h / 2).expm1() * uncond
            _, uncond_2 = model(x_2, sigma_fn(s))
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * uncond_2
        if sigmas[i + 1] > 0:
            x = x + torch.randn(x.shape, generator=g) * s_noise * sigma_up
        x = x + guidance
    return x


def ref_res_multistep_cfg_pp(model, x, sigmas, g, eta=0.0, s_noise=1.0):
    sigma_fn = lambda t: t.neg().exp()  # noqa: E731
    t_fn = lambda sigma: sigma.log().neg()  # noqa: E731
    phi1_fn = lambda t: torch.expm1(t) / t  # noqa: E731
    phi2_fn = lambda t: (phi1_fn(t) - 1.0) / t  # noqa: E731
    old_sigma_down = old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised, uncond = model(x, sigmas[i])
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0 or old_denoised is None:
            x = denoised + _to_d(x, sigmas[i], uncond) * sigma_down
        else:
            t, t_old, t_next, t_prev = t_fn(sigmas[i]), t_fn(old_sigma_down), t_fn(sigma_down), t_fn(sigmas[i - 1])
            h = t_next - t
            c2 = (t_prev - t_old) / h
            b1 = torch.nan_to_num(phi1_fn(-h) - phi2_fn(-h) / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2_fn(-h) / c2, nan=0.0)
            x = x + (denoised - uncond)
            x = sigma_fn(h) * x + h * (b1 * uncond + b2 * old_denoised)
        if sigmas[i + 1] > 0 and eta:
            x = x + torch.randn(x.shape, generator=g) * s_noise * sigma_up
        old_denoised, old_sigma_down = uncond, sigma_down
    return x


def ref_gradient_estimation_cfg_pp(model, x, sigmas, g, ge_gamma=2.0):
    old_d = None
    for i in range(len(sigmas) - 1):
        denoised, uncond = model(x, sigmas[i])
        d = _to_d(x, sigmas[i], uncond)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * sigmas[i + 1]
            if i >= 1:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


CASES = [
    ("euler_cfg_pp", ref_euler_cfg_pp, {}),
    ("euler_ancestral_cfg_pp", ref_euler_ancestral_cfg_pp, {}),
    ("dpmpp_2m_cfg_pp", ref_dpmpp_2m_cfg_pp, {}),
    ("dpmpp_2s_ancestral_cfg_pp", ref_dpmpp_2s_ancestral_cfg_pp, {}),
    ("res_multistep_cfg_pp", ref_res_multistep_cfg_pp, {}),
    ("res_multistep_ancestral_cfg_pp", ref_res_multistep_cfg_pp, {"eta": 1.0}),
    ("gradient_estimation_cfg_pp", ref_gradient_estimation_cfg_pp, {}),
]


@pytest.mark.parametrize(("name", "ref", "knobs"), CASES, ids=[c[0] for c in CASES])
def test_matches_comfyuis_loop(name, ref, knobs) -> None:
    model = _prompted_denoiser()
    sigmas = S.karras(model.schedule, 10).float()
    x = sample(512, torch.Generator().manual_seed(0), sigma=float(sigmas[0])).reshape(512, 1, 1, 1)
    ours = get_sampler(name)(_guider(model), x.clone(), sigmas, generator=torch.Generator().manual_seed(7))
    theirs = ref(_by_hand(model), x.clone(), sigmas, torch.Generator().manual_seed(7), **knobs)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)
    # CFG++ is not CFG: the same loop renoising with the guided prediction lands elsewhere
    cfg_only = ref(lambda x_, s_: (_by_hand(model)(x_, s_)[0],) * 2, x.clone(), sigmas,
                   torch.Generator().manual_seed(7), **knobs)
    assert (ours - cfg_only).abs().max() > 0.05


@pytest.mark.parametrize(("name", "base"), [("euler_cfg_pp", "euler"), ("dpmpp_2m_cfg_pp", "dpmpp_2m"),
                                            ("res_multistep_cfg_pp", "res_multistep"),
                                            ("gradient_estimation_cfg_pp", "gradient_estimation")])
def test_without_guidance_cfg_pp_is_its_base_sampler(name: str, base: str) -> None:
    # a bare Denoiser and a BasicGuider have no unconditional branch: D_u = D_g
    model = _prompted_denoiser()
    sigmas = S.karras(model.schedule, 8).float()
    x = sample(256, torch.Generator().manual_seed(3), sigma=float(sigmas[0])).reshape(256, 1, 1, 1)
    guider = BasicGuider(model, {"shift": torch.tensor([[SHIFT]])})
    ours = SAMPLERS[name](guider, x.clone(), sigmas)
    torch.testing.assert_close(ours, SAMPLERS[base](guider, x.clone(), sigmas), rtol=0, atol=2e-5)


def test_cfg_pp_needs_a_guider_that_offers_the_unconditional_prediction() -> None:
    model = _prompted_denoiser()

    class Opaque:                           # a guider-like callable without predict_with_uncond
        schedule = model.schedule

        def __call__(self, x, sigma, cond=None):
            return model(x, sigma, {"shift": torch.zeros(x.shape[0], 1)})

    with pytest.raises(ValueError, match="unconditional prediction"):
        SAMPLERS["euler_cfg_pp"](Opaque(), torch.zeros(2, 1, 1, 1), S.karras(model.schedule, 2).float())


def test_cfg_guider_runs_the_negative_at_scale_one_for_cfg_pp() -> None:
    model = _prompted_denoiser()
    guider = CFGGuider(model, {"shift": torch.tensor([[SHIFT]])}, {"shift": torch.tensor([[-SHIFT]])}, 1.0)
    x, sigma = torch.zeros(4, 1, 1, 1), torch.tensor(1.0)
    guided, uncond = guider.predict_with_uncond(x, sigma)
    torch.testing.assert_close(guided, guider(x, sigma))
    torch.testing.assert_close(uncond - guided, torch.full_like(x, -2 * SHIFT), rtol=0, atol=1e-5)
