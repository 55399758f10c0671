"""Analytic motion tracker: the centroid of the object's colour mask in every frame, then the motion.

For a clip whose caption names the colour, a pixel belongs to the object when its RGB distance to that
colour of ``data.COLOURS`` is below ``COLOUR_TOLERANCE`` and it is nearer that colour than the
background. The centroid track ``[T, 2]`` is classified by rules on its displacements (pixels at 64x64):

- "standing still": the track stays within ``STILL_RANGE`` px on both axes;
- "bouncing": vertical range >= ``MIN_TRAVEL`` px, the vertical velocity changes sign, horizontal range
  < ``STILL_RANGE`` (the rendered hop: 14 px high, period 6 frames);
- otherwise the axis and sign of the larger net displacement (first to last tracked frame) give
  "moving left/right/up/down" (the rendered speed: 2.5 px per frame, 17.5 px over 8 frames).

Frames where the mask is empty are skipped; fewer than 2 tracked frames give the motion "lost".
"""

from __future__ import annotations

import numpy as np
import torch

from fewstep.nodes.zoo import data

COLOUR_TOLERANCE = 70.0   # RGB distance (0..255 scale); the closest two colours (red/purple) are ~100 apart
STILL_RANGE = 4.0         # px: jitter of a still object's centroid in a generated clip stays below this
MIN_TRAVEL = 6.0          # px: a third of the straight motions' travel over 8 frames
MIN_PIXELS = 4            # a mask smaller than this counts as empty (a small circle covers ~95 px)


def colour_mask(frames: np.ndarray, colour: str) -> np.ndarray:
    """Boolean mask ``[T, H, W]`` of pixels of ``colour`` in uint8 frames ``[T, H, W, 3]``."""
    if colour not in data.COLOURS:
        raise ValueError(f"colour_mask: unknown colour {colour!r}; choose one of {list(data.COLOURS)}")
    f = frames.astype(np.float32)
    d_obj = np.linalg.norm(f - np.array(data.COLOURS[colour], np.float32), axis=-1)
    d_bg = np.linalg.norm(f - np.array(data.BACKGROUND, np.float32), axis=-1)
    return (d_obj < COLOUR_TOLERANCE) & (d_obj < d_bg)


def track(frames: np.ndarray, colour: str) -> np.ndarray:
    """Centroid ``[T, 2]`` (x, y pixels) of the colour mask per frame; NaN where the mask is empty."""
    mask = colour_mask(frames, colour)
    out = np.full((len(frames), 2), np.nan)
    ys, xs = np.mgrid[0:frames.shape[1], 0:frames.shape[2]]
    for t, m in enumerate(mask):
        if m.sum() >= MIN_PIXELS:
            out[t] = (xs[m].mean() + 0.5, ys[m].mean() + 0.5)
    return out


def classify(centres: np.ndarray) -> str:
    """The motion word of a centroid track ``[T, 2]`` (NaN rows skipped); see the module docstring."""
    c = centres[~np.isnan(centres).any(axis=1)]
    if len(c) < 2:
        return "lost"
    rng_x, rng_y = np.ptp(c[:, 0]), np.ptp(c[:, 1])
    if rng_x < STILL_RANGE and rng_y < STILL_RANGE:
        return "standing still"
    vy = np.diff(c[:, 1])
    vy = vy[np.abs(vy) > 1.0]  # ignore sub-pixel wobble
    if rng_y >= MIN_TRAVEL and rng_x < STILL_RANGE and len(vy) >= 2 and (np.sign(vy[1:]) != np.sign(vy[:-1])).any():
        return "bouncing"
    dx, dy = c[-1] - c[0]
    if abs(dx) >= abs(dy):
        return "moving right" if dx > 0 else "moving left"
    return "moving down" if dy > 0 else "moving up"


def motion_of(frames: np.ndarray | torch.Tensor, colour: str) -> str:
    """Motion of the ``colour`` object in a clip: uint8 ``[T, H, W, 3]`` or a float tensor in 0..1."""
    if isinstance(frames, torch.Tensor) and frames.dtype != torch.uint8:
        frames = (frames.detach().float().clamp(0, 1) * 255).round().byte()
    if isinstance(frames, torch.Tensor):
        frames = frames.cpu().numpy()
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"motion_of: frames must be [T, H, W, 3], got {tuple(frames.shape)}")
    return classify(track(frames, colour))
