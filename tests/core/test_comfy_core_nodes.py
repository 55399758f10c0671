"""ComfyUI's everyday core nodes (issue #15): schemas, latent / image / sigma operations, rich conditioning
(areas, masks, timestep ranges), inpainting masks, RescaleCFG and model re-parameterisation, on toy
denoisers whose outputs are known in closed form."""

from __future__ import annotations

import pytest
import torch

from fewstep.nodes.core import nodes_conditioning as C
from fewstep.nodes.core import nodes_image as I
from fewstep.nodes.core import nodes_latent as L
from fewstep.nodes.core import nodes_sampling as S
from fewstep.nodes.core.conditioning import ComposedGuider, InpaintGuider, percent_to_sigma, rescale_cfg
from fewstep.nodes.core.denoiser import Denoiser, DiscreteVPSchedule


def _vp() -> DiscreteVPSchedule:
    return DiscreteVPSchedule.from_config(1000, 0.00085, 0.012, "scaled_linear")


def _const_model(values: dict[str, float]) -> Denoiser:
    """An x0-predicting toy whose output is the constant its prompt names (cond["context"] holds the key)."""
    def fn(x_in: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        return torch.full_like(x_in, values[cond["context"]])

    return Denoiser(fn, "x0", _vp(), extras={"arch": "sd1"})


def _cond(name: str, **extra) -> list:
    return [[name, extra]]


def test_registered_with_comfyui_names_and_inputs() -> None:
    from fewstep.nodes.core import entrypoint

    names = {cls.define_schema().node_id for cls in entrypoint()}
    wanted = {"LatentUpscale", "LatentUpscaleBy", "SetLatentNoiseMask", "VAEEncodeForInpaint", "InpaintModelConditioning",
              "ImageScaleToTotalPixels", "ImagePadForOutpaint", "CLIPSetLastLayer", "ConditioningSetArea",
              "ConditioningSetAreaPercentage", "ConditioningCombine", "ConditioningConcat", "ConditioningAverage",
              "ConditioningSetTimestepRange", "ControlNetLoader", "DiffControlNetLoader", "ControlNetApply",
              "ControlNetApplyAdvanced", "Canny", "UpscaleModelLoader", "ImageUpscaleWithModel", "SDTurboScheduler",
              "SamplerCustom", "ModelSamplingDiscrete", "ModelSamplingContinuousEDM", "RescaleCFG", "SplitSigmas",
              "FlipSigmas", "SamplerDPMPP_2M_SDE", "PreviewAny", "PrimitiveStringMultiline", "GetImageSize",
              "ImageBatch", "RebatchImages", "RepeatLatentBatch", "LatentFromBatch", "ImageInvert", "ImageCrop",
              "EmptyImage"}
    assert wanted <= names
    assert [i.name for i in S.SamplerCustom.define_schema().inputs] == [
        "model", "add_noise", "noise_seed", "cfg", "positive", "negative", "sampler", "sigmas", "latent_image"]
    assert [i.name for i in C.ControlNetApplyAdvanced.define_schema().inputs][:7] == [
        "positive", "negative", "control_net", "image", "strength", "start_percent", "end_percent"]
    area = C.ConditioningSetArea.define_schema()
    assert [(i.name, i.default, i.min) for i in area.inputs[1:5]] == [("width", 64, 64), ("height", 64, 64),
                                                                      ("x", 0, 0), ("y", 0, 0)]
    assert L.LatentUpscale.define_schema().input("upscale_method").choices[-1] == "bislerp"


def test_latent_upscale_sizes_and_bislerp() -> None:
    latent = {"samples": torch.randn(2, 4, 8, 12)}
    assert L.LatentUpscale.execute(latent, "nearest-exact", 192, 0, "disabled").values[0]["samples"].shape == (2, 4, 16, 24)
    assert L.LatentUpscaleBy.execute(latent, "bilinear", 1.5).values[0]["samples"].shape == (2, 4, 12, 18)
    same = L.LatentUpscale.execute(latent, "bislerp", 96, 64, "disabled").values[0]["samples"]
    torch.testing.assert_close(same, latent["samples"])        # same size: slerp at t = 0 is the identity
    big = L.LatentUpscaleBy.execute(latent, "bislerp", 2.0).values[0]["samples"]
    # slerp keeps norms between the neighbours' norms (a plain lerp shrinks them)
    norms = big.norm(dim=1)
    assert norms.min() >= latent["samples"].norm(dim=1).min() - 1e-4


def test_latent_batch_nodes() -> None:
    latent = {"samples": torch.arange(3.0).reshape(3, 1, 1, 1).expand(3, 4, 2, 2).clone()}
    out = L.RepeatLatentBatch.execute(latent, 2).values[0]["samples"]
    assert out.shape[0] == 6 and out[3, 0, 0, 0] == 0
    picked = L.LatentFromBatch.execute(latent, 1, 5).values[0]
    assert picked["samples"].shape[0] == 2 and picked["batch_index"] == [1, 2]


def test_image_nodes() -> None:
    image = torch.rand(1, 16, 24, 3)
    padded, mask = I.ImagePadForOutpaint.execute(image, 8, 0, 0, 8, 4).values
    assert padded.shape == (1, 24, 32, 3) and mask.shape == (1, 24, 32)
    assert mask[0, :, :8].eq(1).all() and mask[0, 16:].eq(1).all() and mask[0, 0, 31] == 0
    # feathered near the padded left side only: ((f - d) / f)^2 at d pixels from it
    assert float(mask[0, 8, 9]) == pytest.approx(0.5625) and mask[0, 8, 20] == 0
    scaled = I.ImageScaleToTotalPixels.execute(image, "bilinear", 0.01, 8).values[0]
    assert scaled.shape[1] % 8 == 0 and abs(scaled.shape[1] * scaled.shape[2] - 0.01 * 2**20) < 0.3 * 0.01 * 2**20
    assert I.GetImageSize.execute(image).values == (24, 16, 1)
    assert I.ImageCrop.execute(image, 8, 4, 2, 3).values[0].shape == (1, 4, 8, 3)
    torch.testing.assert_close(I.ImageInvert.execute(image).values[0], 1 - image)
    red = I.EmptyImage.execute(4, 2, 1, 0xFF0000).values[0]
    assert red.shape == (1, 2, 4, 3) and red[0, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert I.ImageBatch.execute(image, torch.rand(2, 8, 8, 3)).values[0].shape == (3, 16, 24, 3)
    batches = I.RebatchImages.execute([torch.rand(3, 4, 4, 3), torch.rand(2, 4, 4, 3)], [2]).values[0]
    assert [b.shape[0] for b in batches] == [2, 2, 1]
    assert I.PreviewAny.execute({"a": 1}).ui == {"text": ['{\n    "a": 1\n}']}


def test_canny_finds_the_edges_of_a_square() -> None:
    image = torch.zeros(1, 32, 32, 3)
    image[:, 8:24, 8:24] = 1.0
    edges = I.Canny.execute(image, 0.4, 0.8).values[0][0, :, :, 0]
    assert edges[16, 7:10].sum() >= 1 and edges[16, 22:25].sum() >= 1     # left and right sides
    assert edges[2:5].sum() == 0 and edges[16, 12:20].sum() == 0           # flat regions stay empty
    assert set(edges.unique().tolist()) <= {0.0, 1.0}


def test_area_composition_is_a_weighted_average() -> None:
    model = _const_model({"bg": 1.0, "fg": 3.0})
    x = torch.zeros(1, 4, 32, 32)
    # fg on the right half (pixels 128..256 -> cells 16..32), strength 1: in its interior (beyond the 8-cell
    # feather) fg and bg average to 2; the left half is bg only
    fg = C.ConditioningSetArea.execute(_cond("fg"), 128, 256, 128, 0, 1.0).values[0]
    both = C.ConditioningCombine.execute(_cond("bg"), fg).values[0]
    out = ComposedGuider(model, both, None, 1.0, x)(x, torch.tensor(1.0))
    assert torch.allclose(out[..., 28:], torch.tensor(2.0)) and torch.allclose(out[..., :16], torch.tensor(1.0))
    # the feathered inner edge: weight (t + 1) / 8 at t cells from it
    torch.testing.assert_close(out[0, 0, 0, 16], torch.tensor((1 + 3 / 8) / (1 + 1 / 8)))
    pct = C.ConditioningSetAreaPercentage.execute(_cond("fg"), 0.5, 1.0, 0.5, 0.0, 2.0).values[0]
    out2 = ComposedGuider(model, _cond("bg") + pct, None, 1.0, x)(x, torch.tensor(1.0))
    assert torch.allclose(out2[..., 28:], torch.tensor((1 + 2 * 3) / 3))  # strength 2


def test_mask_and_timestep_range() -> None:
    model = _const_model({"a": 1.0, "b": 5.0})
    x = torch.zeros(1, 4, 8, 8)
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1.0
    masked = C.ConditioningSetMask.execute(_cond("b"), mask, 1.0, "default").values[0]
    out = ComposedGuider(model, _cond("a") + masked, None, 1.0, x)(x, torch.tensor(1.0))
    assert torch.allclose(out[..., :3], torch.tensor(1.0)) and torch.allclose(out[..., 5:], torch.tensor(3.0))
    # "a" for the first 30% of the sampling, "b" after: ComfyUI's percent -> sigma on the model's timesteps
    early = C.ConditioningSetTimestepRange.execute(_cond("a"), 0.0, 0.3).values[0]
    late = C.ConditioningSetTimestepRange.execute(_cond("b"), 0.3, 1.0).values[0]
    guider = ComposedGuider(model, early + late, None, 1.0, x)
    cut = percent_to_sigma(model.schedule, 0.3)
    torch.testing.assert_close(torch.tensor(cut), _vp().sigma_at(torch.tensor(0.7 * 999)))
    assert guider(x, torch.tensor(cut * 1.5))[0, 0, 0, 0] == 1.0 and guider(x, torch.tensor(cut / 2))[0, 0, 0, 0] == 5.0


def test_cfg_rescale_and_combine() -> None:
    model = _const_model({"c": 2.0, "u": 1.0})
    x = torch.randn(1, 4, 8, 8)
    plain = ComposedGuider(model, _cond("c", strength=1.0), _cond("u"), 3.0, x)
    # a one-entry-list with strength 1 is simple: GuiderSpec would take the fast route; ComposedGuider agrees
    assert torch.allclose(plain(x, torch.tensor(2.0)), torch.tensor(4.0))
    x0_c, x0_u = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    xs = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(rescale_cfg(xs, torch.tensor(3.0), x0_c, x0_u, 5.0, 0.0), x0_u + 5.0 * (x0_c - x0_u))
    rescaled = S.RescaleCFG.execute(model, 0.7).values[0]
    assert rescaled.extras["rescale_cfg"] == 0.7 and rescaled.model_fn is model.model_fn


def test_inpaint_guider_keeps_the_unmasked_latent() -> None:
    model = _const_model({"p": 7.0})
    latent, noise = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :32] = 1.0
    seen = {}

    def fn(x_in, t, cond):
        seen["x_in"] = x_in
        return torch.full_like(x_in, 7.0)

    guided = InpaintGuider(lambda x, s, c=None: Denoiser(fn, "x0", _vp())(x, s, None), model, latent, noise, mask)
    out = guided(torch.zeros(1, 4, 8, 8), torch.tensor(2.0))
    assert torch.allclose(out[..., :4], torch.tensor(7.0)) and torch.equal(out[..., 4:], latent[..., 4:])
    # outside the mask the network saw the image noised to sigma: (latent + 2 noise) / sqrt(5)
    torch.testing.assert_close(seen["x_in"][..., 4:], (latent + 2.0 * noise)[..., 4:] / 5**0.5)


def test_sigma_nodes() -> None:
    model = Denoiser(lambda x, t, c: x, "eps", _vp())
    turbo = S.SDTurboScheduler.execute(model, 2, 1.0).values[0]
    torch.testing.assert_close(turbo, torch.stack([_vp().sigmas[999], _vp().sigmas[899], torch.tensor(0.0)]))
    half = S.SDTurboScheduler.execute(model, 1, 0.5).values[0]
    torch.testing.assert_close(half[0], _vp().sigmas[499])
    sigmas = torch.tensor([4.0, 2.0, 1.0, 0.0])
    high, low = S.SplitSigmas.execute(sigmas, 1).values
    assert high.tolist() == [4.0, 2.0] and low.tolist() == [2.0, 1.0, 0.0]
    assert S.FlipSigmas.execute(sigmas).values[0].tolist() == pytest.approx([1e-4, 1.0, 2.0, 4.0])
    high, low = S.SplitSigmasDenoise.execute(sigmas, 0.34).values
    assert high.tolist() == [4.0, 2.0, 1.0] and low.tolist() == [1.0, 0.0]   # the last round(3 * 0.34) step
    karras = S.KarrasScheduler.execute(3, 10.0, 0.1, 7.0).values[0]
    assert karras[0] == pytest.approx(10.0) and karras[2] == pytest.approx(0.1) and karras[3] == 0
    assert S.ManualSigmas.execute("1, 0.5, 1e-1, 0").values[0].tolist() == pytest.approx([1.0, 0.5, 0.1, 0.0])


def test_model_sampling_discrete() -> None:
    model = Denoiser(lambda x, t, c: x, "eps", _vp(), extras={"arch": "sd1"})
    lcm = S.ModelSamplingDiscrete.execute(model, "lcm", False).values[0]
    assert lcm.boundary == "lcm" and lcm.schedule.sigmas.shape == (50,)
    torch.testing.assert_close(lcm.schedule.sigmas, _vp().sigmas[19::20])
    # timesteps stay in the network's units, snapped to the grid 19, 39, ..., 999
    assert lcm.schedule.timestep(_vp().sigmas[500]).item() in (499.0, 519.0)
    assert lcm.schedule.timestep(lcm.schedule.sigmas[-1]).item() == 999.0
    back = S.ModelSamplingDiscrete.execute(lcm, "v_prediction", True).values[0]
    assert back.prediction == "v" and back.boundary is None and back.schedule.sigmas.shape == (1000,)
    # zero terminal SNR: abar at the last step is ComfyUI's 4.8973e-7, the first step unchanged
    torch.testing.assert_close(back.schedule.sigmas[-1], torch.tensor(((1 - 4.8973e-07) / 4.8973e-07) ** 0.5))
    torch.testing.assert_close(back.schedule.sigmas[0], _vp().sigmas[0])
    edm = S.ModelSamplingContinuousEDM.execute(model, "v_prediction", 120.0, 0.002).values[0]
    assert edm.prediction == "v" and edm.schedule.sigma_max == 120.0
    with pytest.raises(ValueError):
        S.ModelSamplingContinuousEDM.execute(model, "edm_playground_v2.5", 120.0, 0.002)


def test_conditioning_ops() -> None:
    a = [[torch.ones(1, 77, 4), {"pooled_output": torch.ones(1, 2)}]]
    b = [[torch.zeros(1, 154, 4), {"pooled_output": torch.zeros(1, 2)}]]
    avg = C.ConditioningAverage.execute(a, b, 0.25).values[0]
    assert avg[0][0].shape == (1, 77, 4) and torch.allclose(avg[0][0], torch.tensor(0.25))
    assert torch.allclose(avg[0][1]["pooled_output"], torch.tensor(0.25))
    assert C.ConditioningConcat.execute(a, b).values[0][0][0].shape == (1, 231, 4)
    assert len(C.ConditioningCombine.execute(a, b).values[0]) == 2


def test_an_item_picked_from_a_batch_keeps_its_noise() -> None:
    from fewstep.nodes.core.sampling import RandomNoiseSpec

    batch = {"samples": torch.zeros(3, 4, 2, 2)}
    picked = L.LatentFromBatch.execute(batch, 1, 2).values[0]
    # one item at a time (ComfyUI's prepare_noise): item i's noise is the i-th [1, C, h, w] draw
    g = torch.Generator().manual_seed(5)
    draws = [torch.randn((1, 4, 2, 2), generator=g) for _ in range(3)]
    torch.testing.assert_close(RandomNoiseSpec(5).generate(picked), torch.cat(draws[1:]))
