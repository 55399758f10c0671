"""Building blocks shared by the lean UNet and VAE (pure torch; parameter names as diffusers spells them).

Only the subset the built-in models use: GroupNorm/SiLU residual blocks with an optional timestep
projection, stride-2 conv downsampling, nearest-neighbour x2 upsampling + conv, the sinusoidal
timestep embedding and multi-head attention through ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Config(dict):
    """A model config readable both as ``cfg["key"]`` and ``cfg.key`` (what the core wrappers read)."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(f"config has no field {name!r}") from e


class LeanModule(nn.Module):
    """``nn.Module`` with the ``dtype`` / ``device`` properties diffusers' and transformers' models have."""

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features ``[B, dim]`` of timesteps ``[B]`` (Ho et al. 2020 / Vaswani et al. 2017).

    Frequencies ``f_i = max_period ** (-i / half)`` for i = 0..half-1 (no frequency shift); the cosines
    come first ("flip_sin_to_cos"), as in SD's UNet. Computed in fp32 whatever the model dtype.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class ResnetBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3 (+ projected time embedding) -> GroupNorm -> SiLU -> conv3x3, plus a
    1x1-conv shortcut when the channel count changes. ``temb_dim=None``: no time input (VAE)."""

    def __init__(self, c_in: int, c_out: int, temb_dim: int | None, groups: int, eps: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in, eps=eps)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_dim, c_out) if temb_dim is not None else None
        self.norm2 = nn.GroupNorm(groups, c_out, eps=eps)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]   # [B, C, 1, 1] broadcast
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h


class Downsample(nn.Module):
    """3x3 conv with stride 2. ``pad_right=True`` (the VAE encoder): no conv padding, one zero row and
    column added on the bottom/right first; otherwise symmetric padding 1 (the UNet)."""

    def __init__(self, channels: int, pad_right: bool):
        super().__init__()
        self.pad_right = pad_right
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0 if pad_right else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_right:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling (x2, or to ``size``) followed by a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)


class Attention(nn.Module):
    """Multi-head attention ``softmax(q k^T / sqrt(d_head)) v`` with the projections named to_q/to_k/to_v
    and to_out.0. ``x [B, N, C]``, ``context [B, M, C_ctx]`` (self-attention when None) -> ``[B, N, C]``."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, qkv_bias: bool = False):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_k = nn.Linear(context_dim or dim, dim, bias=qkv_bias)
        self.to_v = nn.Linear(context_dim or dim, dim, bias=qkv_bias)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        ctx = x if context is None else context
        b, n, c = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:            # [B, L, C] -> [B, heads, L, C/heads]
            return t.view(b, -1, self.heads, c // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.to_q(x)), split(self.to_k(ctx)), split(self.to_v(ctx)))
        return self.to_out[0](out.transpose(1, 2).reshape(b, n, c))
