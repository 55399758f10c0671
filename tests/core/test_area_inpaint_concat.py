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
