"""One tiny random diffusers UNet as an ε-denoiser: the shared subject of the step-by-step comparisons of
our samplers with diffusers' schedulers (``test_diffusers_equivalence``, ``test_samplers_diffusers``)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from fewstep.nodes.core.denoiser import Denoiser, DiscreteVPSchedule

BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")   # SD1.5's schedule


def tiny_eps_unet() -> tuple[Callable[[torch.Tensor, torch.Tensor | float], torch.Tensor], Denoiser, torch.Tensor]:
    """(eps(x, t), the same net as our Denoiser, a start latent [1, 4, 8, 8]); seeded, so both files see one net."""
    import diffusers

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32,
    ).eval()
    ctx = torch.randn(1, 7, 32)

    def eps(x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        with torch.no_grad():
            return unet(x, t, encoder_hidden_states=ctx).sample

    denoiser = Denoiser(lambda x, t, cond: eps(x, t), "eps", DiscreteVPSchedule.from_config(**BETAS))
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    return eps, denoiser, latent
