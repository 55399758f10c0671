"""Optional cross-check against k-diffusion's samplers (the code ComfyUI's KSampler grew from).

Skipped unless FEWSTEP_KDIFFUSION_SRC names an unpacked ``k_diffusion`` package folder (we do not depend on
k-diffusion; its ``__init__`` pulls in training-only packages, so only ``utils.py`` and ``sampling.py``
are loaded, with ``torchdiffeq`` stubbed). Used for docs/benchmarks.md with k-diffusion 0.1.1.post1:

    pip download k-diffusion==0.1.1.post1 --no-deps -d /tmp/kd && unzip -q /tmp/kd/*.whl -d /tmp/kd/src
    FEWSTEP_KDIFFUSION_SRC=/tmp/kd/src/k_diffusion python -m pytest -q tests/core/test_samplers_kdiffusion.py

Both sides run on the exact VP mixture denoiser in EDM space (k-diffusion's own space), 512 samples, 12
Karras steps, with the same noise: the same Brownian tree seed for the SDE samplers, the same global-RNG
draws for the ancestral ones. Measured max gaps on |x| <= 3.3: 6e-7 (dpm_2) to 4.0e-5 (dpmpp_2m_sde),
the ODE-solver rounding amplified where the mixture's posterior mean is steep; we allow 1e-4. Changing
any coefficient moves the result by > 1e-3 (dpmpp_sde with the tree queried 1 ulp away moves by 1.3e-2).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types

import pytest
import torch
from core_mixture import sample, vp_denoiser

from fewstep.nodes.core import schedules as S
from fewstep.nodes.core.samplers import SAMPLERS

SRC = os.environ.get("FEWSTEP_KDIFFUSION_SRC", "")
pytestmark = pytest.mark.skipif(not os.path.isfile(os.path.join(SRC, "sampling.py")),
                                reason="set FEWSTEP_KDIFFUSION_SRC to an unpacked k_diffusion folder")
SEED = 1234


@pytest.fixture(scope="module")
def kd():
    pytest.importorskip("torchsde")
    saved = {k: sys.modules.get(k) for k in ("torchdiffeq", "_kd", "_kd.utils", "_kd.sampling")}
    sys.modules["torchdiffeq"] = saved["torchdiffeq"] or types.SimpleNamespace(odeint=None)
    package = types.ModuleType("_kd")
    package.__path__ = [SRC]
    sys.modules["_kd"] = package
    modules = {}
    for name in ("utils", "sampling"):
        spec = importlib.util.spec_from_file_location(f"_kd.{name}", os.path.join(SRC, f"{name}.py"))
        modules[name] = importlib.util.module_from_spec(spec)
        sys.modules[f"_kd.{name}"] = modules[name]
        spec.loader.exec_module(modules[name])
    yield modules["sampling"]
    for key, value in saved.items():
        if value is None:
            sys.modules.pop(key, None)
        else:
            sys.modules[key] = value


@pytest.fixture(scope="module")
def setup():
    d = vp_denoiser()
    sigmas = S.karras(d.schedule, 12)
    x = sample(512, torch.Generator().manual_seed(0), sigma=float(sigmas[0]))
    return d, sigmas, x


def _theirs(kd, setup, fn, **knobs) -> torch.Tensor:
    d, sigmas, x = setup
    torch.manual_seed(SEED)
    return fn(lambda xx, sigma, **kw: d(xx, sigma), x.clone(), sigmas, disable=True, **knobs)


def _tree(kd, setup):
    _, sigmas, x = setup
    return kd.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=SEED)


@pytest.mark.parametrize("name, kd_name, knobs", [
    ("lms", "sample_lms", {}), ("dpm_2", "sample_dpm_2", {}),
    ("dpmpp_2m_sde", "sample_dpmpp_2m_sde", {}), ("dpmpp_2m_sde_heun", "sample_dpmpp_2m_sde", {"solver_type": "heun"}),
    ("dpmpp_3m_sde", "sample_dpmpp_3m_sde", {}),
])
def test_matches_k_diffusion(kd, setup, name: str, kd_name: str, knobs: dict) -> None:
    d, sigmas, x = setup
    extra = {"noise_sampler": _tree(kd, setup)} if "sde" in name else {}
    theirs = _theirs(kd, setup, getattr(kd, kd_name), **knobs, **extra)
    ours = SAMPLERS[name](d, x.clone(), sigmas, generator=torch.Generator().manual_seed(SEED))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["dpm_2_ancestral", "dpmpp_2s_ancestral"])
def test_ancestral_samplers_match_k_diffusion_with_the_same_draws(kd, setup, name: str) -> None:
    d, sigmas, x = setup
    theirs = _theirs(kd, setup, getattr(kd, f"sample_{name}"))
    torch.manual_seed(SEED)                           # k-diffusion draws randn_like(x) from the global RNG
    ours = SAMPLERS[name](d, x.clone(), sigmas, generator=torch.default_generator)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)


def test_dpmpp_sde_matches_k_diffusion_given_its_tree_queries(kd, setup) -> None:
    # k-diffusion queries the tree at exp(-(-log sigma)) in float32, 1 ulp off sigma; a Brownian path moves
    # by ~sqrt(ulp) there, so we ask our copy of the tree at the same rounded points.
    d, sigmas, x = setup
    theirs = _theirs(kd, setup, kd.sample_dpmpp_sde, noise_sampler=_tree(kd, setup))
    tree = _tree(kd, setup)

    def rounded(s: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(s).log().neg().neg().exp()

    ours = SAMPLERS["dpmpp_sde"](d, x.clone(), sigmas, noise_sampler=lambda s, s_next: tree(rounded(s), rounded(s_next)))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)
