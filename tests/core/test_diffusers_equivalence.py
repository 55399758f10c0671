"""Our ddim / euler / lcm samplers against diffusers' schedulers, step by step, on one tiny random UNet.

Tolerance rtol = atol = 1e-5: both sides compute the same float32 formulas in a different order (we
work in the EDM space x = x_ddpm * sqrt(1 + sigma^2), diffusers' DDIM/LCM in the DDPM space); the random
UNet's outputs reach |x| ~ 40, where one float32 ulp is 3.8e-6, and the measured gap is <= 3 ulps.
"""

from __future__ import annotations

import pytest
import torch

from fewstep.nodes.core import schedules as S
from fewstep.nodes.core.samplers import sample_ddim, sample_euler, sample_lcm

diffusers = pytest.importorskip("diffusers")
from tiny_unet import BETAS, tiny_eps_unet  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return tiny_eps_unet()


def _collect(states: list, scale_of_sigma):
    def callback(info):
        states.append(info["x"] / scale_of_sigma(info["sigma"]))
    return callback


def _edm_to_ddpm(sigma):
    return (sigma**2 + 1) ** 0.5


def test_ddim_matches_diffusers_step_by_step(tiny) -> None:
    eps, denoiser, latent = tiny
    sched = diffusers.DDIMScheduler(**BETAS, set_alpha_to_one=True, clip_sample=False, steps_offset=1)
    sched.set_timesteps(5)
    ref, x = [latent], latent
    for t in sched.timesteps:
        x = sched.step(eps(x, t), t, x).prev_sample
        ref.append(x)
    sigmas = S.from_timesteps(denoiser.schedule, sched.timesteps.tolist())
    ours: list = []
    out = sample_ddim(denoiser, latent * _edm_to_ddpm(sigmas[0]), sigmas, callback=_collect(ours, _edm_to_ddpm))
    for step, (a, b) in enumerate(zip(ours + [out], ref, strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"DDIM step {step}")


def test_euler_matches_diffusers_step_by_step(tiny) -> None:
    eps, denoiser, latent = tiny
    sched = diffusers.EulerDiscreteScheduler(**BETAS, timestep_spacing="trailing")
    sched.set_timesteps(4)
    x = latent * sched.init_noise_sigma
    ref = [x]
    for t in sched.timesteps:
        x = sched.step(eps(sched.scale_model_input(x, t), t), t, x).prev_sample
        ref.append(x)
    sigmas = S.from_timesteps(denoiser.schedule, sched.timesteps.tolist())
    torch.testing.assert_close(sigmas, sched.sigmas, rtol=0, atol=0)
    ours: list = []
    out = sample_euler(denoiser, ref[0], sigmas, callback=_collect(ours, lambda s: 1.0))
    for step, (a, b) in enumerate(zip(ours + [out], ref, strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"Euler step {step}")


def test_lcm_matches_diffusers_step_by_step(tiny) -> None:
    eps, denoiser, latent = tiny
    sched = diffusers.LCMScheduler(**BETAS, set_alpha_to_one=True, clip_sample=False)
    sched.set_timesteps(4)
    g = torch.Generator().manual_seed(5)
    ref, x = [latent], latent
    for t in sched.timesteps:
        x = sched.step(eps(x, t), t, x, generator=g).prev_sample
        ref.append(x)
    sigmas = S.from_timesteps(denoiser.schedule, sched.timesteps.tolist())
    ours: list = []
    lcm = denoiser.clone(boundary="lcm")
    out = sample_lcm(lcm, latent * _edm_to_ddpm(sigmas[0]), sigmas, callback=_collect(ours, _edm_to_ddpm),
                     generator=torch.Generator().manual_seed(5))
    for step, (a, b) in enumerate(zip(ours + [out], ref, strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"LCM step {step}")
