"""The samplers added after issue #4 (ComfyUI sampler gaps) against diffusers' schedulers, step by step,
on one tiny random UNet.

Pairs (ours -> diffusers): uni_pc / uni_pc_bh2 -> UniPCMultistepScheduler(solver_order=3, predict_x0, bh1 / bh2);
lms -> LMSDiscreteScheduler; dpm_2 -> KDPM2DiscreteScheduler; dpm_2_ancestral -> KDPM2AncestralDiscreteScheduler
(same seeded CPU generator: both draw one N(0, I) per step); dpmpp_2m_sde (midpoint / heun) ->
DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++") with the same Gaussian noise injected on
both sides (diffusers' ``variance_noise``, our ``noise_sampler``).

Tolerance: max |ours - theirs| <= 1e-6 max |theirs| (~8 float32 ulps of the state's scale). Both sides
compute the same float32 formulas in another order and another space (EDM x = x_ddpm sqrt(1 + sigma^2)
here, DDPM space in UniPC / DPM-Solver), and rounding of the large elements (|x| ~ 43, one ulp 3.8e-6)
spreads through the multistep recursions into the small ones, so an elementwise rtol does not fit.
Measured max gaps: 2.1e-5 (UniPC after 6 steps, 2.1e-5 for dpmpp_2m_sde), 1.5e-5 (dpm_2), 1.2e-5 (lms);
allowed ~4.3e-5. A wrong coefficient moves the states by 1e-2 or more.
"""

from __future__ import annotations

import pytest
import torch

from fewstep.nodes.core import schedules as S
from fewstep.nodes.core.samplers import SAMPLERS

diffusers = pytest.importorskip("diffusers")
from tiny_unet import BETAS, tiny_eps_unet  # noqa: E402


def _close(a: torch.Tensor, b: torch.Tensor, msg: str) -> None:
    torch.testing.assert_close(a, b, rtol=0.0, atol=1e-6 * float(b.abs().max()), msg=msg)


@pytest.fixture(scope="module")
def tiny():
    return tiny_eps_unet()


def _ddpm_scale(sigma):
    """x_ddpm = x_edm / sqrt(1 + sigma^2) (the DDPM-space schedulers: UniPC, DPM-Solver)."""
    return (sigma**2 + 1) ** 0.5


def _reference(sched, eps, latent: torch.Tensor, n: int, noises: list | None = None) -> list[torch.Tensor]:
    """diffusers' states: the start, then prev_sample after every step (init_noise_sigma applied)."""
    sched.set_timesteps(n)
    x = latent * sched.init_noise_sigma
    ref = [x]
    for i, t in enumerate(sched.timesteps):
        kwargs = {} if noises is None else {"variance_noise": noises[i]}
        x = sched.step(eps(sched.scale_model_input(x, t), t), t, x, **kwargs).prev_sample
        ref.append(x)
    return ref


def _ours(name: str, denoiser, x_start: torch.Tensor, sigmas: torch.Tensor, scale, **knobs) -> list[torch.Tensor]:
    """Our states in the reference's space: x before every model call, then the output."""
    states: list[torch.Tensor] = []
    out = SAMPLERS[name](denoiser, x_start * scale(sigmas[0]), sigmas,
                         callback=lambda info: states.append(info["x"] / scale(info["sigma"])), **knobs)
    return states + [out]


@pytest.mark.parametrize("name, variant", [("uni_pc", "bh1"), ("uni_pc_bh2", "bh2")])
def test_unipc_matches_diffusers_step_by_step(tiny, name: str, variant: str) -> None:
    eps, denoiser, latent = tiny
    sched = diffusers.UniPCMultistepScheduler(**BETAS, solver_order=3, solver_type=variant, predict_x0=True)
    ref = _reference(sched, eps, latent, 6)
    sigmas = S.from_timesteps(denoiser.schedule, sched.timesteps.tolist())
    ours = _ours(name, denoiser, latent, sigmas, _ddpm_scale)
    assert len(ours) == len(ref) == 7
    for step, (a, b) in enumerate(zip(ours, ref, strict=True)):
        if variant == "bh1" and step == 6:
            # diffusers' last bh1 step to sigma = 0 computes alpha_t * B(h) * 0 with B(h) = h = -inf: NaN.
            # Ours returns x0 there, the order-1 limit (which bh2 matches exactly on the next case).
            assert torch.isnan(b).all() and torch.isfinite(a).all()
            continue
        _close(a, b, msg=f"{name} step {step}")


def test_lms_matches_diffusers_step_by_step(tiny) -> None:
    eps, denoiser, latent = tiny
    sched = diffusers.LMSDiscreteScheduler(**BETAS)
    ref = _reference(sched, eps, latent, 6)
    # LMS timesteps are fractional and diffusers interpolates sigma linearly there (we interpolate log
    # sigma, as k-diffusion): take its sigmas to compare the solver alone
    ours = _ours("lms", denoiser, ref[0], sched.sigmas.float(), lambda s: 1.0)
    for step, (a, b) in enumerate(zip(ours, ref, strict=True)):
        _close(a, b, msg=f"lms step {step}")


def test_dpm_2_matches_diffusers_step_by_step(tiny) -> None:
    eps, denoiser, latent = tiny
    sched = diffusers.KDPM2DiscreteScheduler(**BETAS)
    sched.set_timesteps(5)
    x = latent * sched.init_noise_sigma
    ref = [x]
    for t in sched.timesteps:                        # interleaved: sigma_i, then the log-midpoint sigma
        x = sched.step(eps(sched.scale_model_input(x, t), t), t, x).prev_sample
        if sched.state_in_first_order:               # a full DPM-2 step is done
            ref.append(x)
    sigmas = torch.unique_consecutive(sched.sigmas)  # [14.61, 4.09, 1.62, 0.70, 0.029, 0]
    ours = _ours("dpm_2", denoiser, ref[0], sigmas, lambda s: 1.0)
    assert len(ours) == 6 and len(ref) == 5           # diffusers ends on its first-order (Euler) step
    for step, (a, b) in enumerate(zip(ours[:-1], ref, strict=True)):
        _close(a, b, msg=f"dpm_2 step {step}")
    _close(ours[-1], x, msg="dpm_2 output")


@pytest.mark.parametrize("name, solver_type", [("dpmpp_2m_sde", "midpoint"), ("dpmpp_2m_sde_heun", "heun")])
def test_dpmpp_2m_sde_matches_diffusers_step_by_step(tiny, name: str, solver_type: str) -> None:
    eps, denoiser, latent = tiny
    n = 5
    noises = list(torch.randn(n, *latent.shape, generator=torch.Generator().manual_seed(7)))
    sched = diffusers.DPMSolverMultistepScheduler(**BETAS, algorithm_type="sde-dpmsolver++", solver_order=2,
                                                  solver_type=solver_type)
    ref = _reference(sched, eps, latent, n, noises)
    sigmas = S.from_timesteps(denoiser.schedule, sched.timesteps.tolist())
    drawn = iter(noises)
    ours = _ours(name, denoiser, latent, sigmas, _ddpm_scale, noise_sampler=lambda s, s_next: next(drawn))
    for step, (a, b) in enumerate(zip(ours, ref, strict=True)):
        _close(a, b, msg=f"{name} step {step}")


def test_dpm_2_ancestral_matches_diffusers_step_by_step(tiny) -> None:
    # Both draw one N(0, I) per step from a seeded CPU generator (diffusers' randn_tensor, our _noise), in
    # the same order and shape, so the same seed gives the same noise.
    eps, denoiser, latent = tiny
    sched = diffusers.KDPM2AncestralDiscreteScheduler(**BETAS)
    sched.set_timesteps(5)
    g = torch.Generator().manual_seed(11)
    x = latent * sched.init_noise_sigma
    ref = [x]
    for t in sched.timesteps:
        x = sched.step(eps(sched.scale_model_input(x, t), t), t, x, generator=g).prev_sample
        if sched.state_in_first_order:
            ref.append(x)
    sigmas = torch.unique_consecutive(sched.sigmas)
    ours = _ours("dpm_2_ancestral", denoiser, ref[0], sigmas, lambda s: 1.0,
                 generator=torch.Generator().manual_seed(11))
    for step, (a, b) in enumerate(zip(ours[:-1], ref, strict=True)):
        _close(a, b, msg=f"dpm_2_ancestral step {step}")
    _close(ours[-1], x, msg="dpm_2_ancestral output")
