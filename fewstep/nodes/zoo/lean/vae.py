"""A compact KL autoencoder: the subset of diffusers' ``AutoencoderKL`` the built-in VAE uses
(``weights/fewstep-tiny-vae.json``), with the same parameter names.

Encoder: conv_in -> per level resnets (+ stride-2 conv, zero-padded on the bottom/right, except the
last level) -> mid (resnet, single-head self-attention over H*W, resnet) -> GroupNorm, SiLU, conv_out to
2 * latent channels -> quant_conv (1x1) -> (mean, log-variance) halves (Kingma & Welling 2014).
Decoder: post_quant_conv (1x1) -> conv_in -> mid -> per level (reversed widths) layers_per_block + 1
resnets (+ nearest x2 and conv, except the last level) -> GroupNorm, SiLU, conv_out. All norms eps 1e-6.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import Attention, Config, Downsample, LeanModule, ResnetBlock, Upsample

VAE_EPS = 1e-6
VAE_KEYS = {"in_channels", "out_channels", "latent_channels", "sample_size", "down_block_types",
            "up_block_types", "block_out_channels", "layers_per_block", "norm_num_groups"}


class SpatialSelfAttention(Attention):
    """GroupNorm, then single-head self-attention over the H*W positions (biased q/k/v), plus the input."""

    def __init__(self, channels: int, groups: int):
        super().__init__(channels, heads=1, qkv_bias=True)
        self.group_norm = nn.GroupNorm(groups, channels, eps=VAE_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, c, h, w = x.shape
        t = self.group_norm(x).view(b, c, h * w).transpose(1, 2)          # [B, HW, C]
        # (attention + input): the reference's operand order, which also fixes the memory layout of the
        # sum (channels-last-like strides from the transpose) and with it the next convs' rounding
        return super().forward(t).transpose(1, 2).reshape(b, c, h, w) + x


class VAEMid(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, None, groups, VAE_EPS) for _ in range(2)])
        self.attentions = nn.ModuleList([SpatialSelfAttention(channels, groups)])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](h)))


class VAELevel(nn.Module):
    """Resnets of one resolution level and its optional ``downsamplers`` / ``upsamplers``."""

    def __init__(self, resnets: list[ResnetBlock], sampler: nn.Module | None, kind: str):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        if sampler is not None:
            setattr(self, "downsamplers" if kind == "down" else "upsamplers", nn.ModuleList([sampler]))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for r in self.resnets:
            h = r(h)
        for s in getattr(self, "downsamplers", []) or getattr(self, "upsamplers", []):
            h = s(h)
        return h


class Encoder(nn.Module):
    def __init__(self, c_in: int, latent: int, chans: list[int], layers: int, groups: int):
        super().__init__()
        self.conv_in = nn.Conv2d(c_in, chans[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        for i, c in enumerate(chans):
            prev, last = chans[max(i - 1, 0)], i == len(chans) - 1
            resnets = [ResnetBlock(prev if j == 0 else c, c, None, groups, VAE_EPS) for j in range(layers)]
            self.down_blocks.append(VAELevel(resnets, None if last else Downsample(c, True), "down"))
        self.mid_block = VAEMid(chans[-1], groups)
        self.conv_norm_out = nn.GroupNorm(groups, chans[-1], eps=VAE_EPS)
        self.conv_out = nn.Conv2d(chans[-1], 2 * latent, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down_blocks:
            h = level(h)
        return self.conv_out(F.silu(self.conv_norm_out(self.mid_block(h))))


class Decoder(nn.Module):
    def __init__(self, latent: int, c_out: int, chans: list[int], layers: int, groups: int):
        super().__init__()
        rev = list(reversed(chans))
        self.conv_in = nn.Conv2d(latent, rev[0], 3, padding=1)
        self.mid_block = VAEMid(rev[0], groups)
        self.up_blocks = nn.ModuleList()
        for i, c in enumerate(rev):
            prev, last = rev[max(i - 1, 0)], i == len(rev) - 1
            resnets = [ResnetBlock(prev if j == 0 else c, c, None, groups, VAE_EPS) for j in range(layers + 1)]
            self.up_blocks.append(VAELevel(resnets, None if last else Upsample(c), "up"))
        self.conv_norm_out = nn.GroupNorm(groups, chans[0], eps=VAE_EPS)
        self.conv_out = nn.Conv2d(chans[0], c_out, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid_block(self.conv_in(z))
        for level in self.up_blocks:
            h = level(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class DiagonalGaussian:
    """The encoder's posterior N(mean, exp(logvar)); logvar clamped to [-30, 20] as in SD."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise


class LeanAutoencoderKL(LeanModule):
    """``encode(x).latent_dist`` (a :class:`DiagonalGaussian`) and ``decode(z).sample``; x in -1..1."""

    def __init__(self, config: dict):
        super().__init__()
        extra = sorted(set(config) - VAE_KEYS)
        bad = {t for t in config["down_block_types"]} - {"DownEncoderBlock2D"} | (
            {t for t in config["up_block_types"]} - {"UpDecoderBlock2D"})
        if extra or bad:
            raise ValueError(f"LeanAutoencoderKL: unsupported config fields {extra} or block types {sorted(bad)}; "
                             "load with lean=False")
        self.config = Config(config)
        chans, layers, groups = list(config["block_out_channels"]), int(config["layers_per_block"]), int(config["norm_num_groups"])
        latent = int(config["latent_channels"])
        self.encoder = Encoder(config["in_channels"], latent, chans, layers, groups)
        self.decoder = Decoder(latent, config["out_channels"], chans, layers, groups)
        self.quant_conv = nn.Conv2d(2 * latent, 2 * latent, 1)
        self.post_quant_conv = nn.Conv2d(latent, latent, 1)

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> Any:
        """``x [B, 3, H, W]`` in -1..1 -> object with ``latent_dist`` (unscaled latents)."""
        dist = DiagonalGaussian(self.quant_conv(self.encoder(x)))
        return SimpleNamespace(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> Any:
        """Unscaled latents ``[B, C, h, w]`` -> object with ``.sample`` ``[B, 3, H, W]`` (about -1..1)."""
        out = self.decoder(self.post_quant_conv(z))
        return SimpleNamespace(sample=out) if return_dict else (out,)

    def forward(self, x: torch.Tensor) -> Any:
        return self.decode(self.encode(x).latent_dist.mode())
