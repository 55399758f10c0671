"""The rectified-flow video DiT: full 3D attention over (frame, h, w) latent tokens, text by cross-attention.

Input ``x [B, T, C, h, w]`` (per-frame VAE latents, scaled), ``timestep [B]`` (= sigma * 1000) and the
MiniLM token states ``context [B, L, 384]`` with a key mask ``[B, L]``; output the flow velocity
``v = eps - x0`` with x's shape (Liu et al. 2022; Esser et al. 2024, SD3 eq. 2).

Architecture (DiT, Peebles & Xie 2023, with PixArt-alpha's cross-attention and adaLN-single, Chen et al.
2023 Sec. 2.4):

- patchify: each frame's ``C x h x w`` latent is cut into ``p x p`` patches -> tokens ``[B, T*(h/p)*(w/p), D]``
  in frame-major order: token ``n = (t * (h/p) + i) * (w/p) + j``. A frame is therefore one contiguous
  tile of ``(h/p)*(w/p)`` tokens, the unit of Efficient-vDiT's tile masks.
- factorised 3D position embedding: ``pos[t, i, j] = P_t[t] + P_h[i] + P_w[j]`` (learned tables).
- blocks: adaLN-modulated full self-attention over all ``T*(h/p)*(w/p)`` tokens, cross-attention to the
  projected text tokens, adaLN-modulated feed-forward. ``Attention`` and ``FeedForward`` are diffusers'
  building blocks (``diffusers.models.attention_processor`` / ``diffusers.models.attention``).
- timestep: sinusoidal -> MLP (diffusers ``Timesteps`` / ``TimestepEmbedding``), plus the masked mean of
  the text tokens; one shared linear map gives 6 modulation vectors, each block adds its own table.

Attention hook. Every block's self-attention runs through ``block.attention_fn`` (default
:func:`sdpa_attention`); assign another function of the same signature to make it masked or sparse::

    attention_fn(q, k, v, *, mask=None, grid=None) -> out
        q, k, v, out: [B, heads, N, d]   (N = T * (h/p) * (w/p) tokens, frame-major as above)
        mask:         None for self-attention (the hook decides); [B, 1, 1, L] bool for cross-attention
        grid:         (T, h/p, w/p) token grid for self-attention, None for cross-attention

``VideoDiT.set_attention_fn(fn, layers=None)`` sets it on some or all blocks. The processor that calls it
is :class:`VideoAttnProcessor` (a diffusers attention processor), so ``attn.set_processor`` works too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

AttentionFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class VideoDiTConfig:
    """Sizes of the video DiT (style: nanoGPT's GPTConfig + a presets table)."""

    latent_channels: int = 4   # the built-in VAE's latent channels
    latent_size: int = 16      # h = w of a frame's latent (64 px / f=4)
    patch: int = 2             # p: tokens per frame = (16 / 2)^2 = 64
    max_frames: int = 16       # rows of the frame position table
    dim: int = 128             # D
    depth: int = 4
    heads: int = 4             # head dim D / heads = 32
    mlp_ratio: int = 3
    text_dim: int = 384        # MiniLM hidden size

    def __post_init__(self) -> None:
        if self.dim % self.heads or self.latent_size % self.patch:
            raise ValueError(f"VideoDiTConfig: dim {self.dim} must divide by heads {self.heads} and latent_size "
                             f"{self.latent_size} by patch {self.patch}")

    @property
    def tokens_per_frame(self) -> int:
        return (self.latent_size // self.patch) ** 2


PRESETS: dict[str, VideoDiTConfig] = {
    "tiny": VideoDiTConfig(),   # the shipped model: 1.14 M parameters (2.3 MB fp16); 0.5 s per CFG step on 2 CPU cores
    # trainable on a shared CPU in minutes: 4x4 patches (16 tokens per frame), 0.2 M parameters
    "cpu-demo": VideoDiTConfig(patch=4, dim=64, depth=3, heads=2, mlp_ratio=2, max_frames=8),
    "test": VideoDiTConfig(dim=32, depth=2, heads=2, mlp_ratio=2, max_frames=8),  # unit tests
}


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
                   grid: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Dense attention softmax(q k^T / sqrt(d)) v over all tokens ([B, heads, N, d]); ``grid`` unused."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class VideoAttnProcessor:
    """diffusers attention processor: diffusers' projections and q/k norms, then ``self.attention_fn``."""

    def __init__(self, attention_fn: AttentionFn = sdpa_attention):
        self.attention_fn = attention_fn

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, grid: tuple[int, int, int] | None = None) -> torch.Tensor:
        ctx = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        b, n, _ = hidden_states.shape
        heads = attn.heads
        q, k, v = attn.to_q(hidden_states), attn.to_k(ctx), attn.to_v(ctx)   # [B, N|L, heads*d]
        q, k, v = (t.view(b, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))  # [B, heads, N|L, d]
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        mask = None if attention_mask is None else attention_mask.bool().view(b, 1, 1, -1)  # key mask [B,1,1,L]
        out = self.attention_fn(q, k, v, mask=mask, grid=grid)                # [B, heads, N, d]
        out = out.transpose(1, 2).reshape(b, n, -1)
        return attn.to_out[1](attn.to_out[0](out))


def _attention(dim: int, heads: int, cross: bool) -> nn.Module:
    from diffusers.models.attention_processor import Attention

    return Attention(dim, cross_attention_dim=dim if cross else None, heads=heads, dim_head=dim // heads,
                     qk_norm="rms_norm", bias=True, processor=VideoAttnProcessor())


class VideoDiTBlock(nn.Module):
    """adaLN-single DiT block: modulated full self-attention, cross-attention, modulated feed-forward."""

    def __init__(self, cfg: VideoDiTConfig):
        super().__init__()
        from diffusers.models.attention import FeedForward

        d = cfg.dim
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn1 = _attention(d, cfg.heads, cross=False)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.attn2 = _attention(d, cfg.heads, cross=True)
        self.norm3 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ff = FeedForward(d, mult=cfg.mlp_ratio, activation_fn="gelu-approximate")
        self.scale_shift_table = nn.Parameter(torch.randn(6, d) / d**0.5)  # PixArt-alpha's per-block table

    @property
    def attention_fn(self) -> AttentionFn:
        return self.attn1.processor.attention_fn

    @attention_fn.setter
    def attention_fn(self, fn: AttentionFn) -> None:
        self.attn1.processor.attention_fn = fn

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor | None, mod: torch.Tensor,
                grid: tuple[int, int, int]) -> torch.Tensor:
        # mod [B, 6, D]: shift/scale/gate of attention, then of the MLP (DiT adaLN-Zero, Sec. 3.2)
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.scale_shift_table[None] + mod).unbind(1)
        h = self.norm1(x) * (1 + scale1[:, None]) + shift1[:, None]
        x = x + gate1[:, None] * self.attn1(h, grid=grid)
        x = x + self.attn2(self.norm2(x), encoder_hidden_states=ctx, attention_mask=ctx_mask)
        h = self.norm3(x) * (1 + scale2[:, None]) + shift2[:, None]
        return x + gate2[:, None] * self.ff(h)


class VideoDiT(nn.Module):
    """``forward(x [B,T,C,h,w], timestep [B], context [B,L,384], context_mask [B,L]) -> v [B,T,C,h,w]``."""

    def __init__(self, cfg: VideoDiTConfig):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        self.config = cfg
        d, p, c = cfg.dim, cfg.patch, cfg.latent_channels
        side = cfg.latent_size // p
        self.patch_in = nn.Linear(c * p * p, d)
        self.pos_t = nn.Parameter(torch.randn(cfg.max_frames, d) * 0.02)
        self.pos_h = nn.Parameter(torch.randn(side, d) * 0.02)
        self.pos_w = nn.Parameter(torch.randn(side, d) * 0.02)
        self.time_proj = Timesteps(d, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(d, d)
        self.text_in = nn.Sequential(nn.LayerNorm(cfg.text_dim), nn.Linear(cfg.text_dim, d))
        self.text_pool = nn.Linear(d, d)
        self.adaln = nn.Linear(d, 6 * d)
        self.blocks = nn.ModuleList(VideoDiTBlock(cfg) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.out_table = nn.Parameter(torch.randn(2, d) / d**0.5)
        self.patch_out = nn.Linear(d, c * p * p)
        nn.init.zeros_(self.patch_out.weight)  # DiT: zero-initialised output, the model starts at v = 0
        nn.init.zeros_(self.patch_out.bias)

    def set_attention_fn(self, fn: AttentionFn, layers: Iterable[int] | None = None) -> None:
        """Use ``fn`` (see the module docstring) as the self-attention of blocks ``layers`` (default: all)."""
        for i in range(len(self.blocks)) if layers is None else layers:
            self.blocks[i].attention_fn = fn

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, C, h, w] -> [B, T*(h/p)*(w/p), C*p*p], frame-major token order."""
        b, t, c, h, w = x.shape
        p = self.config.patch
        x = x.reshape(b, t, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)  # [B,T,h/p,w/p,C,p,p]
        return x.reshape(b, t * (h // p) * (w // p), c * p * p)

    def unpatchify(self, tokens: torch.Tensor, t: int) -> torch.Tensor:
        """[B, T*(h/p)*(w/p), C*p*p] -> [B, T, C, h, w]."""
        cfg = self.config
        b, p, s, c = tokens.shape[0], cfg.patch, cfg.latent_size // cfg.patch, cfg.latent_channels
        x = tokens.reshape(b, t, s, s, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)        # [B,T,C,s,p,s,p]
        return x.reshape(b, t, c, s * p, s * p)

    def _check(self, x: torch.Tensor, context: torch.Tensor) -> None:
        cfg = self.config
        if x.ndim != 5 or x.shape[2] != cfg.latent_channels or x.shape[-1] != cfg.latent_size or x.shape[-2] != cfg.latent_size:
            raise ValueError(f"VideoDiT: x must be [B, T, {cfg.latent_channels}, {cfg.latent_size}, "
                             f"{cfg.latent_size}], got {tuple(x.shape)}")
        if not 1 <= x.shape[1] <= cfg.max_frames:
            raise ValueError(f"VideoDiT: {x.shape[1]} frames; this model handles 1..{cfg.max_frames}")
        if context.ndim != 3 or context.shape[-1] != cfg.text_dim:
            raise ValueError(f"VideoDiT: context must be [B, L, {cfg.text_dim}], got {tuple(context.shape)}")

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        self._check(x, context)
        b, t = x.shape[:2]
        s = self.config.latent_size // self.config.patch
        pos = (self.pos_t[:t, None, None] + self.pos_h[None, :, None] + self.pos_w[None, None, :]).reshape(t * s * s, -1)
        tokens = self.patch_in(self.patchify(x)) + pos                        # [B, N, D], N = T s s
        ctx = self.text_in(context.to(tokens.dtype))                           # [B, L, D]
        m = torch.ones(ctx.shape[:2], device=ctx.device) if context_mask is None else context_mask.to(ctx.dtype)
        pooled = (ctx * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1)   # masked mean [B, D]
        emb = self.time_embed(self.time_proj(timestep.reshape(-1).expand(b)).to(tokens.dtype)) + self.text_pool(pooled)
        mod = self.adaln(F.silu(emb)).view(b, 6, -1)                           # [B, 6, D]
        for block in self.blocks:
            tokens = block(tokens, ctx, context_mask, mod, (t, s, s))
        shift, scale = (self.out_table[None] + emb[:, None]).unbind(1)
        out = self.patch_out(self.norm_out(tokens) * (1 + scale[:, None]) + shift[:, None])
        return self.unpatchify(out, t)


def config_dict(cfg: VideoDiTConfig) -> dict[str, int]:
    """JSON-serialisable config (saved beside the weights)."""
    return asdict(cfg)
