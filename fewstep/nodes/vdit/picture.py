"""Tile maps as a picture: one heat map per layer, side by side (IMAGE: [1, H, W, 3] float in 0..1)."""

from __future__ import annotations

import torch

CELL_PX = 12   # pixels per tile: 8 frames -> 96 px per layer


def tile_maps_image(maps: torch.Tensor, gap: int = 4) -> torch.Tensor:
    """``maps [layers, T, T]`` (rows sum to 1) -> one image; each map stretched from its own minimum (dark blue)
    to its maximum (yellow), so the structure shows even where the mass is nearly uniform."""
    layers, frames, _ = maps.shape
    side = frames * CELL_PX
    canvas = torch.ones(side, layers * side + (layers - 1) * gap, 3)
    low, high = torch.tensor([0.05, 0.05, 0.25]), torch.tensor([1.0, 0.9, 0.2])
    for i, tile in enumerate(maps):
        low_v, high_v = tile.min(), tile.max()
        level = ((tile - low_v) / (high_v - low_v).clamp_min(1e-12)).clamp(0, 1)   # [T, T]
        colour = low + level[..., None] * (high - low)                         # [T, T, 3]
        block = colour.repeat_interleave(CELL_PX, 0).repeat_interleave(CELL_PX, 1)
        start = i * (side + gap)
        canvas[:, start:start + side] = block
    return canvas[None]
