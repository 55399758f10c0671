"""Tiled VAE encode / decode for images too large for one pass (ComfyUI's VAEEncodeTiled / VAEDecodeTiled).

The latent grid is cut into tiles of ``tile`` latent cells overlapping by ``overlap``; each tile is mapped
alone (decoded, or its pixels encoded) and the results are blended with per-pixel weights that fall
linearly to ~0 across every overlap with a neighbour (a feather mask), divided by the summed weight:

    out(p) = sum_k w_k(p) f(tile_k)(p) / sum_k w_k(p).

The VAE's GroupNorm statistics are per tile, so a tiled result is close to, not equal to, the one-pass
result (tests/core/test_vae_tiled_sdxl_text.py measures the gap). ComfyUI additionally averages three
tilings of different aspect ratios for 2-D images; we blend one. ``check_interrupted`` runs between tiles.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fewstep.app.api import check_interrupted
from fewstep.nodes.core.vae import VAEWrapper


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles covering [0, length) with stride tile - overlap, the last tile flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap)) + [length - tile]
    return sorted(set(starts))


def _feather(size: int, before: int, after: int) -> torch.Tensor:
    """Weights [size]: 1 inside, a linear ramp from ~0 to 1 over the ``before`` / ``after`` cells shared with
    the previous / next tile (no ramp on an image border)."""
    i = torch.arange(size, dtype=torch.float32) + 0.5
    w = torch.ones(size)
    if before > 0:
        w = torch.minimum(w, i / before)
    if after > 0:
        w = torch.minimum(w, (size - i) / after)
    return w.clamp_min(1e-3)


def tiled_map(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grid: tuple[int, int], tile: int,
              overlap: int, in_scale: int, out_scale: int) -> torch.Tensor:
    """Apply ``fn`` tile by tile and blend.

    Args:
        fn: a tile of ``x`` [B, C, th * in_scale, tw * in_scale] -> [B, C', th * out_scale, tw * out_scale].
        x: [B, C, h * in_scale, w * in_scale] with (h, w) = ``grid``, the latent cells.
        tile / overlap: tile size and overlap in latent cells (0 <= overlap < tile).
        in_scale / out_scale: pixels per latent cell of the input / output (decode: 1 / f; encode: f / 1).
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"tiled VAE: need 0 <= overlap < tile (in latent cells), got tile={tile}, overlap={overlap}")
    h, w = grid
    rows, cols = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    out = total = None
    for i, y in enumerate(rows):
        for j, x0 in enumerate(cols):
            check_interrupted()
            th, tw = min(tile, h - y), min(tile, w - x0)
            part = fn(x[..., y * in_scale:(y + th) * in_scale, x0 * in_scale:(x0 + tw) * in_scale]).float()
            if out is None:
                out = torch.zeros((*part.shape[:2], h * out_scale, w * out_scale), device=part.device)
                total = torch.zeros((h * out_scale, w * out_scale), device=part.device)
            before_y = (rows[i - 1] + tile - y) * out_scale if i > 0 else 0
            after_y = (y + th - rows[i + 1]) * out_scale if i + 1 < len(rows) else 0
            before_x = (cols[j - 1] + tile - x0) * out_scale if j > 0 else 0
            after_x = (x0 + tw - cols[j + 1]) * out_scale if j + 1 < len(cols) else 0
            weight = (_feather(th * out_scale, before_y, after_y)[:, None]
                      * _feather(tw * out_scale, before_x, after_x)[None, :]).to(part.device)
            ys, xs = slice(y * out_scale, (y + th) * out_scale), slice(x0 * out_scale, (x0 + tw) * out_scale)
            out[..., ys, xs] += part * weight
            total[ys, xs] += weight
    assert out is not None and total is not None
    return out / total


def _latent_tiling(tile_size: int, overlap: int, factor: int) -> tuple[int, int]:
    """(tile, overlap) in latent cells from ComfyUI's pixel inputs; the overlap is capped at tile_size / 4
    (as ComfyUI) and the tile is at least one cell more than the overlap."""
    if tile_size < overlap * 4:
        overlap = tile_size // 4
    tile, over = max(tile_size // factor, 1), overlap // factor
    return max(tile, over + 1), over


def decode_tiled(vae: VAEWrapper, latent: torch.Tensor, tile_size: int, overlap: int) -> torch.Tensor:
    """IMAGE [B, H, W, 3] from LATENT samples [B, C, h, w] through ``vae.decode`` on tiles of ``tile_size`` pixels."""
    factor = vae.downscale
    tile, over = _latent_tiling(tile_size, overlap, factor)

    def decode(z: torch.Tensor) -> torch.Tensor:
        return vae.decode(z).permute(0, 3, 1, 2)                    # IMAGE tile -> [B, 3, th f, tw f]

    image = tiled_map(decode, latent, tuple(latent.shape[-2:]), tile, over, 1, factor)
    return image.clamp(0, 1).permute(0, 2, 3, 1).cpu()


def encode_tiled(vae: VAEWrapper, pixels: torch.Tensor, tile_size: int, overlap: int) -> torch.Tensor:
    """LATENT samples [B, C, H/f, W/f] of IMAGE [B, H, W, 3] (H, W multiples of f) through ``vae.encode`` on
    tiles of ``tile_size`` pixels."""
    factor = vae.downscale
    tile, over = _latent_tiling(tile_size, overlap, factor)
    grid = (pixels.shape[1] // factor, pixels.shape[2] // factor)
    chw = pixels[..., :3].permute(0, 3, 1, 2)                        # [B, 3, H, W]

    def encode(part: torch.Tensor) -> torch.Tensor:
        return vae.encode(part.permute(0, 2, 3, 1))

    return tiled_map(encode, chw, grid, tile, over, factor, 1).cpu()
