"""The generator R0 trains (VP-space η-DDIM rollout) is the sampler a graph uses (core ``sample_ddim`` on the
R0Scheduler's SIGMAS, CFG guider): same latents from the same noise on the built-in teacher."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")


def test_rollout_at_eta_zero_equals_core_ddim_on_r0_sigmas():
    from fewstep.bench.mlcm.table import core_schedule
    from fewstep.bench.r0.table import r0_runner
    from fewstep.nodes.core.train.adapter import UNetAdapter
    from fewstep.nodes.core.train.builtin import teacher_schedule, teacher_unet
    from fewstep.nodes.core.train.vp import VPNet
    from fewstep.nodes.r0.generator import rollout, trailing_timesteps

    unet = teacher_unet("cpu")
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 4, 16, 16, generator=gen)
    cond, uncond = torch.randn(2, 77, 384, generator=gen), torch.randn(1, 77, 384, generator=gen)
    timesteps = trailing_timesteps(2)
    with torch.no_grad():
        ours = rollout(VPNet(UNetAdapter(unet), teacher_schedule(), "eps"), noise, timesteps, cond, uncond, 5.0,
                       torch.zeros(2), None).x0
        run = r0_runner(unet, core_schedule(), {"timesteps": list(timesteps), "guidance": 5.0, "eta": 0.0})
        core = run(noise, {"context": cond}, {"context": uncond})
    assert ours.abs().mean() > 0.1
    assert torch.allclose(ours, core, atol=2e-3), float((ours - core).abs().max())
