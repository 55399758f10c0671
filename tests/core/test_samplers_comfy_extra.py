"""ComfyUI's newer samplers and schedulers (issue #15 item 3): res_multistep(_ancestral), er_sde, linear_quadratic,
kl_optimal. Each sampler is checked step for step against a transcription of ComfyUI's k-diffusion loop (its
own variable names and structure: t_fn / sigma_fn lambdas, get_ancestral_step, the 200-point Riemann sums)
on the exact VP mixture denoiser, with the same noise draws, and for convergence on the mixture."""

from __future__ import annotations

import math

import pytest
import torch
from core_mixture import quantiles, sample, vp_denoiser, w1

from fewstep.nodes.core import schedules as S
from fewstep.nodes.core.samplers import get_sampler


def _ancestral_step(sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    # k-diffusion get_ancestral_step
    if not eta:
        return sigma_to, torch.zeros(())
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    return (sigma_to**2 - sigma_up**2) ** 0.5, sigma_up


def ref_res_multistep(model, x, sigmas, g, eta=0.0, s_noise=1.0):
    sigma_fn = lambda t: t.neg().exp()  # noqa: E731
    t_fn = lambda sigma: sigma.log().neg()  # noqa: E731
    phi1_fn = lambda t: torch.expm1(t) / t  # noqa: E731
    phi2_fn = lambda t: (phi1_fn(t) - 1.0) / t  # noqa: E731
    old_sigma_down = old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0 or old_denoised is None:
            d = (x - denoised) / sigmas[i]
            x = x + d * (sigma_down - sigmas[i])
        else:
            t, t_old, t_next, t_prev = t_fn(sigmas[i]), t_fn(old_sigma_down), t_fn(sigma_down), t_fn(sigmas[i - 1])
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi1_val, phi2_val = phi1_fn(-h), phi2_fn(-h)
            b1 = torch.nan_to_num(phi1_val - phi2_val / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2_val / c2, nan=0.0)
            x = sigma_fn(h) * x + h * (b1 * denoised + b2 * old_denoised)
        if sigmas[i + 1] > 0 and eta:
            x = x + torch.randn(x.shape, generator=g) * s_noise * sigma_up
        old_denoised, old_sigma_down = denoised, sigma_down
    return x


def ref_er_sde(model, x, sigmas, g, s_noise=1.0, max_stage=3):
    noise_scaler = lambda sigma: sigma * ((sigma**0.3).exp() + 10.0)  # noqa: E731
    num_integration_points = 200.0
    point_indice = torch.arange(0, num_integration_points, dtype=torch.float32)
    er_lambdas = sigmas.clone()                    # VP in EDM space: sigma / alpha with alpha = 1
    old_denoised = old_denoised_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        stage_used = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            er_lambda_s, er_lambda_t = er_lambdas[i], er_lambdas[i + 1]
            alpha_s, alpha_t = sigmas[i] / er_lambda_s, sigmas[i + 1] / er_lambda_t
            r_alpha = alpha_t / alpha_s
            r = noise_scaler(er_lambda_t) / noise_scaler(er_lambda_s)
            x = r_alpha * r * x + alpha_t * (1 - r) * denoised
            if stage_used >= 2:
                dt = er_lambda_t - er_lambda_s
                lambda_step_size = -dt / num_integration_points
                lambda_pos = er_lambda_t + point_indice * lambda_step_size
                scaled_pos = noise_scaler(lambda_pos)
                s = torch.sum(1 / scaled_pos) * lambda_step_size
                denoised_d = (denoised - old_denoised) / (er_lambda_s - er_lambdas[i - 1])
                x = x + alpha_t * (dt + s * noise_scaler(er_lambda_t)) * denoised_d
                if stage_used >= 3:
                    s_u = torch.sum((lambda_pos - er_lambda_s) / scaled_pos) * lambda_step_size
                    denoised_u = (denoised_d - old_denoised_d) / ((er_lambda_s - er_lambdas[i - 2]) / 2)
                    x = x + alpha_t * ((dt**2) / 2 + s_u * noise_scaler(er_lambda_t)) * denoised_u
                old_denoised_d = denoised_d
            if s_noise > 0:
                x = x + alpha_t * torch.randn(x.shape, generator=g) * s_noise * (
                    er_lambda_t**2 - er_lambda_s**2 * r**2).sqrt().nan_to_num(nan=0.0)
        old_denoised = denoised
    return x


@pytest.mark.parametrize(("name", "ref", "knobs"), [
    ("res_multistep", ref_res_multistep, {}),
    ("res_multistep_ancestral", ref_res_multistep, {"eta": 1.0}),
    ("er_sde", ref_er_sde, {}),
])
def test_matches_comfyuis_loop(name, ref, knobs) -> None:
    model = vp_denoiser()
    sigmas = S.karras(model.schedule, 12).float()
    x = sample(512, torch.Generator().manual_seed(0), sigma=float(sigmas[0])).reshape(512, 1, 1, 1)
    ours = get_sampler(name)(model, x.clone(), sigmas, generator=torch.Generator().manual_seed(7))
    theirs = ref(lambda x_, s_: model(x_, s_), x.clone(), sigmas, torch.Generator().manual_seed(7), **knobs)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)
    assert (ours - x).abs().max() > 0.1                       # it moved


def test_res_multistep_is_second_order_and_er_sde_samples_the_mixture() -> None:
    model = vp_denoiser()
    exact = quantiles(2000)
    errors = {}
    for n in (12, 50):
        sigmas = S.karras(model.schedule, n).float()
        x = quantiles(2000, sigma=float(sigmas[0])).reshape(-1, 1, 1, 1)
        errors[n] = w1(get_sampler("res_multistep")(model, x, sigmas).flatten(), exact)
    assert errors[50] < 0.006 and errors[12] / errors[50] > 8, errors
    sigmas = S.karras(model.schedule, 50).float()
    x = sample(20000, torch.Generator().manual_seed(1), sigma=float(sigmas[0])).reshape(-1, 1, 1, 1)
    out = get_sampler("er_sde")(model, x, sigmas, generator=torch.Generator().manual_seed(2))
    assert w1(out.flatten(), quantiles(20000)) < 0.045


def test_linear_quadratic_and_kl_optimal() -> None:
    model = vp_denoiser()
    smax = model.schedule.sigma_max
    lq = S.linear_quadratic(model.schedule, 4)
    # n = 4: linear part t = 0, 0.0125; quadratic a i^2 + b i + c for i = 2, 3 with gap = 2 - 0.1 = 1.9,
    # a = 1.9 / 8, b = 0.0125 - 2 * 1.9 / 4, c = 4 a; then t = 1
    a, b = 1.9 / 8, 0.0125 - 0.95
    want = [1.0, 1 - 0.0125, 1 - (4 * a + 2 * b + 4 * a), 1 - (9 * a + 3 * b + 4 * a), 0.0]
    torch.testing.assert_close(lq, torch.tensor(want) * smax)
    kl = S.kl_optimal(model.schedule, 5)
    assert kl.shape == (6,) and kl[5] == 0
    assert float(kl[0]) == pytest.approx(smax, rel=1e-5) and float(kl[4]) == pytest.approx(model.schedule.sigma_min)
    steps = kl[:5].double().atan().diff()
    torch.testing.assert_close(steps, steps[:1].expand(4))    # uniform in arctan sigma
    assert math.isclose(float(S.calculate_sigmas(model.schedule, "kl_optimal", 4)[0]), smax, rel_tol=1e-6)
