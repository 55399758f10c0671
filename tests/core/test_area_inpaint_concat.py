"""Area conditioning on an inpainting (9-channel) UNet: the concat conditioning (mask, masked-image latent) of
an area entry is the full latent's concat cut to the area, as the latent is (ComfyUI's CONDNoiseShape crop),
not the whole image squeezed into the area."""

from __future__ import annotations

import torch

from fewstep.nodes.core import nodes_conditioning as C
from fewstep.nodes.core.conditioning import ComposedGuider, concat_at_size
from fewstep.nodes.core.denoiser import Denoiser, DiscreteVPSchedule
from fewstep.nodes.core.loaders import UNetFn


def _inpaint_model() -> Denoiser:
    import diffusers

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=9, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32,
    ).eval()
    return Denoiser(UNetFn(unet), "eps", DiscreteVPSchedule.from_config(), extras={"arch": "sd1"})


def test_area_entry_sees_the_concat_cropped_like_the_latent() -> None:
    model = _inpaint_model()
    g = torch.Generator().manual_seed(1)
    mask = (torch.rand(1, 128, 128, generator=g) > 0.5).float()          # pixel-size mask, as InpaintModelConditioning
    image = torch.randn(1, 4, 16, 16, generator=g)                        # masked-image latent
    extra = {"concat_mask": mask, "concat_latent_image": image}
    background = [[torch.randn(1, 7, 32, generator=g), dict(extra)]]
    area = C.ConditioningSetArea.execute([[torch.randn(1, 7, 32, generator=g), dict(extra)]],
                                         64, 64, 32, 64, 1.0).values[0]       # 8 x 8 cells at y 8, x 4
    seen: list[torch.Tensor] = []
    hook = model.model_fn.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        x = torch.randn(1, 4, 16, 16, generator=g)
        ComposedGuider(model, background + area, None, 1.0, x)(x, torch.tensor(3.0))
    finally:
        hook.remove()
    full_mask, full_image = concat_at_size(extra, 16, 16)
    whole, cropped = seen                                               # the background entry, then the area
    assert whole.shape == (1, 9, 16, 16) and cropped.shape == (1, 9, 8, 8)
    torch.testing.assert_close(whole[:, 4:5], full_mask)
    torch.testing.assert_close(whole[:, 5:], full_image)
    torch.testing.assert_close(cropped[:, 4:5], full_mask[..., 8:16, 4:12])
    torch.testing.assert_close(cropped[:, 5:], full_image[..., 8:16, 4:12])
    # the old behaviour (the whole concat resized into the area) differs from the crop
    squeezed = torch.nn.functional.interpolate(image, size=(8, 8), mode="bilinear")
    assert (squeezed - full_image[..., 8:16, 4:12]).abs().max() > 0.5


def test_concat_mask_is_resized_bilinear_then_rounded() -> None:
    mask = torch.zeros(1, 64, 64)
    mask[:, 20:44, 20:44] = 1.0                       # edges inside latent cells: bilinear gives 0.5 there
    out, _ = concat_at_size({"concat_mask": mask, "concat_latent_image": torch.zeros(1, 4, 8, 8)}, 8, 8)
    soft = torch.nn.functional.interpolate(mask[:, None], size=(8, 8), mode="bilinear")
    assert bool(((soft > 0) & (soft < 1)).any())
    torch.testing.assert_close(out, soft.round())
    assert set(out.unique().tolist()) == {0.0, 1.0}


def _unet_inputs(model: Denoiser, latent: dict, positive: list) -> list[torch.Tensor]:
    from fewstep.nodes.core.samplers import get_sampler
    from fewstep.nodes.core.sampling import DisableNoise, GuiderSpec, run

    seen: list[torch.Tensor] = []
    hook = model.model_fn.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        run(GuiderSpec(model, positive), get_sampler("euler"), torch.tensor([2.0, 0.0]), latent, DisableNoise())
    finally:
        hook.remove()
    return seen


def test_without_inpaint_conditioning_the_noise_mask_and_latent_are_the_concat() -> None:
    """ComfyUI's concat_cond defaults: VAEEncodeForInpaint's noise mask and the input latent; with no mask at
    all, mask 1 and the latent of a black image."""
    from fewstep.nodes.core.conditioning import BLACK_LATENT

    model = _inpaint_model()
    g = torch.Generator().manual_seed(4)
    samples = torch.randn(1, 4, 16, 16, generator=g)
    mask = torch.zeros(1, 1, 128, 128)
    mask[..., 36:92, 20:100] = 1.0
    positive = [[torch.randn(1, 7, 32, generator=g), {}]]
    (masked,) = _unet_inputs(model, {"samples": samples, "noise_mask": mask}, positive)
    torch.testing.assert_close(masked[:, 4:5], torch.nn.functional.interpolate(mask, size=(16, 16),
                                                                               mode="bilinear").round())
    torch.testing.assert_close(masked[:, 5:], samples)
    (plain,) = _unet_inputs(model, {"samples": samples}, positive)
    assert bool((plain[:, 4] == 1).all())
    torch.testing.assert_close(plain[0, 5:, 3, 7], torch.tensor(BLACK_LATENT))
    # InpaintModelConditioning's own concat wins over the defaults
    image = torch.randn(1, 4, 16, 16, generator=g)
    own = [[positive[0][0], {"concat_mask": torch.zeros(1, 128, 128), "concat_latent_image": image}]]
    (given,) = _unet_inputs(model, {"samples": samples, "noise_mask": mask}, own)
    assert bool((given[:, 4] == 0).all())
    torch.testing.assert_close(given[:, 5:], image)
