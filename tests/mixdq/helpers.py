"""Tiny models and a few-step runner for the MixDQ tests (CPU, seconds)."""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel


def tiny_unet(seed: int = 0) -> UNet2DConditionModel:
    """A 2-level UNet2DConditionModel with cross-attention (all quantizable layer kinds present)."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24, attention_head_dim=8, norm_num_groups=8,
    ).eval()


def text_states(n: int, seed: int = 1, *, bos_outlier: float = 40.0, tokens: int = 6) -> torch.Tensor:
    """Fake text-encoder states [n, tokens, 24]: token 0 is one fixed large outlier row (like CLIP's BOS)."""
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(n, tokens, 24, generator=g)
    bos = torch.randn(24, generator=torch.Generator().manual_seed(123)) * bos_outlier
    states[:, 0] = bos
    return states


def make_runner(cond: torch.Tensor, steps: int = 2, seed: int = 0):
    """runner(net) -> final latents of a deterministic few-step Euler loop on x0 = x - sigma * eps."""
    sigmas = torch.linspace(3.0, 0.0, steps + 1)

    @torch.no_grad()
    def runner(net):
        x = torch.randn(cond.shape[0], 4, 8, 8, generator=torch.Generator().manual_seed(seed)) * sigmas[0]
        for i in range(steps):
            s = sigmas[i]
            eps = net(x / (s**2 + 1).sqrt(), torch.full((x.shape[0],), 999.0 * float(s) / 3.0),
                      encoder_hidden_states=cond).sample
            x0 = x - s * eps
            x = x0 + sigmas[i + 1] * eps
        return x
    return runner
