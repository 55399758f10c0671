"""GITSScheduler, OptimalStepsScheduler, AddNoise, DualCFGGuider and APG against ComfyUI's formulas, on toy
x0 denoisers whose predictions are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fewstep.nodes.core import nodes_guidance as G
from fewstep.nodes.core.conditioning import ComposedGuider
from fewstep.nodes.core.denoiser import Denoiser, DiscreteVPSchedule, FlowSchedule
from fewstep.nodes.core.sampling import DisableNoise, GuiderSpec, RandomNoiseSpec
from fewstep.nodes.core.schedule_tables import GITS_ROWS, GITS_SIGMA_GRID, gits_levels

# Rows of ComfyUI's comfy_extras/nodes_gits.py NOISE_LEVELS (zju-pi/diff-sampler's published GITS schedules for
# SD1.5), typed in from that file: (coeff, steps) -> the steps + 1 noise levels.
COMFY_GITS_ROWS = {
    (0.80, 2): [14.61464119, 7.49001646, 0.02916753],
    (1.20, 4): [14.61464119, 2.36326075, 0.92192322, 0.36617002, 0.02916753],
    (1.20, 10): [14.61464119, 5.85520077, 2.84484982, 1.67050016, 1.08895338, 0.74807048, 0.50118381, 0.32104823,
                 0.19894916, 0.09824532, 0.02916753],
    (1.05, 3): [14.61464119, 6.77309084, 0.89115214, 0.02916753],
    (1.50, 20): [14.61464119, 2.45070267, 1.41535246, 0.95350921, 0.72133851, 0.57119018, 0.4783645, 0.43325692,
                 0.38853383, 0.36617002, 0.34370604, 0.32104823, 0.29807833, 0.27464288, 0.25053367, 0.22545385,
                 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753],
}


def _comfy_tail(levels: list[float], steps: int, denoise: float) -> torch.Tensor:
    """ComfyUI's schedule node tail: numpy log-linear interpolation when the list has another length, keep
    the last round(steps denoise) + 1, last set to 0."""
    total = steps if denoise >= 1 else round(steps * denoise)
    if steps + 1 != len(levels):
        xs, ys = np.linspace(0, 1, len(levels)), np.log(levels[::-1])
        levels = list(np.exp(np.interp(np.linspace(0, 1, steps + 1), xs, ys))[::-1])
    out = np.array(levels[-(total + 1):], dtype=np.float64)
    out[-1] = 0
    return torch.tensor(out, dtype=torch.float32)


@pytest.mark.parametrize(("coeff", "steps"), list(COMFY_GITS_ROWS))
def test_gits_rows_are_comfyuis_table(coeff: float, steps: int) -> None:
    assert gits_levels(coeff, steps) == COMFY_GITS_ROWS[coeff, steps]
    ours = G.GITSScheduler.execute(coeff, steps, 1.0).values[0]
    torch.testing.assert_close(ours, _comfy_tail(COMFY_GITS_ROWS[coeff, steps], steps, 1.0), rtol=0, atol=0)


def test_gits_interpolation_denoise_and_errors() -> None:
    # steps > 20: the 20-step row, log-linearly interpolated (numpy reference)
    ours = G.GITSScheduler.execute(1.50, 33, 1.0).values[0]
    torch.testing.assert_close(ours, _comfy_tail(COMFY_GITS_ROWS[1.50, 20], 33, 1.0), rtol=1e-6, atol=0)
    assert ours.shape == (34,) and bool((ours[:-1].diff() < 0).all())
    part = G.GITSScheduler.execute(1.20, 10, 0.45).values[0]          # round(4.5) = 4 steps: the row's tail
    torch.testing.assert_close(part, _comfy_tail(COMFY_GITS_ROWS[1.20, 10], 10, 0.45), rtol=0, atol=0)
    assert part.shape == (5,) and G.GITSScheduler.execute(1.2, 10, 0.0).values[0].numel() == 0
    # every table row decreases from sigma_max to sigma_min; the grid is 98 levels
    assert len(GITS_SIGMA_GRID) == 98 and len(GITS_ROWS) == 15
    for coeff in GITS_ROWS:
        for steps in range(2, 21):
            row = gits_levels(coeff, steps)
            assert len(row) == steps + 1 and all(a > b for a, b in zip(row, row[1:], strict=False))
    with pytest.raises(ValueError, match="coeff"):
        G.GITSScheduler.execute(1.23, 10, 1.0)


@pytest.mark.parametrize(("model_type", "steps", "denoise"), [("FLUX", 10, 1.0), ("FLUX", 4, 1.0), ("Wan", 20, 1.0),
                                                               ("Wan", 8, 0.5), ("Chroma", 40, 1.0), ("Chroma", 26, 1.0)])
def test_optimal_steps_matches_comfyui(model_type: str, steps: int, denoise: float) -> None:
    # ComfyUI's comfy_extras/nodes_optimalsteps.py lists (Pei et al. 2025), typed in from that file
    published = {"FLUX": [0.9968, 0.9886, 0.9819, 0.975, 0.966, 0.9471, 0.9158, 0.8287, 0.5512, 0.2808, 0.001],
                 "Wan": [1.0, 0.997, 0.995, 0.993, 0.991, 0.989, 0.987, 0.985, 0.98, 0.975, 0.973, 0.968, 0.96,
                         0.946, 0.927, 0.902, 0.864, 0.776, 0.539, 0.208, 0.001],
                 "Chroma": [0.992, 0.99, 0.988, 0.985, 0.982, 0.978, 0.973, 0.968, 0.961, 0.953, 0.943, 0.931, 0.917,
                            0.9, 0.881, 0.858, 0.832, 0.802, 0.769, 0.731, 0.69, 0.646, 0.599, 0.55, 0.501, 0.451,
                            0.402, 0.355, 0.311, 0.27, 0.232, 0.199, 0.169, 0.143, 0.12, 0.101, 0.084, 0.07, 0.058,
                            0.048, 0.001]}
    ours = G.OptimalStepsScheduler.execute(model_type, steps, denoise).values[0]
    torch.testing.assert_close(ours, _comfy_tail(published[model_type], steps, denoise), rtol=1e-6, atol=0)
    assert G.OptimalStepsScheduler.execute(model_type, steps, 0.0).values[0].numel() == 0


def _toy(offsets: dict[str, torch.Tensor], schedule: object | None = None) -> Denoiser:
    """x0 = 0.3 x_in + offsets[prompt] (cond["context"] holds the prompt's name)."""
    def fn(x_in: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        return 0.3 * x_in + offsets[cond["context"]].to(x_in.dtype)

    return Denoiser(fn, "x0", schedule or DiscreteVPSchedule.from_config(), extras={"arch": "sd1"})


def _cond(name: str) -> list:
    return [[name, {}]]


def test_add_noise_is_latent_plus_noise_times_sigma() -> None:
    latent = {"samples": torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))}
    noise = RandomNoiseSpec(7)
    eps = noise.generate(latent)
    vp = _toy({})
    sigmas = torch.tensor([6.0, 2.5, 0.5])
    out = G.AddNoise.execute(vp, noise, sigmas, latent).values[0]["samples"]
    torch.testing.assert_close(out, latent["samples"] + eps * 5.5)            # scale = |sigmas[0] - sigmas[-1]|
    one = G.AddNoise.execute(vp, noise, torch.tensor([3.0]), latent).values[0]["samples"]
    torch.testing.assert_close(one, latent["samples"] + eps * 3.0)
    flow = _toy({}, FlowSchedule())
    mixed = G.AddNoise.execute(flow, noise, torch.tensor([0.8, 0.0]), latent).values[0]["samples"]
    torch.testing.assert_close(mixed, 0.2 * latent["samples"] + 0.8 * eps)   # (1 - s) x0 + s eps
    assert G.AddNoise.execute(vp, noise, torch.tensor([]), latent).values[0] is latent
    assert torch.equal(G.AddNoise.execute(vp, DisableNoise(), sigmas, latent).values[0]["samples"], latent["samples"])


def _offsets(*names: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {n: torch.randn(1, 4, 8, 8, generator=g) for n in names}


@pytest.mark.parametrize(("s1", "s2"), [(3.0, 5.0), (2.0, 1.0), (1.0, 1.0), (0.0, 7.5)])
def test_dual_cfg_regular_and_nested(s1: float, s2: float) -> None:
    model = _toy(_offsets("a", "b", "n"))
    x, sigma = torch.randn(1, 4, 8, 8), torch.tensor(2.0)
    d1, d2, dn = (model(x, sigma, {"context": k}) for k in ("a", "b", "n"))
    for style, expected in (("regular", dn + s2 * (d2 - dn) + s1 * (d1 - d2)),
                            ("nested", dn + s2 * (d2 + s1 * (d1 - d2) - dn))):
        spec = G.DualCFGGuider.execute(model, _cond("a"), _cond("b"), _cond("n"), s1, s2, style).values[0]
        guider = spec.build(x)
        torch.testing.assert_close(guider(x, sigma), expected)
        guided, uncond = guider.predict_with_uncond(x, sigma)
        torch.testing.assert_close(guided, expected)
        torch.testing.assert_close(uncond, dn if style == "regular" else d2)
    with pytest.raises(ValueError, match="style"):
        G.DualCFGGuider.execute(model, _cond("a"), _cond("b"), _cond("n"), s1, s2, "other")


def test_dual_cfg_skips_the_passes_whose_weight_is_zero() -> None:
    seen: list[str] = []
    offsets = _offsets("a", "b", "n")

    def fn(x_in: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        seen.append(cond["context"])
        return 0.3 * x_in + offsets[cond["context"]]

    model = Denoiser(fn, "x0", DiscreteVPSchedule.from_config(), extras={"arch": "sd1"})
    x = torch.randn(1, 4, 8, 8)
    for s1, s2, passes in ((2.0, 1.0, ["a", "b"]), (1.0, 1.0, ["a"]), (2.0, 3.0, ["n", "b", "a"])):
        seen.clear()
        G.DualCFGGuider.execute(model, _cond("a"), _cond("b"), _cond("n"), s1, s2, "regular").values[0].build(x)(
            x, torch.tensor(1.0))
        assert seen == passes


def _apg_reference(c: torch.Tensor, u: torch.Tensor, scale: float, eta: float, r: float,
                   guidance: torch.Tensor | None = None) -> torch.Tensor:
    """ComfyUI's APG pre-CFG step followed by CFG, written out per sample with flat vectors."""
    out = []
    for i in range(c.shape[0]):
        ci, ui = c[i].reshape(-1).double(), u[i].reshape(-1).double()
        g = (ci - ui) if guidance is None else guidance[i].reshape(-1).double()
        if r > 0:
            g = g * min(1.0, r / float(g.norm()))
        unit = ci / ci.norm()
        par = (g @ unit) * unit
        modified = ui + (g - par) + eta * par + (ci - ui) / scale
        out.append((ui + scale * (modified - ui)).reshape(c.shape[1:]))
    return torch.stack(out).float()


def test_apg_matches_the_hand_computation() -> None:
    base = _toy(_offsets("c", "u"))
    model = G.APG.execute(base, 0.3, 4.0, 0.0).values[0]
    assert model.model_fn is base.model_fn and "apg" not in base.extras
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    sigma = torch.tensor(3.0)
    c, u = base(x, sigma, {"context": "c"}), base(x, sigma, {"context": "u"})
    assert float((c - u)[0].norm()) > 4.0                  # the threshold clips here
    guider = GuiderSpec(model, _cond("c"), _cond("u"), 6.0).build(x)
    assert isinstance(guider, ComposedGuider)
    torch.testing.assert_close(guider(x, sigma), _apg_reference(c, u, 6.0, 0.3, 4.0), rtol=1e-5, atol=1e-5)
    # eta 1, no clipping, no momentum: D_c + s (D_c - D_u), i.e. CFG at scale s + 1 (ComfyUI's formula)
    plain = GuiderSpec(G.APG.execute(base, 1.0, 0.0, 0.0).values[0], _cond("c"), _cond("u"), 6.0).build(x)
    torch.testing.assert_close(plain(x, sigma), u + 7.0 * (c - u), rtol=1e-5, atol=1e-5)
    # no negative prompt (ComfyUI's cfg-1 shortcut): the unconditional prediction APG sees is zeros
    basic = GuiderSpec(model, _cond("c")).build(x)
    zeros = torch.zeros_like(c)
    torch.testing.assert_close(basic(x, sigma), _apg_reference(c, zeros, 1.0, 0.3, 4.0), rtol=1e-5, atol=1e-5)


def test_apg_momentum_runs_over_the_calls_and_restarts_when_sigma_rises() -> None:
    base = _toy(_offsets("c", "u"))
    model = G.APG.execute(base, 0.0, 0.0, -0.5).values[0]
    guider = GuiderSpec(model, _cond("c"), _cond("u"), 4.0).build(torch.zeros(1, 4, 8, 8))
    g = torch.Generator().manual_seed(9)
    xs = [torch.randn(1, 4, 8, 8, generator=g) for _ in range(3)]
    sigmas = [torch.tensor(5.0), torch.tensor(2.0), torch.tensor(9.0)]
    preds = [(base(x, s, {"context": "c"}), base(x, s, {"context": "u"})) for x, s in zip(xs, sigmas, strict=True)]
    running = None
    for (x, s), (c, u), restart in zip(zip(xs, sigmas, strict=True), preds, (False, False, True), strict=True):
        running = (c - u) if running is None or restart else -0.5 * running + (c - u)
        expected = _apg_reference(c, u, 4.0, 0.0, 0.0, guidance=running)
        torch.testing.assert_close(guider(x, s), expected, rtol=1e-5, atol=1e-5)


def test_add_noise_then_dual_cfg_sampling_through_the_nodes() -> None:
    """AddNoise -> SamplerCustomAdvanced(DisableNoise, DualCFGGuider, euler, GITS sigmas) equals Euler steps on
    the DualCFG formula written out here."""
    from fewstep.nodes.core import nodes as N
    from fewstep.nodes.core import nodes_sampling as NS

    model = _toy(_offsets("a", "b", "n"))
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))}
    sigmas = G.GITSScheduler.execute(1.2, 3, 1.0).values[0]
    noisy = G.AddNoise.execute(model, RandomNoiseSpec(2), sigmas, latent).values[0]
    guider = G.DualCFGGuider.execute(model, _cond("a"), _cond("b"), _cond("n"), 2.0, 4.0, "regular").values[0]
    sampler = N.KSamplerSelect.execute("euler").values[0]
    out = N.SamplerCustomAdvanced.execute(NS.DisableNoise.execute().values[0], guider, sampler, sigmas,
                                          noisy).values[0]["samples"]
    x = noisy["samples"].clone()
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        d1, d2, dn = (model(x, s, {"context": k}) for k in ("a", "b", "n"))
        x0 = dn + 4.0 * (d2 - dn) + 2.0 * (d1 - d2)
        x = x + (s_next - s) * (x - x0) / s
    torch.testing.assert_close(out, x, rtol=1e-5, atol=1e-5)
