"""Every sampler of ComfyUI's KSampler list through the real sampling path (``sampling.run``: noise, guider,
CFG batching, inpainting mask, fast-path hook) on a tiny random SD-layout UNet, and the CFG++ samplers through
the fast path's graph-replay guider (its static-buffer protocol on the CPU, ``cuda_graphs=False``)."""

from __future__ import annotations

import pytest
import torch
from test_fastpath import NO_GRAPH, cond, tiny_denoiser

from fewstep.nodes.core import fastpath, sampling
from fewstep.nodes.core.guidance import CFGGuider
from fewstep.nodes.core.names import SAMPLER_NAMES
from fewstep.nodes.core.samplers import get_sampler
from fewstep.nodes.core.schedules import calculate_sigmas


def _conditioning(seed: int) -> list[list[object]]:
    return [[cond(seed)["context"], {}]]


@pytest.fixture(scope="module")
def model():
    d = tiny_denoiser(boundary=None)
    d.extras["arch"] = "sd1"
    return d


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_every_sampler_runs_through_ksampler_path(model, name: str) -> None:
    guider = sampling.GuiderSpec(model, _conditioning(1), _conditioning(2), 2.0)
    sigmas = calculate_sigmas(model.schedule, "karras", 3)
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5,
              "noise_mask": torch.ones(1, 1, 8, 8).tril()}             # inpainting: half of the latent kept
    out, denoised = sampling.run(guider, get_sampler(name), sigmas, latent, sampling.RandomNoiseSpec(5))
    assert out["samples"].shape == (1, 4, 8, 8) and torch.isfinite(out["samples"]).all()
    assert torch.isfinite(denoised["samples"]).all()
    kept = latent["noise_mask"][0, 0] == 0
    if name not in ("dpm_fast", "dpm_adaptive"):   # those stop at the last nonzero sigma, as ComfyUI
        # outside the mask the result is the original latent (the guider returns it as x0 there)
        torch.testing.assert_close(out["samples"][..., kept], latent["samples"][..., kept], rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["euler_cfg_pp", "dpmpp_2m_cfg_pp", "dpmpp_2s_ancestral_cfg_pp"])
def test_cfg_pp_through_the_fast_path_guider(model, name: str) -> None:
    guider = CFGGuider(model, cond(1), cond(2), 1.5)
    sigmas = calculate_sigmas(model.schedule, "karras", 4)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)) * float(sigmas[0])
    with torch.no_grad():
        eager = get_sampler(name)(guider, x, sigmas, generator=torch.Generator().manual_seed(4))
        fast_guider = fastpath.accelerate(guider, x, sigmas=sigmas, options=NO_GRAPH)
        assert isinstance(fast_guider, fastpath.GraphGuider)
        fast = get_sampler(name)(fast_guider, x, sigmas, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(fast, eager, rtol=0, atol=1e-5)
