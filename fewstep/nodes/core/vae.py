"""The VAE link value: a diffusers AutoencoderKL plus its latent scaling (IMAGE <-> LATENT samples)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class VAEWrapper:
    """encode(IMAGE [B,H,W,3] in 0..1) -> latent [B,C,H/f,W/f]; decode(latent) -> IMAGE.

    Args:
        vae: diffusers ``AutoencoderKL``.
        scaling_factor / shift_factor: latent = (mean - shift) * scale (Rombach et al. 2022, Sec. 4.3 / App. G:
            unit-variance latents; SD1.5 0.18215, SDXL 0.13025, the built-in VAE its measured 1/std).
    """

    vae: Any
    scaling_factor: float
    shift_factor: float = 0.0

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Posterior mean of the encoder (deterministic, like ComfyUI's VAEEncode)."""
        from fewstep.nodes.core.threads import tiny_cpu_work

        x = images[..., :3].permute(0, 3, 1, 2).to(self.device, self.dtype) * 2 - 1   # [B,3,H,W] in -1..1
        with tiny_cpu_work(self.device, x[0].numel() // 4):
            mean = self.vae.encode(x).latent_dist.mean
        return ((mean - self.shift_factor) * self.scaling_factor).float().cpu()

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """IMAGE [B, H, W, 3] float32 on the CPU. On CUDA the fast decoder (``nodes.core.vae_fast``: a bf16
        copy with fused GroupNorm+SiLU, one CUDA graph per latent shape, tiled above 2048^2 pixels), kept on
        the VAE module so the model cache holds it; elsewhere the plain module call, as before."""
        from fewstep.nodes.core.threads import tiny_cpu_work

        if self.device.type == "cuda":
            from fewstep.nodes.core.vae_fast import fast_decoder_for

            return fast_decoder_for(self.vae, self.scaling_factor, self.shift_factor).decode(latent)

        z = latent.to(self.device, self.dtype) / self.scaling_factor + self.shift_factor
        with tiny_cpu_work(self.device, z[0].numel()):
            x = self.vae.decode(z).sample                                               # [B,3,H,W]
        return ((x.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu()             # [B,H,W,3]
