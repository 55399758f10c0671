"""A compact text-conditioned UNet: the subset of diffusers' ``UNet2DConditionModel`` the built-in
teacher uses (``weights/fewstep-tiny-teacher.json``), with the same parameter names, so the shipped
state dict loads as it is.

Layout (Rombach et al. 2022, SD's UNet): conv_in -> down blocks (resnet [+ transformer] per layer, then
a stride-2 conv except in the last block) -> mid (resnet, transformer, resnet) -> up blocks (each layer
concatenates the matching down-path feature, layers_per_block + 1 of them per block, then nearest x2 +
conv except in the last block) -> GroupNorm, SiLU, conv_out. Every resnet adds a projection of the time
embedding ``MLP(sinusoid(t))``. A transformer is GroupNorm -> 1x1 conv -> [self-attn, cross-attn to the
text states, GEGLU MLP], each pre-LayerNorm and residual -> 1x1 conv, plus the block input.

Config quirk kept from diffusers: ``attention_head_dim`` is the number of heads (head width C / heads).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import Attention, Config, Downsample, LeanModule, ResnetBlock, Upsample, timestep_features

UNET_EPS = 1e-5           # GroupNorm eps of the resnets and the output norm; LayerNorm eps of the blocks
TRANSFORMER_GN_EPS = 1e-6  # GroupNorm eps at the input of each transformer
DOWN_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")


class GEGLU(nn.Module):
    """``a * gelu(g)`` where ``[a, g] = proj(x)`` split in halves (Shazeer 2020); exact (erf) GELU."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(g)


class TransformerBlock(nn.Module):
    """Pre-LN self-attention, cross-attention and GEGLU feed-forward (4x width), each residual."""

    def __init__(self, dim: int, heads: int, context_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=UNET_EPS)
        self.attn1 = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=UNET_EPS)
        self.attn2 = Attention(dim, heads, context_dim)
        self.norm3 = nn.LayerNorm(dim, eps=UNET_EPS)
        self.ff = SimpleFF(dim, 4 * dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SimpleFF(nn.Module):
    """``net = [GEGLU, dropout (identity at inference), Linear]`` (names ``ff.net.0.proj``, ``ff.net.2``)."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Identity(), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SpatialTransformer(nn.Module):
    """GroupNorm -> 1x1 conv -> transformer block over the H*W tokens -> 1x1 conv, plus the input."""

    def __init__(self, channels: int, heads: int, context_dim: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=TRANSFORMER_GN_EPS)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(channels, heads, context_dim)])
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.proj_in(self.norm(x)).permute(0, 2, 3, 1).reshape(b, h * w, c)   # [B, HW, C]
        for block in self.transformer_blocks:
            t = block(t, context)
        return x + self.proj_out(t.reshape(b, h, w, c).permute(0, 3, 1, 2))


class UNetBlock(nn.Module):
    """One down or up block: ``resnets`` (+ ``attentions``) and an optional down/upsampler."""

    def __init__(self, resnets: list[ResnetBlock], attentions: list[SpatialTransformer] | None,
                 sampler: nn.Module | None, kind: str):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(attentions) if attentions else None
        if sampler is not None:
            setattr(self, "downsamplers" if kind == "down" else "upsamplers", nn.ModuleList([sampler]))

    def layer(self, i: int, h: torch.Tensor, temb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h = self.resnets[i](h, temb)
        return h if self.attentions is None else self.attentions[i](h, context)


class MidBlock(nn.Module):
    """resnet -> transformer -> resnet at the lowest resolution."""

    def __init__(self, channels: int, temb_dim: int, heads: int, context_dim: int, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, temb_dim, groups, UNET_EPS) for _ in range(2)])
        self.attentions = nn.ModuleList([SpatialTransformer(channels, heads, context_dim, groups)])

    def forward(self, h: torch.Tensor, temb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h = self.resnets[0](h, temb)
        return self.resnets[1](self.attentions[0](h, context), temb)


class TimestepEmbedding(nn.Module):
    """``linear_2(silu(linear_1(features + cond_proj(condition))))``; ``cond_proj`` (no bias) exists only
    with ``time_cond_proj_dim`` (LCM's w-embedding slot, SLAM's γ input)."""

    def __init__(self, c_in: int, dim: int, cond_proj_dim: int | None = None):
        super().__init__()
        self.linear_1 = nn.Linear(c_in, dim)
        self.linear_2 = nn.Linear(dim, dim)
        self.cond_proj = None if cond_proj_dim is None else nn.Linear(cond_proj_dim, c_in, bias=False)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        if condition is not None:
            if self.cond_proj is None:
                raise ValueError("LeanUNet: timestep_cond given but the config has no time_cond_proj_dim")
            x = x + self.cond_proj(condition)
        return self.linear_2(F.silu(self.linear_1(x)))


UNET_KEYS = {"sample_size", "in_channels", "out_channels", "cross_attention_dim", "down_block_types",
             "up_block_types", "block_out_channels", "layers_per_block", "attention_head_dim", "norm_num_groups",
             "time_cond_proj_dim"}


def _check_unet_config(cfg: dict) -> None:
    """Refuse configs outside the supported subset (the error names the field)."""
    extra = sorted(set(cfg) - UNET_KEYS)
    if extra:
        raise ValueError(f"LeanUNet: config fields {extra} are not supported by the lean runtime "
                         f"(supported: {sorted(UNET_KEYS)}); load with lean=False")
    downs, ups = list(cfg["down_block_types"]), list(cfg["up_block_types"])
    bad = [t for t in downs if t not in DOWN_TYPES] + [t for t in ups if t not in UP_TYPES]
    if bad or len(downs) != len(ups) or len(downs) != len(cfg["block_out_channels"]):
        raise ValueError(f"LeanUNet: unsupported block layout down={downs} up={ups} "
                         f"channels={cfg['block_out_channels']}")
    mirrored = [d.startswith("CrossAttn") for d in downs] == [u.startswith("CrossAttn") for u in reversed(ups)]
    if not mirrored:
        raise ValueError(f"LeanUNet: up blocks {ups} do not mirror down blocks {downs}")


class LeanUNet(LeanModule):
    """See the module docstring. ``forward(sample, timestep, encoder_hidden_states)`` -> ``.sample``."""

    def __init__(self, config: dict):
        super().__init__()
        _check_unet_config(config)
        self.config = Config(config)
        chans, groups = list(config["block_out_channels"]), int(config["norm_num_groups"])
        heads, ctx, layers = int(config["attention_head_dim"]), int(config["cross_attention_dim"]), int(config["layers_per_block"])
        temb = 4 * chans[0]
        self.conv_in = nn.Conv2d(config["in_channels"], chans[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(chans[0], temb, config.get("time_cond_proj_dim"))
        skips = [chans[0]]                      # channels of every feature the down path hands to the up path
        self.down_blocks = nn.ModuleList()
        for i, kind in enumerate(config["down_block_types"]):
            c_in, c_out, last = chans[max(i - 1, 0)], chans[i], i == len(chans) - 1
            resnets = [ResnetBlock(c_in if j == 0 else c_out, c_out, temb, groups, UNET_EPS) for j in range(layers)]
            attns = ([SpatialTransformer(c_out, heads, ctx, groups) for _ in range(layers)]
                     if kind.startswith("CrossAttn") else None)
            self.down_blocks.append(UNetBlock(resnets, attns, None if last else Downsample(c_out, False), "down"))
            skips += [c_out] * (layers + (0 if last else 1))
        self.mid_block = MidBlock(chans[-1], temb, heads, ctx, groups)
        self.up_blocks = nn.ModuleList()
        prev = chans[-1]
        for i, kind in enumerate(config["up_block_types"]):
            c_out, last = chans[-1 - i], i == len(chans) - 1
            resnets = [ResnetBlock((prev if j == 0 else c_out) + skips.pop(), c_out, temb, groups, UNET_EPS)
                       for j in range(layers + 1)]
            attns = ([SpatialTransformer(c_out, heads, ctx, groups) for _ in range(layers + 1)]
                     if kind.startswith("CrossAttn") else None)
            self.up_blocks.append(UNetBlock(resnets, attns, None if last else Upsample(c_out), "up"))
            prev = c_out
        self.conv_norm_out = nn.GroupNorm(groups, chans[0], eps=UNET_EPS)
        self.conv_out = nn.Conv2d(chans[0], config["out_channels"], 3, padding=1)

    def _time(self, timestep: Any, batch: int, like: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Time embedding ``[B, 4 C0]`` from a scalar, ``[]`` or ``[B]`` timestep (and ``cond [B, D]``)."""
        t = torch.as_tensor(timestep, device=like.device)
        t = t.reshape(1) if t.ndim == 0 else t
        feats = timestep_features(t.expand(batch), self.config["block_out_channels"][0])
        return self.time_embedding(feats.to(like.dtype), cond)

    def forward(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor,
                added_cond_kwargs: dict | None = None, return_dict: bool = True,
                timestep_cond: torch.Tensor | None = None, **unused: Any) -> Any:
        """``sample [B, C, H, W]``, ``timestep`` scalar or ``[B]``, ``encoder_hidden_states [B, T, D]``,
        ``timestep_cond [B, time_cond_proj_dim]`` (only with that config field).

        Returns an object with ``.sample`` (``[B, C_out, H, W]``), or a 1-tuple when ``return_dict=False``.
        """
        if added_cond_kwargs or any(v is not None for v in unused.values()):
            raise ValueError(f"LeanUNet: the built-in UNet takes no extra conditioning "
                             f"({sorted(unused) + (['added_cond_kwargs'] if added_cond_kwargs else [])})")
        temb = self._time(timestep, sample.shape[0], sample, timestep_cond)
        h = self.conv_in(sample)
        skips = [h]
        for block in self.down_blocks:
            for i in range(len(block.resnets)):
                h = block.layer(i, h, temb, encoder_hidden_states)
                skips.append(h)
            if hasattr(block, "downsamplers"):
                h = block.downsamplers[0](h)
                skips.append(h)
        h = self.mid_block(h, temb, encoder_hidden_states)
        for block in self.up_blocks:
            for i in range(len(block.resnets)):
                h = block.layer(i, torch.cat([h, skips.pop()], dim=1), temb, encoder_hidden_states)
            if hasattr(block, "upsamplers"):
                h = block.upsamplers[0](h, size=skips[-1].shape[-2:])   # to the next skip's size
        out = self.conv_out(F.silu(self.conv_norm_out(h)))
        return SimpleNamespace(sample=out) if return_dict else (out,)
