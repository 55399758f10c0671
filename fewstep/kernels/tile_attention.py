"""Tile-sparse 3D attention (Efficient-vDiT, Ding et al. 2025, arXiv 2502.06155), beside its dense reference.

A video DiT attends over frame-major tokens: token ``n = t * P + p`` for frame ``t`` of ``T`` and position
``p`` of the ``P`` tokens a frame has. Its attention map falls into ``T x T`` tiles of ``P x P``; Efficient-vDiT
keeps a fixed, data-independent family of tile patterns, written ``a:b`` with ``a + b = T``:

- the first ``a`` frames are global references: their queries attend to every frame;
- every other frame's queries attend to the ``a`` references and to their own frame (the diagonal tile).

Tiles computed: ``a * T + (T - a) * (a + 1)``, so the sparsity is

    s(T, a) = 1 - (a T + (T - a)(a + 1)) / T^2,

e.g. 2:6 on 8 frames computes 34 of 64 tiles (s = 46.9 %; the paper reports 45.5 % at 29 video frames,
8 latent frames: its sequence also holds text tokens), 3:21 on 24 frames computes 156 of 576 (s = 72.9 %;
paper 72.1 % at 93 video frames). Attention time should then fall like ``1 / (1 - s)``.

Three implementations with one signature ``fn(q, k, v, layout, tokens_per_frame) -> out`` over
``q, k, v, out: [B, heads, T * P, d]``:

- :func:`reference_tile_attention`: dense SDPA with the token-level boolean mask (every tile computed, the
  masked ones thrown away) - the definition;
- :func:`gathered_tile_attention`: exact, in plain PyTorch, computing only the kept tiles: the reference
  frames' queries run dense; the other frames become a batch of ``T - a`` small attentions over
  ``(a + 1) P`` keys each. Works on any device and in autograd (training the sparse student);
- :func:`flex_tile_attention`: ``torch.nn.attention.flex_attention`` with a block mask, the fused GPU kernel
  (compiled; on the CPU flex_attention runs an unfused eager version, used by the tests).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class TileLayout:
    """The ``a:b`` pattern on ``frames = a + b`` frames: ``refs = a`` global reference frames (the first ones)."""

    frames: int
    refs: int

    def __post_init__(self) -> None:
        if self.frames < 1 or not 0 <= self.refs <= self.frames:
            raise ValueError(f"TileLayout needs frames >= 1 and 0 <= refs <= frames, got {self.frames}, {self.refs}")

    @classmethod
    def parse(cls, text: str) -> TileLayout:
        """``"2:6"`` -> TileLayout(frames=8, refs=2); ``"dense"`` is not a layout (use no mask)."""
        match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
        if match is None:
            raise ValueError(f"a tile mask is written 'a:b' (a reference frames, b others), got {text!r}")
        refs, rest = int(match[1]), int(match[2])
        return cls(frames=refs + rest, refs=refs)

    @property
    def name(self) -> str:
        return f"{self.refs}:{self.frames - self.refs}"

    def tiles(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``[T, T]`` bool: query frame (row) attends to key frame (column)."""
        frame = torch.arange(self.frames, device=device)
        return (frame[:, None] < self.refs) | (frame[None, :] < self.refs) | (frame[:, None] == frame[None, :])

    @property
    def computed_tiles(self) -> int:
        return self.refs * self.frames + (self.frames - self.refs) * (self.refs + 1) if self.refs < self.frames \
            else self.frames * self.frames

    @property
    def sparsity(self) -> float:
        """Fraction of the ``T^2`` tiles skipped (the formula in the module docstring)."""
        return 1.0 - self.computed_tiles / self.frames ** 2

    def for_frames(self, frames: int) -> TileLayout:
        """The same number of reference frames on another clip length (capped at the clip)."""
        return TileLayout(frames=frames, refs=min(self.refs, frames))


def token_mask(layout: TileLayout, tokens_per_frame: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``[N, N]`` bool with ``N = T * P``: each tile of :meth:`TileLayout.tiles` repeated over ``P x P`` tokens."""
    tiles = layout.tiles(device)
    return tiles.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)


def _check(q: torch.Tensor, layout: TileLayout, tokens_per_frame: int) -> None:
    if q.shape[-2] != layout.frames * tokens_per_frame:
        raise ValueError(f"tile attention: {q.shape[-2]} tokens, but the layout has {layout.frames} frames of "
                         f"{tokens_per_frame} tokens")


def reference_tile_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: TileLayout,
                             tokens_per_frame: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + log M) v with the token mask M (dense: every tile computed)."""
    _check(q, layout, tokens_per_frame)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=token_mask(layout, tokens_per_frame, q.device))


def gathered_tile_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: TileLayout,
                            tokens_per_frame: int) -> torch.Tensor:
    """Exactly the reference, computing only the kept tiles.

    Reference frames (rows ``t < a``): dense attention over all ``T P`` keys. Other frames ``t >= a``: keys
    and values of the ``a`` reference frames ``[B, H, a P, d]`` followed by the frame's own ``[B, H, P, d]``,
    stacked into a batch ``[B, H, T - a, (a + 1) P, d]`` so one SDPA call runs them all."""
    _check(q, layout, tokens_per_frame)
    t, a, p = layout.frames, layout.refs, tokens_per_frame
    if a >= t:
        return F.scaled_dot_product_attention(q, k, v)
    batch, heads, _, d = q.shape
    out_refs = F.scaled_dot_product_attention(q[:, :, : a * p], k, v) if a else q[:, :, :0]
    q_rest = q[:, :, a * p:].reshape(batch, heads, t - a, p, d)

    def keys(x: torch.Tensor) -> torch.Tensor:
        own = x[:, :, a * p:].reshape(batch, heads, t - a, p, d)
        shared = x[:, :, : a * p].unsqueeze(2).expand(batch, heads, t - a, a * p, d)
        return torch.cat([shared, own], dim=3)                        # [B, H, T - a, (a + 1) P, d]

    out_rest = F.scaled_dot_product_attention(q_rest, keys(k), keys(v))  # [B, H, T - a, P, d]
    return torch.cat([out_refs, out_rest.reshape(batch, heads, (t - a) * p, d)], dim=2)


@lru_cache(maxsize=32)
def _block_mask(frames: int, refs: int, tokens_per_frame: int, device: str) -> object:
    from torch.nn.attention.flex_attention import create_block_mask

    def keep(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        q_frame, kv_frame = q_idx // tokens_per_frame, kv_idx // tokens_per_frame
        return (q_frame < refs) | (kv_frame < refs) | (q_frame == kv_frame)

    n = frames * tokens_per_frame
    return create_block_mask(keep, None, None, n, n, device=device)


def flex_tile_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: TileLayout,
                        tokens_per_frame: int) -> torch.Tensor:
    """The tile pattern as a flex-attention block mask (128-token blocks; a block that straddles a frame
    border is evaluated token by token). Call it under ``torch.compile`` on CUDA for the fused kernel."""
    from torch.nn.attention.flex_attention import flex_attention

    _check(q, layout, tokens_per_frame)
    block_mask = _block_mask(layout.frames, layout.refs, tokens_per_frame, str(q.device))
    return flex_attention(q, k, v, block_mask=block_mask)
